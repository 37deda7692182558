"""Strategies in the config: declarative templates, options of built-ins, drop-in modules."""

import textwrap

import pytest

from lorrygate.config import loads
from lorrygate.errors import ConfigError
from tests.dropins import GATEWAY, channel, strategy_module

BASE = GATEWAY + channel(strategy="{strategy}")


def config(tmp_path, strategy="wan", extra="", strategies=None):
    directory = strategies or tmp_path / "none"
    directory.mkdir(exist_ok=True)
    return textwrap.dedent(BASE.format(strategies=directory, strategy=strategy)) + textwrap.dedent(extra)


def problems(text):
    with pytest.raises(ConfigError) as info:
        loads(text, source="gw.ini")
    return [str(problem) for problem in info.value.problems]


def test_template_strategy_routes(tmp_path):
    """A [strategy:NAME] section with templates becomes a strategy a channel can use."""
    settings = loads(config(tmp_path, "sites", """
        [strategy:sites]
        topic = {realm}/sites/{site}/{node}/{kind:data|event}.json
        schema = {realm}_{site}
        table = {node}_{suffix}
        """))
    chosen = settings.strategies["sites"]()
    table = chosen.table_for(chosen.match("acme/sites/b/p/event.json"))
    assert (table.schema, table.table) == ("acme_b", "p_events")


@pytest.mark.parametrize("kind, decoders, values", [
    ("wan", ("ttn", "json", "value"), "kotori"),
    ("zigbee2mqtt", ("json", "value"), "as-sent"),
    ("zigbee2mqtt-both", ("zigbee2mqtt", "json", "value"), "as-sent"),
])
def test_a_declared_strategy_of_a_built_in_type_has_its_types_chain_and_values(tmp_path, kind, decoders, values):
    """A wan strategy that accepts some networks only had the chain and the values of any other name (json,
    value; as-sent): naming the networks lost Kotori's numbers from text ("48" stayed text) and its TTS uplinks.
    Given ones win, wherever the strategy section stands in the file."""
    options = {"wan": "networks = testdrive", "zigbee2mqtt": "base = z2m"}.get(kind, "output = attribute_and_json")
    kind = kind.removesuffix("-both")
    section = f"\n[strategy:mine]\ntype = {kind}\n{options}\n"
    channel = loads(config(tmp_path, "mine", section)).channels[0]
    assert (channel.decoders, channel.values) == (decoders, values)
    given = config(tmp_path, "mine", section).replace("strategy = mine", "strategy = mine\ndecoders = json\nvalues = "
                                                      "as-sent")
    assert (lambda c: (c.decoders, c.values))(loads(given).channels[0]) == (("json",), "as-sent")


def test_bad_template_shows_the_position(tmp_path):
    """A template that does not parse is a config error pointing at the character."""
    (found,) = problems(config(tmp_path, "sites", """
        [strategy:sites]
        topic = {realm}/+/{node}
        schema = {realm}
        table = {node}
        """))
    assert found == (
        "gw.ini [strategy:sites] topic: expected a valid template, got \n"
        "    {realm}/+/{node}\n"
        "            ^\n"
        "    MQTT wildcard '+' in a template: capture with {name} or {name:#} instead (at char 9)"
    )


@pytest.mark.parametrize(
    "section, expected",
    [
        ("type = wan\nnetworks = acme, itest\n", None),
        ("type = wan\ntopic = a/{b}\n", "topic: expected no topic for type wan (it takes: networks)"),
        ("type = mars\n", "type: expected template or a built-in strategy"),
        ("topic = {realm}/{node}\nschema = {realm}\n", "table: expected a template (this key is required for type template)"),
        ("topic = {realm}/{node}\nschema = {realm}\ntable = {site}\n", "{site} is not captured by the topic template"),
        ("topic = {realm}/{node}\nschema = {realm}\ntable = {node}\nkind = telemetry\n", "kind: expected one of data, event, error"),
    ],
    ids=["wan-options", "wrong-key-for-type", "unknown-type", "missing-table", "unknown-capture", "bad-kind"],
)
def test_strategy_sections(tmp_path, section, expected):
    """Each strategy section is either valid or names the key and the problem."""
    text = config(tmp_path, "mine", "\n[strategy:mine]\n" + section)
    if expected is None:
        chosen = loads(text).strategies["mine"]()
        assert chosen.networks == ("acme", "itest")
    else:
        found = problems(text)
        assert any(expected in problem for problem in found), found


def test_strategy_name_taken_by_a_builtin(tmp_path):
    """A section may not redefine a built-in strategy's name."""
    found = problems(config(tmp_path, "wan", "\n[strategy:wan]\ntype = lan\n"))
    assert found == ["gw.ini [strategy:wan]: expected a strategy name not used before, got 'wan', already built-in"]


GOOD_MODULE = strategy_module()


@pytest.mark.parametrize(
    "modules, expected",
    [
        ({"broken.py": "import no_such_module_here\n"},
         "broken.py: expected a module that imports cleanly, got ModuleNotFoundError at line 1: "
         "No module named 'no_such_module_here'"),
        ({"syntax.py": "def oops(:\n"}, "syntax.py: expected a module that imports cleanly, got SyntaxError at line 1"),
        # (a script's main() run at import: lorrygate check ended with its exit status, and said nothing)
        ({"script.py": "import sys\nsys.exit(3)\n"},
         "script.py: expected a module that imports cleanly, got SystemExit at line 2: sys.exit(3) as it was "
         "imported, which would end the gateway (a script's own run belongs under if __name__ == '__main__':)"),
        ({"half.py": GOOD_MODULE.replace("    def table_for(self, address):\n        return TableName(\"r\", address.node)\n", "")},
         "half.py: class Mine: expected a complete IStrategy (match, name, table_for), got no table_for(address)"),
        ({"a.py": GOOD_MODULE, "b.py": GOOD_MODULE},
         "b.py: class Mine: expected a strategy name not used before, got 'mine', already defined by"),
        ({"wan.py": GOOD_MODULE.replace('name: str = "mine"', 'name: str = "wan"')},
         "wan.py: class Mine: expected a strategy name not used before, got 'wan', already built-in"),
        ({"noname.py": GOOD_MODULE.replace('name: str = "mine"', 'name: str = ""')},
         "noname.py: class Mine: expected a class attribute 'name' (str) naming the strategy, got ''"),
    ],
    ids=["import-error", "syntax-error", "sys-exit", "missing-method", "duplicate-name", "builtin-name", "no-name"],
)
def test_broken_drop_in_modules(tmp_path, modules, expected):
    """Broken drop-in modules are reported with the file, the class and the problem."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    for filename, source in modules.items():
        (directory / filename).write_text(source)
    found = problems(config(tmp_path, "wan", strategies=directory))
    assert any(expected in problem for problem in found), found


def test_drop_in_module_loads(tmp_path):
    """A working module in the strategies directory gives a strategy by its name."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "mine.py").write_text(GOOD_MODULE)
    chosen = loads(config(tmp_path, "mine", strategies=directory)).strategies["mine"]()
    assert chosen.table_for(chosen.match("a/b/dev1")).table == "dev1"


def test_a_drop_in_module_imports_a_helper_beside_it_and_a_reload_reads_the_helper_again(tmp_path):
    """Two strategies that share code: ``import _naming`` failed (ModuleNotFoundError: the folder was not on the
    path), and a helper once imported would have kept its first text across reloads."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "_naming.py").write_text("def table(node):\n    return 'first_' + node\n")
    (directory / "mine.py").write_text(GOOD_MODULE.replace("import attrs\n", "import attrs\nfrom _naming import table\n")
                                       .replace("TableName(\"r\", address.node)", "TableName(\"r\", table(address.node))"))
    chosen = loads(config(tmp_path, "mine", strategies=directory)).strategies["mine"]()
    assert chosen.table_for(chosen.match("a/b/dev1")).table == "first_dev1"
    (directory / "_naming.py").write_text("def table(node):\n    return 'second_' + node\n")  # edited; reloaded
    again = loads(config(tmp_path, "mine", strategies=directory)).strategies["mine"]()
    assert again.table_for(again.match("a/b/dev1")).table == "second_dev1"
    assert chosen.table_for(chosen.match("a/b/dev1")).table == "first_dev1"  # (the running one keeps its own)


def test_a_reload_reads_again_a_helper_package_module_that_a_hook_names_or_a_drop_in_imports_as_it_runs(tmp_path):
    """A hook's ``module:function`` into a helper package (``_lib.inventory:register``) is imported when the config
    is read, and a helper that a drop-in imports only as it runs after it: neither was among the modules that the
    next load forgot, so an edit of either kept its first text until the gateway restarted."""
    directory = tmp_path / "strategies"
    (directory / "_lib").mkdir(parents=True)
    (directory / "_lib" / "__init__.py").write_text("")
    (directory / "_lib" / "inventory.py").write_text("def register(sample):\n    return 'first'\n")
    (directory / "_late.py").write_text("PREFIX = 'first_'\n")
    (directory / "mine.py").write_text(GOOD_MODULE.replace("TableName(\"r\", address.node)",
                                                           "TableName(\"r\", __import__('_late').PREFIX + address.node)"))
    hook = "\n[hook:inv]\ntype = python\ncallable = _lib.inventory:register\n"

    def load():
        settings = loads(config(tmp_path, "mine", hook, strategies=directory))
        chosen = settings.strategies["mine"]()
        return settings.hooks["inv"].function(None), chosen.table_for(chosen.match("a/b/dev1")).table

    assert load() == ("first", "first_dev1")
    (directory / "_lib" / "inventory.py").write_text("def register(sample):\n    return 'second'\n")
    (directory / "_late.py").write_text("PREFIX = 'second_'\n")
    assert load() == ("second", "second_dev1")


def test_a_reload_that_names_another_strategies_directory_imports_the_helpers_of_that_one(tmp_path):
    """The directory of the start before stayed on the path, first, with its helpers kept: a drop-in of the new
    directory that imports ``_naming`` got the old directory's."""
    import sys

    chosen = []
    for name in ("old", "new"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "_naming.py").write_text(f"def table(node):\n    return '{name}_' + node\n")
        (directory / "mine.py").write_text(
            GOOD_MODULE.replace("import attrs\n", "import attrs\nfrom _naming import table\n")
            .replace("TableName(\"r\", address.node)", "TableName(\"r\", table(address.node))"))
        strategy = loads(config(tmp_path, "mine", strategies=directory)).strategies["mine"]()
        chosen.append(strategy.table_for(strategy.match("a/b/dev1")).table)
    assert chosen == ["old_dev1", "new_dev1"]
    assert str(tmp_path / "old") not in sys.path and str(tmp_path / "new") in sys.path


def test_a_reload_forgets_only_what_was_imported_from_the_strategies_directory(tmp_path, monkeypatch):
    """``strategies = /opt`` with the gateway's packages in ``/opt/venv``: a module that lies below the directory
    but was imported from elsewhere on the path (its site-packages) is kept, not imported a second time."""
    import sys
    import types

    from lorrygate import plugins

    site = tmp_path / "venv" / "lib" / "site-packages" / "vendored"
    site.mkdir(parents=True)
    (tmp_path / "_mine.py").write_text("")
    installed, own = types.ModuleType("vendored"), types.ModuleType("_mine")
    installed.__file__, own.__file__ = str(site / "__init__.py"), str(tmp_path / "_mine.py")
    monkeypatch.setitem(sys.modules, "vendored", installed)
    monkeypatch.setitem(sys.modules, "_mine", own)
    plugins.forget_modules_of(str(tmp_path))
    assert sys.modules.get("vendored") is installed and "_mine" not in sys.modules


def test_a_strategy_or_decoder_written_into_a_helper_module_is_told_the_file_and_the_rename(tmp_path):
    """``_mine.py`` is a helper, not a drop-in: a strategy or decoder written into it is not loaded, and the channel
    naming it was told the built-in names, as if the name were a typo. It is told the file and what to rename it to."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "_mine.py").write_text(GOOD_MODULE + "\nfrom lorrygate.decoding.functions import decoder\n\n"
                                        "@decoder('mydec')\ndef mydec(message, address):\n    return []\n")
    (found,) = problems(config(tmp_path, "mine", strategies=directory))
    assert found.endswith(f"got 'mine' ({directory / '_mine.py'} names 'mine', but a module whose name starts with '_' "
                          "is a helper that drop-ins import, not a drop-in itself: rename it to mine.py)"), found
    (decoders,) = problems(config(tmp_path, "wan", "decoders = mydec\n", strategies=directory))
    assert decoders.endswith(f"got 'mydec' ({directory / '_mine.py'} names 'mydec', but a module whose name starts "
                             "with '_' is a helper that drop-ins import, not a drop-in itself: rename it to "
                             "mine.py)"), decoders
    (other,) = problems(config(tmp_path, "mien", strategies=directory))
    assert other.endswith("got 'mien'"), other  # (only the name the helper has)
    (directory / "mine.py").write_text((directory / "_mine.py").read_text())  # renamed: it loads
    (directory / "_mine.py").unlink()
    assert "mine" in loads(config(tmp_path, "mine", strategies=directory)).strategies


def test_a_drop_in_class_without_its_implementer_is_told_it(tmp_path):
    """A class with a name, match and table_for but no @implementer(IStrategy) is passed over: the channel naming it
    was told the built-in strategies and nothing of the class. It is told the class and the lines to add."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "mine.py").write_text(GOOD_MODULE.replace("@implementer(IStrategy)\n", ""))
    (found,) = problems(config(tmp_path, "mine", strategies=directory))
    assert found.endswith(f"got 'mine' ({directory / 'mine.py'}: class Mine is named 'mine' but does not declare "
                          "@implementer(IStrategy); add 'from zope.interface import implementer', 'from "
                          "lorrygate.interfaces import IStrategy' and '@implementer(IStrategy)' above the class)"), found
    (other,) = problems(config(tmp_path, "mien", strategies=directory))
    assert other.endswith("got 'mien'"), other  # (only the class of that name is meant)


def test_a_drop_in_module_that_does_not_import_is_named_where_a_channel_names_its_strategy(tmp_path):
    """A module broken mid-edit: the channel naming its strategy was told the built-in strategies, as if the name
    were a typo. It is told the module that may have it."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "mine.py").write_text(GOOD_MODULE + "def oops(:\n")
    found = problems(config(tmp_path, "mine", strategies=directory))
    assert len(found) == 2 and "mine.py: expected a module that imports cleanly, got SyntaxError" in found[0], found
    assert found[1].endswith(f"got 'mine' (it may be in {directory / 'mine.py'}, which did not import: see its "
                             "problem)"), found


def test_status_and_flush_reach_the_gateway_while_a_drop_in_module_is_broken_on_disk(tmp_path):
    """``lorrygate status`` reads only [lorrygate], but imported the drop-in modules with it: one broken mid-edit
    (the running gateway had imported it whole) made status and flush fail with its SyntaxError."""
    from lorrygate.config.loader import load_gateway

    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "mine.py").write_text("def oops(:\n")
    path = tmp_path / "gw.ini"
    path.write_text(config(tmp_path, "mine", strategies=directory).replace("[lorrygate]\n", "[lorrygate]\n"
                                                                           "control = tcp:9480\n"))
    assert load_gateway(str(path)).control_endpoint == "tcp:9480:interface=127.0.0.1"


def test_missing_strategies_directory(tmp_path):
    """An explicitly configured strategies directory that does not exist is an error."""
    text = config(tmp_path).replace(str(tmp_path / "none"), str(tmp_path / "missing"))
    assert problems(text) == [f"gw.ini [lorrygate] strategies: expected a directory of strategy modules, got '{tmp_path / 'missing'}'"]


def test_entry_point_strategy(tmp_path, monkeypatch):
    """A strategy an installed package registers in the lorrygate.strategies group can be selected."""
    package = tmp_path / "site"
    (package / "acme_strategies").mkdir(parents=True)
    (package / "acme_strategies" / "__init__.py").write_text(GOOD_MODULE.replace('name: str = "mine"', 'name: str = "acme"'))
    dist = package / "acme_strategies-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-strategies\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lorrygate.strategies]\nacme = acme_strategies:Mine\n")
    monkeypatch.syspath_prepend(str(package))
    chosen = loads(config(tmp_path, "acme")).strategies["acme"]()
    assert chosen.table_for(chosen.match("x/dev9")).table == "dev9"


@pytest.mark.parametrize("full_topic, topics", [
    ("%prefix%/%topic%/", ("tele/plug-1/SENSOR", "tele/plug-1/LWT", "stat/plug-1/POWER", "cmnd/plug-1/POWER",
                           "tele/plug-1/8F20/SENSOR")),
    ("%topic%/%prefix%/", ("plug-1/tele/SENSOR", "plug-1/tele/LWT", "plug-1/stat/POWER", "plug-1/cmnd/POWER",
                           "plug-1/8F20/tele/SENSOR")),
    ("home/%prefix%/%hostname%", ("home/tele/plug-1/SENSOR", "home/tele/plug-1/LWT", "home/stat/plug-1/POWER",
                                  "home/cmnd/plug-1/POWER", "home/tele/plug-1/8F20/SENSOR")),
])
def test_a_tasmota_fleet_of_another_full_topic_routes_as_the_default_one(tmp_path, full_topic, topics):
    """Tasmota's FullTopic (%prefix%/%topic%/ by default) is often set otherwise: every message was a dead letter.
    A Zigbee2Tasmota bridge's topic a Zigbee device (SetOption89) has the device after the bridge's %topic%."""
    from lorrygate.errors import Ignored

    text = config(tmp_path, "plugs", f"[strategy:plugs]\ntype = tasmota\nfull_topic = {full_topic}\n")
    chosen = loads(text).strategies["plugs"]()
    sensor, lwt, power, command, zigbee = topics
    assert [(a.node, a.kind, a.field) for a in map(chosen.match, (sensor, lwt, power, zigbee))] == [
        ("plug-1", "data", None), ("plug-1", "event", "LWT"), ("plug-1", "event", "POWER"), ("plug-1", "data", None)]
    assert str(chosen.table_for(chosen.match(sensor))) == "tasmota.plug_1_sensors"
    assert str(chosen.table_for(chosen.match(zigbee))) == "tasmota.plug_1_sensors"
    with pytest.raises(Ignored, match="a command"):
        chosen.match(command)
    with pytest.raises(Ignored, match="Tasmota's discovery for Home Assistant"):
        chosen.match("tasmota/discovery/A8032AB12345/config")


def test_a_tasmota_topic_of_another_full_topic_says_the_one_expected(tmp_path):
    from lorrygate.errors import TopologyError

    text = config(tmp_path, "plugs", "[strategy:plugs]\ntype = tasmota\nfull_topic = %topic%/%prefix%/\n")
    chosen = loads(text).strategies["plugs"]()
    with pytest.raises(TopologyError, match=r"expected <device>/tele/SENSOR or STATE \(data\), <device>/tele/<name> "
                                            r"or <device>/stat/<name> \(events\), <device>/<zigbee device>/tele/SENSOR "
                                            r"\(Zigbee2Tasmota\), by the FullTopic %topic%/%prefix%/"):
        chosen.match("tele/plug-1/SENSOR")


@pytest.mark.parametrize("full_topic", ["%topic%/tele/", "%prefix%/", "%prefix%//%topic%/", "%prefix%/+/%topic%/"])
def test_a_tasmota_full_topic_without_its_levels_is_refused_at_start(tmp_path, full_topic):
    found = problems(config(tmp_path, "plugs", f"[strategy:plugs]\ntype = tasmota\nfull_topic = {full_topic}\n"))
    assert any("[strategy:plugs] full_topic: expected a Tasmota FullTopic" in problem for problem in found), found

"""A reload restarts the channels whose user code changed, not every channel for an edit anywhere in the strategies
directory (each restarted channel drops its connection; one at QoS 0 loses what its broker sends meanwhile)."""

import textwrap

from lorrygate.config import loads
from lorrygate.service.gateway import channel_spec
from tests.dropins import GATEWAY, channel, strategy_module

DECODER = '''
from lorrygate.decoding.functions import decoder

@decoder("{name}")
def decode(message, address):
    return {{"v": 1}}

def hook(record, message, address):
    return record
'''

CONFIG = GATEWAY + channel("a", strategy="sa", decoders="da, json") + channel("b", strategy="sb") + "{b_extra}\n"


def specs(directory, b_extra=""):
    settings = loads(textwrap.dedent(CONFIG.format(strategies=directory, b_extra=b_extra)))
    return {channel.name: channel_spec(settings, channel) for channel in settings.channels}


def restarted(directory, edit, b_extra=""):
    """The channels whose spec differs after ``edit()``."""
    before = specs(directory, b_extra)
    edit()
    after = specs(directory, b_extra)
    return sorted(name for name in before if before[name] != after[name])


def drop_ins(tmp_path):
    """The strategies directory of the config: strategies sa and sb, decoder da, each in a module of its own."""
    directory = tmp_path / "strategies"
    directory.mkdir()
    for name in ("sa", "sb"):
        (directory / f"{name}.py").write_text(strategy_module(name, f'"{name}", address.node'))
    (directory / "da.py").write_text(DECODER.format(name="da"))
    return directory


def test_an_edit_restarts_the_channels_that_run_the_edited_code_only(tmp_path):
    directory = drop_ins(tmp_path)
    (directory / "_helper.py").write_text("X = 1\n")
    (directory / "notes.txt").write_text("a\n")

    def append(filename, text="\n# edited\n"):
        return lambda: (directory / filename).write_text((directory / filename).read_text() + text)

    assert restarted(directory, append("sa.py")) == ["a"]
    assert restarted(directory, append("sb.py")) == ["b"]
    assert restarted(directory, append("da.py")) == ["a"]  # (its decoder)
    # what imports a helper, or reads another file, is not known before it runs: every channel
    assert restarted(directory, append("_helper.py")) == ["a", "b"]
    assert restarted(directory, append("notes.txt")) == ["a", "b"]
    # a module no strategy or decoder comes from (a hook's, a Tributary graph's): every channel
    assert restarted(directory, lambda: (directory / "tools.py").write_text("def f():\n    return 1\n")) == ["a", "b"]
    # a file of channel a's decoder that channel b's hook names: both
    assert restarted(directory, append("da.py"), b_extra="hook = da:hook") == ["a", "b"]
    # a strategy moved to another file: that channel
    assert restarted(directory, lambda: ((directory / "sb.py").unlink(),
                                         (directory / "sb2.py").write_text(strategy_module("sb", '"sb", address.node')))) == ["b"]
    assert restarted(directory, lambda: None) == []


def test_a_codec_file_counts_for_the_channels_whose_chain_has_its_decoder(tmp_path):
    """A JavaScript codec of a ``[decoder:NAME]``, in the directory or beside it."""
    import pytest

    pytest.importorskip("py_mini_racer")
    directory = drop_ins(tmp_path)
    for codec in (directory / "inside.js", tmp_path / "outside.js"):
        codec.write_text("function decode(payload, topic) { return {v: 1}; }\n")
    extra = (f"decoders = js_in, json\n\n[decoder:js_in]\ntype = javascript\nfile = {directory / 'inside.js'}\n\n"
             f"[decoder:js_out]\ntype = javascript\nfile = {tmp_path / 'outside.js'}\n")
    edit = "function decode(payload, topic) { return {v: 2}; }\n"
    assert restarted(directory, lambda: (directory / "inside.js").write_text(edit), b_extra=extra) == ["b"]
    assert restarted(directory, lambda: (tmp_path / "outside.js").write_text(edit + "\n"), b_extra=extra) == []


def test_an_edited_python_hook_restarts_its_storage(tmp_path):
    """A storage's ``type = python`` first-sample hook: its module edited, a reload kept the storage, whose hook ran
    the code of the start before. The storage starts again with the new code; an edit of a strategy does not."""
    from lorrygate.service.gateway import storage_spec

    directory = drop_ins(tmp_path)
    (directory / "inventory.py").write_text("def register(sample):\n    return None\n")
    hooked = "\n[hook:inv]\ntype = python\ncallable = inventory:register\n"

    def spec():
        text = textwrap.dedent(CONFIG.format(strategies=directory, b_extra="")).replace(
            "[storage:s]\nurl = sqlite:///x.sqlite\n", "[storage:s]\nurl = sqlite:///x.sqlite\nhooks = inv\n")
        settings = loads(text + hooked)
        return storage_spec(settings, "s"), settings.hooks["inv"]  # (the gateway keeps a runner of equal settings)

    before = spec()
    (directory / "sa.py").write_text((directory / "sa.py").read_text() + "\n# edited\n")
    assert spec() == before
    (directory / "inventory.py").write_text("def register(sample):\n    return 1\n")
    after = spec()
    assert after[0] != before[0] and after[1] != before[1]


def test_a_tributary_storage_restarts_when_its_graph_is_edited_only(tmp_path):
    """A ``tributary://`` storage's graph function was compared as an object: a reload imports the drop-in module
    again, so every reload restarted that storage, and the channels that write to it, with nothing edited."""
    import pytest

    pytest.importorskip("tributary")
    from lorrygate.service.gateway import storage_spec

    directory = drop_ins(tmp_path)
    (directory / "graphs.py").write_text("def sink(node):\n    return node\n")
    extra = "\n[storage:tr]\nurl = tributary://\ngraph = graphs:sink\n"

    def spec():
        text = textwrap.dedent(CONFIG.format(strategies=directory, b_extra=extra)).replace(
            "[channel:b]\nsource = b\ntopics = #\nstorage = s\n", "[channel:b]\nsource = b\ntopics = #\nstorage = s, tr\n")
        settings = loads(text)
        assert settings.channels[1].storages == ("s", "tr")
        return storage_spec(settings, "tr"), storage_spec(settings, "s")

    before = spec()
    assert spec() == before
    (directory / "sa.py").write_text((directory / "sa.py").read_text() + "\n# edited\n")
    assert spec() == before
    (directory / "graphs.py").write_text("def sink(node):\n    return node  # edited\n")
    after = spec()
    assert after[0] != before[0] and after[1] == before[1]


def test_an_edit_in_a_helper_package_restarts_every_channel_and_the_hooks_storage(tmp_path):
    """A helper package (``_lib/`` with its ``__init__.py``, which the drop-ins import): a reload imports it
    again, but its files were not hashed (a directory read as missing), so the channels kept running the code of
    the start before. Hidden files (an editor's swap file), Python's caches and other directories restart
    nothing."""
    from lorrygate.service.gateway import storage_spec

    directory = drop_ins(tmp_path)
    (directory / "_lib").mkdir()
    (directory / "_lib" / "__init__.py").write_text("from _lib.scale import factor\n")
    (directory / "_lib" / "scale.py").write_text("factor = 1\n")
    (directory / "inventory.py").write_text("def register(sample):\n    return None\n")

    def edit(path, text):
        return lambda: (path.parent.mkdir(exist_ok=True), path.write_text(text))

    assert restarted(directory, edit(directory / "_lib" / "scale.py", "factor = 2\n")) == ["a", "b"]
    assert restarted(directory, edit(directory / "_lib" / "__pycache__" / "scale.cpython-311.pyc", "x")) == []
    assert restarted(directory, edit(directory / ".sa.py.swp", "x")) == []
    assert restarted(directory, edit(directory / "_lib" / ".scale.py.swp", "x")) == []
    # a directory that is no package (data beside the drop-ins: a database that every commit changes)
    assert restarted(directory, edit(directory / "var" / "x.sqlite", "rows")) == []

    def hook_spec():
        text = textwrap.dedent(CONFIG.format(strategies=directory, b_extra="")).replace(
            "[storage:s]\nurl = sqlite:///x.sqlite\n", "[storage:s]\nurl = sqlite:///x.sqlite\nhooks = inv\n")
        return storage_spec(loads(text + "\n[hook:inv]\ntype = python\ncallable = inventory:register\n"), "s")

    before = hook_spec()
    (directory / "_lib" / "scale.py").write_text("factor = 3\n")
    assert hook_spec() != before


def test_a_hook_that_names_a_module_of_a_helper_package_restarts_its_storage_when_that_module_is_edited(tmp_path):
    """``callable = _lib.inventory:register``: the hook's code was looked for in ``_lib.inventory.py``, found
    missing, and so not hashed; an edit kept the hook's runner and the storage, which ran the code of the start
    before."""
    from lorrygate.service.gateway import storage_spec

    directory = drop_ins(tmp_path)
    (directory / "_lib").mkdir()
    (directory / "_lib" / "__init__.py").write_text("")
    (directory / "_lib" / "inventory.py").write_text("def register(sample):\n    return None\n")

    def hook_spec():
        text = textwrap.dedent(CONFIG.format(strategies=directory, b_extra="")).replace(
            "[storage:s]\nurl = sqlite:///x.sqlite\n", "[storage:s]\nurl = sqlite:///x.sqlite\nhooks = inv\n")
        settings = loads(text + "\n[hook:inv]\ntype = python\ncallable = _lib.inventory:register\n")
        assert settings.hooks["inv"].code
        return storage_spec(settings, "s")

    before = hook_spec()
    assert hook_spec() == before
    (directory / "_lib" / "inventory.py").write_text("def register(sample):\n    return 1  # edited\n")
    assert hook_spec() != before


def test_a_tls_file_renewed_on_disk_restarts_what_uses_it(tmp_path):
    """A certificate renewed under the same name (certbot, cert-manager) and a reload: the settings were equal, so
    nothing restarted, and the HTTPS listener served the old certificate (a client's, or a CA's: read once)
    until the gateway restarted. What uses a renewed file restarts and reads it again; the rest stays."""
    from lorrygate.service.gateway import storage_spec

    (tmp_path / "none").mkdir()
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "sink_ca")}
    for path in files.values():
        path.write_text("v1\n")
    text = textwrap.dedent(f"""
        [lorrygate]
        strategies = {tmp_path / "none"}

        [broker:b]
        host = localhost
        tls = true
        tls_ca = {files["ca"]}

        [source:api]
        type = http
        listen = 127.0.0.1:0
        tls_cert = {files["cert"]}
        tls_key = {files["key"]}

        [storage:s]
        url = sqlite:///x.sqlite

        [storage:out]
        url = mqtts://localhost:8883/
        tls_ca = {files["sink_ca"]}

        [channel:mqtt]
        source = b
        topics = #
        storage = s

        [channel:http]
        source = api
        storage = out
        """)

    def specs():
        settings = loads(text)
        return ({channel.name: channel_spec(settings, channel) for channel in settings.channels},
                {name: storage_spec(settings, name) for name in settings.storages})

    def changed(before, after):
        return (sorted(name for name in before[0] if before[0][name] != after[0][name]),
                sorted(name for name in before[1] if before[1][name] != after[1][name]))

    before = specs()
    assert changed(before, specs()) == ([], [])
    files["ca"].write_text("v2\n")
    after = specs()
    assert changed(before, after) == (["mqtt"], [])
    files["key"].write_text("v2\n")
    assert changed(after, after := specs()) == (["http"], [])
    files["sink_ca"].write_text("v2\n")
    assert changed(after, specs()) == ([], ["out"])

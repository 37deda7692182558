"""Reloading: --reload and SIGHUP switch to a new valid config with nothing lost; an invalid edit changes nothing."""

import json
import signal
import subprocess
import sys
import uuid

import pytest

from tests.dropins import strategy_module
from tests.faults import Stream
from tests.gatewayproc import GatewayProcess, Publisher, count_rows, query, tables, write_config
from tests.servers import wait_until

EXTRA_CHANNEL = """
[channel:second]
source = test
topics = {realm}-b/#
storage = db
"""


class ReloadingGateway(GatewayProcess):
    def start(self, *extra):
        from tests.gatewayproc import RUNNING

        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", self.config, *extra],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        RUNNING.append(self.process)
        wait_until(lambda: self.connected() or self.process.poll() is not None, 20, "the gateway to connect")
        return self


@pytest.mark.parametrize("how", ["watch", "sighup"])
def test_adding_a_channel_with_nothing_lost(tmp_path, mosquitto, how):
    """Editing the config to add a channel starts routing to it; the stream of the first channel loses nothing."""
    realm = f"rl{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log"))
    gateway.start(*(["--reload"] if how == "watch" else []))
    db = str(tmp_path / "gateway.sqlite")
    stream = Stream(mosquitto.port, [f"{realm}/net/gw/node-{n}/data.json" for n in range(3)], 3000, rate=500).start()
    wait_until(lambda: count_rows(db, realm) >= 500, 30, "the first rows")
    with open(config, "a") as handle:
        handle.write(EXTRA_CHANNEL.format(realm=realm))
    if how == "sighup":
        gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any(e.get("message", "").startswith("reloaded") and e.get("channels") == 2
                           for e in gateway.events()), 30, "the reload")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}-b/net/gw/node/data.json", json.dumps({"seq": 1}))])
    stream.finish()
    wait_until(lambda: count_rows(db, realm) >= 3001, 60, "every message of both channels")
    assert gateway.stop() == 0
    publisher.close()
    seqs = [r[0] for t in tables(db) if t.startswith(f"{realm}_net") for r in query(db, f'SELECT seq FROM "{t}"')]
    assert set(seqs) == set(range(3000))
    assert count_rows(db, f"{realm}_b") == 1


def test_invalid_edit_keeps_the_running_config(tmp_path, mosquitto):
    """An invalid edit is reported and the running gateway keeps storing."""
    realm = f"bad{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start("--reload")
    text = open(config).read()
    with open(config, "w") as handle:
        handle.write(text.replace("qos = 1", "qos = 7"))
    wait_until(lambda: "the new configuration is invalid, the running one stays" in gateway.text(), 30, "the report")
    assert "qos: expected a whole number from 0 to 2, got '7'" in gateway.text()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/node/data.json", json.dumps({"seq": 1}))])
    wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), realm) == 1, 30, "the row")
    assert gateway.stop() == 0
    publisher.close()


def test_a_new_channel_receives_what_is_published_right_after_reloaded(tmp_path, mosquitto):
    """Twenty times: a channel added by SIGHUP stores a message published as soon as "reloaded" is logged."""
    realm = f"nw{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start()
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    for n in range(20):
        with open(config, "a") as handle:
            handle.write(f"\n[channel:c{n}]\nsource = test\ntopics = {realm}-{n}/#\nstorage = db\n")
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: sum(1 for e in gateway.events() if e.get("message", "").startswith("reloaded"))
                   == n + 1, 30, f"reload {n + 1}")
        publisher.publish_many([(f"{realm}-{n}/net/gw/node/data.json", json.dumps({"seq": n}))])
        wait_until(lambda: count_rows(db, f"{realm}_{n}_") == 1, 30, f"the message of channel c{n}")
    assert gateway.stop() == 0
    publisher.close()
    connects = [e for e in gateway.events() if "connected to" in e.get("message", "")]
    assert sum(1 for e in connects if e.get("source") == "main") == 1, "the unchanged channel kept its connection"
    assert sorted(e["source"] for e in connects if e["source"] != "main") == sorted(f"c{n}" for n in range(20))


def test_a_reload_that_cannot_start_keeps_the_running_config(tmp_path, mosquitto):
    """A valid config whose storage cannot be opened is rolled back: the old storage keeps storing."""
    realm = f"rb{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start()
    text = open(config).read()
    with open(config, "w") as handle:
        handle.write(text.replace(f"url = sqlite:///{tmp_path}/gateway.sqlite", "url = sqlite:////proc/nope/x.sqlite"))
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "could not start, the running one stays" in gateway.text(), 30, "the rollback")
    assert "/proc/nope/x.sqlite" in gateway.text()
    status = subprocess.run([sys.executable, "-m", "lorrygate.cli", "status", "-c", config], capture_output=True,
                            text=True, timeout=60)
    assert "the last reload could not start" in status.stdout and "/proc/nope/x.sqlite" in status.stdout
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/node/data.json", json.dumps({"seq": 1}))])
    wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), realm) == 1, 30, "the row in the old storage")
    assert gateway.stop() == 0
    publisher.close()


def test_an_edited_strategy_restarts_the_channel_that_runs_it_alone(tmp_path, mosquitto):
    """Any edit in the strategies directory restarted every channel: each dropped its connection and subscribed
    again (one at QoS 0 lost what its broker sent meanwhile). An edit of channel second's strategy restarts
    channel second, and one of a strategy no channel runs restarts none; the edited code runs."""
    realm = f"sc{uuid.uuid4().hex[:6]}"
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "mine.py").write_text(strategy_module("mine", f'"{realm}", "mine_" + address.node'))
    (strategies / "unused.py").write_text(strategy_module("unused", f'"{realm}", address.node'))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                          extra=f"\n[channel:second]\nsource = test\ntopics = {realm}-b/#\nqos = 0\nstorage = db\n"
                                "strategy = mine\n")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start()
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)

    def reload(number: int) -> None:
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: sum(1 for e in gateway.events() if e.get("message", "").startswith("reloaded"))
                   == number, 30, f"reload {number}")

    def connects(source: str) -> int:
        return sum(1 for e in gateway.events() if "connected to" in e.get("message", "") and e.get("source") == source)

    (strategies / "unused.py").write_text(strategy_module("unused", f'"{realm}", address.node') + "\n# edited\n")
    reload(1)
    assert (connects("main"), connects("second")) == (1, 1)
    (strategies / "mine.py").write_text(strategy_module("mine", f'"{realm}", "edited_" + address.node'))
    reload(2)
    assert (connects("main"), connects("second")) == (1, 2)
    publisher.publish_many([(f"{realm}-b/x/node", json.dumps({"seq": 1})),
                            (f"{realm}/net/gw/node/data.json", json.dumps({"seq": 2}))])
    wait_until(lambda: count_rows(db, f"{realm}__edited_node") == 1 and count_rows(db, f"{realm}_net") == 1, 30,
               "the rows of both channels")
    assert gateway.stop() == 0
    publisher.close()


@pytest.mark.parametrize("module", ["inventory", "_lib.inventory"])
def test_an_edited_python_hook_runs_its_new_code_after_a_reload(tmp_path, mosquitto, module):
    """A storage's ``type = python`` first-sample hook whose module was edited: the reload kept the hook's runner,
    which ran the code of the start before for every new table. The new table after the reload gets the new code.
    So does a hook in a helper package (``_lib.inventory:register``), which a reload did not import again."""
    realm = f"hk{uuid.uuid4().hex[:6]}"
    strategies = tmp_path / "strategies"
    (strategies / "_lib").mkdir(parents=True)
    (strategies / "_lib" / "__init__.py").write_text("")
    out = tmp_path / "samples.txt"
    hook = "def register(sample):\n    open({out!r}, 'a').write('{version}\\n')\n"
    path = strategies.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(hook.format(out=str(out), version="v1"))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                          extra=f"\n[hook:inv]\ntype = python\ncallable = {module}:register\n")
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:
        handle.write(text.replace("synchronous = NORMAL\n", "synchronous = NORMAL\nhooks = inv\n"))
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/a/data.json", json.dumps({"seq": 1}))])
    wait_until(lambda: out.exists() and out.read_text().count("\n") == 1, 30, "the first table's sample")
    path.write_text(hook.format(out=str(out), version="v2"))
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any(e.get("message", "").startswith("reloaded") for e in gateway.events()), 30, "the reload")
    publisher.publish_many([(f"{realm}/net/gw/b/data.json", json.dumps({"seq": 2}))])
    wait_until(lambda: out.read_text().count("\n") == 2, 30, "the second table's sample")
    assert gateway.stop() == 0
    publisher.close()
    assert out.read_text().splitlines() == ["v1", "v2"]


@pytest.mark.parametrize("how", ["watch", "sighup"])
def test_an_edited_helper_package_runs_its_new_code_after_a_reload(tmp_path, mosquitto, how):
    """A helper package the strategy imports (``strategies/_lib/``): --reload did not watch it, and a reload did
    not see its edit (its files were not hashed): the channel kept the code of the start before."""
    realm = f"hp{uuid.uuid4().hex[:6]}"
    strategies = tmp_path / "strategies"
    (strategies / "_lib").mkdir(parents=True)
    (strategies / "_lib" / "__init__.py").write_text("")
    (strategies / "_lib" / "naming.py").write_text("PREFIX = 'v1_'\n")
    (strategies / "mine.py").write_text("from _lib import naming\n" + strategy_module(
        "mine", f'"{realm}", naming.PREFIX + address.node'))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                          extra="strategy = mine\n")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start(*(["--reload"] if how == "watch" else []))
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/a", json.dumps({"seq": 1}))])
    wait_until(lambda: count_rows(db, f"{realm}__v1_a") == 1, 30, "the row of the first code")
    (strategies / "_lib" / "naming.py").write_text("PREFIX = 'v2_'\n")
    if how == "sighup":
        gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any(e.get("message", "").startswith("reloaded: 1 channel(s) running, 1 of them")
                           for e in gateway.events()), 30, "the reload that restarts the channel")
    publisher.publish_many([(f"{realm}/b", json.dumps({"seq": 2}))])
    wait_until(lambda: count_rows(db, f"{realm}__v2_b") == 1, 30, "the row of the edited code")
    assert gateway.stop() == 0
    publisher.close()


def test_a_helper_package_made_while_the_gateway_runs_is_watched_after_the_reload(tmp_path, mosquitto):
    """--reload watches the helper packages there are at its start; one made later (and imported by an edited
    drop-in) is watched from the reload that the drop-in's edit brings on."""
    realm = f"hw{uuid.uuid4().hex[:6]}"
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "mine.py").write_text(strategy_module("mine", f'"{realm}", "v0_" + address.node'))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                          extra="strategy = mine\n")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start("--reload")

    def reloads() -> int:
        return sum(1 for e in gateway.events() if e.get("message", "").startswith("reloaded: 1 channel(s) running, 1"))

    (strategies / "_lib").mkdir()
    (strategies / "_lib" / "__init__.py").write_text("")
    (strategies / "_lib" / "naming.py").write_text("PREFIX = 'v1_'\n")
    (strategies / "mine.py").write_text("from _lib import naming\n" + strategy_module(
        "mine", f'"{realm}", naming.PREFIX + address.node'))
    wait_until(lambda: reloads() == 1, 30, "the reload of the edited drop-in")
    (strategies / "_lib" / "naming.py").write_text("PREFIX = 'v2_'\n")
    wait_until(lambda: reloads() == 2, 30, "the reload of the edited helper package")
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/a", json.dumps({"seq": 1}))])
    wait_until(lambda: count_rows(db, f"{realm}__v2_a") == 1, 30, "the row of the edited helper package's code")
    assert gateway.stop() == 0
    publisher.close()


def test_a_codec_file_outside_the_config_folder_is_watched_by_reload(tmp_path, mosquitto):
    """--reload watched the config's folder and the strategies directory only: a ``[decoder:NAME]``'s codec file
    in a folder of its own (so too a DDL file, a TLS file, a ``${FILE:path}``) was seen by SIGHUP alone, and the
    channel kept the codec of the start. Its edit reloads, and the next message is decoded by the new code."""
    realm = f"cw{uuid.uuid4().hex[:6]}"
    codecs = tmp_path / "codecs"
    codecs.mkdir()
    codec = "function decode(payload, topic) {{ return {{{field}: payload.length}}; }}\n"
    (codecs / "size.js").write_text(codec.format(field="v1"))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                          extra="decoders = size\n\n[decoder:size]\ntype = javascript\nfile = codecs/size.js\n")
    gateway = ReloadingGateway(config, str(tmp_path / "gw.log")).start("--reload")
    db = str(tmp_path / "gateway.sqlite")
    table = f"{realm}_net__gw_node_sensors"
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/node/data.json", b"abc")])
    wait_until(lambda: count_rows(db, table) == 1, 30, "the row of the first codec")
    (codecs / "size.js").write_text(codec.format(field="v2"))
    wait_until(lambda: any(e.get("message", "").startswith("reloaded: 1 channel(s) running, 1 of them")
                           for e in gateway.events()), 30, "the reload that the codec's edit brings on")
    publisher.publish_many([(f"{realm}/net/gw/node/data.json", b"abcdef")])
    wait_until(lambda: count_rows(db, table) == 2, 30, "the row of the edited codec")
    assert gateway.stop() == 0
    publisher.close()
    assert query(db, f'SELECT v1, v2 FROM "{table}" ORDER BY v1 IS NULL') == [(3, None), (None, 6)]

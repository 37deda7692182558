"""Declarative and drop-in strategies route real MQTT messages; broken drop-ins stop start-up."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, query, tables
from tests.servers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def two_channel_config(directory, port, tag, strategies):
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            strategies = {strategies}

            [broker:test]
            host = 127.0.0.1
            port = {port}
            client_id = gw-{tag}

            [storage:db]
            url = sqlite:///{directory}/gateway.sqlite
            synchronous = NORMAL

            [strategy:sites]
            topic = {tag}/sites/{{site}}/{{node}}/{{kind:data|event}}.json
            schema = {tag}_{{site}}
            table = {{node}}_{{suffix}}

            [channel:sites]
            source = test
            topics = {tag}/sites/#
            strategy = sites
            storage = db

            [channel:factory]
            source = test
            topics = factory/#
            strategy = factory
            storage = db
            """))
    return path


def test_template_and_drop_in_strategies_route_messages(tmp_path, mosquitto):
    """A [strategy:...] template and strategies/example.py each route real messages into their tables."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    strategies = tmp_path / "strategies"
    shutil.copytree(os.path.join(ROOT, "strategies"), strategies)
    config = two_channel_config(str(tmp_path), mosquitto.port, tag, strategies)
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    wait_until(lambda: sum("connected to" in e.get("message", "") for e in gateway.events()) >= 2, 20, "2 channels")
    publisher = Publisher(mosquitto.port)
    line = f"line-{tag}"
    publisher.publish_many([
        (f"{tag}/sites/Berlin/pump-1/data.json", json.dumps({"rpm": 1200})),
        (f"{tag}/sites/Berlin/pump-1/event.json", json.dumps({"alarm": "overheat"})),
        (f"{tag}/sites/Hamburg/pump-2/data.json", json.dumps({"rpm": 900})),
        (f"factory/{line}/press-7/telemetry", json.dumps({"force": 12.5})),
        (f"factory/{line}/press-7/alarm", json.dumps({"code": 3})),
    ])
    wait_until(lambda: count_rows(db, tag) + count_rows(db, "factory_") >= 5, 30, "5 rows")
    assert gateway.stop() == 0
    assert {t for t in tables(db) if t.startswith((tag, "factory_"))} == {
        f"{tag}_berlin__pump_1_sensors",
        f"{tag}_berlin__pump_1_events",
        f"{tag}_hamburg__pump_2_sensors",
        f"factory_{line.replace('-', '_')}__press_7_sensors",
        f"factory_{line.replace('-', '_')}__press_7_alarms",
    }
    assert query(db, f'SELECT rpm FROM "{tag}_hamburg__pump_2_sensors"') == [(900,)]
    assert query(db, f'SELECT force FROM "factory_{line.replace("-", "_")}__press_7_sensors"') == [(12.5,)]


def test_broken_drop_ins_stop_start_up_before_connecting(tmp_path):
    """An import error, a missing method and a duplicate name are all reported; the process exits 2 unconnected."""
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "broken.py").write_text("import no_such_module_anywhere\n")
    module = open(os.path.join(ROOT, "strategies", "example.py")).read()
    (strategies / "copy1.py").write_text(module)
    (strategies / "copy2.py").write_text(module)
    (strategies / "half.py").write_text(module.replace('name: str = "factory"', 'name: str = "half"').replace(
        "    def table_for(self, address: Address) -> TableName:", "    def table_for_typo(self, address: Address) -> TableName:"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    config = two_channel_config(str(tmp_path), listener.getsockname()[1], "x", strategies)
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", config], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "3 configuration problems:" in result.stderr
    assert "broken.py: expected a module that imports cleanly, got ModuleNotFoundError at line 1" in result.stderr
    assert "copy2.py: class FactoryStrategy: expected a strategy name not used before, got 'factory'" in result.stderr
    assert "half.py: class FactoryStrategy: expected a complete IStrategy (match, name, table_for), got no table_for(address)" in result.stderr
    try:
        listener.accept()
        connected = True
    except BlockingIOError:
        connected = False
    listener.close()
    assert not connected

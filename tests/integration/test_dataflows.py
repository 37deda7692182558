"""
Dataflows of other frameworks in a running gateway (docs/transform.rst):

- a Hamilton module (examples/dataflows/weather.py) computes the dew point
  and a rolling mean per node for 10,000 messages through a real Mosquitto;
  the derived columns are stored next to the raw ones, and are what the
  formulas give for each node's stream in order;
- a module with a missing input fails ``lorrygate check`` naming the function;
- a Tributary graph (examples/tributary/livegraph.py) as a source: 1,000
  values stored;
- a slow Tributary graph as a storage holds the channel's source paused
  (backpressure) and still receives every message.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, query, tables
from tests.servers import wait_until

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEATHER = os.path.join(ROOT, "examples", "dataflows", "weather.py")
GRAPHS = os.path.join(ROOT, "examples", "tributary")


def dew_point(temperature: float, humidity: float) -> float:
    gamma = math.log(humidity / 100.0) + 17.62 * temperature / (243.12 + temperature)
    return round(243.12 * gamma / (17.62 - gamma), 2)


def write(directory, text: str) -> str:
    path = directory / "gateway.ini"
    path.write_text(textwrap.dedent(text))
    return str(path)


def weather_config(tmp_path, port: int, realm: str, db: str, storage: tuple = (), transform: tuple = ()) -> str:
    """A gateway of one channel through the weather dataflow into SQLite; ``storage`` and ``transform``: more
    lines of those sections."""
    more = "\n" + " " * 8  # the lines' indent below, which dedent removes
    storage_lines, transform_lines = more.join(storage), more.join(transform)
    return write(tmp_path, f"""
        [lorrygate]
        data_dir = {tmp_path}
        log_format = json
        control = off
        stats_interval = 1s

        [broker:test]
        host = 127.0.0.1
        port = {port}
        client_id = {realm}

        [storage:db]
        url = sqlite:///{db}
        synchronous = NORMAL
        {storage_lines}

        [transform:weather]
        type = hamilton
        modules = {WEATHER}
        inputs = temperature, humidity
        {transform_lines}

        [channel:main]
        source = test
        topics = {realm}/#
        transform = weather
        """)


def test_a_hamilton_dataflow_stores_derived_columns_next_to_the_raw_ones(tmp_path, mosquitto):
    realm = f"h{uuid.uuid4().hex[:6]}"
    db = str(tmp_path / "gateway.sqlite")
    config = weather_config(tmp_path, mosquitto.port, realm, db,
                            transform=("outputs = dew_point, temperature_mean", "constants = window=5", "history = 4"))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed to")
    total, nodes = 10_000, 10
    messages = []
    for seq in range(total):
        temperature = round(15 + 10 * math.sin(seq / 97), 2)
        humidity = round(55 + 30 * math.cos(seq / 61), 1)
        messages.append((f"{realm}/net/gw/node-{seq % nodes}/data.json",
                         json.dumps({"seq": seq, "temperature": temperature, "humidity": humidity})))
    publisher = Publisher(mosquitto.port)
    try:
        publisher.publish_many(messages)
        wait_until(lambda: count_rows(db, realm) == total, 120, "every row stored")
    finally:
        publisher.close()
        assert gateway.stop() == 0
    checked = 0
    for table in sorted(t for t in tables(db) if t.startswith(realm)):
        rows = query(db, f'SELECT seq, temperature, humidity, dew_point, temperature_mean FROM "{table}" ORDER BY seq')
        assert len(rows) == total // nodes
        window = []
        for seq, temperature, humidity, stored_dew_point, mean in rows:
            window = (window + [temperature])[-5:]
            assert stored_dew_point == pytest.approx(dew_point(temperature, humidity), abs=0.011), (table, seq)
            assert mean == pytest.approx(round(sum(window) / len(window), 3), abs=0.0011), (table, seq)
            checked += 1
    assert checked == total
    assert not query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0]


def test_derived_rows_of_a_fleet_share_one_table_in_the_per_network_layout(tmp_path, mosquitto):
    """``into = table`` with ``layout = per-network``: 20 nodes' derived rows go into one table per network
    and transform, with a view per node named as its derived table would have been."""
    realm = f"d{uuid.uuid4().hex[:6]}"
    db = str(tmp_path / "gateway.sqlite")
    config = weather_config(tmp_path, mosquitto.port, realm, db, storage=("layout = per-network",),
                            transform=("outputs = dew_point", "into = table"))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed to")
    nodes, total = 20, 400
    publisher = Publisher(mosquitto.port)
    shared, derived = f"{realm}_net__sensors", f"{realm}_net__sensors_weather"

    def stored() -> bool:
        return {shared, derived} <= tables(db) and all(
            query(db, f'SELECT count(*) FROM "{name}"') == [(total,)] for name in (shared, derived))

    try:
        publisher.publish_many((f"{realm}/net/gw/node-{seq % nodes}/data.json",
                                json.dumps({"seq": seq, "temperature": 20.0 + seq % 7, "humidity": 60.0}))
                               for seq in range(total))
        wait_until(stored, 120, "every row and every derived row")
    finally:
        publisher.close()
        assert gateway.stop() == 0
    assert {name for name in tables(db) if name.startswith(realm)} == {shared, derived}
    views = {row[0] for row in query(db, "SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert {f"{realm}_net__gw_node_{n}_sensors_weather" for n in range(nodes)} <= views
    assert {f"{realm}_net__gw_node_{n}_sensors" for n in range(nodes)} <= views
    # a node's derived view reads its own rows only
    rows = query(db, f'SELECT node, dew_point FROM "{realm}_net__gw_node_3_sensors_weather"')
    assert len(rows) == total // nodes and {node for node, _ in rows} == {"node-3"}
    assert all(isinstance(value, float) for _, value in rows)


def test_a_dataflow_with_a_missing_input_fails_check_with_the_functions_name(tmp_path):
    module = tmp_path / "broken.py"
    module.write_text(textwrap.dedent("""
        import pandas as pd

        def dew_point(temperature: pd.Series, humidty: pd.Series) -> pd.Series:
            return temperature - humidty
        """))
    config = write(tmp_path, f"""
        [broker:b]
        host = 127.0.0.1

        [storage:db]
        url = sqlite:///{tmp_path}/x.sqlite

        [transform:weather]
        type = hamilton
        modules = broken.py
        inputs = temperature, humidity
        outputs = dew_point

        [channel:main]
        topics = x/#
        transform = weather
        """)
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "check", "-c", config], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "[transform:weather] outputs" in output
    assert "humidty" in output and "dew_point" in output, output


def test_a_tributary_graph_is_a_source_of_stored_messages(tmp_path):
    db = str(tmp_path / "gateway.sqlite")
    config = write(tmp_path, f"""
        [lorrygate]
        data_dir = {tmp_path}
        log_format = json
        control = off
        strategies = {GRAPHS}
        stats_interval = 1s

        [source:model]
        type = tributary
        graph = livegraph:readings
        topic = mqttkit-1/model/lab/{{node}}/data.json
        window = 100

        [storage:db]
        url = sqlite:///{db}
        synchronous = NORMAL

        [transform:weather]
        type = hamilton
        modules = {WEATHER}
        inputs = temperature, humidity
        outputs = dew_point

        [channel:main]
        source = model
        topics = mqttkit-1/model/#
        transform = weather
        """)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="channel main")
    try:
        wait_until(lambda: count_rows(db, "mqttkit_1_model") == 1_000, 120, "1,000 values of the graph stored")
    finally:
        assert gateway.stop() == 0
    seqs = sorted(seq for table in tables(db) if table.startswith("mqttkit_1_model")
                  for (seq,) in query(db, f'SELECT seq FROM "{table}"'))
    assert seqs == list(range(1_000))
    assert len([t for t in tables(db) if t.startswith("mqttkit_1_model")]) == 4
    assert query(db, 'SELECT count(dew_point) FROM "mqttkit_1_model__lab_node_0_sensors"')[0][0] == 250
    assert any("the Tributary graph ended after 1000 values" in e.get("message", "") for e in gateway.events())


def slow_graph_gateway(tmp_path, port: int, realm: str):
    """A gateway whose only storage is a Tributary graph slower than the broker (2 ms a record); it
    writes each record's seq to seen.txt. Returns the gateway (not started) and a reader of the seqs."""
    seen = tmp_path / "seen.txt"
    strategies = tmp_path / "graphs"
    strategies.mkdir()
    (strategies / "slowsink.py").write_text(textwrap.dedent(f"""
        import time

        def slow(records):
            handle = open({str(seen)!r}, "a")

            def take(record):
                time.sleep(0.002)  # a consumer slower than the broker
                handle.write(str(record["fields"]["seq"]) + "\\n")
                handle.flush()
                return record

            return records.apply(take)
        """))
    config = write(tmp_path, f"""
        [lorrygate]
        data_dir = {tmp_path}
        log_format = json
        control = off
        strategies = {strategies}
        stats_interval = 1s

        [broker:test]
        host = 127.0.0.1
        port = {port}
        client_id = {realm}

        [storage:graph]
        url = tributary://
        graph = slowsink:slow
        batch_size = 50
        max_pending = 200

        [channel:main]
        source = test
        topics = {realm}/#
        """)

    def received():
        return [int(line) for line in seen.read_text().split()] if seen.exists() else []

    return GatewayProcess(config, str(tmp_path / "gw.log")), received


def publish_seqs(port: int, realm: str, total: int) -> None:
    publisher = Publisher(port)
    try:
        publisher.publish_many([(f"{realm}/net/gw/node-{seq % 3}/data.json", json.dumps({"seq": seq}))
                                for seq in range(total)])
    finally:
        publisher.close()


def test_a_slow_tributary_graph_holds_the_source_and_loses_nothing(tmp_path, mosquitto):
    realm = f"t{uuid.uuid4().hex[:6]}"
    gateway, received = slow_graph_gateway(tmp_path, mosquitto.port, realm)
    gateway.start(ready="subscribed to")
    total = 3_000
    try:
        publish_seqs(mosquitto.port, realm, total)
        wait_until(lambda: len(set(received())) == total, 120, "every message in the graph")
    finally:
        assert gateway.stop() == 0
    assert sorted(set(received())) == list(range(total))
    pauses = [e for e in gateway.events() if e.get("state") == "pausing"]
    assert pauses, "the storage's backpressure paused the source"


def test_a_tributary_storage_is_at_least_once_through_a_sigkill(tmp_path, mosquitto):
    """docs/delivery.rst: a message is acknowledged only once the graph took its records; the gateway
    SIGKILLed mid-stream and restarted, every message reaches the graph (some twice)."""
    realm = f"k{uuid.uuid4().hex[:6]}"
    gateway, received = slow_graph_gateway(tmp_path, mosquitto.port, realm)
    gateway.start(ready="subscribed to")
    total = 3_000
    try:
        publish_seqs(mosquitto.port, realm, total)
        wait_until(lambda: len(received()) >= 500, 60, "the graph taking records")
        gateway.kill()
        assert len(set(received())) < total, "the kill came before the end"
        gateway.start(ready="subscribed to")
        wait_until(lambda: len(set(received())) == total, 120, "every message in the graph after the restart")
    finally:
        if gateway.process.poll() is None:
            assert gateway.stop() == 0
    assert sorted(set(received())) == list(range(total))

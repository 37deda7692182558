"""The gateway end to end: real Mosquitto in, the gateway as a process, SQLite out."""

import json
import signal
import uuid
from collections import Counter

import pytest

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, last_stats, query, tables, write_config
from tests.servers import wait_until

BASE_MS = 1_717_243_200_000  # 2024-06-01T12:00:00Z


def iso(ms: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000000Z"


@pytest.fixture
def realm():
    return f"itest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gateway(tmp_path, mosquitto, realm):
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    process = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    process.db = str(tmp_path / "gateway.sqlite")
    yield process
    if process.process.poll() is None:
        process.stop()


@pytest.fixture
def publisher(mosquitto):
    client = Publisher(mosquitto.port)
    yield client
    client.close()


def telemetry(realm: str, count: int, nodes: int = 50):
    """``count`` messages spread over ``nodes`` nodes of two networks."""
    for seq in range(count):
        node = seq % nodes
        network = "net-a" if node < nodes // 2 else "net-b"
        topic = f"{realm}/{network}/gw-1/node-{node}/data.json"
        payload = {"time": BASE_MS + seq, "seq": seq, "value": seq * 0.5, "node": node}
        yield topic, json.dumps(payload)


def test_10000_messages_land_in_50_tables(gateway, publisher, realm):
    """10,000 QoS 1 messages over 50 nodes of 2 networks become exactly 10,000 rows in the right tables."""
    schema = realm.replace("-", "_")
    publisher.publish_many(telemetry(realm, 10_000))
    wait_until(lambda: count_rows(gateway.db, schema) >= 10_000, 60, "10,000 rows")

    found = sorted(t for t in tables(gateway.db) if t.startswith(schema))
    expected = sorted(
        f"{schema}_{'net_a' if n < 25 else 'net_b'}__gw_1_node_{n}_sensors" for n in range(50)
    )
    assert found == expected
    seen = Counter()
    for table in found:
        node = int(table.rsplit("_node_", 1)[1].split("_")[0])
        rows = query(gateway.db, f'SELECT time, seq, value, node FROM "{table}"')
        assert len(rows) == 200
        for time, seq, value, row_node in rows:
            assert (row_node, seq % 50) == (node, node)
            assert value == seq * 0.5
            assert time == iso(BASE_MS + seq)
            seen[seq] += 1
    assert sorted(seen) == list(range(10_000))
    assert set(seen.values()) == {1}
    assert gateway.stop() == 0


def test_sigkill_in_flight_loses_nothing(tmp_path, mosquitto, realm, publisher):
    """A gateway killed with SIGKILL mid-stream and restarted stores every message (duplicates reported)."""
    total = 20_000
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    db = str(tmp_path / "gateway.sqlite")
    schema = realm.replace("-", "_")
    process = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    pending = publisher.start_publishing(telemetry(realm, total, nodes=10))
    wait_until(lambda: count_rows(db, schema) >= 2_000, 30, "the first rows", interval=0.005)
    process.process.send_signal(signal.SIGKILL)
    process.process.wait()
    stored_at_kill = count_rows(db, schema)
    publisher.wait(pending)
    process.start()
    wait_until(lambda: count_rows(db, schema) >= total, 90, "every message after the restart")
    assert process.stop() == 0

    seqs = Counter()
    for table in tables(db):
        if table.startswith(schema):
            seqs.update(row[0] for row in query(db, f'SELECT seq FROM "{table}"'))
    missing = set(range(total)) - set(seqs)
    duplicates = sum(count - 1 for count in seqs.values())
    print(
        f"\nSIGKILL test: published {total}, stored at the kill {stored_at_kill}, "
        f"stored {len(seqs)} distinct, missing {len(missing)}, duplicates {duplicates}"
    )
    assert stored_at_kill < total, "the kill came after the stream ended: nothing was in flight"
    assert not missing


def test_bad_messages_are_reported_and_kept(gateway, publisher, realm):
    """Not-JSON, empty-level and too-few-level messages are logged, counted and kept; their neighbours are stored."""
    schema = realm.replace("-", "_")
    good = f"{realm}/net-a/gw-1/node-1/data.json"
    messages = [
        (good, json.dumps({"seq": 0})),
        (good, b"this is not json {"),
        (good, json.dumps({"seq": 1})),
        (f"{realm}/net-a//node-1/data.json", json.dumps({"seq": 99})),
        (good, json.dumps({"seq": 2})),
        (f"{realm}/short", json.dumps({"seq": 98})),
        (good, json.dumps({"seq": 3})),
    ]
    publisher.publish_many(messages)
    wait_until(
        lambda: count_rows(gateway.db, schema) >= 4
        and query(gateway.db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0] >= 3,
        30,
        "4 rows and 3 dead letters",
    )
    wait_until(
        lambda: any(e.get("event") == "stats" and e.get("own_reports") == 3 for e in gateway.events()),
        30,
        "the 3 error reports to come back",
    )
    assert gateway.stop() == 0

    table = f"{schema}_net_a__gw_1_node_1_sensors"
    assert [row[0] for row in query(gateway.db, f'SELECT seq FROM "{table}" ORDER BY seq')] == [0, 1, 2, 3]
    dead = query(gateway.db, "SELECT topic, payload, stage, error FROM lorrygate_dead_letter ORDER BY id")
    assert [(topic, stage) for topic, _, stage, _ in dead] == [
        (good, "decode"),
        (f"{realm}/net-a//node-1/data.json", "topology"),
        (f"{realm}/short", "topology"),
    ]
    assert dead[0][1] == b"this is not json {"
    assert "not JSON" in dead[0][3]
    assert "gateway level is empty" in dead[1][3]
    assert "at least 5 levels" in dead[2][3]

    events = gateway.events()
    warnings = [e["message"] for e in events if e.get("level") == "warn"]
    assert any("could not be decoded" in w and "not JSON" in w for w in warnings), warnings
    assert any("gateway level is empty" in w for w in warnings), warnings
    assert any("at least 5 levels" in w for w in warnings), warnings
    stats = last_stats(events)
    # the three reports published to error topics come back through the subscription and are skipped
    assert (stats["received"], stats["routed"], stats["unmatched"], stats["undecodable"]) == (10, 4, 2, 1)
    assert (stats["error_reports"], stats["own_reports"]) == (3, 3)
    assert stats["final"] is True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_commits_what_is_buffered(tmp_path, mosquitto, realm, publisher, sig):
    """Rows still buffered when SIGTERM or SIGINT arrives are committed before the process exits."""
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace(
        "synchronous = NORMAL", "synchronous = NORMAL\nbatch_size = 100000\nlinger = 60s"
    )
    open(config, "w").write(text)  # without the signal the batch would wait a minute
    process = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    publisher.publish_many(telemetry(realm, 1_000, nodes=5))
    wait_until(
        lambda: any(e.get("event") == "storage_stats" and e.get("pending") == 1_000 for e in process.events()),
        30,
        "1,000 rows pending in the buffer",
    )
    assert count_rows(str(tmp_path / "gateway.sqlite"), realm.replace("-", "_")) == 0
    assert process.stop(sig) == 0
    assert count_rows(str(tmp_path / "gateway.sqlite"), realm.replace("-", "_")) == 1_000

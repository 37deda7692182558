"""
Fault tests: the gateway, its broker and its database each fail mid-stream,
and every published message must end up stored. Each test has its own
Mosquitto (and PostgreSQL where it needs one), counts every message, prints
published, stored, duplicates and the time it took, and is bounded in time.
"""

import json
import os
import signal
import textwrap
import time
import uuid

import psycopg
import pytest

from lorrygate.storage.spool import decode
from tests.faults import Stream, report, wait_for_rows
from tests.gatewayproc import GatewayProcess, query, tables
from tests.servers import Mosquitto, PostgreSQL, wait_until


@pytest.fixture
def broker(tmp_path):
    (tmp_path / "broker").mkdir()
    server = Mosquitto(str(tmp_path / "broker")).start()
    yield server
    server.stop()


@pytest.fixture
def database():
    server = PostgreSQL().start()
    yield server
    server.stop()


def gateway_config(directory, port, realm, url, storage_options=""):
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s

            [broker:test]
            host = 127.0.0.1
            port = {port}
            client_id = gw-{realm}
            keepalive = 5
            reconnect_max_delay = 1s

            [storage:db]
            url = {url}
            """) + textwrap.dedent(storage_options) + textwrap.dedent(f"""
            [channel:main]
            topics = {realm}/#
            """))
    return path


def topics(realm, nodes=10):
    return [f"{realm}/net/gw/node-{n}/data.json" for n in range(nodes)]


def sqlite_seqs(db, prefix):
    return [row[0] for table in tables(db) if table.startswith(prefix) for row in query(db, f'SELECT seq FROM "{table}"')]


def pg_seqs(url, prefix):
    with psycopg.connect(url) as conn:
        names = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_schema LIKE %s", (prefix + "%",)).fetchall()
        return [row[0] for schema, table in names for row in conn.execute(f'SELECT seq FROM "{schema}"."{table}"')]


def pg_count(url, prefix):
    try:
        return len(pg_seqs(url, prefix))
    except psycopg.OperationalError:
        return 0


def test_gateway_killed_three_times(tmp_path, broker):
    """SIGKILL three times during 20,000 QoS 1 messages, restarted each time: nothing lost, no duplicates."""
    started = time.monotonic()
    realm = f"k{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    config = gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{db}",
                            "synchronous = NORMAL\nidempotent = true\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm), 20_000, rate=2500).start()
    for threshold in (3_000, 8_000, 13_000):
        wait_until(lambda: len(sqlite_seqs(db, realm)) >= threshold, 60, f"{threshold} rows", interval=0.05)
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
        gateway.start()
    stream.finish()
    wait_for_rows(lambda: len(set(sqlite_seqs(db, realm))), 20_000, 90, "all 20,000 messages")
    assert gateway.stop() == 0
    seqs = sqlite_seqs(db, realm)
    duplicates = report("SIGKILL x3", 20_000, seqs, started)
    assert set(seqs) == set(range(20_000))
    assert duplicates == 0


def test_postgresql_down_for_20_seconds(tmp_path, broker, database):
    """PostgreSQL stops for 20 s mid-stream: batches are spooled meanwhile and drained after; nothing lost."""
    started = time.monotonic()
    realm = f"p{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(gateway_config(str(tmp_path), broker.port, realm, database.url), str(tmp_path / "gw.log"))
    gateway.start()
    stream = Stream(broker.port, topics(realm), 12_000, rate=400).start()
    wait_for_rows(lambda: pg_count(database.url, realm), 1_000, 30, "the first rows")
    database.halt()
    time.sleep(20)
    database.resume()
    stream.finish()
    wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), 12_000, 120, "all 12,000 messages")
    assert gateway.stop() == 0
    seqs = pg_seqs(database.url, realm)
    report("PostgreSQL down 20 s", 12_000, seqs, started)
    assert set(seqs) == set(range(12_000))
    spooled = max(e.get("spooled", 0) for e in gateway.events() if e.get("event") == "storage_stats")
    assert spooled >= 1, "batches waited in the spool during the outage"
    assert any("spooling to disk" in e.get("message", "") for e in gateway.events())


def test_broker_restarted_mid_stream(tmp_path, broker):
    """Mosquitto (with persistence) restarts mid-stream: the gateway reconnects; nothing lost."""
    started = time.monotonic()
    realm = f"b{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{db}",
                                            "synchronous = NORMAL\n"), str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm), 10_000, rate=1000).start()
    wait_for_rows(lambda: len(sqlite_seqs(db, realm)), 2_000, 30, "the first rows")
    broker.stop()
    broker.start()
    stream.finish()
    wait_for_rows(lambda: len(set(sqlite_seqs(db, realm))), 10_000, 90, "all 10,000 messages")
    assert gateway.stop() == 0
    seqs = sqlite_seqs(db, realm)
    report("Mosquitto restarted", 10_000, seqs, started)
    assert set(seqs) == set(range(10_000))


def status(gateway_config_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", gateway_config_path, "status", "--json"],
                            capture_output=True, text=True, timeout=30)
    return json.loads(result.stdout)["storages"][0] if result.returncode == 0 else None


def test_spool_full_applies_backpressure(tmp_path, broker, database):
    """With the database down and a small spool, the gateway stops reading instead of dropping; all arrives later."""
    started = time.monotonic()
    realm = f"f{uuid.uuid4().hex[:8]}"
    database.halt()
    config = gateway_config(str(tmp_path), broker.port, realm, database.url,
                            "spool_max = 64KB\nmax_pending = 500\nbatch_size = 200\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm), 5_000, rate=2000).start()
    stream.finish()
    held = wait_until(lambda: (lambda s: s if s and s["paused_sources"] and s["spool"]["batches"] else None)(status(config)),
                      60, "the spool to fill and the sources to pause")
    assert held["spool"]["bytes"] <= 64_000
    assert held["pauses"] >= 1
    database.resume()
    wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), 5_000, 120, "all 5,000 messages")
    assert gateway.stop() == 0
    seqs = pg_seqs(database.url, realm)
    report("spool full", 5_000, seqs, started)
    assert set(seqs) == set(range(5_000))


def test_truncated_spool_record(tmp_path, broker, database):
    """A spool file truncated while the gateway is down is reported and moved aside; the rest drains."""
    started = time.monotonic()
    realm = f"t{uuid.uuid4().hex[:8]}"
    database.halt()
    config = gateway_config(str(tmp_path), broker.port, realm, database.url, "batch_size = 200\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm), 1_000, rate=1000).start()
    stream.finish()
    spool_dir = tmp_path / "spool" / "db"
    wait_until(lambda: sum(len(decode((spool_dir / n).read_bytes()).entries)
                           for n in os.listdir(spool_dir) if n.endswith(".batch")) >= 1_000, 60, "1,000 spooled messages")
    assert gateway.stop() == 0
    victim = sorted(n for n in os.listdir(spool_dir) if n.endswith(".batch"))[1]
    lost = [entry.records[0].fields["seq"] for entry in decode((spool_dir / victim).read_bytes()).entries]
    data = (spool_dir / victim).read_bytes()
    (spool_dir / victim).write_bytes(data[: len(data) // 2])
    database.resume()
    gateway.start()
    expected = set(range(1_000)) - set(lost)
    wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), len(expected), 60, "the rest of the spool")
    assert gateway.stop() == 0
    seqs = pg_seqs(database.url, realm)
    report("truncated spool record", 1_000, seqs, started, expected=expected)
    assert set(seqs) == expected
    assert (spool_dir / "damaged" / victim).exists()
    assert any("damaged record" in e.get("message", "") for e in gateway.events())


def test_one_failing_table_does_not_stop_the_others(tmp_path, broker, database):
    """A table whose inserts fail sends its messages to the dead-letter table; the other tables keep flowing."""
    started = time.monotonic()
    realm = f"o{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{realm}_net"')
        conn.execute(f'CREATE TABLE "{realm}_net"."gw_node_3_sensors" '
                     '("time" TIMESTAMPTZ NOT NULL, seq BIGINT, value DOUBLE PRECISION)')
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                     "RAISE EXCEPTION 'this table takes no rows today'; END $$ LANGUAGE plpgsql")
        conn.execute(f'CREATE TRIGGER refuse BEFORE INSERT ON "{realm}_net"."gw_node_3_sensors" '
                     "FOR EACH ROW EXECUTE FUNCTION refuse()")
    gateway = GatewayProcess(gateway_config(str(tmp_path), broker.port, realm, database.url), str(tmp_path / "gw.log"))
    gateway.start()
    stream = Stream(broker.port, topics(realm), 5_000, rate=2500).start()
    stream.finish()

    def dead_seqs():
        with psycopg.connect(database.url) as conn:
            rows = conn.execute("SELECT payload, error FROM public.lorrygate_dead_letter WHERE topic LIKE %s",
                                (f"{realm}/%",)).fetchall()
        return [json.loads(bytes(payload))["seq"] for payload, _ in rows], {error for _, error in rows}

    wait_for_rows(lambda: len(pg_seqs(database.url, realm)) + len(dead_seqs()[0]), 5_000, 60, "5,000 rows and dead letters")
    assert gateway.stop() == 0
    stored = pg_seqs(database.url, realm)
    dead, errors = dead_seqs()
    report("one table failing", 5_000, stored + dead, started)
    assert set(stored) == {s for s in range(5_000) if s % 10 != 3}
    assert set(dead) == {s for s in range(5_000) if s % 10 == 3}
    assert all("this table takes no rows today" in error for error in errors)


@pytest.fixture
def small_disk(tmp_path):
    """A filesystem of its own with little room (a tmpfs), grown later by a remount: a full disk, for real."""
    import subprocess

    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({mounted.stderr.strip()}): a full disk needs one")
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def stored_once_there_is_room(disk, realm: str, count: int, gateway, what: str, started: float) -> None:
    """Grow the small disk; every message is stored, once, and the gateway stops cleanly."""
    import subprocess

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    wait_for_rows(lambda: len(set(sqlite_seqs(str(disk / "gw.sqlite"), realm.lower()))), count, 120,
                  f"all {count:,} messages once the disk has room")
    assert gateway.stop() == 0
    seqs = sqlite_seqs(str(disk / "gw.sqlite"), realm.lower())
    report(what, count, seqs, started)
    assert set(seqs) == set(range(count))


def test_a_full_disk_holds_the_acknowledgements_and_loses_nothing(tmp_path, broker, small_disk):
    """The database and the spool on a disk that fills up (an edge box's SD card): SQLite says the disk is full,
    the spool cannot take the batch either, so nothing is acknowledged and the broker keeps the rest; once the
    disk has room again, every message is stored."""

    started = time.monotonic()
    realm = f"f{uuid.uuid4().hex[:8]}"
    config = gateway_config(str(small_disk), broker.port, realm, f"sqlite:///{small_disk}/gw.sqlite",
                            "synchronous = NORMAL\nmax_pending = 2000\n")
    disk = os.statvfs(small_disk)
    with open(small_disk / "filler", "wb") as handle:  # leave some 300 KB
        handle.write(b"\0" * (disk.f_bavail * disk.f_frsize - 300_000))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm), 5_000, rate=2500).start()
    stream.finish()
    full = wait_until(lambda: (lambda s: s if s and s["failures"] and "full" in s["last_error"] else None)(
        status(config)), 60, "the disk to fill up")
    assert "database or disk is full" in full["last_error"] and "is full: free some room there" in full["last_error"]
    assert len(sqlite_seqs(str(small_disk / "gw.sqlite"), realm.lower())) < 5_000
    assert any("cannot spool" in e.get("message", "") and "No space left on device" in e.get("message", "")
               for e in gateway.events())

    stored_once_there_is_room(small_disk, realm, 5_000, gateway, "disk full", started)


def test_a_gateway_that_starts_on_a_full_disk_starts_and_stores_everything_once_there_is_room(tmp_path, broker,
                                                                                               small_disk):
    """An edge box that boots with its SD card full: no lock description, no spool identity, no SQLite file can
    be written. The gateway starts all the same (it refused with a traceback: "No space left on device"),
    acknowledges nothing, and stores every message once the disk has room."""

    started = time.monotonic()
    realm = f"f{uuid.uuid4().hex[:8]}"
    config = gateway_config(str(small_disk), broker.port, realm, f"sqlite:///{small_disk}/gw.sqlite",
                            "synchronous = NORMAL\n")
    disk = os.statvfs(small_disk)
    with open(small_disk / "filler", "wb") as handle:
        try:
            handle.write(b"\0" * (disk.f_bavail * disk.f_frsize))
        except OSError:
            pass  # (full)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="lorrygate is running")
    assert any("database or disk is full" in e.get("message", "") and "starting anyway" in e.get("message", "")
               for e in gateway.events())
    stream = Stream(broker.port, topics(realm), 1_000, rate=1000).start()
    stream.finish()
    wait_until(lambda: (lambda s: s and s["pending"] > 0 and s["failures"])(status(config)), 60,
               "messages waiting for room")
    stored_once_there_is_room(small_disk, realm, 1_000, gateway, "started on a full disk", started)

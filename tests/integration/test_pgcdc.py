"""
PostgreSQL change data capture against a real PostgreSQL with wal_level =
logical (started by the test) and the wal2json plugin (Debian's
postgresql-15-wal2json): 10,000 inserts and 1,000 updates replicated into
SQLite while the gateway is SIGKILLed once: nothing lost, and nothing left
in the slot afterwards.
"""

import glob
import json
import signal
import textwrap
import threading
import uuid

import psycopg
import pytest
import pytest_twisted

from tests.gatewayproc import GatewayProcess, query, tables
from tests.servers import PostgreSQL, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/lib/wal2json.so"),
                                 reason="wal2json is not installed (make test installs postgresql-15-wal2json)")]


@pytest.fixture
def source_db():
    server = PostgreSQL(options="-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4").start()
    yield server
    server.stop()


def pending_changes(url, slot) -> int | None:
    """Changes left in the slot; None while the gateway is reading it (a slot serves one reader at a time: a peek
    that meets the gateway's own fails with ObjectInUse, which made this check fail on a loaded machine)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, NULL, 'format-version', '2')",
                                [slot]).fetchall()
    except psycopg.errors.ObjectInUse:
        return None
    return sum(1 for (data,) in rows if '"action":"B"' not in data and '"action":"C"' not in data)


def cdc_source(source_db, create: str, table: str, deliver):
    """A CdcSource on the test reactor, over a new slot and the new table ``create`` makes; (source, slot)."""
    from twisted.internet import reactor

    from lorrygate.config.settings import SourceSettings
    from lorrygate.sources.pgcdc import CdcSource

    slot = f"lg_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(source_db.url, autocommit=True) as conn:
        conn.execute(create)
    settings = SourceSettings(name="plant", type="pgcdc", database=source_db.url, slot=slot,
                              tables=(f"public.{table}",), topic="t", interval=0.05)
    return CdcSource("cdc", settings, deliver, reactor), slot


def test_inserts_and_updates_replicated_through_a_sigkill(tmp_path, source_db):
    realm = f"c{uuid.uuid4().hex[:6]}"
    slot = f"lg_{realm}"
    with psycopg.connect(source_db.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE readings (id integer PRIMARY KEY, value double precision, note text)")
        conn.execute("CREATE TABLE other (id integer PRIMARY KEY)")
    path = tmp_path / "gateway.ini"
    path.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {tmp_path}
        log_format = json
        control = off

        [source:plant]
        type = pgcdc
        database = {source_db.url}
        slot = {slot}
        tables = public.readings
        topic = {realm}

        [storage:db]
        url = sqlite:///{tmp_path}/gateway.sqlite

        [channel:main]
        source = plant
        strategy = topic
        topics = #
        """))
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(str(path), str(tmp_path / "gw.log"))
    gateway.start(ready="reading the replication slot")

    def workload():
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            for start in range(0, 10_000, 100):
                with conn.transaction():
                    with conn.cursor() as cursor:
                        cursor.executemany("INSERT INTO readings VALUES (%s, %s, 'new')",
                                           [(i, i * 0.5) for i in range(start, start + 100)])
                conn.execute("INSERT INTO other VALUES (%s)", [start])  # not captured
            for start in range(0, 1_000, 100):
                conn.execute("UPDATE readings SET value = value + 1000, note = 'updated' WHERE id >= %s AND id < %s",
                             [start, start + 100])

    writer = threading.Thread(target=workload)
    writer.start()

    def rows():
        found = [t for t in tables(db) if t.startswith(realm)]
        return query(db, f'SELECT op, id, value FROM "{found[0]}"') if found else []

    wait_until(lambda: len(rows()) >= 3_000, 60, "3,000 changes stored")
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    gateway.start(ready="reading the replication slot")
    writer.join(120)
    wait_until(lambda: len({(op, i) for op, i, _ in rows()}) == 11_000, 120, "10,000 inserts and 1,000 updates")
    wait_until(lambda: pending_changes(source_db.url, slot) == 0, 60, "the slot read to its end")
    assert gateway.stop() == 0
    found = rows()
    inserts = {i for op, i, _ in found if op == "insert"}
    updates = {i: v for op, i, v in found if op == "update"}
    assert inserts == set(range(10_000)) and set(updates) == set(range(1_000))
    assert updates[7] == 7 * 0.5 + 1000
    assert {t for t in tables(db) if t.startswith(realm)} == {f"{realm}__public_readings"}
    with psycopg.connect(source_db.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()[0] == 1
    print(f"CDC through a SIGKILL: {len(found)} rows for 11,000 changes ({len(found) - 11_000} again)")


@pytest_twisted.ensureDeferred
async def test_changes_in_flight_are_not_handed_over_again_after_a_lost_connection(source_db):
    """The source's connection killed (a PostgreSQL restart, a network cut) while changes are in flight:
    after the reconnection the slot, not advanced past them, returns them again, and those the gateway
    still holds are not handed over a second time (they were: every change in flight stored twice). Once
    they are committed downstream, the slot is advanced past them on the new connection."""
    from tests.integration.test_amqp import until

    held, seen = [], []

    def hold(message):
        held.append(message)
        seen.append(json.loads(message.payload)["id"])

    source, slot = cdc_source(source_db, "CREATE TABLE held (id integer PRIMARY KEY)", "held", hold)
    source.startService()
    try:
        await until(lambda: source.connected, "the slot read")
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            for start in range(0, 100, 10):
                with conn.transaction():
                    for n in range(start, start + 10):
                        conn.execute("INSERT INTO held VALUES (%s)", [n])
        await until(lambda: len(held) == 100, "the 100 changes")
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                         "AND backend_type = 'client backend'")
            await until(lambda: not source.connected, "the source to see its connection gone")
            await until(lambda: source.connected, "the source to connect again")
            conn.execute("INSERT INTO held VALUES (100)")
        # A later transaction comes after the ones in the slot before it: once it is here, those were read.
        await until(lambda: 100 in seen, "the change made after the reconnection")
        for message in held:
            message.ack.ack()
        await until(lambda: pending_changes(source_db.url, slot) == 0, "the slot advanced past every change")
    finally:
        await source.stopService()
    assert sorted(seen) == list(range(101)), f"{len(seen) - len(set(seen))} changes handed over twice"


@pytest_twisted.ensureDeferred
async def test_a_transaction_of_30000_rows_is_handed_over_a_chunk_at_a_time_under_backpressure(source_db):
    """A bulk INSERT ... SELECT is one transaction: its changes were read whole (a peek's fetchall), parsed and
    handed over at once, past any pause (a transaction of 200,000 rows took the gateway to 574 MB). They are
    streamed and handed over a chunk at a time: while the storage holds the source paused, at most the chunk in
    hand and those queued arrive; on resume the rest, each once, and the slot is advanced past them."""
    from lorrygate.sources.pgcdc import CHUNK, CHUNKS_QUEUED
    from tests.integration.test_amqp import until

    held, seen = [], []

    def hold(message):
        held.append(message)
        seen.append(json.loads(message.payload)["id"])
        if len(seen) == 5_000:
            source.pause("the test's storage")

    source, slot = cdc_source(source_db, "CREATE TABLE bulk (id integer PRIMARY KEY, value double precision)",
                              "bulk", hold)
    source.startService()
    try:
        await until(lambda: source.connected, "the slot read")
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            conn.execute("INSERT INTO bulk SELECT g, g * 0.5 FROM generate_series(1, 30000) g")
        await until(lambda: source.held_back and len(seen) >= 5_000, "the reading thread held back by the pause")
        assert len(seen) <= 5_000 + CHUNK * (1 + CHUNKS_QUEUED), len(seen)
        source.resume("the test's storage")
        await until(lambda: len(seen) == 30_000, "the 30,000 changes")
        for message in held:
            message.ack.ack()
        await until(lambda: pending_changes(source_db.url, slot) == 0, "the slot advanced past every change")
    finally:
        await source.stopService()
    assert sorted(seen) == list(range(1, 30_001))


@pytest_twisted.ensureDeferred
async def test_json_and_jsonb_values_come_as_json_not_as_text(source_db):
    """wal2json writes a json or jsonb column's value as its text: it came into the payload as a string, one
    TEXT column of JSON; now the value itself, so its keys are fields as any JSON payload's are. A NaN of a
    numeric or float column is null (no value), as wal2json writes it. A TRUNCATE is a change of its own."""
    from tests.integration.test_amqp import until

    seen = []

    def hold(message):
        seen.append(json.loads(message.payload))
        message.ack.ack()

    source, slot = cdc_source(source_db, "CREATE TABLE docs (id integer PRIMARY KEY, body jsonb, raw json, "
                                         "f double precision, note text)", "docs", hold)
    source.startService()
    try:
        await until(lambda: source.connected, "the slot read")
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            conn.execute("""INSERT INTO docs VALUES (1, '{"wifi": {"rssi": -60}, "on": true}', '[1, 2]', 'NaN',"""
                         """ '{"not": "json typed"}')""")
            conn.execute("INSERT INTO docs VALUES (2, 'null', '\"x\"', 1.5, NULL)")
            conn.execute("TRUNCATE docs")
        await until(lambda: len(seen) == 3, "the two inserts and the truncate")
    finally:
        await source.stopService()
    assert seen == [
        {"op": "insert", "id": 1, "body": {"wifi": {"rssi": -60}, "on": True}, "raw": [1, 2], "f": None,
         "note": '{"not": "json typed"}'},
        {"op": "insert", "id": 2, "body": None, "raw": "x", "f": 1.5, "note": None},
        {"op": "truncate"},  # (it was left out: a consumer could not tell that the rows were gone)
    ]


@pytest_twisted.ensureDeferred
async def test_a_change_has_its_transactions_commit_time(source_db):
    """A change's row (its table has no time column) was stored at the time the gateway read it: the rows of one
    transaction at different times, and a change that came again after a crash at another, so that an idempotent
    storage kept it twice. It is its transaction's commit time (track_commit_timestamp tells it here)."""
    from tests.integration.test_amqp import until

    seen = []

    def hold(message):
        seen.append((json.loads(message.payload)["id"], message.sent))
        message.ack.ack()

    source, slot = cdc_source(source_db, "CREATE TABLE steps (id integer PRIMARY KEY)", "steps", hold)
    with psycopg.connect(source_db.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    source_db.halt()
    source_db.resume()
    source.startService()
    try:
        await until(lambda: source.connected, "the slot read")
        with psycopg.connect(source_db.url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("INSERT INTO steps VALUES (1), (2)")
                conn.execute("SELECT pg_sleep(0.2)")
            conn.execute("INSERT INTO steps VALUES (3)")
            committed = {row_id: stamp.timestamp() for row_id, stamp in conn.execute(
                "SELECT id, pg_xact_commit_timestamp(xmin) FROM steps").fetchall()}
        await until(lambda: len(seen) == 3, "the three inserts")
    finally:
        await source.stopService()
    assert [row_id for row_id, _ in seen] == [1, 2, 3]
    assert all(sent == pytest.approx(committed[row_id], abs=1e-6) for row_id, sent in seen), (seen, committed)
    assert seen[0][1] == seen[1][1] < seen[2][1]

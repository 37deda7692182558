"""
``lorrygate dead-letters``: messages dead-lettered by a missing decoder
(through a real Mosquitto) are replayed once the decoder is configured: the
right rows appear in the right tables, the dead letters are marked
replayed, a second replay does nothing, what still fails stays; into
SQLite, and into PostgreSQL with a SQLite tee. A batch of lines with bad
lines keeps only those as its dead letter, and their replay stores them.
"""

import json
import subprocess
import sys
import textwrap
import uuid

import psycopg
import pytest

from tests.gatewayproc import GatewayProcess, Publisher, query, tables
from tests.servers import wait_until

pytestmark = pytest.mark.integration


def write_config(path, port, realm, decoders, storage, tee=False, extra=""):
    path.write_text(extra + textwrap.dedent(f"""
        [lorrygate]
        data_dir = {path.parent}/var
        log_format = json
        control = off

        [broker:test]
        host = 127.0.0.1
        port = {port}
        client_id = dl-{realm}

        [storage:db]
        url = {storage}

        [storage:copy]
        url = sqlite:///{path.parent}/copy.sqlite

        [channel:main]
        source = test
        topics = {realm}/#
        qos = 1
        decoders = {decoders}
        storage = {"db, copy" if tee else "db"}
        """))
    return str(path)


def cli(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def publish_mixed(port, realm):
    """300 JSON messages, 200 key=value ones (not decodable without kv), 5 that nothing decodes."""
    messages = [(f"{realm}/net/gw/node-{i % 3}/data.json", json.dumps({"seq": i, "t": 20.5})) for i in range(300)]
    messages += [(f"{realm}/net/gw/node-{i % 3}/data.json", f"seq={i} t=21.5") for i in range(300, 500)]
    messages += [(f"{realm}/net/gw/node-9/data.json", b"\xff\xfe garbage") for _ in range(5)]
    publisher = Publisher(port)
    publisher.publish_many(messages)
    publisher.close()


def test_replay_after_the_decoder_is_configured_into_sqlite(tmp_path, mosquitto):
    realm = f"d{uuid.uuid4().hex[:6]}"
    db = str(tmp_path / "db.sqlite")
    config = write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json", f"sqlite:///{db}")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="subscribed to")
    publish_mixed(mosquitto.port, realm)

    def stored():
        rows = sum(query(db, f'SELECT count(*) FROM "{t}"')[0][0] for t in tables(db) if t.startswith(realm))
        dead = query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0] if "lorrygate_dead_letter" in tables(db) else 0
        return rows, dead

    wait_until(lambda: stored() == (300, 205), 60, "300 rows and 205 dead letters")
    assert gateway.stop() == 0
    listed = cli("dead-letters", "list", "-c", config)
    assert "205 dead letter(s), 205 not replayed" in listed

    write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json, kv", f"sqlite:///{db}")
    replayed = cli("dead-letters", "replay", "-c", config, "--stage", "decode")
    assert "200 replayed (200 rows), 5 still failing" in replayed, replayed
    seqs = sorted(seq for t in tables(db) if t.startswith(realm) for (seq,) in query(db, f'SELECT seq FROM "{t}"'))
    assert seqs == list(range(500))
    # each row in its node's table, at the time the gateway received it
    node0 = f"{realm}_net__gw_node_0_sensors"
    assert sorted(s for (s,) in query(db, f'SELECT seq FROM "{node0}"')) == list(range(0, 500, 3))
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter WHERE replayed IS NOT NULL") == [(200,)]
    # what still fails tells why with the replay's chain, not the one it was kept by ([json])
    (error,), = query(db, "SELECT DISTINCT error FROM lorrygate_dead_letter WHERE replayed IS NULL")
    assert error.startswith("no decoder of the chain [json,kv] accepted the payload (json: "), error
    assert "kv: " in error and "still failing: decode: no decoder of the chain [json,kv]" in replayed, replayed
    again = cli("dead-letters", "replay", "-c", config)
    assert "0 replayed (0 rows), 5 still failing" in again, again
    assert len(seqs) == sum(query(db, f'SELECT count(*) FROM "{t}"')[0][0] for t in tables(db) if t.startswith(realm))
    assert "purged 200" in cli("dead-letters", "purge", "-c", config, "--replayed", "--yes")
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(5,)]


def test_replay_into_postgresql_with_a_tee(tmp_path, mosquitto, postgres):
    realm = f"d{uuid.uuid4().hex[:6]}"
    config = write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json", postgres.url, tee=True)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="subscribed to")
    publish_mixed(mosquitto.port, realm)

    def pg(sql, params=()):
        with psycopg.connect(postgres.url) as conn:
            return conn.execute(sql, params).fetchall()

    def pg_seqs():
        found = pg("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = %s", [realm + "_net"])
        return sorted(seq for schema, table in found for (seq,) in pg(f'SELECT seq FROM "{schema}"."{table}"'))

    def dead():
        return pg("SELECT count(*) FROM lorrygate_dead_letter WHERE channel = 'main' AND topic LIKE %s",
                  [realm + "/%"])[0][0]

    wait_until(lambda: (len(pg_seqs()), dead()) == (300, 205), 60, "300 rows and 205 dead letters")
    assert gateway.stop() == 0
    write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json, kv", postgres.url, tee=True)
    out = cli("dead-letters", "replay", "-c", config, "--topic", f"{realm}/#")
    assert "200 replayed (200 rows), 5 still failing" in out, out
    assert pg_seqs() == list(range(500))
    errors = pg("SELECT DISTINCT error FROM lorrygate_dead_letter WHERE topic LIKE %s AND replayed IS NULL",
                [realm + "/%"])
    assert len(errors) == 1 and errors[0][0].startswith("no decoder of the chain [json,kv]"), errors
    copy = str(tmp_path / "copy.sqlite")
    copied = sorted(seq for t in tables(copy) if t.startswith(realm) for (seq,) in query(copy, f'SELECT seq FROM "{t}"'))
    assert copied == list(range(500))
    assert "0 replayed" in cli("dead-letters", "replay", "-c", config, "--topic", f"{realm}/#")


def test_replay_on_a_dask_cluster_from_postgresql(tmp_path, mosquitto, postgres):
    """``lorrygate backfill --source dead-letters``: the same replay in tasks of id ranges on a local Dask cluster."""
    pytest.importorskip("distributed")
    realm = f"d{uuid.uuid4().hex[:6]}"
    config = write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json", postgres.url)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="subscribed to")
    publish_mixed(mosquitto.port, realm)

    def pg(sql, params=()):
        with psycopg.connect(postgres.url) as conn:
            return conn.execute(sql, params).fetchall()

    def seqs():
        found = pg("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [realm + "_net"])
        return sorted(seq for (table,) in found for (seq,) in pg(f'SELECT seq FROM "{realm}_net"."{table}"'))

    def waiting():
        return pg("SELECT count(*) FROM lorrygate_dead_letter WHERE topic LIKE %s AND replayed IS NULL",
                  [realm + "/%"])[0][0]

    wait_until(lambda: (len(seqs()), waiting()) == (300, 205), 60, "300 rows and 205 dead letters")
    assert gateway.stop() == 0
    write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json, kv", postgres.url)
    out = cli("backfill", "-c", config, "--source", "dead-letters", "--topic", f"{realm}/#", "--workers", "1")
    assert "dead letters replayed" in out and "Dask dashboard" in out, out
    assert seqs() == list(range(500)) and waiting() == 5


def test_a_replayed_message_refused_again_keeps_its_one_dead_letter(tmp_path, mosquitto, postgres):
    """A dead letter that decodes now but whose row PostgreSQL refuses (text into a DOUBLE column) was marked
    replayed and kept anew: every replay added one more dead letter of the same message."""
    realm = f"d{uuid.uuid4().hex[:6]}"
    config = write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json", postgres.url)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="subscribed to")
    topic = f"{realm}/net/gw/node-1/data.json"
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(topic, json.dumps({"seq": 1, "t": 20.5})), (topic, "seq=2 t=abc"), (topic, "seq=3 t=21.5")])
    publisher.close()

    def pg(sql, params=()):
        with psycopg.connect(postgres.url) as conn:
            return conn.execute(sql, params).fetchall()

    def dead():
        return pg("SELECT stage, replayed IS NOT NULL FROM lorrygate_dead_letter WHERE topic = %s ORDER BY id", [topic])

    wait_until(lambda: len(dead()) == 2, 60, "2 dead letters")
    assert gateway.stop() == 0
    write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "json, kv", postgres.url)
    out = cli("dead-letters", "replay", "-c", config, "--topic", topic)
    assert "1 replayed (1 rows), 1 still failing" in out and "still failing: store: " in out, out
    assert dead() == [("store", False), ("decode", True)]
    assert sorted(pg(f'SELECT seq FROM "{realm}_net"."gw_node_1_sensors"')) == [(1,), (3,)]
    again = cli("dead-letters", "replay", "-c", config, "--topic", topic)
    assert "0 replayed (0 rows), 1 still failing" in again, again
    assert dead() == [("store", False), ("decode", True)]


def test_list_purge_and_replay_go_page_by_page_through_thousands_of_dead_letters(tmp_path):
    """2,500 dead letters in SQLite (pages of 1,000, the topic filter applied to each): the list counts them all
    in one line of their kind and shows the latest; a replay whose channel now decodes them stores each once,
    across pages; a purge deletes what matches."""
    import sqlite3

    from lorrygate.model import Message
    from lorrygate.storage.batch import Batch, DeadLetter
    from lorrygate.storage.sqlite import SQLiteStorage

    db = tmp_path / "db.sqlite"
    store = SQLiteStorage("db", str(db), reactor=None)
    store._connect()
    batch = Batch()
    for n in range(2500):
        topic = f"r/n/g/{'keep' if n % 2 else 'other'}/data.json"
        batch.add_dead_letter(DeadLetter("main", Message(topic, f"seq={n}".encode(), 1, False, 1.0 + n, "#"),
                                         "decode", f"not JSON: {n} at line {n % 7}", "json"))
    store._commit(batch)
    store._close()
    config = tmp_path / "gateway.ini"

    def run(*args, decoders="json"):
        config.write_text(f"[broker:b]\nhost = h\n[storage:db]\nurl = sqlite:///{db}\n"
                          f"[channel:main]\ntopics = r/#\ndecoders = {decoders}\n")
        return cli("dead-letters", *args, "-c", str(config)).splitlines()

    from types import SimpleNamespace

    from lorrygate.storage.dead_letters import CHUNK, Filters, Table

    table = Table(SimpleNamespace(kind="sqlite", path=str(db)))
    sizes = [len(page) for page in table.pages(Filters(topic="r/n/g/keep/#"))]
    table.close()
    assert sizes == [CHUNK // 2, CHUNK // 2, 250]  # (a page a query of CHUNK rows, the filter's part of it)
    listed = run("list", "--topic", "r/n/g/keep/#", "--limit", "1")
    assert listed[:2] == ["storage db: 1250 dead letter(s), 1250 not replayed",
                          "     1250  channel main, decode: not JSON: 2499 at line 0"]
    assert len(listed) == 3 and listed[2].startswith("  #2500 ") and "'seq=2499'" in listed[2]
    assert run("replay", "--topic", "r/n/g/keep/#", decoders="json, kv")[0] == (
        "storage db: 1250 replayed (1250 rows), 0 still failing, 0 of channels not in the config")
    with sqlite3.connect(db) as conn:
        seqs = [seq for (seq,) in conn.execute('SELECT seq FROM "r_n__g_keep_sensors" ORDER BY seq')]
    assert seqs == list(range(1, 2500, 2))
    assert run("purge", "--replayed", "--yes") == ["storage db: purged 1250 dead letter(s)"]
    assert run("list", "--limit", "0") == ["storage db: 1250 dead letter(s), 1250 not replayed",
                                           "     1250  channel main, decode: not JSON: 2498 at line 6"]


def test_a_dead_letter_kept_by_reference_is_never_marked_replayed(tmp_path):
    """A message over its source's limit (max_payload, max_line) is kept by its size and SHA-256 only: a replay
    decoded its empty payload, found nothing to store and marked it replayed (so ``purge --replayed`` deleted the
    one trace of it). It counts as still failing, says why, and stays."""
    import sqlite3

    from lorrygate.model import Message
    from lorrygate.storage.batch import Batch, DeadLetter
    from lorrygate.storage.sqlite import SQLiteStorage

    db = tmp_path / "db.sqlite"
    store = SQLiteStorage("db", str(db), reactor=None)
    store._connect()
    batch = Batch()
    batch.add_dead_letter(DeadLetter("main", Message("r/n/g/big/data.json", b"", 1, False, 1.0, "#",
                                                     oversize=(9_000_000, "ab" * 32)),
                                     "size", "a payload of 9000000 bytes is larger than the broker's max_payload; "
                                             "kept by reference, not by copy: sha256 " + "ab" * 32, ""))
    batch.add_dead_letter(DeadLetter("main", Message("r/n/g/ok/data.json", b"t=1", 1, False, 2.0, "#"),
                                     "decode", "not JSON", "json"))
    store._commit(batch)
    store._close()
    config = tmp_path / "gateway.ini"
    config.write_text(f"[broker:b]\nhost = h\n[storage:db]\nurl = sqlite:///{db}\n"
                      f"[channel:main]\ntopics = r/#\ndecoders = json, kv\n")
    said = cli("dead-letters", "replay", "-c", str(config)).splitlines()
    assert said[0] == "storage db: 1 replayed (1 rows), 1 still failing, 0 of channels not in the config", said
    assert "size: kept by reference (its size and SHA-256), not by copy: it cannot be replayed" in said[1], said
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT stage, replayed IS NULL FROM lorrygate_dead_letter ORDER BY id").fetchall() == [
            ("size", 1), ("decode", 0)]

def _logger(columns: str) -> str:
    return textwrap.dedent(f"""
        [decoder:logger]
        type = csv
        columns = {columns}
        """)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_good_lines_are_stored_the_bad_ones_kept_alone_and_replayed_once_mended(tmp_path, mosquitto, kind,
                                                                                    request):
    """A batch of lines with bad lines: its good lines are rows, its bad lines alone (after the CSV header as
    sent) a dead letter, committed together; once the channel's decoder is mended, a replay of the dead letter
    stores the bad lines, and nothing twice."""
    realm = f"p{uuid.uuid4().hex[:6]}"
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/db.sqlite"

        def sql(statement, params=()):
            return query(str(tmp_path / "db.sqlite"), statement.replace("%s", "?"), params)

        table = f'"{realm}_net__gw_node_1_sensors"'
    else:
        postgres = request.getfixturevalue("postgres")
        url = postgres.url

        def sql(statement, params=()):
            with psycopg.connect(postgres.url) as conn:
                return conn.execute(statement, params).fetchall()

        table = f'"{realm}_net"."gw_node_1_sensors"'
    config = write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "logger, ndjson", url,
                          extra=_logger("time, temp"))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="subscribed to")
    csv = b"1700000000,20.5\n1700000060,20.7,55\n1700000120,20.9\n1700000180,21.1,54\n"
    # (the NDJSON's bad line: NUL bytes, a serial link's noise; PostgreSQL keeps them in no text)
    ndjson = b'{"time": 1700000300, "temp": 22.5}\n{"time": 1700000360, "temp": \x00\x00\n{"time": 1700000420, "temp": 22.9}\n'
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/node-1/data.csv", csv), (f"{realm}/net/gw/node-1/data.ndjson", ndjson)])
    publisher.close()

    def dead():
        return sql("SELECT topic, payload, stage, decoder, error FROM lorrygate_dead_letter WHERE topic LIKE %s "
                   "ORDER BY topic", (realm + "/%",))

    def temps():
        try:
            return sorted(temp for (temp,) in sql(f"SELECT temp FROM {table}"))
        except Exception:  # (the table is made with the first commit)
            return []

    wait_until(lambda: len(temps()) == 4 and len(dead()) == 2, 60, "4 rows and 2 dead letters")
    assert temps() == [20.5, 20.9, 22.5, 22.9]
    (csv_topic, csv_kept, stage, decoder, error), (_, ndjson_kept, _, _, ndjson_error) = dead()
    assert (csv_topic, bytes(csv_kept), stage, decoder) == (
        f"{realm}/net/gw/node-1/data.csv", b"1700000060,20.7,55\n1700000180,21.1,54\n", "decode", "logger")
    assert error == "2 of 4 data lines: line 2 has 3 values for 2 columns (time, temp); line 4 has 3 values for 2 " \
                    "columns (time, temp)"
    assert bytes(ndjson_kept) == b'{"time": 1700000360, "temp": \x00\x00\n' and ndjson_error == "line 2 has NUL characters"
    assert gateway.stop() == 0
    assert "was stored except for the 2 data lines that could not be decoded: 2 of 4 data lines" in gateway.text()

    # the device's new firmware sends a third column: with it configured, the dead letter's lines are stored
    write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "logger, ndjson", url,
                 extra=_logger("time, temp, humidity"))
    replayed = cli("dead-letters", "replay", "-c", config, "--topic", f"{realm}/#")
    assert "1 replayed (2 rows), 1 still failing" in replayed, replayed
    assert sorted(sql(f"SELECT temp, humidity FROM {table} WHERE humidity IS NOT NULL")) == [(20.7, 55), (21.1, 54)]
    assert len(temps()) == 6

"""PostgreSQL and SQLite through the whole gateway: per-address tables, new columns, type conflicts."""

import json
import subprocess
import sys
import textwrap
import uuid

import psycopg

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, query, tables
from tests.servers import wait_until


def config(directory, broker_port, pg_url, realm, extra_storage=""):
    path = f"{directory}/gateway.ini"
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s

            [broker:test]
            host = 127.0.0.1
            port = {broker_port}
            client_id = gw-{realm}

            [storage:pg]
            url = {pg_url}
            {extra_storage}

            [storage:lite]
            url = sqlite:///{directory}/gateway.sqlite
            synchronous = NORMAL

            [channel:to-pg]
            source = test
            topics = {realm}/#
            storage = pg

            [channel:to-sqlite]
            source = test
            topics = {realm}/#
            storage = lite
            """))
    return path


def pg_rows(url, sql):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def pg_tables(url, prefix):
    return {
        f"{schema}.{table}"
        for schema, table in pg_rows(url, "SELECT table_schema, table_name FROM information_schema.tables")
        if schema.startswith(prefix)
    }


def pg_count(url, prefix):
    return sum(pg_rows(url, f'SELECT count(*) FROM "{t.split(".")[0]}"."{t.split(".")[1]}"')[0][0]
               for t in pg_tables(url, prefix))


def test_20000_messages_over_200_addresses(tmp_path, mosquitto, postgres):
    """20,000 messages over 200 addresses land in 200 PostgreSQL and 200 SQLite tables with the right values."""
    realm = f"st{uuid.uuid4().hex[:8]}"
    path = config(str(tmp_path), mosquitto.port, postgres.url, realm)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start()
    wait_until(lambda: sum("connected to" in e.get("message", "") for e in gateway.events()) >= 2, 20, "2 channels")
    publisher = Publisher(mosquitto.port)
    messages = []
    for seq in range(20_000):
        node = seq % 200
        network = "north" if node < 100 else "south"
        messages.append((f"{realm}/{network}/gw/node-{node}/data.json",
                         json.dumps({"seq": seq, "temperature": round(seq * 0.01, 2), "ok": seq % 2 == 0,
                                     "time": 1_717_243_200_000 + seq})))
    publisher.publish_many(messages)
    db = str(tmp_path / "gateway.sqlite")
    wait_until(lambda: pg_count(postgres.url, realm) >= 20_000 and count_rows(db, realm) >= 20_000, 120,
               "20,000 rows in each database")
    assert len(pg_tables(postgres.url, realm)) == 200
    assert len([t for t in tables(db) if t.startswith(realm)]) == 200
    rows = pg_rows(postgres.url, f'SELECT seq, temperature, ok, "time" FROM "{realm}_south"."gw_node_150_sensors" ORDER BY seq')
    assert len(rows) == 100
    seq, temperature, ok, time = rows[0]
    assert (seq, temperature, ok) == (150, 1.5, True)
    assert time.isoformat() == "2024-06-01T12:00:00.150000+00:00"
    lite = query(db, f'SELECT seq, temperature, ok, time FROM "{realm}_south__gw_node_150_sensors" ORDER BY seq')
    assert lite[0] == (150, 1.5, 1, "2024-06-01T12:00:00.150000000Z") and len(lite) == 100
    assert sorted(r[0] for t in pg_tables(postgres.url, realm)
                  for r in pg_rows(postgres.url, f'SELECT seq FROM "{t.split(".")[0]}"."{t.split(".")[1]}"')) == list(range(20_000))

    # a new field adds a column; a float widens an integer column; a text value in a number column is a conflict
    topic = f"{realm}/north/gw/node-1/data.json"
    publisher.publish_many([
        (topic, json.dumps({"seq": 20_001, "temperature": 21, "pressure": 1013.25})),
        (topic, json.dumps({"seq": 20_002.5, "temperature": 21.5})),
        (topic, json.dumps({"seq": 20_003, "temperature": "warm"})),
    ])
    wait_until(lambda: pg_rows(postgres.url, "SELECT count(*) FROM public.lorrygate_dead_letter "
                                             f"WHERE topic = '{topic}'")[0][0] >= 1
               and pg_count(postgres.url, realm) >= 20_002, 30, "the new rows and the conflict")
    assert gateway.stop() == 0
    publisher.close()
    assert pg_rows(postgres.url, f'SELECT pressure FROM "{realm}_north"."gw_node_1_sensors" WHERE seq = 20001') == [(1013.25,)]
    assert pg_rows(postgres.url, f'SELECT seq FROM "{realm}_north"."gw_node_1_sensors" WHERE seq > 20002') == [(20002.5,)]
    ((stage, error, payload),) = pg_rows(
        postgres.url, f"SELECT stage, error, payload FROM public.lorrygate_dead_letter WHERE topic = '{topic}'")
    assert stage == "store" and "invalid input syntax for type double precision" in error and b"warm" in bytes(payload)
    # the error says how to fix it, and that fix works: the column's type changed, the dead letter replayed
    alter = f'ALTER TABLE "{realm}_north"."gw_node_1_sensors" ALTER COLUMN "temperature" TYPE TEXT'
    assert 'column temperature of' in error and "is DOUBLE PRECISION" in error, error
    assert alter in error and "lorrygate dead-letters replay --stage store" in error, error
    assert query(db, f'SELECT temperature FROM "{realm}_north__gw_node_1_sensors" WHERE seq = 20003') == [("warm",)]
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(alter)
    out = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "replay", "-c", path, "--stage", "store",
                          "--topic", topic], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "1 replayed" in out.stdout, out.stdout + out.stderr
    assert pg_rows(postgres.url, f'SELECT temperature FROM "{realm}_north"."gw_node_1_sensors" WHERE seq = 20003') == [
        ("warm",)]


def test_postgresql_idempotent_rows_and_custom_ddl(tmp_path, mosquitto, postgres):
    """With idempotent rows a repeated message is one row; a DDL template (here with a table comment) makes new tables."""
    realm = f"id{uuid.uuid4().hex[:8]}"
    ddl = ('ddl = CREATE TABLE IF NOT EXISTS {qualified} ("time" TIMESTAMPTZ NOT NULL, '
           'lorrygate_id TEXT NOT NULL, PRIMARY KEY ("time", lorrygate_id)); '
           "COMMENT ON TABLE {qualified} IS 'node {node} of {realm}'\nidempotent = true")
    path = config(str(tmp_path), mosquitto.port, postgres.url, realm, extra_storage=ddl)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start()
    wait_until(lambda: sum("connected to" in e.get("message", "") for e in gateway.events()) >= 2, 20, "2 channels")
    publisher = Publisher(mosquitto.port)
    topic = f"{realm}/net/gw/node-7/data.json"
    same = json.dumps({"time": 1_717_243_200_000, "v": 1})
    publisher.publish_many([(topic, same), (topic, same), (topic, json.dumps({"time": 1_717_243_201_000, "v": 2}))])
    wait_until(lambda: pg_count(postgres.url, realm) >= 2, 30, "the rows")
    assert gateway.stop() == 0
    publisher.close()
    assert sorted(r[0] for r in pg_rows(postgres.url, f'SELECT v FROM "{realm}_net"."gw_node_7_sensors"')) == [1, 2]
    ((comment,),) = pg_rows(postgres.url, f"SELECT obj_description('\"{realm}_net\".\"gw_node_7_sensors\"'::regclass)")
    assert comment == f"node node_7 of {realm}"


def stored_through_config(url: str, admin_url: str) -> list:
    """A storage section of ``url`` read by the config loader commits one row: what the database then has."""
    from lorrygate.config.loader import loads
    from lorrygate.model import Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from tests.integration.pgstore import connected

    settings = loads(textwrap.dedent(f"""
        [broker:local]
        host = localhost

        [storage:db]
        url = {url}

        [channel:main]
        source = local
        topics = a/#
        storage = db
        """), source="gateway.ini")
    realm = f"us{uuid.uuid4().hex[:8]}"
    batch = Batch()
    message = Message(f"{realm}/net/gw/node-1/data.json", b'{"v": 1}', 1, False, 1.0, "#")
    batch.add(Entry(TableName(f"{realm}_net", "gw_node_1_sensors"), [Record(1_717_243_200 * 10**9, {"v": 1.5}, {})],
                    "main", message, "json"))
    with connected(settings.storages["db"].url.raw) as store:
        store._commit(batch)
    return pg_rows(admin_url, f'SELECT v FROM "{realm}_net"."gw_node_1_sensors"')


def test_a_postgresql_url_without_a_host_writes_over_the_unix_socket(postgres):
    """``postgresql:///DATABASE`` is libpq's local Unix socket (an edge box's PostgreSQL, peer authentication, no
    TCP): the config refused a URL without a host. Taken, it writes through the socket."""
    url = f"postgresql://{postgres.user}@/postgres?host={postgres.directory}&port={postgres.port}"
    assert stored_through_config(url, postgres.url) == [(1.5,)]


def test_a_generated_password_from_the_environment_reaches_postgresql(postgres, monkeypatch):
    """url = postgresql://USER:${ENV:PGPASSWORD}@HOST/DB with a password of @ / : ? # %: the URL kept its host
    (it went to the host "ss" before). The test server trusts every password: what this proves is the URL."""
    monkeypatch.setenv("LORRYGATE_TEST_PGPASSWORD", "p@ss/w:rd?#%x")
    url = f"postgresql://{postgres.user}:${{ENV:LORRYGATE_TEST_PGPASSWORD}}@127.0.0.1:{postgres.port}/postgres"
    assert stored_through_config(url, postgres.url) == [(1.5,)]

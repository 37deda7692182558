"""
A batch of lines with bad lines, through a real Mosquitto into SQLite and
PostgreSQL: the good lines are rows, the bad lines alone are a dead letter
(with the CSV header as sent), committed together; once the channel's
decoder is mended, a replay of the dead letter stores the bad lines and
nothing twice.
"""

import subprocess
import sys
import textwrap
import uuid

import psycopg
import pytest

from tests.gatewayproc import GatewayProcess, Publisher, query
from tests.servers import wait_until

pytestmark = pytest.mark.integration


def write_config(path, port, realm, columns, storage) -> str:
    path.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {path.parent}/var
        log_format = json
        control = off

        [broker:test]
        host = 127.0.0.1
        port = {port}
        client_id = partly-{realm}

        [storage:db]
        url = {storage}

        [decoder:logger]
        type = csv
        columns = {columns}

        [channel:main]
        source = test
        topics = {realm}/#
        qos = 1
        decoders = logger, ndjson
        storage = db
        """))
    return str(path)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_good_lines_are_stored_the_bad_ones_kept_alone_and_replayed_once_mended(tmp_path, mosquitto, kind,
                                                                                    request):
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
    config = write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "time, temp", url)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start(ready="subscribed to")
    csv = b"1700000000,20.5\n1700000060,20.7,55\n1700000120,20.9\n1700000180,21.1,54\n"
    ndjson = b'{"time": 1700000300, "temp": 22.5}\n{"time": 1700000360, "temp": \n{"time": 1700000420, "temp": 22.9}\n'
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
    assert bytes(ndjson_kept) == b'{"time": 1700000360, "temp": \n' and ndjson_error.startswith("line 2 is not JSON")
    assert gateway.stop() == 0
    assert "was stored except for the 2 data lines that could not be decoded: 2 of 4 data lines" in gateway.text()

    # the device's new firmware sends a third column: with it configured, the dead letter's lines are stored
    write_config(tmp_path / "gateway.ini", mosquitto.port, realm, "time, temp, humidity", url)
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "replay", "-c", config, "--topic",
                           f"{realm}/#"], capture_output=True, text=True, timeout=120)
    assert "1 replayed (2 rows), 1 still failing" in done.stdout, done.stdout + done.stderr
    assert sorted(sql(f"SELECT temp, humidity FROM {table} WHERE humidity IS NOT NULL")) == [(20.7, 55), (21.1, 54)]
    assert len(temps()) == 6

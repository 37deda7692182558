"""
The AMQP source against a real RabbitMQ (Debian's rabbitmq-server, a node of
the test's own on its own ports): routing keys through the topology
strategies into SQLite and PostgreSQL, acknowledged only after commit, so a
SIGKILL mid-stream and a database away for 20 s lose nothing; a wrong
password and an unreachable host are one clear line each, and a status entry.
"""

import json
import os
import signal
import textwrap
import threading
import time
import uuid

import pytest

from tests.faults import report, wait_for_rows
from tests.gatewayproc import GatewayProcess, query, tables
from tests.servers import PostgreSQL, free_port, rabbitmq_broker, stop_epmd, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory):
    broker = rabbitmq_broker(str(tmp_path_factory.mktemp("rabbitmq")), mqtt=False).start()
    yield broker
    broker.stop()
    stop_epmd(broker)


@pytest.fixture
def postgres_per_test():
    """A PostgreSQL of this test's own: the test halts it."""
    server = PostgreSQL().start()
    yield server
    server.stop()


class AmqpStream:
    """Publishes ``count`` messages ``{"seq": n}`` to amq.topic from a thread, in transactions of 500
    (a message counts as published once its transaction committed)."""

    def __init__(self, port: int, keys, count: int, rate: float):
        self.port, self.keys, self.count, self.rate = port, keys, count, rate
        self.published = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pika

        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, credentials=pika.PlainCredentials("lorrygate", "secret")))
        channel = connection.channel()
        channel.tx_select()
        start = time.monotonic()
        for seq in range(self.count):
            delay = start + seq / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = json.dumps({"seq": seq, "time": 1_717_243_200_000 + seq, "value": seq * 0.25})
            channel.basic_publish("amq.topic", self.keys[seq % len(self.keys)], body.encode())
            if seq % 500 == 499 or seq == self.count - 1:
                channel.tx_commit()
                self.published = seq + 1
        connection.close()

    def start(self) -> "AmqpStream":
        self._thread.start()
        return self

    def finish(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert self.published == self.count, f"published {self.published} of {self.count}"


def config(directory, port, realm, url, storage="", broker="", channel="") -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s
            control = tcp:{free_port()}:interface=127.0.0.1

            [broker:rabbit]
            type = amqp
            host = 127.0.0.1
            port = {port}
            username = lorrygate
            password = secret
            reconnect_max_delay = 1s
            """) + textwrap.dedent(broker) + textwrap.dedent(f"""
            [storage:db]
            url = {url}
            """) + textwrap.dedent(storage) + textwrap.dedent(f"""
            [channel:main]
            topics = {realm}/#
            queue = q-{realm}
            """) + textwrap.dedent(channel))
    return path


def keys(realm, nodes=10):
    """Routing keys as RabbitMQ's MQTT plugin writes them: levels are words, the topic's dot a slash."""
    return [f"{realm}.net.gw.node-{n}.data/json" for n in range(nodes)]


def sqlite_seqs(db, prefix):
    return [row[0] for table in tables(db) if table.startswith(prefix) for row in query(db, f'SELECT seq FROM "{table}"')]


def test_amqp_into_sqlite_survives_a_sigkill(tmp_path, rabbitmq):
    """20,000 messages from a topic exchange through the wan strategy on the routing key into SQLite; the
    gateway is SIGKILLed mid-stream and restarted: nothing lost."""
    started = time.monotonic()
    realm = f"a{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), rabbitmq.port, realm, f"sqlite:///{db}",
                                    "synchronous = NORMAL\n"), str(tmp_path / "gw.log")).start()
    stream = AmqpStream(rabbitmq.port, keys(realm), 20_000, rate=4000).start()
    wait_until(lambda: len(sqlite_seqs(db, realm)) >= 5_000, 60, "5,000 rows", interval=0.05)
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    gateway.start()
    stream.finish()
    wait_for_rows(lambda: len(set(sqlite_seqs(db, realm))), 20_000, 120, "all 20,000 messages")
    assert gateway.stop() == 0
    seqs = sqlite_seqs(db, realm)
    duplicates = report("AMQP, SIGKILL", 20_000, seqs, started)
    assert set(seqs) == set(range(20_000))
    # At least once: what was committed but not yet acknowledged when the gateway died comes again.
    assert duplicates <= 2 * 2000, "at most the prefetch window (twice: the batch in flight) is delivered again"
    tables_ = {t for t in tables(db) if t.startswith(realm)}
    assert tables_ == {f"{realm}_net__gw_node_{n}_sensors" for n in range(10)}, tables_


def test_amqp_with_the_database_away_for_20_seconds(tmp_path, rabbitmq, postgres_per_test):
    """PostgreSQL stops for 20 s mid-stream: batches are spooled and drained after; nothing lost."""
    from tests.integration.test_faults import pg_count, pg_seqs

    database = postgres_per_test
    started = time.monotonic()
    realm = f"b{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(config(str(tmp_path), rabbitmq.port, realm, database.url),
                             str(tmp_path / "gw.log")).start()
    stream = AmqpStream(rabbitmq.port, keys(realm), 8_000, rate=300).start()
    wait_for_rows(lambda: pg_count(database.url, realm), 500, 30, "the first rows")
    database.halt()
    time.sleep(20)
    database.resume()
    stream.finish()
    wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), 8_000, 120, "all 8,000 messages")
    assert gateway.stop() == 0
    seqs = pg_seqs(database.url, realm)
    report("AMQP, PostgreSQL down 20 s", 8_000, seqs, started)
    assert set(seqs) == set(range(8_000))
    assert max(e.get("spooled", 0) for e in gateway.events() if e.get("event") == "storage_stats") >= 1


@pytest.mark.parametrize("problem", ["password", "host"])
def test_a_wrong_password_or_host_is_one_clear_line_and_a_status_entry(tmp_path, rabbitmq, problem):
    import subprocess
    import sys

    from lorrygate.control_client import request

    realm = f"c{uuid.uuid4().hex[:8]}"
    port = rabbitmq.port if problem == "password" else free_port()
    path = config(str(tmp_path), port, realm, f"sqlite:///{tmp_path}/x.sqlite")
    text = open(path).read()
    if problem == "password":
        text = text.replace("password = secret", "password = wrong")
    open(path, "w").write(text)
    control = int(text.split("control = tcp:")[1].split(":")[0])
    log = open(tmp_path / "gw.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", path], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        expected = "refused the credentials of user 'lorrygate'" if problem == "password" else "refused"

        def failures():
            lines = (tmp_path / "gw.log").read_text().splitlines()
            return [json.loads(line) for line in lines if "failed" in line and "AMQP source" in line]

        wait_until(lambda: len(failures()) >= 3, 60, "three failed attempts")
        found = failures()
        assert all(expected in e["message"].lower() or expected in e["message"] for e in found), found
        assert all("traceback" not in e and "Traceback" not in e["message"] for e in found)
        text = (tmp_path / "gw.log").read_text()
        assert "Traceback" not in text and "Unhandled" not in text
        status = request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")
        source = status["sources"][0]
        assert not source["connected"] and expected in source["last_error"].lower() or expected in source["last_error"]
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()

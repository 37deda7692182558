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
import pytest_twisted
from twisted.internet import threads

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

    def __init__(self, port: int, keys, count: int, rate: float, first: int = 0, persistent: bool = False,
                 ids: bool = False):
        self.port, self.keys, self.count, self.rate = port, keys, count, rate
        self.first, self.persistent, self.ids = first, persistent, ids
        self.published = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pika

        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, credentials=pika.PlainCredentials("lorrygate", "secret")))
        channel = connection.channel()
        channel.tx_select()
        start = time.monotonic()
        properties = pika.BasicProperties(delivery_mode=2) if self.persistent else None
        for n in range(self.count):
            delay = start + n / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            seq = self.first + n
            body = json.dumps({"seq": seq, "time": 1_717_243_200_000 + seq, "value": seq * 0.25})
            if self.ids:
                properties = pika.BasicProperties(delivery_mode=2 if self.persistent else None, message_id=f"s{seq}")
            channel.basic_publish("amq.topic", self.keys[seq % len(self.keys)], body.encode(), properties)
            if n % 500 == 499 or n == self.count - 1:
                channel.tx_commit()
                self.published = n + 1
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


def confirmed(port: int, key: str, messages) -> None:
    """Publish ``(body, properties)`` messages to amq.topic under ``key``, each confirmed by RabbitMQ."""
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("lorrygate", "secret")))
    channel = connection.channel()
    channel.confirm_delivery()
    for body, properties in messages:
        channel.basic_publish("amq.topic", key, body, properties)
    connection.close()


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


def test_amqp_across_a_rabbitmq_restart(tmp_path):
    """RabbitMQ stops while the gateway works off a queue, and comes back on its port: the source connects
    again, consumes its durable queue, and stores what it held unacknowledged at the stop (delivered again)
    and what came after. Nothing lost, and, the messages carrying a ``message_id``, nothing stored twice:
    neither what was in flight nor what was acknowledged in the last moment before the stop (both come
    again; without the ids, 70-170 of the 8,000 were stored twice)."""
    (tmp_path / "rabbitmq").mkdir()
    broker = rabbitmq_broker(str(tmp_path / "rabbitmq"), mqtt=False).start()
    try:
        started = time.monotonic()
        realm = f"r{uuid.uuid4().hex[:8]}"
        db = str(tmp_path / "gateway.sqlite")
        gateway = GatewayProcess(config(str(tmp_path), broker.port, realm, f"sqlite:///{db}"),
                                 str(tmp_path / "gw.log")).start()
        AmqpStream(broker.port, keys(realm), 6_000, rate=1e9, persistent=True, ids=True).start().finish()
        wait_until(lambda: len(sqlite_seqs(db, realm)) >= 500, 60, "the first rows", interval=0.05)
        broker.stop()
        wait_until(lambda: any("lost" in e.get("message", "") for e in gateway.events()), 30,
                   "the gateway to see the connection lost")
        broker.start()
        AmqpStream(broker.port, keys(realm), 2_000, rate=1e9, first=6_000, persistent=True, ids=True).start().finish()
        wait_for_rows(lambda: len(set(sqlite_seqs(db, realm))), 8_000, 120, "all 8,000 messages")
        assert gateway.stop() == 0
        seqs = sqlite_seqs(db, realm)
        duplicates = report("AMQP, RabbitMQ restarted", 8_000, seqs, started)
        assert set(seqs) == set(range(8_000))
        assert duplicates == 0
        connects = [e for e in gateway.events() if "consuming queue" in e.get("message", "")]
        assert len(connects) >= 2, "connected once only"
    finally:
        broker.stop()
        stop_epmd(broker)


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


async def until(condition, what: str, timeout: float = 60.0) -> None:
    """In a test on the reactor: wait until ``condition()`` holds, looking every 10 ms."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    pytest.fail(f"{what} not within {timeout} s")


@pytest_twisted.ensureDeferred
async def test_pausing_and_resuming_at_once_keeps_the_connection_and_delivers_each_message_once(tmp_path, rabbitmq):
    """Backpressure that lets go before RabbitMQ confirmed the cancel (a batcher at its bound writes and
    reads again within a round trip): the cancelled consumer's end is ours, not a lost channel. It was read
    as one: the connection closed, every unacknowledged message came again, and a stream under backpressure
    stored duplicates and reconnected every second or two."""
    from twisted.internet import reactor

    from lorrygate.config.loader import load
    from lorrygate.sources.amqp import AMQPSource

    realm = f"p{uuid.uuid4().hex[:8]}"
    settings = load(config(str(tmp_path), rabbitmq.port, realm, f"sqlite:///{tmp_path}/x.sqlite"))
    received: list = []
    holder = "storage db"

    def deliver(message):
        received.append(json.loads(message.payload)["seq"])
        reactor.callLater(0.001, message.ack.ack)
        if len(received) % 50 == 0:  # at its bound: paused, and free again a moment later
            source.pause(holder)
            reactor.callLater(0, source.resume, holder)

    count = 3000
    source = AMQPSource("main", settings.brokers["rabbit"], (f"{realm}/#",), deliver, reactor, reactor,
                        queue=f"q-{realm}", prefetch=200)
    source.startService()
    try:
        await source.when_subscribed()
        connection, generation = source._protocol, source._generation
        stream = AmqpStream(rabbitmq.port, keys(realm), count, 1e9)
        await threads.deferToThread(lambda: stream.start().finish())
        await until(lambda: len(received) >= count, f"{count} messages")
        await until(lambda: not source._outstanding and not source._held, "every message acknowledged")
        assert (source._protocol, source._generation) == (connection, generation), (
            f"the connection was lost and opened again: {source.last_error}")
        assert sorted(received) == list(range(count))  # each once
    finally:
        await source.stopService()


def publish_with_ids(port: int, key: str, bodies) -> None:
    """Publish each body with a ``message_id`` of its own, in one transaction."""
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("lorrygate", "secret")))
    channel = connection.channel()
    channel.tx_select()
    for n, body in enumerate(bodies):
        channel.basic_publish("amq.topic", key, body, pika.BasicProperties(message_id=f"m-{n}", delivery_mode=2))
    channel.tx_commit()
    connection.close()


def queue_depth(port: int, queue: str) -> int:
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("lorrygate", "secret")))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_messages_with_an_id_in_flight_across_a_lost_connection_are_handed_over_once(tmp_path, rabbitmq):
    """200 messages with a ``message_id`` are held (read, not yet committed) when the connection is cut;
    RabbitMQ delivers them again on the next one. They are not handed over a second time, their copies are
    acknowledged once the first deliveries commit, and the queue is empty afterwards. (Before: each of the
    200 was handed over twice.)"""
    from twisted.internet import reactor

    from lorrygate.config.loader import load
    from lorrygate.sources.amqp import AMQPSource

    realm = f"i{uuid.uuid4().hex[:8]}"
    settings = load(config(str(tmp_path), rabbitmq.port, realm, f"sqlite:///{tmp_path}/x.sqlite"))
    key = keys(realm)[0]
    held, seen = [], []

    def hold(message):
        seen.append(message.payload)
        if message.payload == b"marker":
            message.ack.ack()
        else:
            held.append(message)

    source = AMQPSource("main", settings.brokers["rabbit"], (f"{realm}/#",), hold, reactor, reactor,
                        queue=f"q-{realm}")
    source.startService()
    try:
        await source.when_subscribed()
        bodies = [f'{{"seq": {n}}}'.encode() for n in range(200)]
        await threads.deferToThread(publish_with_ids, rabbitmq.port, key, bodies)
        await until(lambda: len(held) == 200, "the 200 messages held")
        first = source._protocol
        first.transport.abortConnection()  # a network cut: RabbitMQ requeues the 200 unacknowledged
        await until(lambda: source.connected and source._protocol is not first, "the reconnection")
        # requeued messages keep their place at the head of the queue: once the marker is here, they were sent
        await threads.deferToThread(publish_with_ids, rabbitmq.port, key, [b"marker"])
        await until(lambda: seen and seen[-1] == b"marker", "the marker after the cut")
        assert source.redelivered_in_flight == 200
        for message in held:
            message.ack.ack()
        await until(lambda: not source._outstanding and not source._copies, "the copies acknowledged")
        assert source.status()["redelivered_in_flight"] == 200
    finally:
        await source.stopService()
    assert len(seen) == 201, f"{len(seen) - len(set(seen))} messages handed over again"
    # the acks reached RabbitMQ: nothing of the 200 is left in the queue (a closed consumer's unacked would be)
    assert await threads.deferToThread(queue_depth, rabbitmq.port, f"q-{realm}") == 0


@pytest_twisted.ensureDeferred
async def test_a_consumer_rabbitmq_cancels_is_consumed_again(tmp_path, rabbitmq):
    """RabbitMQ cancels a consumer itself when its queue is deleted (or a node of a cluster goes): the
    source connects again, declares and binds its queue anew, and reads what comes next."""
    import pika
    from twisted.internet import reactor

    from lorrygate.config.loader import load
    from lorrygate.sources.amqp import AMQPSource

    realm = f"c{uuid.uuid4().hex[:8]}"
    settings = load(config(str(tmp_path), rabbitmq.port, realm, f"sqlite:///{tmp_path}/x.sqlite"))
    received: list = []

    def deliver(message):
        received.append(json.loads(message.payload)["seq"])
        message.ack.ack()

    def delete_queue():
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", rabbitmq.port, credentials=pika.PlainCredentials("lorrygate", "secret")))
        connection.channel().queue_delete(f"q-{realm}")
        connection.close()

    source = AMQPSource("main", settings.brokers["rabbit"], (f"{realm}/#",), deliver, reactor, reactor,
                        queue=f"q-{realm}")
    source.startService()
    try:
        await source.when_subscribed()
        generation = source._generation
        await threads.deferToThread(delete_queue)
        await until(lambda: source._generation > generation + 1 and source.connected,
                    f"connected again (generation {source._generation}, last error {source.last_error!r})")
        assert "ConsumerCancelled" in source.last_error
        stream = AmqpStream(rabbitmq.port, keys(realm), 100, 1e9)
        await threads.deferToThread(lambda: stream.start().finish())
        await until(lambda: len(received) >= 100, f"100 messages (got {len(received)})")
        assert sorted(received) == list(range(100))
    finally:
        await source.stopService()


def test_the_queues_lag_is_in_the_status_and_goes_back_to_zero(tmp_path, rabbitmq, postgres_per_test):
    """While the database is away (no spool), the messages RabbitMQ holds for the gateway (ready in the queue,
    or delivered and not acknowledged) show in the status and in lorrygate_source_lag; once stored, none."""
    from tests.faults import lag_held_and_released
    from tests.integration.test_faults import pg_seqs

    database = postgres_per_test
    realm = f"g{uuid.uuid4().hex[:8]}"
    path = config(str(tmp_path), rabbitmq.port, realm, database.url, storage="spool = false\n")
    stream = AmqpStream(rabbitmq.port, keys(realm), 300, rate=1000)
    lag_held_and_released(path, str(tmp_path / "gw.log"), database, lambda: stream.start().finish(), 300,
                          lambda: pg_seqs(database.url, realm))


def test_amqp_headers_are_tags_and_its_content_type_picks_the_decoder(tmp_path, rabbitmq):
    """A message's AMQP headers that the channel's ``headers`` names are tags of its rows (values of other
    types as text), and its ``content_type`` picks the decoder as MQTT 5's Content Type does: CBOR on a
    tree whose chain has no cbor is stored (it was a dead letter)."""
    import cbor2
    import pika

    realm = f"h{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), rabbitmq.port, realm, f"sqlite:///{db}",
                                    channel="strategy = topic\nheaders = device-id:device, count\n"),
                             str(tmp_path / "gw.log")).start()
    try:
        confirmed(rabbitmq.port, f"{realm}.kitchen", [
            (cbor2.dumps({"temperature": 21.5}), pika.BasicProperties(
                content_type="application/cbor", headers={"device-id": "d-17", "count": 3, "other": "x"})),
            (b'{"temperature": 22.5}', None)])
        table = f"{realm}__kitchen"
        wait_until(lambda: table in tables(db) and query(db, f'SELECT count(*) FROM "{table}"') == [(2,)], 30,
                   "two rows")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT temperature, device, count FROM "{table}" ORDER BY temperature') == [
        (21.5, "d-17", "3"), (22.5, None, None)]
    assert "lorrygate_dead_letter" not in tables(db) or query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [
        (0,)]


def test_a_gzip_body_is_inflated_and_one_that_is_no_gzip_is_a_dead_letter_with_its_bytes(tmp_path, rabbitmq):
    """Telegraf's amqp output with ``content_encoding = "gzip"`` (its line protocol, gzip-compressed), a Celery
    task's JSON (``content_encoding = utf-8``) and a device's Latin-1 JSON that says so in its ``content_type``
    are stored; they were dead letters. A body that says gzip and is none is a dead letter of its bytes, with
    the reason."""
    import gzip

    import pika

    realm = f"z{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), rabbitmq.port, realm, f"sqlite:///{db}",
                                    channel="strategy = topic\ndecoders = json, influx\n"),
                             str(tmp_path / "gw.log")).start()
    try:
        confirmed(rabbitmq.port, f"{realm}.kitchen", [
            (gzip.compress(b"climate,room=kitchen temperature=21.5 1717243200000000000\n"),
             pika.BasicProperties(content_encoding="gzip", delivery_mode=2)),
            (b'{"temperature": 22.5}', pika.BasicProperties(content_type="application/json", content_encoding="utf-8")),
            ('{"temperature": 23.5, "unit": "°C"}'.encode("latin-1"),
             pika.BasicProperties(content_type="application/json; charset=ISO-8859-1")),
            (b'{"temperature": 24.5}', pika.BasicProperties(content_encoding="gzip"))])
        table = f"{realm}__kitchen"
        wait_until(lambda: table in tables(db) and query(db, f'SELECT count(*) FROM "{table}"') == [(3,)]
                   and "lorrygate_dead_letter" in tables(db)
                   and query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(1,)], 30,
                   "three rows and a dead letter")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT temperature, room, unit FROM "{table}" ORDER BY temperature') == [
        (21.5, "kitchen", None), (22.5, None, None), (23.5, None, "°C")]
    ((payload, stage, error),) = query(db, "SELECT payload, stage, error FROM lorrygate_dead_letter")
    assert (bytes(payload), stage) == (b'{"temperature": 24.5}', "decode")
    assert error.startswith("content_encoding gzip, but the body is no gzip"), error

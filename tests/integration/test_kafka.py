"""
Kafka: no Kafka broker can be installed here, so these tests run against
librdkafka's MOCK CLUSTER (``test.mock.num.brokers``, in the confluent-kafka
wheel): it speaks the Kafka protocol on real local sockets, with consumer
groups and offset commits, but it is not Kafka. With LORRYGATE_KAFKA_BOOTSTRAP
(``host:9092``) the same tests run against a real broker.

A consumer group into SQLite survives a SIGKILL with nothing lost (offsets
committed only after the rows); the Kafka sink produces every message of an
MQTT stream with acks=all before the MQTT source is acknowledged.
"""

import json
import os
import signal
import textwrap
import time
import uuid

import pytest
import pytest_twisted

from tests.faults import report, wait_for_rows
from tests.gatewayproc import GatewayProcess, Publisher, query, tables
from tests.servers import wait_until

pytestmark = pytest.mark.integration

confluent_kafka = pytest.importorskip("confluent_kafka")
REAL = os.environ.get("LORRYGATE_KAFKA_BOOTSTRAP", "")


@pytest.fixture(scope="module")
def kafka():
    """The bootstrap address of a Kafka: a real one, or librdkafka's mock cluster held by this process."""
    if REAL:
        yield REAL
        return
    holder = confluent_kafka.Producer({"test.mock.num.brokers": 3})
    brokers = holder.list_topics(timeout=10).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in brokers)
    holder.flush(5)


def config(directory, bootstrap, realm, extra="", channel="") -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s
            control = off

            [broker:kafka]
            type = kafka
            host = {bootstrap}

            [storage:db]
            url = sqlite:///{directory}/gateway.sqlite
            synchronous = NORMAL
            """) + textwrap.dedent(extra) + textwrap.dedent(f"""
            [channel:main]
            source = kafka
            storage = db
            topics = {realm}-in
            group = g-{realm}
            """) + textwrap.dedent(channel))
    return path


def produce(bootstrap, topic, realm, count, start=0, rate=None):
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    began = time.monotonic()
    for seq in range(start, start + count):
        if rate:
            delay = began + (seq - start) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
                producer.poll(0)
        body = json.dumps({"seq": seq, "time": 1_717_243_200_000 + seq, "value": seq * 0.25})
        while True:
            try:
                producer.produce(topic, body.encode(), f"{realm}/net/gw/node-{seq % 10}/data.json".encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(30) == 0


def sqlite_seqs(db, prefix):
    return [row[0] for table in tables(db) if table.startswith(prefix) for row in query(db, f'SELECT seq FROM "{table}"')]


def test_a_consumer_group_into_sqlite_survives_a_sigkill(tmp_path, kafka):
    import threading

    started = time.monotonic()
    realm = f"k{uuid.uuid4().hex[:8]}"
    produce(kafka, f"{realm}-in", realm, 1)  # the topic, before the group subscribes to it
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), kafka, realm), str(tmp_path / "gw.log")).start()
    writer = threading.Thread(target=produce, args=(kafka, f"{realm}-in", realm, 19_999, 1, 4000), daemon=True)
    writer.start()
    wait_until(lambda: len(sqlite_seqs(db, realm)) >= 6_000, 60, "6,000 rows", interval=0.05)
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    gateway.start()
    writer.join(60)
    wait_for_rows(lambda: len(set(sqlite_seqs(db, realm))), 20_000, 120, "all 20,000 messages")
    assert gateway.stop() == 0
    seqs = sqlite_seqs(db, realm)
    report("Kafka (mock cluster)" if not REAL else "Kafka", 20_000, seqs, started)
    assert set(seqs) == set(range(20_000))
    assert {t for t in tables(db) if t.startswith(realm)} == {f"{realm}_net__gw_node_{n}_sensors" for n in range(10)}


def sink_config(directory, port: int, kafka: str, realm: str, storage: str = "") -> str:
    """A gateway from a Mosquitto's ``realm/#`` into a Kafka sink (topic ``<realm>-out``; ``storage``: more lines
    of its section), payloads as they came."""
    path = os.path.join(str(directory), "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            control = off

            [broker:mqtt]
            host = 127.0.0.1
            port = {port}
            client_id = gw-{realm}

            [storage:kafka]
            url = kafka://{kafka.split(",")[0]}/
            topic = {realm}-out
            """) + storage + textwrap.dedent("""
            [channel:main]
            topics = {realm}/#
            strategy = topic
            decoders = raw
            """).replace("{realm}", realm))
    return path


def test_the_kafka_sink_produces_every_message_before_the_source_is_acknowledged(tmp_path, kafka, mosquitto):
    realm = f"j{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(sink_config(tmp_path, mosquitto.port, kafka, realm), str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/site-{n % 3}/temp", json.dumps({"seq": n})) for n in range(3000)])
    publisher.close()
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": f"check-{realm}",
                                         "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{realm}-out"])
    seen = {}
    deadline = time.monotonic() + 60
    while len(seen) < 3000 and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            if message.error() is None:
                seen[json.loads(message.value())["seq"]] = message.key().decode()
    consumer.close()
    assert gateway.stop() == 0
    assert set(seen) == set(range(3000))
    assert seen[4] == f"{realm}/site-1/temp"  # the key is the MQTT topic


def test_a_message_too_large_for_kafka_is_a_reference_in_the_dead_letter_topic(tmp_path, kafka, mosquitto):
    """A message of 1.2 MB, more than a producer sends (message.max.bytes, 1,000,000): it was produced again
    and again and the sink wrote nothing more. Its reference (topic, size, SHA-256) goes to the dead-letter
    topic, and the messages around it to their topic."""
    import hashlib

    realm = f"j{uuid.uuid4().hex[:8]}"
    config = sink_config(tmp_path, mosquitto.port, kafka, realm, f"dead_letter_topic = {realm}-dead\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    large = b"x" * 1_200_000
    publisher.publish_many([(f"{realm}/a", json.dumps({"seq": n})) for n in range(5)] + [(f"{realm}/big", large)]
                           + [(f"{realm}/a", json.dumps({"seq": n})) for n in range(5, 10)])
    publisher.close()
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": f"check-{realm}",
                                         "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{realm}-out", f"{realm}-dead"])
    seen, dead = set(), []
    deadline = time.monotonic() + 60
    while (len(seen) < 10 or not dead) and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.5):
            if message.error() is None:
                if message.topic() == f"{realm}-dead":
                    dead.append(json.loads(message.value()))
                else:
                    seen.add(json.loads(message.value())["seq"])
    consumer.close()
    assert gateway.stop() == 0
    assert seen == set(range(10))
    (reference,) = {json.dumps(d, sort_keys=True) for d in dead}  # (the same reference, if produced again)
    reference = json.loads(reference)
    assert reference["topic"] == f"{realm}/big" and reference["size"] == len(large)
    assert reference["sha256"] == hashlib.sha256(large).hexdigest() and "message.max.bytes" in reference["error"]
    assert reference["stage"] == "size" and reference["payload_base64"] is None


def test_kafka_with_the_database_away_for_20_seconds(tmp_path, kafka):
    import threading

    from tests.integration.test_faults import pg_count, pg_seqs
    from tests.servers import PostgreSQL

    database = PostgreSQL().start()
    try:
        started = time.monotonic()
        realm = f"q{uuid.uuid4().hex[:8]}"
        produce(kafka, f"{realm}-in", realm, 1)
        path = config(str(tmp_path), kafka, realm)
        text = open(path).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                                         f"url = {database.url}")
        open(path, "w").write(text)
        gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start()
        writer = threading.Thread(target=produce, args=(kafka, f"{realm}-in", realm, 7_999, 1, 300), daemon=True)
        writer.start()
        wait_for_rows(lambda: pg_count(database.url, realm), 500, 30, "the first rows")
        database.halt()
        time.sleep(20)
        database.resume()
        writer.join(60)
        wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), 8_000, 120, "all 8,000 messages")
        assert gateway.stop() == 0
        seqs = pg_seqs(database.url, realm)
        report("Kafka, PostgreSQL down 20 s", 8_000, seqs, started)
        assert set(seqs) == set(range(8_000))
        assert max(e.get("spooled", 0) for e in gateway.events() if e.get("event") == "storage_stats") >= 1
    finally:
        database.stop()


def test_an_unreachable_kafka_is_one_clear_line_and_a_status_entry(tmp_path):
    import subprocess
    import sys

    from lorrygate.control_client import request
    from tests.servers import free_port

    realm = f"u{uuid.uuid4().hex[:8]}"
    path = config(str(tmp_path), f"127.0.0.1:{free_port()}", realm)
    control = free_port()
    text = open(path).read().replace("control = off", f"control = tcp:{control}:interface=127.0.0.1")
    open(path, "w").write(text)
    log = open(tmp_path / "gw.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", path], stdout=log, stderr=subprocess.STDOUT)
    try:
        def errors():
            lines = (tmp_path / "gw.log").read_text().splitlines()
            return [json.loads(line) for line in lines if "Kafka source" in line and '"error"' in line]

        wait_until(lambda: errors(), 60, "the connection failure logged")
        first = errors()[0]
        assert "Connection refused" in first["message"] or "connect" in first["message"].lower(), first
        source = wait_until(lambda: (lambda s: s if s["last_error"] else None)(
            request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")["sources"][0]), 30, "a status entry")
        assert not source["connected"]
        assert "Traceback" not in (tmp_path / "gw.log").read_text()
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()


SASL = os.environ.get("LORRYGATE_KAFKA_SASL_BOOTSTRAP", "")


@pytest.mark.skipif(not SASL, reason="needs a real Kafka with a SASL PLAIN listener (LORRYGATE_KAFKA_SASL_BOOTSTRAP); "
                                     "the mock cluster accepts any credentials (our side: tests/unit/test_kafka_errors.py)")
def test_a_wrong_password_is_one_clear_line_and_a_status_entry(tmp_path):
    from lorrygate.control_client import request
    from tests.servers import free_port

    realm = f"w{uuid.uuid4().hex[:8]}"
    control = free_port()
    path = config(str(tmp_path), SASL, realm)
    text = open(path).read().replace("control = off", f"control = tcp:{control}:interface=127.0.0.1")
    text = text.replace("type = kafka\n", "type = kafka\nusername = lorrygate\npassword = certainly-wrong\n", 1)
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="refused the credentials")
    try:
        def refused():
            return [e for e in gateway.events() if "refused the credentials" in e.get("message", "")]

        time.sleep(5)  # a window in which librdkafka retries the login: it must stay one line
        assert len(refused()) == 1 and "certainly-wrong" not in open(tmp_path / "gw.log").read()
        source = request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")["sources"][0]
        assert not source["connected"] and "refused the credentials" in source["last_error"]
    finally:
        assert gateway.stop() == 0


@pytest.mark.skipif(not REAL, reason="librdkafka's mock cluster refuses offset commits while a group is joining "
                                     "(Kafka accepts them from the current generation): set LORRYGATE_KAFKA_BOOTSTRAP; "
                                     "our side: tests/unit/test_kafka_rebalance.py")
@pytest_twisted.ensureDeferred
async def test_a_gateway_joining_the_group_does_not_read_again_what_the_first_holds(kafka):
    """A second member joins while the first holds 400 messages in flight: the rebalance waits for them to
    be committed downstream and commits their offsets, so that neither member reads them again (every one
    was read twice, the revoked partitions' acks voided)."""
    import collections

    from confluent_kafka.admin import AdminClient, NewTopic
    from twisted.internet import reactor

    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.kafka import KafkaSource
    from tests.integration.test_amqp import until

    realm = f"j{uuid.uuid4().hex[:8]}"
    topic = f"{realm}-in"
    if REAL:
        admin = AdminClient({"bootstrap.servers": kafka})
        admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    produce(kafka, topic, realm, 400)
    broker = BrokerSettings(name="kafka", host=kafka, type="kafka")
    held, seen = [], []

    def hold(message):
        held.append(message)
        seen.append(json.loads(message.payload)["seq"])

    def store(message):
        seen.append(json.loads(message.payload)["seq"])
        message.ack.ack()

    first = KafkaSource("first", broker, (topic,), hold, reactor, group=f"g-{realm}")
    second = KafkaSource("second", broker, (topic,), store, reactor, group=f"g-{realm}")
    first.startService()
    try:
        await until(lambda: len(held) == 400, "the first member to read the 400 messages")
        second.startService()
        await until(lambda: first._revoking, "the rebalance to take the first member's partitions")
        for message in list(held):
            message.ack.ack()
        await until(lambda: second.connected, "the second member's assignment")
        held.clear()
        produce(kafka, topic, realm, 100, start=400)
        await until(lambda: len(set(seen)) >= 500, "the 100 messages after the rebalance")
        for message in list(held):
            message.ack.ack()
    finally:
        await first.stopService()
        await second.stopService()
    repeated = [seq for seq, count in collections.Counter(seen).items() if count > 1]
    assert not repeated and first.redelivered_after_rebalance == 0, f"{len(repeated)} read again"


def test_the_groups_lag_is_in_the_status_and_goes_back_to_zero(tmp_path, kafka):
    """The lag an operator of a consumer group watches: while the database is away (no spool), the messages the
    brokers hold beyond the committed offsets show in the status, by partition; once they are stored, none."""
    import urllib.request

    from lorrygate.control_client import request
    from tests.servers import PostgreSQL, free_port

    database = PostgreSQL().start()
    try:
        realm = f"l{uuid.uuid4().hex[:8]}"
        produce(kafka, f"{realm}-in", realm, 1)  # the topic, before the group subscribes to it
        control, metrics = free_port(), free_port()
        path = config(str(tmp_path), kafka, realm)
        text = open(path).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                                         f"url = {database.url}\nspool = false")
        open(path, "w").write(text.replace("control = off", f"control = tcp:{control}:interface=127.0.0.1\n"
                                                            f"metrics = 127.0.0.1:{metrics}"))
        endpoint = f"tcp:{control}:interface=127.0.0.1"
        gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start()

        def source() -> dict:
            return request(endpoint, "GET", "/status")["sources"][0]["details"]

        wait_until(lambda: source()["lag"] == 0, 60, "the first message stored: no lag")
        database.halt()
        produce(kafka, f"{realm}-in", realm, 299, start=1)
        held = wait_until(lambda: (lambda s: s if s["lag"] == 299 else None)(source()), 60, "a lag of 299")
        assert sum(held["lag_by_partition"].values()) == 299
        assert all(name.startswith(f"{realm}-in[") for name in held["lag_by_partition"])
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
            exposed = response.read().decode()
        assert 'lorrygate_source_lag{source="main"} 299.0' in exposed, exposed
        database.resume()
        wait_until(lambda: source()["lag"] == 0, 90, "the lag back to 0 once the database is back")
        assert gateway.stop() == 0
    finally:
        database.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_whose_topic_kafka_refuses_is_a_dead_letter(kafka):
    """A topic of more than 249 characters (Kafka's limit; librdkafka's mock cluster does not check it, a real
    Kafka refuses each produce) failed the batch again and again: it is a dead letter with its payload now, and
    the messages beside it go to their topics."""
    import base64

    from twisted.internet import reactor

    from lorrygate.config.settings import kafka_broker
    from lorrygate.model import Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.kafka_sink import KafkaSink

    realm = f"j{uuid.uuid4().hex[:8]}"
    long_topic = f"{realm}/" + "x" * 300
    sink = KafkaSink("k", kafka_broker("k", f"kafka://{kafka.split(',')[0]}/"), reactor, topic="{topic}",
                     dead_letter_topic=f"{realm}-dead")
    batch = Batch()
    for n, topic in enumerate([f"{realm}/a", long_topic, f"{realm}/a"]):
        batch.add(Entry(TableName("s", "t"), [Record(n, {"n": n})], "main", Message(topic, b'{"n": %d}' % n), "raw"))
    await sink.start()
    try:
        await sink.write(batch)
    finally:
        await sink.stop()
    assert sink.details()["refused"] == 1
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": f"check-{realm}",
                                         "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{realm}_a", f"{realm}-dead"])
    seen: list = []
    deadline = time.monotonic() + 60
    while len(seen) < 3 and time.monotonic() < deadline:
        seen += [(m.topic(), m.value()) for m in consumer.consume(10, 0.5) if m.error() is None]
    consumer.close()
    assert sorted(value for topic, value in seen if topic == f"{realm}_a") == [b'{"n": 0}', b'{"n": 2}']
    (letter,) = [json.loads(value) for topic, value in seen if topic == f"{realm}-dead"]
    assert letter["topic"] == long_topic and "more than Kafka's 249" in letter["error"]
    assert base64.b64decode(letter["payload_base64"]) == b'{"n": 1}'


def test_record_headers_are_the_tags_the_channel_names(tmp_path, kafka):
    """A record's headers that the channel's ``headers`` names are tags of its rows: a renamed one under its
    tag, one sent twice joined in the order sent, bytes that are not UTF-8 escaped; a record without them has
    none."""
    realm = f"kh{uuid.uuid4().hex[:8]}"
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka, "acks": "all"})
    key = f"{realm}/net/gw/node-1/data.json".encode()
    producer.produce(f"{realm}-in", b'{"seq": 1}', key,
                     headers=[("device-id", b"d-17"), ("zone", b"a"), ("zone", b"\xffb"), ("other", b"x")])
    producer.produce(f"{realm}-in", b'{"seq": 2}', key)
    assert producer.flush(30) == 0
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), kafka, realm, channel="headers = device-id:device, zone\n"),
                             str(tmp_path / "gw.log")).start()
    table = f"{realm}_net__gw_node_1_sensors"
    try:
        wait_until(lambda: table in tables(db) and query(db, f'SELECT count(*) FROM "{table}"') == [(2,)], 60,
                   "two rows")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT seq, device, zone FROM "{table}" ORDER BY seq') == [
        (1, "d-17", "a, \\xffb"), (2, None, None)]


def test_the_kafka_sink_keeps_the_content_type_and_user_properties_as_record_headers(tmp_path, kafka, mosquitto):
    """An MQTT 5 message relayed into Kafka carries its Content Type (``content-type``, which the Kafka source
    reads back) and its user properties as record headers, in the order sent."""
    from tests.integration.test_content_type import publish

    realm = f"jh{uuid.uuid4().hex[:8]}"
    path = sink_config(tmp_path, mosquitto.port, kafka, realm)
    text = open(path).read().replace(f"client_id = gw-{realm}", f"client_id = gw-{realm}\nprotocol = 5")
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start(ready="subscribed")
    try:
        publish(mosquitto.port, [(f"{realm}/a", b"\xa1", None, [("device-id", "d-17"), ("zone", "a"), ("zone", "b")]),
                                 (f"{realm}/b", b"plain", None), (f"{realm}/c", b"\xa0", "application/cbor")])
        consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": f"check-{realm}",
                                             "auto.offset.reset": "earliest"})
        consumer.subscribe([f"{realm}-out"])
        seen = {}
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            for message in consumer.consume(10, 0.5):
                if message.error() is None:
                    seen[message.key().decode()] = message.headers()
        consumer.close()
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert seen == {f"{realm}/a": [("device-id", b"d-17"), ("zone", b"a"), ("zone", b"b")], f"{realm}/b": None,
                    f"{realm}/c": [("content-type", b"application/cbor")]}


def test_a_backlogs_rows_without_a_time_are_stored_at_the_records_timestamps(tmp_path, kafka):
    """A backlog read after the gateway was away: a row whose payload has no time is stored at its record's
    timestamp (it was stored at the time the gateway read it, all of a day's backlog within the drain's
    minutes); a payload's own time still wins."""
    realm = f"kt{uuid.uuid4().hex[:8]}"
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka, "acks": "all"})
    key = f"{realm}/net/gw/node-1/data.json".encode()
    producer.produce(f"{realm}-in", b'{"seq": 1}', key, timestamp=1_717_243_200_123)
    producer.produce(f"{realm}-in", b'{"seq": 2}', key, timestamp=1_717_246_800_000)
    producer.produce(f"{realm}-in", b'{"seq": 3, "time": "2024-06-01T15:00:00Z"}', key, timestamp=1_717_246_900_000)
    assert producer.flush(30) == 0
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), kafka, realm), str(tmp_path / "gw.log")).start()
    table = f"{realm}_net__gw_node_1_sensors"
    try:
        wait_until(lambda: table in tables(db) and query(db, f'SELECT count(*) FROM "{table}"') == [(3,)], 60,
                   "three rows")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT seq, "time" FROM "{table}" ORDER BY seq') == [
        (1, "2024-06-01T12:00:00.123000000Z"), (2, "2024-06-01T13:00:00.000000000Z"),
        (3, "2024-06-01T15:00:00.000000000Z")]

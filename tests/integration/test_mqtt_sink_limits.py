"""The MQTT sink against a real Mosquitto that takes packets of at most 2,000 bytes (``max_packet_size``, told
to MQTT 5 clients in CONNACK): a message larger is not published (the broker would drop the connection), and
a reference to it (topic, size, SHA-256) goes to the dead-letter topic; the messages beside it are published."""

import base64
import hashlib
import json
import threading
import time

import paho.mqtt.client as paho
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from lorrygate.config.settings import sink_broker
from lorrygate.errors import StorageError
from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.mqtt_sink import MqttSink
from tests.servers import Mosquitto


async def until(predicate, timeout: float, what: str) -> None:
    """Wait in the reactor (it runs the sink) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_message_larger_than_the_broker_takes_is_a_reference_in_the_dead_letter_topic(tmp_path):
    broker = Mosquitto(str(tmp_path), extra="allow_anonymous true\nmax_packet_size 2000\n").start()
    received: list = []
    subscribed = threading.Event()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    watcher.on_message = lambda client, userdata, message: received.append((message.topic, message.payload))
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    watcher.subscribe([("out/#", 1), ("lorrygate/dead-letters", 1)])
    sink = MqttSink("out", sink_broker("out", f"mqtt://127.0.0.1:{broker.port}/?protocol=5"), reactor,
                    topic="out/{topic}")
    try:
        assert subscribed.wait(10), "no SUBACK for the watcher"
        await sink.start()
        await until(lambda: sink.details()["connected"], 10, "the sink's connection")
        large = b"x" * 5_000
        batch = Batch()
        for n, payload in enumerate([b'{"n": 1}', large, b'{"n": 3}']):
            batch.add(Entry(TableName("s", "t"), [Record(n, {"n": n})], "main", Message(f"dev/{n}", payload), "raw"))
        await sink.write(batch)
        await until(lambda: len(received) >= 3, 30, "the two messages and the reference")
    finally:
        await sink.stop()
        watcher.loop_stop()
        broker.stop()
    assert sorted(item for item in received if item[0].startswith("out/")) == [
        ("out/dev/0", b'{"n": 1}'), ("out/dev/2", b'{"n": 3}')]
    (dead,) = [json.loads(payload) for topic, payload in received if topic == "lorrygate/dead-letters"]
    assert dead["topic"] == "out/dev/1" and dead["size"] == 5_000 and dead["stage"] == "size"
    assert dead["sha256"] == hashlib.sha256(large).hexdigest() and "2000" in dead["error"]
    assert (sink.too_large, sink.published) == (1, 2)  # (the reference is not a message published)


class Watcher:
    """A paho client that records what reaches ``filters`` (SUBACK awaited)."""

    def __init__(self, port: int, filters: list):
        self.received: list = []
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = lambda client, userdata, message: self.received.append((message.topic,
                                                                                          message.payload))
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(text, 1) for text in filters])
        assert subscribed.wait(10), "no SUBACK for the watcher"

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def dead_letters(self) -> list:
        return [json.loads(payload) for topic, payload in self.received if topic == "lorrygate/dead-letters"]


def batch_of(topics: list) -> Batch:
    batch = Batch()
    for n, topic in enumerate(topics):
        batch.add(Entry(TableName("s", "t"), [Record(n, {"n": n})], "main", Message(topic, b'{"n": %d}' % n), "raw"))
    return batch


async def written(sink, batch, attempts: int) -> int:
    """Write ``batch`` as the batcher does, again after each failure; the number of tries it took."""
    for attempt in range(1, attempts + 1):
        await until(lambda: sink.details()["connected"], 10, "the sink's connection")
        try:
            await sink.write(batch)
            return attempt
        except StorageError:
            continue
    raise AssertionError(f"the batch was not written in {attempts} tries: {sink.details()}")


@pytest_twisted.ensureDeferred
async def test_messages_the_broker_refuses_are_dead_letters_and_the_rest_are_published(tmp_path):
    """A topic no MQTT broker takes (a control character, a wildcard, empty) is not sent: Mosquitto closed the
    connection for it, the batch failed, was sent again, and the sink stopped for good. One the broker refuses
    by closing the connection for its own reasons (Mosquitto: more than 200 levels) is found by sending the
    messages in flight one at a time and set aside after it was alone in flight twice. Each is a dead letter
    with the reason; every other message is published."""
    broker = Mosquitto(str(tmp_path)).start()
    watcher = Watcher(broker.port, ["out/#", "lorrygate/dead-letters"])
    sink = MqttSink("out", sink_broker("out", f"mqtt://127.0.0.1:{broker.port}/"), reactor, topic="out/{topic}")
    deep = "/".join(["d"] * 201)  # out/ + 201 levels: Mosquitto closes the connection
    topics = [f"dev/{n}" for n in range(300)]
    topics[10], topics[20], topics[150], topics[160] = "dev/\x01", "dev/+", deep, "dev/\u0085"
    try:
        await sink.start()
        tries = await written(sink, batch_of(topics), attempts=6)
        await until(lambda: {t for t, _ in watcher.received if t.startswith("out/")} >= {
            f"out/dev/{n}" for n in range(300) if n not in (10, 20, 150, 160)} and len(watcher.dead_letters()) >= 4,
            30, "the messages and the dead letters")
    finally:
        await sink.stop()
        watcher.stop()
        broker.stop()
    assert tries <= 4, tries  # the deep one: in flight with others, then alone twice, then set aside
    dead = {letter["topic"]: letter for letter in watcher.dead_letters()}
    assert set(dead) == {"dev/\x01", "dev/+", deep, "dev/\u0085"}
    assert "U+0001" in dead["dev/\x01"]["error"] and "wildcard" in dead["dev/+"]["error"]
    assert "closed the connection" in dead[deep]["error"] and dead[deep]["target"] == f"out/{deep}"
    assert base64.b64decode(dead[deep]["payload_base64"]) == b'{"n": 150}'
    assert (sink.refused, sink.published) == (4, 296)
    assert not any(t.startswith("out/") and t not in {f"out/dev/{n}" for n in range(300)} for t, _ in watcher.received)


@pytest_twisted.ensureDeferred
async def test_a_message_the_broker_does_not_authorize_is_a_dead_letter_under_mqtt_5(tmp_path):
    """MQTT 5: a PUBACK with a reason code of 0x80 or more (here 0x87, not authorized, from the broker's ACL)
    means the message was not published; it counted as published, its source message was acknowledged, and
    it was lost. It is a dead letter now; a broker that refuses the dead letter too fails the batch, saying so."""
    (tmp_path / "acl").write_text("topic readwrite out/allowed/#\ntopic readwrite lorrygate/dead-letters\n")
    broker = Mosquitto(str(tmp_path), extra=f"allow_anonymous true\nacl_file {tmp_path}/acl\nmax_packet_size 2000\n"
                       ).start()
    watcher = Watcher(broker.port, ["out/#", "lorrygate/dead-letters"])
    sink = MqttSink("out", sink_broker("out", f"mqtt://127.0.0.1:{broker.port}/?protocol=5"), reactor,
                    topic="out/{topic}")
    walled = MqttSink("walled", sink_broker("walled", f"mqtt://127.0.0.1:{broker.port}/?protocol=5"), reactor,
                      topic="out/{topic}", dead_letter_topic="walled/dead-letters")
    try:
        await sink.start()
        await walled.start()
        batch = batch_of(["allowed/1", "secret/2", "allowed/3"])
        big = b"b" * 1_800  # within the broker's 2,000 bytes, but not in base64 in a dead letter
        batch.add(Entry(TableName("s", "t"), [Record(4, {"n": 4})], "main", Message("secret/big", big), "raw"))
        assert await written(sink, batch, attempts=1) == 1
        await until(lambda: len(watcher.received) >= 4, 30, "two messages and two dead letters")
        await until(lambda: walled.details()["connected"], 10, "the second sink's connection")
        with pytest.raises(StorageError, match="not authorized .* for the dead letter to 'walled/dead-letters'"):
            await walled.write(batch_of(["secret/9"]))
    finally:
        await sink.stop()
        await walled.stop()
        watcher.stop()
        broker.stop()
    assert sorted(t for t, _ in watcher.received if t.startswith("out/")) == ["out/allowed/1", "out/allowed/3"]
    dead, reference = watcher.dead_letters()
    assert dead["topic"] == "secret/2" and dead["target"] == "out/secret/2"
    assert "not authorized (PUBACK reason code 0x87)" in dead["error"]
    assert base64.b64decode(dead["payload_base64"]) == b'{"n": 1}'
    assert reference["topic"] == "secret/big" and reference["payload_base64"] is None
    assert reference["size"] == 1_800 and reference["sha256"] == hashlib.sha256(big).hexdigest()
    assert sink.refused == 2 and walled.details()["refused"] == 0  # (its dead letter was refused too)


@pytest_twisted.ensureDeferred
async def test_a_lost_connection_publishes_again_only_what_the_broker_did_not_acknowledge(tmp_path):
    """The connection to the broker breaks in the middle of a batch of 5,000 (a proxy cuts it once the broker
    acknowledged 2,000): the retry published the whole batch again, and every message acknowledged before the
    cut came twice. Now what the broker acknowledged is in the batch's progress and not sent again: at most the
    messages in flight at the cut (the sink's window) come twice, and each is counted once."""
    from lorrygate.storage.mqtt_sink import WINDOW
    from tests.tcpproxy import Proxy

    broker = Mosquitto(str(tmp_path)).start()
    proxy = await Proxy("127.0.0.1", broker.port).start(reactor)
    watcher = Watcher(broker.port, ["out/#"])
    sink = MqttSink("out", sink_broker("out", f"mqtt://127.0.0.1:{proxy.listening}/"), reactor, topic="out/{topic}")
    count = 5_000
    try:
        await sink.start()
        await until(lambda: sink.details()["connected"], 10, "the sink's connection")
        batch = batch_of([f"dev/{n}" for n in range(count)])
        proxy.cut_after(2_000 * 4)  # 2,000 PUBACKs of MQTT 3.1.1 from the broker, then the connection breaks
        with pytest.raises(StorageError):
            await sink.write(batch)
        assert await written(sink, batch, attempts=3) <= 3
        await until(lambda: {t for t, _ in watcher.received} >= {f"out/dev/{n}" for n in range(count)}, 30,
                    "every message")
    finally:
        await sink.stop()
        await proxy.stop()
        watcher.stop()
        broker.stop()
    twice = len(watcher.received) - count
    print(f"\n{twice} of {count} messages came twice (in flight at the cut)")
    assert 0 <= twice <= WINDOW, twice
    assert sink.published == count

"""The MQTT sink against a real Mosquitto that takes packets of at most 2,000 bytes (``max_packet_size``, told
to MQTT 5 clients in CONNACK): a message larger is not published (the broker would drop the connection), and
a reference to it (topic, size, SHA-256) goes to the dead-letter topic; the messages beside it are published."""

import hashlib
import json
import threading
import time

import paho.mqtt.client as paho
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from lorrygate.config.settings import sink_broker
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
    assert sink.too_large == 1

"""
amqp-to-mqtt with `lorrygate relay`: messages published to a RabbitMQ topic
exchange (a real RabbitMQ) are published to a real Mosquitto, QoS 1, and a
source message is acknowledged only after the broker's PUBACK. The relay is
SIGKILLed and restarted twice mid-stream: nothing lost; the duplicates that
at-least-once allows are counted and reported.
"""

import json
import signal
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as paho
import pytest

from tests.integration.test_amqp import AmqpStream, rabbitmq  # noqa: F401 - the fixture
from tests.servers import wait_until

pytestmark = pytest.mark.integration


class Subscriber:
    """A QoS 1 subscriber with a persistent session, counting what arrives."""

    def __init__(self, port: int, topic: str):
        self.seqs = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _message(self, client, userdata, message):
        with self._lock:
            self.seqs.append((message.topic, json.loads(message.payload)["seq"]))

    def count(self) -> int:
        with self._lock:
            return len({seq for _, seq in self.seqs})

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def relay(tmp_path, amqp_port, mqtt_port, realm):
    source = f"amqp://lorrygate:secret@127.0.0.1:{amqp_port}/%2F?exchange=amq.topic&topic={realm}/%23&prefetch=500"
    sink = f"mqtt://127.0.0.1:{mqtt_port}/relayed/{{topic}}"
    log = open(tmp_path / "relay.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "relay", source, sink, "--data-dir",
                                str(tmp_path / "state"), "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_until(lambda: b"consuming queue" in (tmp_path / "relay.log").read_bytes() or process.poll() is not None, 60,
               "the relay to consume")
    assert process.poll() is None, (tmp_path / "relay.log").read_text()
    return process


def test_amqp_to_mqtt_relay_loses_nothing_across_two_sigkills(tmp_path, rabbitmq, mosquitto):  # noqa: F811
    started = time.monotonic()
    realm = f"r{uuid.uuid4().hex[:8]}"
    subscriber = Subscriber(mosquitto.port, f"relayed/{realm}/#")
    process = relay(tmp_path, rabbitmq.port, mosquitto.port, realm)
    keys = [f"{realm}.site-{n}.sensor.data/json" for n in range(5)]
    stream = AmqpStream(rabbitmq.port, keys, 10_000, rate=2000).start()
    try:
        for threshold in (2_500, 6_000):
            wait_until(lambda: subscriber.count() >= threshold, 60, f"{threshold} relayed")
            process.send_signal(signal.SIGKILL)
            process.wait()
            process = relay(tmp_path, rabbitmq.port, mosquitto.port, realm)
        stream.finish()
        wait_until(lambda: subscriber.count() == 10_000, 120, "all 10,000 relayed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        subscriber.close()
    seqs = [seq for _, seq in subscriber.seqs]
    duplicates = len(seqs) - len(set(seqs))
    print(f"amqp-to-mqtt, SIGKILL x2: published 10000, arrived {len(seqs)}, distinct {len(set(seqs))}, "
          f"missing {10_000 - len(set(seqs))}, duplicates {duplicates}, took {time.monotonic() - started:.1f} s")
    assert set(seqs) == set(range(10_000))
    topics = {topic for topic, _ in subscriber.seqs}
    assert topics == {f"relayed/{realm}/site-{n}/sensor/data.json" for n in range(5)}, topics

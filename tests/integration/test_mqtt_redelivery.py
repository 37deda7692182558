"""
Messages in flight when an MQTT connection closes, against a real Mosquitto: the broker sends them again
on the next connection (the session's unacknowledged messages, with their packet ids and DUP set); those
the gateway still holds are not handed over a second time, and their PUBACKs go out once the first
deliveries are committed, so that the session holds nothing afterwards.
"""

import uuid

import paho.mqtt.client as paho
import pytest
import pytest_twisted
from twisted.internet import threads

from lorrygate.config.settings import BrokerSettings
from lorrygate.sources.mqtt import MQTTSource
from tests.integration.test_unread import until
from tests.tcpproxy import Proxy

pytestmark = pytest.mark.integration

def publish(broker, topic: str, payloads, qos: int = 1) -> None:
    """QoS 1 (or 2) publishes, each acknowledged by the broker."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=qos) for payload in payloads]:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


@pytest_twisted.ensureDeferred
async def test_messages_in_flight_across_a_cut_connection_are_handed_over_once(mosquitto):
    from twisted.internet import reactor

    name = uuid.uuid4().hex[:8]
    broker = BrokerSettings(name="b", host="127.0.0.1", port=mosquitto.port, client_id=f"redelivery-{name}",
                            reconnect_max_delay=0.5)
    topic = f"redelivery/{name}"
    held, seen = [], []

    def hold(message):
        seen.append(message.payload)
        if message.topic.endswith("/marker"):
            message.ack.ack()
        else:
            held.append(message)

    source = MQTTSource("main", broker, (f"{topic}/#",), 1, hold, reactor)
    source.startService()
    try:
        await source.when_subscribed()
        await threads.deferToThread(publish, mosquitto, f"{topic}/n/g/node/data", [f"m-{n}" for n in range(200)])
        await until(reactor, lambda: len(held) == 200, "the 200 messages held")
        first = source._protocol
        first.transport.abortConnection()  # a network cut: the session keeps the 200 unacknowledged
        await until(reactor, lambda: source.connected and source._protocol is not first, "the reconnection")
        # The broker sends a session's unacknowledged messages first: once a new one is here, they were sent.
        await threads.deferToThread(publish, mosquitto, f"{topic}/marker", ["marker-0"])
        await until(reactor, lambda: len(seen) >= 201 and seen[-1] == b"marker-0", "the marker after the cut")
        for message in held:
            message.ack.ack()
        source.status()  # what `lorrygate status` shows of it
    finally:
        await source.stopService()
    assert len(seen) == 201, f"{len(seen) - len(set(seen))} messages handed over again"
    assert source.redelivered_in_flight == 200

    # The same session again: the PUBACKs reached the broker, nothing of the 200 comes a third time.
    again = []
    source = MQTTSource("main", broker, (f"{topic}/#",), 1, lambda m: (again.append(m.payload), m.ack.ack()),
                        reactor)
    source.startService()
    try:
        await source.when_subscribed()
        await threads.deferToThread(publish, mosquitto, f"{topic}/marker", ["marker-0"])
        await until(reactor, lambda: again, "the second marker")
    finally:
        await source.stopService()
    assert again == [b"marker-0"]


@pytest.mark.parametrize("version", ["3.1.1", "5"])
@pytest_twisted.ensureDeferred
async def test_a_qos2_pubrec_the_broker_never_read_brings_no_second_copy(mosquitto, version):
    """QoS 2 messages acknowledged with PUBREC on a connection whose link died before the broker read the
    PUBRECs (a proxy drops them): the broker sends them again on the next connection, and until their PUBREL
    they are the same messages (MQTT 4.3.3): acknowledged again, not handed over a second time. The PUBRELs come
    and are answered; the session holds nothing afterwards."""
    from twisted.internet import reactor

    proxy = await Proxy("127.0.0.1", mosquitto.port).start(reactor)
    name = uuid.uuid4().hex[:8]
    broker = BrokerSettings(name="b", host="127.0.0.1", port=proxy.listening, client_id=f"qos2-{name}",
                            reconnect_max_delay=0.5, protocol=version)
    topic = f"qos2/{name}"
    held, seen = [], []

    def hold(message):
        seen.append(message.payload)
        if message.topic.endswith("/marker"):
            message.ack.ack()
        else:
            held.append(message)

    source = MQTTSource("main", broker, (f"{topic}/#",), 2, hold, reactor)
    source.startService()
    try:
        await source.when_subscribed()
        await threads.deferToThread(publish, mosquitto, f"{topic}/n/g/node/data", [f"m-{n}" for n in range(50)], 2)
        await until(reactor, lambda: len(held) == 50, "the 50 messages held")
        first = source._protocol
        proxy.blackhole()
        for message in held:
            message.ack.ack()  # (stored: their PUBRECs are written, and the link drops them)
        await until(reactor, lambda: proxy.dropped >= 50 * 4, "the 50 PUBRECs written")
        proxy.cut()
        await until(reactor, lambda: source.connected and source._protocol is not first, "the reconnection")
        await threads.deferToThread(publish, mosquitto, f"{topic}/marker", ["marker-0"], 2)
        await until(reactor, lambda: seen[-1] == b"marker-0", "the marker after the cut")
        status = source.status()
    finally:
        await source.stopService()
    assert len(seen) == 51, f"{len(seen) - len(set(seen))} messages handed over again"
    assert status["qos2_copies"] == 50

    # The same session again: the PUBRECs and PUBCOMPs reached the broker, nothing of the 50 comes again.
    again = []
    source = MQTTSource("main", broker, (f"{topic}/#",), 2, lambda m: (again.append(m.payload), m.ack.ack()),
                        reactor)
    source.startService()
    try:
        await source.when_subscribed()
        await threads.deferToThread(publish, mosquitto, f"{topic}/marker", ["marker-1"], 2)
        await until(reactor, lambda: again, "the second marker")
    finally:
        await source.stopService()
        await proxy.stop()
    assert again == [b"marker-1"]

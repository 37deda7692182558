"""
The broker's count of the messages it dropped, against a real Mosquitto whose sessions queue 5 messages: the
MQTT source follows ``$SYS/broker/publish/messages/dropped`` and warns of drops that happened while it was
away (its own queue overflowed) and of those while it runs (another subscriber's), which no acknowledgement
or row could tell of.
"""

import uuid

import paho.mqtt.client as paho
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from lorrygate.config.settings import BrokerSettings
from lorrygate.sources.mqtt import MQTTSource
from tests.integration.test_mqtt_redelivery import publish
from tests.integration.test_unread import until
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def small_queues(tmp_path):
    broker = Mosquitto(str(tmp_path), max_queued=5, sys_interval=1).start()
    yield broker
    broker.stop()


def away_subscriber(broker, client_id: str, topic: str) -> None:
    """A persistent session subscribed to ``topic`` at QoS 1, then disconnected: the broker queues for it."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        # a PUBLISH acknowledged after the SUBSCRIBE: the broker handled that first (MQTT orders a client's packets)
        info = client.publish(f"{topic.rstrip('#')}ready", b"", qos=1)
        info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest_twisted.ensureDeferred
async def test_drops_while_away_and_while_running_are_warned_of(small_queues):
    from twisted.internet import reactor

    name = uuid.uuid4().hex[:8]
    broker = BrokerSettings(name="b", host="127.0.0.1", port=small_queues.port, client_id=f"drops-{name}",
                            reconnect_max_delay=0.5)
    topic = f"drops/{name}"
    got: list = []
    warnings: list = []

    def keep(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn" and "dropped" in event.get(
                "log_format", ""):
            warnings.append(event)

    source = MQTTSource("main", broker, (f"{topic}/#",), 1, lambda m: (got.append(m), m.ack.ack()), reactor)
    source.startService()
    await source.when_subscribed()
    await source.stopService()  # away: the session stays, and queues 5 messages
    await threads.deferToThread(publish, small_queues, f"{topic}/n/g/node/data", [b"%d" % n for n in range(30)])
    globalLogPublisher.addObserver(keep)
    source = MQTTSource("main", broker, (f"{topic}/#",), 1, lambda m: (got.append(m), m.ack.ack()), reactor)
    source.startService()
    try:
        await source.when_subscribed()
        # (the count a new subscription gets is the broker's last report: a second old, it may not have the
        # drops yet, which the next report has: a rise)
        await until(reactor, lambda: (source.drops.count or 0) >= 25, "the broker's count of the 25 dropped")
        assert len(got) == 5
        assert warnings and "max_queued_messages" in warnings[-1]["how_to"] and warnings[-1]["count"] >= 25
        assert source.status()["broker_dropped"] == source.drops.count

        # another subscriber's queue overflows while the source runs: the count rises
        other = f"drops/{name}-other"
        await threads.deferToThread(away_subscriber, small_queues, f"{name}-other", f"{other}/#")
        before, rises, warned = source.drops.count, source.drops.rises, len(warnings)
        await threads.deferToThread(publish, small_queues, f"{other}/x", [b"%d" % n for n in range(20)])
        await until(reactor, lambda: source.drops.rises >= rises + 15, "the rise of the count")
        assert source.drops.count >= before + 15
        assert any("since its last report" in event["log_format"] for event in warnings[warned:])
        assert len(got) == 5  # (the broker's own topic is no message of the channel)
    finally:
        globalLogPublisher.removeObserver(keep)
        await source.stopService()

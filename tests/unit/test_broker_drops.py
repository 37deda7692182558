"""The broker's count of dropped messages (`lorrygate.sources.broker_drops`): what is warned of, and how the
MQTT source takes the count's reports and a broker that will not give it."""

import itertools

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from lorrygate.config.settings import BrokerSettings
from lorrygate.mqtt.codec import Publish
from lorrygate.mqtt.protocol import SubscriptionRefused
from lorrygate.sources.broker_drops import DROPPED_TOPIC, DropWatch
from lorrygate.sources.mqtt import MQTTSource


class Log:
    def __init__(self):
        self.warnings = []
        self.infos = []

    def warn(self, text, **fields):
        self.warnings.append(text.format(**fields))

    def info(self, text, **fields):
        self.infos.append(text.format(**fields))

    def debug(self, text, **fields):
        pass


def test_a_first_count_above_zero_and_each_rise_are_warned_of_and_nothing_else():
    log = Log()
    watch = DropWatch("main", log)
    watch.report(b"0")
    assert log.warnings == [] and watch.count == 0
    watch.report(b"0")  # the same count again (a new connection gets it retained)
    watch.report(b"12")
    watch.report(b"12")
    assert watch.rises == 12 and len(log.warnings) == 1
    assert "dropped 12 message(s) since its last report, 12 since it started" in log.warnings[0]
    assert "max_queued_messages" in log.warnings[0] and "another subscriber" in log.warnings[0]
    watch.report(b"3")  # a restarted broker counts anew
    watch.report(b"5")
    watch.report(b"not a number")
    watch.report(b"\xff")
    assert watch.rises == 14 and watch.count == 5 and len(log.warnings) == 2
    assert watch.status() == {"broker_dropped": 5, "broker_dropped_while_watched": 14}
    fresh = DropWatch("main", log)
    fresh.report(b"40")
    assert fresh.rises == 0 and "has dropped 40 message(s) since it started" in log.warnings[-1]


PORTS = itertools.count(20000)


def source(watch: bool = True, port: int | None = None):
    handed = []
    broker = BrokerSettings(name="b", host="127.0.0.1", port=port or next(PORTS), watch_drops=watch)
    made = MQTTSource("main", broker, ("t/#",), 1, handed.append, Clock())
    made.running = 1
    return made, handed


def test_the_count_is_no_message_of_the_channel_and_a_source_without_the_watch_hands_it_over():
    watched, handed = source()
    watched._received(Publish(DROPPED_TOPIC, b"7", 0, retain=True), None)
    assert handed == [] and watched.drops.count == 7 and watched.status()["broker_dropped"] == 7
    unwatched, handed = source(watch=False)
    assert unwatched.drops is None and "broker_dropped" not in unwatched.status()
    unwatched._received(Publish(DROPPED_TOPIC, b"7", 0), None)  # (a channel that subscribes to $SYS/# itself)
    assert [message.topic for message in handed] == [DROPPED_TOPIC]
    publisher = MQTTSource("sink", BrokerSettings(name="b", host="127.0.0.1"), (), 1, handed.append, Clock())
    assert publisher.drops is None  # (a client that only publishes subscribes to nothing)


def test_a_refused_subscription_is_asked_again_and_a_connection_closed_at_it_is_not():
    class Protocol:
        lost_reason = None

    made, _ = source()
    made._drops_refused(Failure(SubscriptionRefused("broker refused the subscription")), Protocol())
    assert made.drops is not None
    closed = Protocol()
    closed.lost_reason = Failure(ConnectionDone())
    made._drops_refused(Failure(ConnectionDone()), closed)
    assert made.drops is None


def test_lorrygate_status_tells_the_count():
    from lorrygate.control_client import render_status

    made, _ = source()
    made._received(Publish(DROPPED_TOPIC, b"0", 0, retain=True), None)
    made._received(Publish(DROPPED_TOPIC, b"1200", 0, retain=True), None)
    text = render_status({"config": "gw.ini", "sources": [{"name": "main", "connected": True, "broker": "b",
                                                           "client_id": "c", "details": made.status()}],
                          "storages": [], "channels": []})
    assert "the broker counts 1,200 message(s) it dropped since it started, 1,200 of them while watched" in text
    made.drops.said.count = 0
    text = render_status({"config": "gw.ini", "sources": [{"name": "main", "connected": True, "broker": "b",
                                                           "client_id": "c", "details": made.status()}],
                          "storages": [], "channels": []})
    assert "dropped" not in text


def test_the_sources_of_one_broker_warn_of_a_rise_once_and_a_reloads_new_source_not_again():
    """Each channel has a source of its own, and a reload starts new ones: they share what the broker said, so
    that a rise is one warning and a reload's first report repeats none."""
    first, _ = source(port=1999)
    second, _ = source(port=1999)
    other_broker, _ = source(port=1998)
    log = Log()
    for made in (first, second, other_broker):
        made.drops.log = log
    first._received(Publish(DROPPED_TOPIC, b"0", 0, retain=True), None)
    second._received(Publish(DROPPED_TOPIC, b"0", 0, retain=True), None)
    first._received(Publish(DROPPED_TOPIC, b"30", 0, retain=True), None)
    second._received(Publish(DROPPED_TOPIC, b"30", 0, retain=True), None)
    assert len(log.warnings) == 1 and first.drops.rises == second.drops.rises == 30
    reloaded, _ = source(port=1999)
    reloaded.drops.log = log
    reloaded._received(Publish(DROPPED_TOPIC, b"30", 0, retain=True), None)
    assert len(log.warnings) == 1 and reloaded.status()["broker_dropped_while_watched"] == 30
    other_broker._received(Publish(DROPPED_TOPIC, b"30", 0, retain=True), None)
    assert len(log.warnings) == 2 and "has dropped 30" in log.warnings[-1]  # (another broker's first report)

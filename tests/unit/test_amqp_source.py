"""The AMQP source without a broker: topics and routing keys, acknowledgements in delivery order with
``multiple``, acks of a lost channel dropped, deliveries held while paused."""

from types import SimpleNamespace

from twisted.internet.task import Clock

from lorrygate.config import loads
from lorrygate.sources.amqp import AMQPSource, binding_of, topic_of


def test_routing_keys_read_as_mqtt_topics():
    assert topic_of("mqttkit-1.testdrive.area-42.node-1.data/json") == "mqttkit-1/testdrive/area-42/node-1/data.json"
    assert binding_of("mqttkit-1/+/area-42/#") == "mqttkit-1.*.area-42.#"
    assert binding_of("a/b.c/#") == "a.b/c.#"


class Channel:
    is_open = True

    def __init__(self):
        self.acks = []

    def basic_ack(self, delivery_tag, multiple):
        self.acks.append((delivery_tag, multiple))

    def basic_cancel(self, tag):
        from twisted.internet.defer import succeed

        self.cancelled = tag
        return succeed(None)


def source():
    settings = loads("[broker:b]\ntype=amqp\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=a/#, b/+\n")
    clock = Clock()
    delivered = []
    made = AMQPSource("c", settings.brokers["b"], ("a/#", "b/+"), delivered.append, clock)
    made._channel = Channel()
    made._generation = 1
    return made, clock, delivered


def delivery(tag, key):
    return (None, SimpleNamespace(delivery_tag=tag, routing_key=key), None, b"{}")


def test_acks_go_out_in_delivery_order_several_at_once():
    made, clock, delivered = source()
    for tag in (1, 2, 3, 4):
        made._received(delivery(tag, "a.x.y" if tag % 2 else "b.z"), 1)
    assert [m.topic for m in delivered] == ["a/x/y", "b/z", "a/x/y", "b/z"]
    assert [m.subscription for m in delivered] == ["a/#", "b/+", "a/#", "b/+"]
    delivered[2].ack.ack()
    delivered[1].ack.ack()
    clock.advance(0)
    assert made._channel.acks == []  # 1 is not done: nothing may be acknowledged
    delivered[0].ack.ack()
    clock.advance(0)
    assert made._channel.acks == [(3, True)]  # 1-3 in one basic.ack
    delivered[3].ack.ack()
    clock.advance(0)
    assert made._channel.acks == [(3, True), (4, True)]


def test_acks_of_a_lost_channel_are_dropped():
    made, clock, delivered = source()
    made._received(delivery(1, "a.x"), 1)
    made._generation = 2  # the channel was lost and a new one opened
    made._channel = Channel()
    delivered[0].ack.ack()
    clock.advance(0)
    assert made._channel.acks == []  # tag 1 of the old channel means nothing on the new one


def test_deliveries_wait_while_paused():
    made, clock, delivered = source()
    made._consumer_tag = "ctag"
    made.pause("storage db")
    assert made._channel.cancelled == "ctag"
    made._received(delivery(1, "a.x"), 1)  # sent before the cancel took effect
    assert delivered == []
    made._channel = None  # so that resuming does not consume on the fake channel
    made.resume("storage db")
    assert [m.topic for m in delivered] == ["a/x"]


class SlowChannel(Channel):
    """A channel whose ``basic.consume`` waits for the test to answer it."""

    def __init__(self):
        super().__init__()
        self.consumes = []
        self.cancelled = None

    def basic_consume(self, queue, auto_ack):
        from twisted.internet.defer import Deferred

        self.consumes.append(Deferred())
        return self.consumes[-1]


def consumer_queue():
    from twisted.internet.defer import DeferredQueue

    return DeferredQueue()


def test_one_consumer_at_a_time_while_its_consume_is_on_the_way():
    made, clock, delivered = source()
    made._channel = channel = SlowChannel()
    made.pause("storage db")
    made.resume("storage db")  # basic.consume sent, no answer yet
    made.pause("storage db")  # no consumer to cancel yet
    made.resume("storage db")
    assert len(channel.consumes) == 1  # not a second consumer beside the first
    channel.consumes[0].callback((consumer_queue(), "ctag-1"))
    assert made._consumer_tag == "ctag-1" and channel.cancelled is None


def test_a_consumer_that_arrives_while_paused_is_cancelled():
    made, clock, delivered = source()
    made._channel = channel = SlowChannel()
    made.pause("storage db")
    made.resume("storage db")
    made.pause("storage db")  # paused before RabbitMQ answered the consume
    channel.consumes[0].callback((consumer_queue(), "ctag-1"))
    assert channel.cancelled == "ctag-1" and made._consumer_tag == ""

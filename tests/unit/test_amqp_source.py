"""The AMQP source without a broker: topics and routing keys, acknowledgements in delivery order with
``multiple``, acks of a lost channel dropped, deliveries held while paused, copies of deliveries a lost
channel left in flight recognised by their ``message_id``."""

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


def delivery(tag, key, message_id=None, redelivered=False, body=b"{}", encoding=None):
    return (None, SimpleNamespace(delivery_tag=tag, routing_key=key, redelivered=redelivered),
            SimpleNamespace(message_id=message_id, content_type=None, headers=None, content_encoding=encoding), body)


def test_a_body_is_read_in_the_content_encoding_its_publisher_gave():
    """Telegraf's amqp output with ``content_encoding = "gzip"`` sends gzip bodies with that property, and kombu
    (Celery) and many pika publishers put the JSON's charset there (``utf-8``): a gzip body was a dead letter of
    its compressed bytes, a Latin-1 one a dead letter for bytes that are not UTF-8. A gzip body is inflated up to
    the broker's ``max_payload``; one that is no gzip, one that inflates beyond it, and an encoding no one reads
    are handed over as they came with the reason (the channel keeps them as dead letters); a body over
    ``max_payload`` is handed over by reference."""
    import gzip
    import zlib

    made, _, delivered = source()
    bomb = gzip.compress(b"0" * ((8 << 20) + 1))
    for tag, body, encoding in [
            (1, gzip.compress(b'{"v": 1}'), "gzip"), (2, zlib.compress(b'{"v": 2}'), "deflate"),
            (3, '{"unit": "°C"}'.encode("latin-1"), "ISO-8859-1"), (4, b'{"v": 4}', "UTF-8"),
            (5, b'{"v": 5}', "binary"), (6, b'{"v": 6}', None), (7, b'{"v": 7}', ""),
            (8, b'{"v": 8}', "gzip"), (9, bomb, "x-gzip"), (10, b'{"v": 10}', "br"), (11, b'{"v": 11}', "zlib"),
            (12, b"0" * ((8 << 20) + 1), None)]:
        made._received(delivery(tag, "a.x", body=body, encoding=encoding), 1)
    assert [m.payload for m in delivered[:7]] == [b'{"v": 1}', b'{"v": 2}', '{"unit": "°C"}'.encode(), b'{"v": 4}',
                                                  b'{"v": 5}', b'{"v": 6}', b'{"v": 7}']
    assert [m.refused for m in delivered[:7]] == [None] * 7
    assert [(m.payload, m.refused) for m in delivered[7:11]] == [
        (b'{"v": 8}', "content_encoding gzip, but the body is no gzip: Error -3 while decompressing data: "
                      "incorrect header check"),
        (bomb, "a x-gzip body that inflates beyond the broker's max_payload = 8388608 bytes"),
        (b'{"v": 10}', "content_encoding 'br' is no encoding lorrygate reads: gzip, deflate, identity or a charset "
                       "(utf-8); have the publisher send one of them"),
        (b'{"v": 11}', "content_encoding 'zlib' is no encoding lorrygate reads: gzip, deflate, identity or a "
                       "charset (utf-8); have the publisher send one of them")]
    too_large = delivered[11]
    assert (too_large.payload, too_large.oversize[0], too_large.refused) == (b"", (8 << 20) + 1, None)


def test_a_charset_in_both_content_encoding_and_content_type_is_read_once():
    """A Latin-1 body whose ``content_encoding`` and ``content_type`` both name the charset: the source left
    nothing to the channel, and the channel read the source's UTF-8 as Latin-1 again (``Â°C``)."""
    from lorrygate.decoding.charsets import as_utf8

    made, _, delivered = source()
    item = delivery(1, "a.x", body='{"unit": "°C"}'.encode("latin-1"), encoding="ISO-8859-1")
    item[2].content_type = "application/json; charset=ISO-8859-1"
    made._received(item, 1)
    (message,) = delivered
    assert as_utf8(message.payload, message.content_type) == ('{"unit": "°C"}'.encode(), "application/json")


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


def lose_channel(made):
    """The connection closes and a new channel opens (generation + 1)."""
    made._lost(made._channel, "cut")
    made._channel = Channel()


def test_a_copy_of_a_delivery_in_flight_is_acknowledged_once_the_first_commits():
    made, clock, delivered = source()
    made._received(delivery(1, "a.x", "id-1", body=b"1"), 1)
    made._received(delivery(2, "a.x", "id-2", body=b"2"), 1)
    lose_channel(made)
    # RabbitMQ sends both again under new tags, redelivered; the first delivery of id-1 commits meanwhile
    delivered[0].ack.ack()
    made._received(delivery(1, "a.x", "id-1", redelivered=True, body=b"1"), 2)
    made._received(delivery(2, "a.x", "id-2", redelivered=True, body=b"2"), 2)
    assert len(delivered) == 2  # neither handed over again
    assert made.redelivered_in_flight == 2
    clock.advance(0)
    assert made._channel.acks == [(1, True)]  # id-1 was committed: its copy is acknowledged at once
    delivered[1].ack.ack()  # the first delivery of id-2 commits: its copy is acknowledged
    clock.advance(0)
    assert made._channel.acks == [(1, True), (2, True)]
    assert made._away == {} and made._away_acks == {} and made._copies == {}


def test_only_a_redelivered_copy_with_the_same_id_key_and_body_is_held_back():
    made, clock, delivered = source()
    made._received(delivery(1, "a.x", "id-1", body=b"1"), 1)
    lose_channel(made)
    made._received(delivery(1, "a.x", "id-1", redelivered=False, body=b"1"), 2)  # a new message
    made._received(delivery(2, "a.x", "id-1", redelivered=True, body=b"other"), 2)  # another body
    made._received(delivery(3, "a.y", "id-1", redelivered=True, body=b"1"), 2)  # another routing key
    made._received(delivery(4, "a.x", None, redelivered=True, body=b"1"), 2)  # no id
    assert len(delivered) == 5 and made.redelivered_in_flight == 0
    made._received(delivery(5, "a.x", "id-1", redelivered=True, body=b"1"), 2)
    assert len(delivered) == 5 and made.redelivered_in_flight == 1
    made._received(delivery(6, "a.x", "id-1", redelivered=True, body=b"1"), 2)  # one copy per delivery in flight
    assert len(delivered) == 6


def test_a_copy_lost_with_the_next_channel_waits_for_the_next_copy():
    made, clock, delivered = source()
    made._received(delivery(1, "a.x", "id-1"), 1)
    lose_channel(made)
    made._received(delivery(7, "a.x", "id-1", redelivered=True), 2)
    lose_channel(made)  # the copy (unacknowledged: the first is still in flight) is lost too
    made._received(delivery(3, "a.x", "id-1", redelivered=True), 3)
    assert len(delivered) == 1 and made.redelivered_in_flight == 2
    delivered[0].ack.ack()
    clock.advance(0)
    assert made._channel.acks == [(3, True)]


def test_a_copy_of_a_delivery_acknowledged_just_before_the_loss_is_acknowledged_at_once():
    """RabbitMQ had not read the ``basic.ack`` when the connection closed: it sends the message again."""
    made, clock, delivered = source()
    made._received(delivery(1, "a.x", "id-1"), 1)
    made._received(delivery(2, "a.x"), 1)  # no id: nothing to recognise it by
    delivered[0].ack.ack()
    delivered[1].ack.ack()
    clock.advance(0)
    lose_channel(made)
    assert made._identities == {}
    made._received(delivery(1, "a.x", "id-1", redelivered=True), 2)
    made._received(delivery(2, "a.x", redelivered=True), 2)
    assert len(delivered) == 3 and delivered[2].ack.tag == 2  # only the one without an id again
    clock.advance(0)
    assert made._channel.acks == [(1, True)]
    assert made._away == {} and made._away_acks == {}


def test_the_latest_acknowledged_are_remembered_up_to_twice_the_window():
    made, clock, delivered = source()
    window = made._recent.maxlen
    assert window == max(2 * made.prefetch, 1000)
    for tag in range(1, window + 11):
        made._received(delivery(tag, "a.x", f"id-{tag}"), 1)
        delivered[-1].ack.ack()
    lose_channel(made)
    assert len(made._away) == window and "id-10" not in {identity[0] for identity in made._away}


def test_a_copy_acknowledged_just_before_the_next_loss_is_recognised_again():
    made, clock, delivered = source()
    made._received(delivery(1, "a.x", "id-1"), 1)
    lose_channel(made)
    delivered[0].ack.ack()
    made._received(delivery(4, "a.x", "id-1", redelivered=True), 2)  # acknowledged at once
    clock.advance(0)
    lose_channel(made)  # before RabbitMQ read that ack
    made._received(delivery(2, "a.x", "id-1", redelivered=True), 3)
    clock.advance(0)
    assert len(delivered) == 1 and made.redelivered_in_flight == 2
    assert made._channel.acks == [(2, True)]

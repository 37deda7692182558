"""Headers a publisher sends beside the payload (MQTT 5 user properties, AMQP headers, Kafka record headers) as
tags: which a channel's ``headers`` names, a repeated one joined, a missing one no tag; their values as text
whatever bus they came by; the config problems of a ``headers`` no message of the channel can have."""

import datetime
import decimal
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from lorrygate.config import loads
from lorrygate.config import values as v
from lorrygate.decoding.transform import Transform, header_tags
from lorrygate.errors import ConfigError
from lorrygate.model import Address, Message, Record
from lorrygate.mqtt import codec
from lorrygate.pipeline.model import PipelineError, build_settings
from lorrygate.sources import headers
from lorrygate.sources.amqp import AMQPSource
from lorrygate.sources.mqtt import MQTTSource

SENT = (("device-id", "d-17"), ("zone", "north"), ("fw", "1.2.0"), ("zone", "roof"))


def test_the_named_headers_become_tags_a_repeated_one_joined_a_missing_one_none():
    wanted = (("device-id", "device"), ("zone", "zone"), ("tenant", "tenant"))
    assert header_tags(wanted, SENT) == {"device": "d-17", "zone": "north, roof"}
    assert header_tags(wanted, ()) == {}
    assert header_tags((("Device-Id", "device"),), SENT) == {}  # names are compared as sent (MQTT, AMQP, Kafka)


def test_a_transform_adds_them_to_each_record_and_a_field_keeps_its_own_name():
    transform = Transform(headers=(("device-id", "device"), ("zone", "zone")))
    assert transform.active
    message = Message("a/b", b"", 1, headers=SENT)
    records = [Record(1, {"t": 21.5}, {"site": "x"}), Record(2, {"t": 22.0, "device": "own"}, {})]
    out = transform.apply(records, message, Address("a", None, None, None, "data"), "json")
    assert [r.tags for r in out] == [{"site": "x", "device": "d-17", "zone": "north, roof"},
                                     {"device": "d-17", "zone": "north, roof"}]
    assert out[1].fields == {"t": 22.0, "device": "own"}  # (the storage's flatten lets a field win over a tag)
    plain = transform.apply(records, Message("a/b", b""), None, "json")
    assert [r.tags for r in plain] == [{"site": "x"}, {}]


@pytest.mark.parametrize(("text", "expected"), [
    ("device-id", (("device-id", "device-id"),)),
    ("device-id:device, fw", (("device-id", "device"), ("fw", "fw"))),
    ("urn:x:id:thing", (("urn:x:id", "thing"),)),  # the last colon splits
    (" a : b ,\n c ", (("a", "b"), ("c", "c"))),
])
def test_the_headers_key(text, expected):
    assert v.header_tags(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (":tag", "not one"), ("header:", "not one"), ("a:t, b:t", "two are stored as the tag 't'"),
    (", ,", "one or more header names"),
])
def test_a_bad_headers_key_says_what(text, expected):
    with pytest.raises(v.Invalid, match=expected):
        v.header_tags(text)


def config(broker: str, channel: str = "headers = device-id:device") -> str:
    return f"[broker:b]\nhost = h\n{broker}\n[storage:s]\nurl = sqlite:///x\n[channel:c]\ntopics = a/#\n{channel}\n"


def test_a_channel_stores_headers_of_an_mqtt_5_broker():
    settings = loads(config("protocol = 5"))
    assert settings.channels[0].transform.headers == (("device-id", "device"),)


def test_headers_of_an_mqtt_3_1_1_broker_are_a_problem_that_says_how_to_fix_it():
    with pytest.raises(ConfigError) as info:
        loads(config(""), source="gateway.ini")
    [problem] = [str(p) for p in info.value.problems]
    assert "[channel:c] headers" in problem and "protocol = 5 on [broker:b]" in problem, problem


def test_headers_of_redis_pub_sub_a_zmq_broker_or_a_files_source_are_a_problem():
    assert loads(config("type = redis")).channels[0].transform.headers == (("device-id", "device"),)  # streams
    with pytest.raises(ConfigError, match=r"headers: expected mode = streams \(headers are the fields"):
        loads(config("type = redis", "headers = device-id\nmode = pubsub"), source="gateway.ini")
    with pytest.raises(ConfigError, match="no headers for a channel of a zmq broker"):
        loads(config("type = zmq\nport = 5555"), source="gateway.ini")
    text = ("[source:f]\ntype = files\npath = /tmp/*.csv\n[storage:s]\nurl = sqlite:///x\n"
            "[channel:c]\nsource = f\nheaders = device-id\n")
    with pytest.raises(ConfigError, match="no headers for a channel of a files source"):
        loads(text, source="gateway.ini")


def test_an_http_sources_channel_takes_request_headers_without_case():
    text = ("[source:web]\ntype = http\nlisten = 127.0.0.1:0\n[storage:s]\nurl = sqlite:///x\n"
            "[channel:c]\nsource = web\nheaders = X-Sensor:sensor, X-PIN\n")
    assert loads(text).channels[0].transform.headers == (("x-sensor", "sensor"), ("x-pin", "X-PIN"))


def test_the_launch_languages_transform_takes_them():
    settings = build_settings('mqtt://localhost/a/%23?protocol=5 ! transform headers="device-id:device, zone" '
                              "! sqlite:///x.db")
    assert settings.channels[0].transform.headers == (("device-id", "device"), ("zone", "zone"))
    with pytest.raises(PipelineError, match="mqtt:// with protocol=5"):
        build_settings("mqtt://localhost/a/%23 ! transform headers=device-id ! sqlite:///x.db")
    with pytest.raises(PipelineError, match="transform: expected header names"):
        build_settings("mqtt://localhost/a/%23?protocol=5 ! transform headers=:x ! sqlite:///x.db")


def test_header_values_as_text():
    assert headers.text("d-17") == "d-17"
    assert headers.text(b"1.2") == "1.2"
    assert headers.text(b"\xff\x00a") == "\\xff\x00a"
    assert (headers.text(True), headers.text(False)) == ("true", "false")
    assert (headers.text(5), headers.text(2.5), headers.text(decimal.Decimal("1.10"))) == ("5", "2.5", "1.10")
    assert headers.text(datetime.datetime(2024, 6, 1, 12, 0)) == "2024-06-01T12:00:00"
    assert headers.text({"a": [1, b"x", None]}) == '{"a":[1,"x",null]}'
    assert headers.text(None) is None
    assert headers.pairs([("a", b"1"), ("void", None), ("b", 2)]) == (("a", "1"), ("b", "2"))
    assert headers.pairs(None) == ()


def test_an_mqtt_5_publishes_user_properties_are_the_messages_headers():
    settings = loads(config("protocol = 5"))
    delivered = []
    source = MQTTSource("c", settings.brokers["b"], ("a/#",), 1, delivered.append, Clock())
    props = {"user_property": (("device-id", "d-17"), ("zone", "a"), ("zone", "b")), "content_type": "text/csv"}
    source._received(codec.Publish("a/x", b"1", 1, False, False, 7, props), None)
    source._received(codec.Publish("a/y", b"2", 1, False, False, 8, {}), None)
    assert [(m.headers, m.content_type) for m in delivered] == [
        ((("device-id", "d-17"), ("zone", "a"), ("zone", "b")), "text/csv"), ((), None)]


def test_an_amqp_messages_headers_and_content_type():
    settings = loads("[broker:b]\ntype=amqp\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=a/#\n")
    delivered = []
    made = AMQPSource("c", settings.brokers["b"], ("a/#",), delivered.append, Clock())
    made._generation = 1
    method = SimpleNamespace(delivery_tag=1, routing_key="a.x", redelivered=False)
    properties = SimpleNamespace(message_id=None, content_type="application/cbor", content_encoding=None,
                                 headers={"device-id": b"d-17", "count": 3, "void": None,
                                          "timestamp_in_ms": 1_717_243_200_123})
    made._received((None, method, properties, b"\xa0"), 1)
    bare = SimpleNamespace(message_id=None, content_type=None, content_encoding=None, headers=None)
    made._received((None, SimpleNamespace(delivery_tag=2, routing_key="a.y", redelivered=False), bare, b"{}"), 1)
    assert [(m.headers, m.content_type, m.sent) for m in delivered] == [
        ((("device-id", "d-17"), ("count", "3"), ("timestamp_in_ms", "1717243200123")), "application/cbor",
         1_717_243_200.123), ((), None, None)]  # (RabbitMQ's message timestamp plugin's time: the bus's time)


def test_what_a_publishing_sink_sends_with_each_item():
    """``payload = message``: the message's Content Type and headers; ``records``: JSON; a dead letter: nothing.
    As MQTT 5 properties (characters no MQTT string may hold escaped) and as Kafka record headers (the Content
    Type as ``content-type``, which the Kafka source reads back)."""
    from lorrygate.model import TableName
    from lorrygate.storage.batch import Batch, DeadLetter, Entry
    from lorrygate.storage.kafka_sink import kafka_headers
    from lorrygate.storage.mqtt_sink import mqtt_properties, outgoing

    made = Batch()
    message = Message("r/n/g/d/data.json", b"\xa0", 1, content_type="application/cbor",
                      headers=(("device-id", "d\x00-17"), ("zone", "a"), ("zone", "b")))
    made.add(Entry(TableName("r_n", "g_d_sensors"), [Record(1, {"t": 1}, {})], "main", message, "cbor",
                   Address("r", "n", "g", "d", "data", "data.json")))
    made.add_dead_letter(DeadLetter("main", message, "decode", "bad"))
    as_sent = [item[4] for item in outgoing(made, lambda entry: "out", "message", "dead")]
    assert as_sent == [("application/cbor", message.headers), None]
    assert [item[4] for item in outgoing(made, lambda entry: "out", "records", "dead")] == [
        ("application/json", ()), None]
    assert mqtt_properties(as_sent[0]) == {
        "content_type": "application/cbor", "user_property": (("device-id", "d\\u0000-17"), ("zone", "a"), ("zone", "b"))}
    assert mqtt_properties(("application/json", ())) == {"content_type": "application/json"}
    assert mqtt_properties((None, ())) == {} and mqtt_properties(None) is None
    assert kafka_headers(as_sent[0]) == [("content-type", b"application/cbor"), ("device-id", b"d\x00-17"),
                                         ("zone", b"a"), ("zone", b"b")]
    assert kafka_headers((None, (("Content-Type", "text/csv"),))) == [("Content-Type", b"text/csv")]
    assert kafka_headers(("application/json", (("content-type", "text/csv"),))) == [
        ("content-type", b"application/json")]
    assert kafka_headers((None, ())) is None and kafka_headers(None) is None


def kafka_source(delivered: list):
    """A Kafka source without a consumer thread: its ``_deliver`` hands what it reads to ``delivered``."""
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.kafka import KafkaSource

    class Reactor:
        def callFromThread(self, function, *args):
            pass

    return KafkaSource("k", BrokerSettings(name="k", host="127.0.0.1:9092", type="kafka"), ("t",), delivered.append,
                       Reactor())


def test_a_kafka_records_content_type_header_is_its_content_type():
    delivered: list = []
    kafka_source(delivered)._deliver([("t", 0, 1, b"a/b", b"\xa0", [("Content-Type", b"application/cbor"), ("x", b"1")], (1, 5)),
                     ("t", 0, 2, b"a/b", b"{}", None, (0, -1))], 0, 1.0)
    assert [(m.content_type, m.headers) for m in delivered] == [
        ("application/cbor", (("Content-Type", "application/cbor"), ("x", "1"))), (None, ())]


def test_a_kafka_records_timestamp_is_the_time_of_its_rows_without_one():
    """A record's timestamp (the producer's or the broker's) is the bus's time of the message: a row whose
    payload has no time takes it, not the time the gateway read it (a backlog read a day later was stored at
    the drain's minutes, and a redelivered copy got another time, so idempotent rows did not find it). A
    timestamp before 2000 (a producer whose clock is not set) is none."""
    from lorrygate.decoding.records import received_ns

    delivered: list = []
    kafka_source(delivered)._deliver([("t", 0, 1, b"a/b", b"1", None, (1, 1_717_243_200_123)),   # CreateTime
                     ("t", 0, 2, b"a/b", b"2", None, (2, 1_717_243_201_000)),   # LogAppendTime
                     ("t", 0, 3, b"a/b", b"3", None, (0, -1)),                  # none
                     ("t", 0, 4, b"a/b", b"4", None, (1, 5_000))], 0, 1_800_000_000.5)
    assert [m.sent for m in delivered] == [1_717_243_200.123, 1_717_243_201.0, None, None]
    assert [received_ns(m) for m in delivered] == [1_717_243_200_123_000_000, 1_717_243_201_000_000_000,
                                                   1_800_000_000_500_000_000, 1_800_000_000_500_000_000]

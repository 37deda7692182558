"""The MQTT sink without a broker: topic templates, each message once, records as JSON, dead letters."""

import json

import pytest

from lorrygate.config.settings import sink_broker
from lorrygate.model import Address, Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.mqtt_sink import MqttSink


def batch():
    made = Batch()
    message = Message("r/net/gw/n1/data.json", b'{"t": 21.5}')
    address = Address("r", "net", "gw", "n1", "data", "data.json")
    made.add(Entry(TableName("r_net", "gw_n1_sensors"), [Record(1_700_000_000 * 10**9, {"t": 21.5}, {"site": "a"})],
                   "main", message, "json", address))
    made.add(Entry(TableName("r_net", "gw_n1_events"), [Record(1_700_000_000 * 10**9, {"e": 1})], "main", message,
                   "json", address))  # a second table of the same message
    made.add(Entry(None, [], "main", Message("r/net/gw/n1/cmd", b"on"), ""))  # acknowledged without rows
    made.add_dead_letter(DeadLetter("main", Message("r/bad", b"\xff"), "topology", "no fit"))
    return made


def test_the_payload_as_it_came_once_per_message():
    sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None, topic="relayed/{realm}/{node}/{rest}")
    items = list(sink._items(batch()))
    assert items[0] == ("relayed/r/n1/data.json", b'{"t": 21.5}')
    assert len(items) == 2  # the message once, then its dead letter
    dead = json.loads(items[1][1])
    assert items[1][0] == "lorrygate/dead-letters" and dead["payload_base64"] == "/w==" and dead["stage"] == "topology"


def test_records_as_json_to_their_tables():
    sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None, topic="tables/{schema}/{table}", payload="records")
    items = list(sink._items(batch()))
    assert [topic for topic, _ in items[:2]] == ["tables/r_net/gw_n1_sensors", "tables/r_net/gw_n1_events"]
    assert json.loads(items[0][1]) == {"time": "2023-11-14T22:13:20.000000000Z", "site": "a", "t": 21.5}


def test_a_sink_that_is_not_connected_fails_the_batch_with_the_reason():
    from lorrygate.errors import StorageError

    sink = MqttSink("out", sink_broker("out", "mqtt://broker.example:1884/"), None)
    failure = []
    sink.write(batch()).addErrback(failure.append)
    assert failure[0].check(StorageError) and "broker.example:1884 is away" in failure[0].getErrorMessage()


def test_records_with_nan_or_bytes_are_strict_json():
    """A value that is NaN or an infinity (values = as-sent) is null: "NaN" is no JSON, and a reader such as a
    browser's or another service's parser refused the whole record. Bytes are base64."""
    made = Batch()
    made.add(Entry(TableName("r_net", "gw_n1_sensors"),
                   [Record(1_700_000_000 * 10**9, {"t": float("nan"), "l": [float("inf"), 1], "b": b"\x00\xff"})],
                   "main", Message("r/net/gw/n1/data.msgpack", b"..."), "msgpack"))
    sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None, topic="tables/{table}", payload="records")
    ((_, payload),) = sink._items(made)
    assert json.loads(payload, parse_constant=lambda name: pytest.fail(f"{name} in {payload!r}")) == {
        "time": "2023-11-14T22:13:20.000000000Z", "t": None, "l": [None, 1], "b": "AP8="}


def test_a_record_nested_too_deeply_for_json_text_is_a_dead_letter_and_the_batch_goes_on():
    """A payload nested 1,000 levels deep failed the batch on every retry (the sink was down for good); its
    message is a dead letter now (published to the dead-letter topic, counted once however often the batch is
    sent), the records beside it are published."""
    deep: dict = {"v": 1}
    for _ in range(1000):
        deep = {"k": deep}
    made = Batch()
    message = Message("r/net/gw/n1/data.json", b'{"deep": "..."}')
    made.add(Entry(TableName("r_net", "gw_n1_sensors"), [Record(1, {"t": 1}), Record(2, {"deep": deep}),
                                                         Record(3, {"t": 3})], "main", message, "json"))
    sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None, topic="tables/{table}", payload="records")
    for _ in range(2):  # (sent again after a failed publish)
        items = list(sink._items(made))
        assert [topic for topic, _ in items] == ["tables/gw_n1_sensors", "lorrygate/dead-letters", "tables/gw_n1_sensors"]
        assert "nested too deeply to be JSON text" in json.loads(items[1][1])["error"]
    assert len(made.extra_dead) == 1 and made.refused_rows == 1


@pytest.mark.parametrize("topic, why", [
    ("", "the topic is empty"),
    ("a/+/b", "'+' at character 2 (a wildcard)"),
    ("a/#", "'#' at character 2 (a wildcard)"),
    ("a\x00b", "U+0000"),
    ("a/\x1fb", "U+001F"),
    ("a/\x7f", "U+007F"),
    ("a/\x9f", "U+009F"),
    ("a/\ufdd0", "U+FDD0"),
    ("a/\uffff", "U+FFFF"),
    ("a/\U0010fffe", "U+10FFFE"),
    ("a/\ud800", "U+D800"),
    ("x" * 65536, "65536 bytes long"),
    ("ü" * 32768, "65536 bytes long"),
], ids=["empty", "plus", "hash", "nul", "control", "delete", "c1", "nonchar", "ffff", "plane-16", "surrogate",
        "long", "long-utf8"])
def test_what_no_topic_name_may_hold(topic, why):
    """MQTT 4.7.3 and 1.5.4 (what Mosquitto closes the connection for): said before the sink publishes."""
    from lorrygate.storage.mqtt_sink import topic_problem

    assert why in topic_problem(topic)


@pytest.mark.parametrize("topic", ["a", "a/b/c", "/", "a//b", "$data/x", "ü/€/𝄞", "x" * 65535, "a b/ c"])
def test_topic_names_that_are_fine(topic):
    from lorrygate.storage.mqtt_sink import topic_problem

    assert topic_problem(topic) is None


@pytest.mark.parametrize("payload", ["message", "records"])
def test_what_a_try_published_is_neither_sent_again_nor_spooled(payload):
    """The keys of what the broker acknowledged go into the batch's progress (`MqttSink._settle`): a retry
    leaves those out, and so does the spool, where a failed batch goes."""
    from lorrygate.storage import spool
    from lorrygate.storage.mqtt_sink import outgoing

    made = batch()
    sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None, payload=payload)
    items = list(outgoing(made, sink.topic_for, payload, sink.dead_letter_topic))
    made.progress.update(items[0][3])  # the first message (and in records, its first record) acknowledged
    again = list(outgoing(made, sink.topic_for, payload, sink.dead_letter_topic))
    assert again == items[1:]
    kept = spool.decode(spool.encode(made))
    if payload == "message":  # the message of both entries was published: neither is spooled
        assert [entry.table for entry in kept.entries] == [None]
    else:
        assert [entry.table and entry.table.table for entry in kept.entries] == ["gw_n1_events", None]
    assert len(kept.dead_letters) == 1
    made.progress.update(key for item in again for key in item[3])
    assert list(outgoing(made, sink.topic_for, payload, sink.dead_letter_topic)) == []
    assert not spool.decode(spool.encode(made)).dead_letters


class Protocol:
    """The sink's side of a connection: each publish a Deferred the test fires (a PUBACK, or the loss)."""

    def __init__(self):
        from twisted.internet.defer import Deferred

        self.published: list = []
        self._made = Deferred

    def publish(self, topic, payload, qos, properties=None):
        d = self._made()
        self.published.append((topic, d))
        return d


def test_after_a_lost_connection_only_what_the_broker_acknowledged_is_kept_and_the_suspect_is_the_first_other():
    """What the broker acknowledged is in the progress and not sent again; the message whose PUBACK the sink was
    waiting for when the connection went is not, nor one the broker asked to send again (quota exceeded), in
    whatever order the PUBACKs and the loss come (each noted as it comes, `_Flight`, not read back from a
    Deferred an awaiting coroutine may have taken the result of). The message to send alone on the next try is
    the first one the broker did not acknowledge."""
    from twisted.internet.defer import ensureDeferred
    from twisted.python.failure import Failure

    from lorrygate.errors import StorageError
    from lorrygate.mqtt.codec import PUBACK, PubAck

    sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None)
    protocol = Protocol()
    items = [("a", "out/a", b"1", ((0, 0),), None), ("b", "out/b", b"2", ((1, 0),), None),
             ("c", "out/c", b"3", ((2, 0),), None), ("d", "out/d", b"4", ((3, 0),), None)]
    progress: set = set()
    failures: list = []
    ensureDeferred(sink._publish(protocol, items, progress)).addErrback(failures.append)
    (_, a), (_, b), (_, c), (_, d) = protocol.published
    c.callback(PubAck(PUBACK, 3))  # acknowledged while the sink waits for a
    b.errback(Failure(ConnectionError("lost")))  # the loss, seen by b before the sink awaits it
    a.callback(PubAck(PUBACK, 1))  # the sink settles a, then finds b failed, its result gone once awaited
    d.errback(Failure(ConnectionError("lost")))
    (failure,) = failures
    assert failure.check(StorageError)
    assert progress == {(0, 0), (2, 0)} and sink.published == 2
    assert sink._suspect == (("out/b", 1, hash(b"2")), 2)  # b, then d, each alone

    for first in (True, False):
        sink, refused, progress = MqttSink("out", sink_broker("out", "mqtt://h/"), None), Protocol(), set()
        ensureDeferred(sink._publish(refused, items[:2], progress)).addErrback(failures.append)
        (_, a), (_, b) = refused.published
        if first:
            b.callback(PubAck(PUBACK, 2, 0x97))  # quota exceeded, before a settles: the batch is tried again
            a.callback(PubAck(PUBACK, 1))
        else:
            a.callback(PubAck(PUBACK, 1))
            b.callback(PubAck(PUBACK, 2, 0x97))
        assert "tried again" in str(failures[-1].value) and progress == {(0, 0)}


def test_a_311_sink_says_once_that_content_types_and_headers_are_not_published():
    """MQTT 3.1.1 has no properties: a relay to such a broker dropped the Content Types and headers the publishers
    sent without a word. Said once; records (whose application/json the sink adds) and plain messages say nothing."""
    from twisted.internet.defer import succeed
    from twisted.logger import LogLevel, globalLogPublisher

    from lorrygate.mqtt import codec

    class Protocol:
        connected, version = True, codec.MQTT_3_1_1

        def __init__(self):
            self.sent = []

        def publish(self, topic, payload, qos, properties=None):
            self.sent.append((topic, properties))
            return succeed(None)

    def relayed(sink, protocol, message) -> None:
        made = Batch()
        made.add(Entry(TableName("r", "t"), [Record(1, {"t": 1})], "main", message, "json"))
        sink._client = type("Client", (), {"_protocol": protocol, "last_error": ""})()
        sink.write(made)

    said = []

    def observe(event):
        if event.get("log_level") == LogLevel.warn and "MQTT 3.1.1" in event.get("log_format", ""):
            said.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        for payload in ("records", "message"):
            sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None, payload=payload)
            relayed(sink, Protocol(), Message("a/b", b"{}"))
        assert said == []
        sink = MqttSink("out", sink_broker("out", "mqtt://h/"), None)
        protocol = Protocol()
        for _ in range(2):
            relayed(sink, protocol, Message("a/b", b"\xa0", content_type="application/cbor", headers=(("id", "7"),)))
        assert len(said) == 1 and said[0]["sink"] == "out" and len(protocol.sent) == 2
    finally:
        globalLogPublisher.removeObserver(observe)

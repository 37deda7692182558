"""A payload of lines with bad lines: the good lines are stored, the bad ones kept as a dead letter of their own."""

import json

import pytest
from twisted.internet.task import Clock

from lorrygate.decoding import DecoderChain
from lorrygate.decoding.jsonobject import JsonDecoder
from lorrygate.decoding.lineprotocol import InfluxDecoder
from lorrygate.decoding.text import CsvDecoder, KeyValueDecoder, NdjsonDecoder
from lorrygate.errors import Declined, DecodeError, PartlyDecoded
from lorrygate.model import Channel, Message, Record, TableName
from lorrygate.service.channel import ChannelRouter
from lorrygate.storage import spool
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage
from lorrygate.storage.positions import Positions
from lorrygate.topology import WanStrategy

NOW = 1_700_000_000.0


def message(payload: bytes, topic="r/n/g/d/data.ndjson", position=None) -> Message:
    return Message(topic, payload, 1, False, NOW, "#", position=position)


def test_ndjson_stores_the_good_lines_and_keeps_the_bad_ones():
    with pytest.raises(PartlyDecoded) as caught:
        NdjsonDecoder().decode(message(b'{"a": 1}\n{"a": \n\n{"a": 3}\n[1]\n'), None)
    partly = caught.value
    assert [record.fields for record in partly.records] == [{"a": 1}, {"a": 3}]
    assert partly.payload == b'{"a": \n[1]\n' and partly.bad == 2
    assert partly.reason.startswith("2 of 4 lines: line 2 is not JSON: ")
    assert partly.reason.endswith("; line 4 is not a JSON object")


def test_a_bad_line_alone_is_a_decode_error_as_before():
    """Nothing decoded: the whole message is the dead letter, with the line's reason."""
    with pytest.raises(DecodeError) as caught:
        NdjsonDecoder().decode(message(b'{"a": 1, "time": "yesterday"}\n{"a": \n'), None)
    assert type(caught.value) is DecodeError
    assert caught.value.reason.startswith("2 of 2 lines: line 1: field 'time': ")


def test_csv_keeps_the_header_as_sent_with_its_bad_lines():
    """A replay of the dead letter reads the names from the header, announced (``##``) as it was."""
    with pytest.raises(PartlyDecoded) as caught:
        CsvDecoder().decode(message(b"## temp,hum\n1,2\n3\n4,5,6\n\"x,y\"\n7,8\n"), None)
    partly = caught.value
    assert [record.fields for record in partly.records] == [{"temp": 1, "hum": 2}, {"temp": 7, "hum": 8}]
    assert partly.payload == b'## temp,hum\n3\n4,5,6\n"x,y"\n'
    assert partly.reason == ("3 of 5 data lines: line 3 has 1 value for 2 columns (temp, hum); line 4 has 3 values "
                             "for 2 columns (temp, hum); line 5 has 1 value for 2 columns (temp, hum)")
    records = CsvDecoder().decode(message(b"temp,hum\n1,2\n3,4\n"), None)
    with pytest.raises(DecodeError) as again:  # the dead letter's payload decodes alone, line by line
        CsvDecoder().decode(message(partly.payload), None)
    assert type(again.value) is DecodeError and again.value.reason.startswith("3 of 3 data lines: line 2 has 1 ")
    assert len(records) == 2


def test_csv_names_more_than_three_bad_lines_by_count():
    payload = b"a,b\n1,2\n" + b"3\n" * 5
    with pytest.raises(PartlyDecoded) as caught:
        CsvDecoder().decode(message(payload), None)
    assert caught.value.reason.endswith("line 5 has 1 value for 2 columns (a, b); and 2 more")
    assert caught.value.payload == b"a,b\n" + b"3\n" * 5


def test_a_csv_header_line_again_is_no_row():
    """Files joined with ``cat``, or a logger that wrote its header anew after a restart: the header again is
    no data line (it was a row of the column names as text)."""
    records = CsvDecoder().decode(message(b"time,temp\n1700000000,2\ntime, temp\n1700000001,4\n"), None)
    assert [(record.time, record.fields) for record in records] == [
        (1_700_000_000_000_000_000, {"temp": 2}), (1_700_000_001_000_000_000, {"temp": 4})]


def test_csv_a_bad_time_spoils_its_line_alone():
    with pytest.raises(PartlyDecoded) as caught:
        CsvDecoder().decode(message(b"time,temp\n1700000000,2\nyesterday,3\n"), None)
    assert [record.fields for record in caught.value.records] == [{"temp": 2}]
    assert caught.value.reason.startswith("line 3: field 'time': ")
    assert caught.value.payload == b"time,temp\nyesterday,3\n"


def test_csv_a_quote_that_never_ends_spoils_its_line_alone():
    """A quote cut short on a serial link made the csv module refuse the whole text: the good lines were lost
    with it (the message a dead letter as a whole). Read line by line, that line alone is bad."""
    payload = b'time,temp\n1700000000,2\n1700000001,"3\n1700000002,"4"x\n1700000003,5\n'
    with pytest.raises(PartlyDecoded) as caught:
        CsvDecoder().decode(message(payload), None)
    assert [record.fields for record in caught.value.records] == [{"temp": 2}, {"temp": 5}]
    assert caught.value.payload == b'time,temp\n1700000001,"3\n1700000002,"4"x\n'
    assert caught.value.reason == ("2 of 4 data lines: line 3 is not CSV: unexpected end of data; line 4 is not CSV: "
                                   "',' expected after '\"'")
    # a quoted value over two lines is still one value, where the text is CSV as a whole
    (record,) = CsvDecoder().decode(message(b'note,temp\n"a\nb",2\n'), None)
    assert record.fields == {"note": "a\nb", "temp": 2}


def test_text_that_is_not_csv_goes_on_to_the_next_decoder_as_before():
    """Pretty-printed JSON on a CSV topic: its first line has one cell, and the csv module refuses the text; the
    chain's json decoder takes it (partial CSV would have made it a dead letter)."""
    pretty = b'{\n"a": "x",\n"b": 2\n}\n'
    assert "not CSV" in str(pytest.raises(Exception, CsvDecoder().decode, message(pretty), None).value)
    chain = DecoderChain((CsvDecoder(), JsonDecoder()))
    assert chain.decode(message(pretty, "r/n/g/d/data.csv"), None)[0] == "json"
    for whole in (b'a,b\n"1,2\n', b'a,b\n1,2\x00\n', b'a\x00,b\n1,2\n'):  # no data line read: as before
        with pytest.raises(Exception, match="not CSV|NUL"):
            CsvDecoder().decode(message(whole), None)


@pytest.mark.parametrize("decoder, payload, good, reason", [
    (CsvDecoder(), b"a,b\n1,2\n3,\x00\x00\n5,6\n", [{"a": 1, "b": 2}, {"a": 5, "b": 6}], "line 3 has NUL characters"),
    (NdjsonDecoder(), b'{"a": 1}\n{"a": \x002}\n{"a": 3}\n', [{"a": 1}, {"a": 3}], "line 2 has NUL characters"),
    (InfluxDecoder(), b"cpu v=1 1700000000000000000\ncpu v=\x002\ncpu v=3 1700000001000000000\n",
     [{"v": 1.0}, {"v": 3.0}], "line 2 has NUL characters"),
    (KeyValueDecoder(), b"t=21.5 h=48\nt=21.\x00\x006 h=47\nt=21.7 h=46\n", [{"t": 21.5, "h": 48}, {"t": 21.7, "h": 46}],
     "line 2 has NUL characters"),
], ids=["csv", "ndjson", "line-protocol", "key-value-series"])
def test_a_line_with_nul_characters_spoils_that_line_alone(decoder, payload, good, reason):
    """NUL bytes, a serial link's noise at a logger's power-up, made the whole batch a dead letter ("text with NUL
    characters"). The line with them is the bad line; a payload that begins with them is still no text."""
    if isinstance(decoder, InfluxDecoder):
        pytest.importorskip("line_protocol_parser")
    with pytest.raises(PartlyDecoded) as caught:
        decoder.decode(message(payload), None)
    assert [record.fields for record in caught.value.records] == good
    assert caught.value.reason == reason
    assert b"\x00" in caught.value.payload
    with pytest.raises(Exception, match="NUL characters"):
        decoder.decode(message(b"\x00" + payload), None)


@pytest.mark.parametrize("fmt", ["msgpack", "cbor", "cbor-indefinite"])
@pytest.mark.parametrize("count", [4, 30, 300])
def test_a_binary_array_keeps_its_bad_objects_as_they_came(fmt, count):
    """A MessagePack or CBOR array with one object whose time is no time was a dead letter as a whole. The good
    objects are stored, and the bad ones are kept as an array of their own, each object's bytes as sent (a
    MessagePack timestamp stays one), which a replay decodes alone. (Headers of arrays up to 15, 23, 255
    and 65,535 objects.)"""
    import cbor2
    import msgpack

    from lorrygate.decoding.binary import CborDecoder, MessagePackDecoder

    stamp = msgpack.Timestamp(1_700_000_000)
    objects = [{"time": 1_700_000_000 + i, "v": i} for i in range(count)]
    objects[1] = {"time": "garbage", "v": 1, "at": stamp} if fmt == "msgpack" else {"time": "garbage", "v": 1}
    objects[-1] = {"time": "x", "v": -1}
    if fmt == "msgpack":
        decoder, encode = MessagePackDecoder(), msgpack.packb
        payload = encode(objects, datetime=False)
    else:
        decoder, encode = CborDecoder(), cbor2.dumps
        payload = encode(objects)
        if fmt == "cbor-indefinite":
            payload = b"\x9f" + b"".join(encode(item) for item in objects) + b"\xff"
    with pytest.raises(PartlyDecoded) as caught:
        decoder.decode(message(payload, "r/n/g/d/data.msgpack"), None)
    partly = caught.value
    assert [record.fields["v"] for record in partly.records] == [i for i in range(count) if i not in (1, count - 1)]
    assert partly.reason == (f"2 of {count} objects: object 2: field 'time': not an ISO 8601 time: 'garbage'; object "
                             f"{count}: field 'time': not an ISO 8601 time: 'x'")
    assert partly.noun == "objects" and partly.bad == 2
    kept = encode([objects[1], objects[-1]])
    assert partly.payload == kept  # the bad objects' bytes as they came, in an array
    with pytest.raises(DecodeError) as again:
        decoder.decode(message(partly.payload, "r/n/g/d/data.msgpack"), None)
    assert type(again.value) is DecodeError and again.value.reason.startswith("2 of 2 objects: object 1: ")


def test_a_binary_array_of_good_objects_or_of_bad_ones_alone_or_under_a_tag_is_as_before():
    import cbor2
    import msgpack

    from lorrygate.decoding.binary import CborDecoder, MessagePackDecoder

    good = [{"time": 1_700_000_000, "v": 1}, {"time": 1_700_000_060, "v": 2}]
    bad = [{"time": "garbage", "v": 1}, {"time": 1_700_000_060, "v": 2}]
    for decoder, encode in ((MessagePackDecoder(), msgpack.packb), (CborDecoder(), cbor2.dumps)):
        assert [r.fields for r in decoder.decode(message(encode(good)), None)] == [{"v": 1}, {"v": 2}]
        with pytest.raises(DecodeError) as caught:
            decoder.decode(message(encode(bad[:1])), None)
        assert type(caught.value) is DecodeError
    # a self-described CBOR (tag 55799, the format's magic number): its array, which cbor2 reads as a tuple of
    # frozendicts, was declined ("a list, not an object"); it is decoded, and with a bad object kept whole
    tagged = cbor2.dumps(cbor2.CBORTag(55799, good))
    assert [r.fields for r in CborDecoder().decode(message(tagged), None)] == [{"v": 1}, {"v": 2}]
    with pytest.raises(DecodeError) as caught:
        CborDecoder().decode(message(cbor2.dumps(cbor2.CBORTag(55799, bad))), None)
    assert type(caught.value) is DecodeError


def test_a_key_value_series_stores_the_lines_whose_time_is_a_time():
    payload = b"t=21.5 time=2024-06-01T12:00:00Z\nt=21.6 time=garbage\n\nt=21.7 time=2024-06-01T12:02:00Z\n"
    with pytest.raises(PartlyDecoded) as caught:
        KeyValueDecoder().decode(message(payload), None)
    assert [record.fields for record in caught.value.records] == [{"t": 21.5}, {"t": 21.7}]
    assert caught.value.payload == b"t=21.6 time=garbage\n"
    assert caught.value.reason == "line 2: field 'time': not an ISO 8601 time: 'garbage'"


def test_a_key_value_series_keeps_a_line_that_is_no_pairs_alone():
    """A series of ``key=value`` lines with one line of noise (no pair in it) was declined as a whole: the text as
    one was no pairs either. The lines before and after it are stored, the noise kept; a text whose first line
    is no pairs, or whose lines repeat no key (one record over lines), is declined as before."""
    with pytest.raises(PartlyDecoded) as caught:
        KeyValueDecoder().decode(message(b"t=21.5 h=48\n#!garbage\nt=21.7 h=46\n"), None)
    assert [record.fields for record in caught.value.records] == [{"t": 21.5, "h": 48}, {"t": 21.7, "h": 46}]
    assert caught.value.payload == b"#!garbage\n"
    assert caught.value.reason == "line 2 is not key=value pairs: '#!garbage' is not key=value"
    for declined in (b"#!garbage\nt=21.5 h=48\nt=21.7 h=46\n", b"t=21.5\n#!garbage\nh=48\n",
                     b"t=21.5 h=48\nx=\x00\n"):
        with pytest.raises(Declined):
            KeyValueDecoder().decode(message(declined), None)
    (record,) = KeyValueDecoder().decode(message(b"t=21.5\nh=48\n"), None)  # one record over lines, as before
    assert record.fields == {"t": 21.5, "h": 48}


def test_line_protocol_stores_the_good_points_as_influxdb_does():
    pytest.importorskip("line_protocol_parser")
    with pytest.raises(PartlyDecoded) as caught:
        InfluxDecoder().decode(message(b"cpu v=1 1700000000000000000\ncpu v=\ncpu v=3 1700000001000000000\n"), None)
    assert [record.fields for record in caught.value.records] == [{"v": 1.0}, {"v": 3.0}]
    assert caught.value.payload == b"cpu v=\n" and caught.value.reason.startswith("line 2: ")


def test_a_json_array_keeps_its_bad_objects_as_an_array_as_they_were_sent():
    """A logger's day as an array: the object whose time is no time is kept with its time (the attempt took it
    out) and its NaN, and a replay of it decodes it alone."""
    payload = (b'[{"time": 1700000000, "t": 1}, {"time": "garbage", "t": NaN}, {"time": "2024-01-01T00:00:00Z", '
               b'"t": 3}, {"time": "x", "\\u00e9": 4}]')
    with pytest.raises(PartlyDecoded) as caught:
        JsonDecoder().decode(message(payload), None)
    partly = caught.value
    assert [record.fields for record in partly.records] == [{"t": 1}, {"t": 3}]
    assert partly.payload == '[{"time": "garbage", "t": NaN}, {"time": "x", "é": 4}]'.encode()
    assert partly.reason.startswith("2 of 4 objects: object 2: field 'time': not an ISO 8601 time: 'garbage'; "
                                    "object 4: ")
    assert partly.failed == "the 2 objects"
    with pytest.raises(DecodeError) as again:
        JsonDecoder().decode(message(partly.payload), None)
    assert type(again.value) is DecodeError


def test_a_json_array_of_good_objects_and_a_lone_bad_object_are_as_before():
    records = JsonDecoder().decode(message(b'[{"t": 1}, {"t": 2}]'), None)
    assert [record.fields for record in records] == [{"t": 1}, {"t": 2}]
    with pytest.raises(DecodeError) as caught:
        JsonDecoder().decode(message(b'{"time": "x"}'), None)
    assert type(caught.value) is DecodeError and caught.value.reason == "field 'time': not an ISO 8601 time: 'x'"


def make(max_rows=100):
    clock = Clock()
    storage = MemoryStorage(manual=True)
    batcher = Batcher(storage, clock, max_rows=max_rows)
    channel = Channel("main", "b", ("#",), 1, "wan", ("ndjson",), "s")
    router = ChannelRouter(channel, WanStrategy(), DecoderChain((NdjsonDecoder(),)), batcher, clock)
    return router, storage, batcher


class Acks:
    def __init__(self):
        self.count = 0

    def ack(self):
        self.count += 1


def test_the_router_stores_the_rows_and_the_bad_lines_in_one_commit_and_acks_once():
    router, storage, batcher = make(max_rows=2)
    acks = Acks()
    sent = message(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    sent.ack = acks
    router(sent)
    batcher.flush()
    (batch,) = storage.writes  # two rows and the dead letter, over max_rows, in one batch all the same
    assert [len(entry.records) for entry in batch.entries] == [2] and len(batch.dead_letters) == 1
    assert acks.count == 0
    storage.complete()
    assert acks.count == 1
    (dead,) = storage.dead_letters
    assert (dead.stage, dead.decoder, dead.payload, dead.message.payload) == (
        "decode", "ndjson", b'{"a": \n', sent.payload)
    assert dead.error.startswith("line 2 is not JSON")
    assert (router.stats.routed, router.stats.partly, router.stats.undecodable) == (1, 1, 0)
    assert router.stats.dead_letters == {"decode": 1}


def test_the_tee_gets_the_rows_only_and_the_message_is_acked_once_all_committed():
    router, storage, batcher = make()
    tee_storage = MemoryStorage(manual=True)
    tee = Batcher(tee_storage, Clock())
    router.tee = (tee,)
    acks = Acks()
    sent = message(b'{"a": 1}\n{"a": \n')
    sent.ack = acks
    router(sent)
    batcher.flush()
    tee.flush()
    storage.complete()
    assert acks.count == 0
    tee_storage.complete()
    assert acks.count == 1
    assert [len(batch.dead_letters) for batch in tee_storage.writes] == [0]


def test_a_spooled_batch_keeps_the_bad_lines_and_one_message_for_its_positions():
    """Read back from the spool, the rows and the dead letter of one positioned message (a files source's)
    are one message again: the positions take its range once for both, and leave out neither (a dataflow's
    derived table lost its rows so)."""
    sent = message(b'{"a": 1}\n{"a": \n', position=("file", 0, 17))
    batch = Batch()
    table = TableName("r_n", "g_d_sensors")
    batch.add(Entry(table, [Record(1, {"a": 1}, {})], "main", sent, "ndjson"))
    batch.add(Entry(TableName("r_n", "g_d_sensors_derived"), [Record(1, {"s": 1}, {})], "main", sent, "ndjson"))
    batch.add_dead_letter(DeadLetter("main", sent, "decode", "line 2 is not JSON", "ndjson", b'{"a": \n'))
    back = spool.decode(spool.encode(batch))
    entries, dead_letters, changed, skipped = Positions(loaded=True).select(back.entries, back.dead_letters)
    assert (len(entries), len(dead_letters), skipped) == (2, 1, 0)
    assert changed == {"file": [[0, 17]]}
    assert dead_letters[0].payload == b'{"a": \n' and dead_letters[0].message.payload == sent.payload


class Told(Acks):
    """An ack that answers its sender (the HTTP source's): told of the bad lines before it is acknowledged."""

    def __init__(self):
        super().__init__()
        self.said = []

    def partly(self, why):
        self.said.append((why, self.count))


def test_the_sender_is_told_before_the_commit_and_the_report_says_what_was_stored():
    clock = Clock()
    storage = MemoryStorage()  # (it commits at once: the acknowledgement comes within the router's call)
    batcher = Batcher(storage, clock, max_rows=1)
    channel = Channel("main", "b", ("#",), 1, "wan", ("ndjson",), "s")
    router = ChannelRouter(channel, WanStrategy(), DecoderChain((NdjsonDecoder(),)), batcher, clock)
    reports = []
    router.publish = lambda topic, payload: reports.append((topic, json.loads(payload)))
    told = Told()
    sent = message(b'{"a": 1}\n{"a": \n')
    sent.ack = told
    router(sent)
    clock.advance(0)
    assert told.said == [("decode: line 2 is not JSON: " + storage.dead_letters[0].error.split(": ", 1)[1], 0)]
    assert told.count == 1
    ((topic, report),) = reports
    assert topic == "r/n/g/d/error.json" and report["type"] == "PartlyDecoded"
    assert report["description"] == ("lorrygate stored this message except for the line that could not be decoded; "
                                     "it is kept in the dead-letter table of storage 's'")

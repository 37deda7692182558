"""The JSON decoder, the decoder chain and time parsing."""

from decimal import Decimal

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from lorrygate.decoding import DecoderChain, JsonDecoder
from lorrygate.decoding.timestamps import MAX_NS, MIN_NS, IsoTime, parse_time
from lorrygate.errors import Declined, DecodeError, NoDecoderMatched
from lorrygate.model import Address, Message, Record

RECEIVED = 1_700_000_000.25
RECEIVED_NS = 1_700_000_000_250_000_000
ADDRESS = Address("r", "n", "g", "node", "data", "data.json")
FIELD_ADDRESS = Address("r", "n", "g", "node", "data", "data/temperature", "temperature")


def message(payload: bytes) -> Message:
    return Message("r/n/g/node/data.json", payload, 1, False, RECEIVED, "r/#")


@pytest.mark.parametrize(
    "payload, address, records",
    [
        (b'{"temperature": 21.5, "humidity": 48}', ADDRESS, [Record(RECEIVED_NS, {"temperature": 21.5, "humidity": 48})]),
        (b'{"time": 1717243200, "t": 1}', ADDRESS, [Record(1_717_243_200_000_000_000, {"t": 1})]),
        (b'{"timestamp": "2024-06-01T12:00:00Z", "t": 1}', ADDRESS, [Record(1_717_243_200_000_000_000, {"t": 1})]),
        (b'[{"t": 1}, {"t": 2, "time": 1717243200000}]', ADDRESS,
         [Record(RECEIVED_NS, {"t": 1}), Record(1_717_243_200_000_000_000, {"t": 2})]),
        (b'{"wifi": {"rssi": -60}}', ADDRESS, [Record(RECEIVED_NS, {"wifi": {"rssi": -60}})]),
        (b"21.5", FIELD_ADDRESS, [Record(RECEIVED_NS, {"temperature": 21.5})]),
        (b'"on"', FIELD_ADDRESS, [Record(RECEIVED_NS, {"temperature": "on"})]),
    ],
    ids=["object", "epoch-s", "iso", "array", "nested", "field-number", "field-string"],
)
def test_json_records(payload, address, records):
    """JSON payloads become the exact records documented."""
    assert JsonDecoder().decode(message(payload), address) == records


@pytest.mark.parametrize(
    "payload, reason",
    [(b"not json", "not JSON"), (b"\xff\xfe", "not JSON"),
     (b"[1, 2]", "non-empty list of objects"), (b"42", "a JSON number, not an object")],
    ids=["text", "binary", "array-of-numbers", "number-on-json-topic"],
)
def test_json_declines_foreign_payloads(payload, reason):
    """Payloads that are not JSON objects are declined (the next decoder may take them)."""
    with pytest.raises(Declined, match=reason):
        JsonDecoder().decode(message(payload), ADDRESS)


def test_json_documents_one_a_line_are_told_the_ndjson_decoder():
    """A script's or a logger's output of a JSON object a line: json declines it, saying which decoder reads it;
    two documents on one line are no NDJSON, and get no such hint."""
    with pytest.raises(Declined, match=r"Extra data: line 2 .*\(a JSON document a line\? the ndjson decoder reads "
                                       r"them: decoders = ndjson\)"):
        JsonDecoder().decode(message(b'{"a": 1}\n{"a": 2}\n'), ADDRESS)
    with pytest.raises(Declined) as declined:
        JsonDecoder().decode(message(b'{"a": 1} {"a": 2}'), ADDRESS)
    assert "ndjson" not in str(declined.value)


@pytest.mark.parametrize("payload", [b'{"time": "", "a": 1}', b'{"time": "  ", "a": 1}', b'{"time": null, "a": 1}',
                                     b'[{"ts": "", "a": 1}]'])
def test_an_empty_or_null_time_is_no_time(payload):
    """A device whose clock is not set yet sends "time": "" (Kotori took the receive time): no time, as null is."""
    assert JsonDecoder().decode(message(payload), ADDRESS) == [Record(RECEIVED_NS, {"a": 1})]


def test_a_json_null_is_named_so_when_declined():
    with pytest.raises(Declined, match="a JSON null, not an object"):
        JsonDecoder().decode(message(b"null"), ADDRESS)


def test_a_key_given_twice_in_key_value_pairs_keeps_both_values():
    """a=1&a=2: the second value as a_2 (a dict kept the last one only)."""
    from lorrygate.decoding.text import KeyValueDecoder

    (record,) = KeyValueDecoder().decode(message(b"a=1&a=2&a=3&b=x"), ADDRESS)
    assert record.fields == {"a": 1, "a_2": 2, "a_3": 3, "b": "x"}
    (record,) = KeyValueDecoder().decode(message(b"a=1,a=2,time="), ADDRESS)
    assert record == Record(RECEIVED_NS, {"a": 1, "a_2": 2})


@pytest.mark.parametrize("payload, fields", [
    (b"loc=52.1,13.4;t=21", {"loc": "52.1,13.4", "t": 21}),
    (b"msg=hello, world;t=1", {"msg": "hello, world", "t": 1}),
    (b"room temp=21,hum=40", {"room temp": 21, "hum": 40}),
    (b"data=YWJjZA==,t=1", {"data": "YWJjZA==", "t": 1}),
    (b"a = 1 ; b = 2", {"a": 1, "b": 2}),
    (b"name=Living Room,t=21", {"name": "Living Room", "t": 21}),
    (b"a=1\nb=2\n", {"a": 1, "b": 2}),
])
def test_key_value_pairs_are_split_at_the_separator_that_keeps_keys_and_values_whole(payload, fields):
    """A comma inside a value of pairs separated by semicolons: the comma was taken for the separator, and the
    column '13.4;t' got 21."""
    from lorrygate.decoding.text import KeyValueDecoder

    (record,) = KeyValueDecoder().decode(message(payload), ADDRESS)
    assert record.fields == fields


@pytest.mark.parametrize("payload", [b"a=1;b=2,c=3", b"a=1,b", b"a=x;y", b"a=1 b=2;c=3", b"a=1;b=2,c=3\nd=4\n"])
def test_key_value_pairs_that_no_separator_splits_whole_are_declined(payload):
    """a=1;b=2,c=3 stored a = "1;b=2" (or b = "2,c=3"): a pair lost inside a value. Declined: the next decoder
    of the chain may take it, or the message is a dead letter that says why."""
    from lorrygate.decoding.text import KeyValueDecoder

    with pytest.raises(Declined):
        KeyValueDecoder().decode(message(payload), ADDRESS)


@pytest.mark.parametrize("payload, records", [
    # several pairs a line, each line split by itself (it stored b = "2<line break>c=3", then was declined)
    (b"a=1;b=2\nc=3;d=4\n", [{"a": 1, "b": 2, "c": 3, "d": 4}]),
    (b"a=1,b=2\r\nc=3,d=4", [{"a": 1, "b": 2, "c": 3, "d": 4}]),
    (b"a=1\nb=2\n", [{"a": 1, "b": 2}]),
    # a key on more than one line: a series, one record a line (it made t, h, t_2, h_2)
    (b"t=21.5 h=48\nt=21.6 h=47\n", [{"t": 21.5, "h": 48}, {"t": 21.6, "h": 47}]),
    (b"ts=1717243200;t=1\nts=1717243260;t=2", [{"t": 1}, {"t": 2}]),
    (b"a=1&a=2", [{"a": 1, "a_2": 2}]),
])
def test_key_value_lines(payload, records):
    from lorrygate.decoding.text import KeyValueDecoder

    decoded = KeyValueDecoder().decode(message(payload), ADDRESS)
    assert [record.fields for record in decoded] == records
    if payload.startswith(b"ts="):
        assert [record.time for record in decoded] == [1_717_243_200 * 10**9, 1_717_243_260 * 10**9]


@pytest.mark.parametrize("payload, records", [
    (b'{"Time": "2024-06-01T12:00:00", "v": 1}', [Record(1_717_243_200_000_000_000, {"v": 1})]),
    (b'{"Time": 1717243200, "v": 1}', [Record(1_717_243_200_000_000_000, {"v": 1})]),
    (b'{"Time": "12:34", "v": 1}', [Record(RECEIVED_NS, {"Time": "12:34", "v": 1})]),
    (b'{"time": 1717243200, "Time": "2000-01-01T00:00:00", "v": 1}',
     [Record(1_717_243_200_000_000_000, {"Time": "2000-01-01T00:00:00", "v": 1})]),
], ids=["iso", "epoch", "no-time-a-field", "time-first"])
def test_a_json_objects_time_field_Time_is_its_time_as_kotori_reads_it(payload, records):
    """Kotori takes ``Time`` (Tasmota's) from any JSON payload as the time; it was a column, and the row had the
    receive time. Only when it reads as a time: a field of that name that is none stays a field."""
    assert JsonDecoder().decode(message(payload), ADDRESS) == records


@pytest.mark.parametrize("payload, records", [
    (b'{"date": "2024-06-01", "time": "12:00:00", "lat": 52.5}', [Record(1_717_243_200_000_000_000, {"lat": 52.5})]),
    (b'{"Date": "01.06.2024", "Time": "12:00", "v": 1}', [Record(1_717_243_200_000_000_000, {"v": 1})]),
    (b'{"date": "2024-06-01", "time": "12:00:00.25"}', [Record(1_717_243_200_250_000_000, {})]),
    (b'{"Date": "someday", "Time": "12:00", "v": 1}', [Record(RECEIVED_NS, {"Date": "someday", "Time": "12:00", "v": 1})]),
], ids=["gps-tracker", "logger", "fraction", "no-date-time-a-field"])
def test_a_json_time_of_day_beside_a_date_is_read_with_it(payload, records):
    """A GPS tracker's or a logger's separate date and time of day were a dead letter ("not an ISO 8601 time:
    '12:00:00'"); read together they are the record's time, and the date is not stored as a column."""
    assert JsonDecoder().decode(message(payload), ADDRESS) == records
    with pytest.raises(DecodeError, match="field 'time': not an ISO 8601 time: '12:00:00'"):
        JsonDecoder().decode(message(b'{"time": "12:00:00", "v": 1}'), ADDRESS)  # a time of day alone is no time


def test_json_with_a_broken_time_is_an_error():
    """A JSON object whose time cannot be read is a decode error naming the field."""
    with pytest.raises(DecodeError, match="field 'time': not an ISO 8601 time"):
        JsonDecoder().decode(message(b'{"time": "yesterday"}'), ADDRESS)


@pytest.mark.parametrize(
    "value, nanos",
    [
        (1717243200, 1_717_243_200_000_000_000),
        (1717243200.123456, 1_717_243_200_123_456_000),
        (1717243200123, 1_717_243_200_123_000_000),
        (1717243200123456, 1_717_243_200_123_456_000),
        (1717243200123456789, 1_717_243_200_123_456_789),
        ("1717243200123456789", 1_717_243_200_123_456_789),
        ("2024-06-01T12:00:00-05:00", 1_717_261_200_000_000_000),
        ("2024-06-01T12:00:00.123456789Z", 1_717_243_200_123_456_789),
        ("2024-06-01 12:00:00+0130", 1_717_237_800_000_000_000),
        ("2024-06-01T12:00:00", 1_717_243_200_000_000_000),
    ],
    ids=["s", "s-fraction", "ms", "us", "ns", "ns-text", "offset", "iso-ns", "compact-offset", "naive-utc"],
)
def test_times(value, nanos):
    """Epoch numbers of every magnitude and ISO 8601 texts give exact nanoseconds."""
    assert parse_time(value) == nanos


@settings(max_examples=3000, deadline=None)
@given(st.integers(10**5, 10**11 - 1), st.integers(0, 10**9 - 1), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 9]))
@example(99_999_999_999, 999_992_371, 9)
def test_epoch_seconds_as_floats_keep_the_decimal_the_sender_wrote(whole, nanos, places):
    """A float of epoch seconds gives the nanoseconds of the shortest decimal that reads back as it (what the
    sender wrote, as far as a float holds it), whatever the number of decimal places."""
    text = f"{whole}.{nanos:09d}"[: len(str(whole)) + 1 + places].rstrip(".")
    number = float(text)
    assume(number < 1e11)  # 99999999999.999992371 reads back as 1e11: epoch milliseconds by its magnitude
    shortest = Decimal(repr(number))
    assert parse_time(number) == int(shortest * 10**9)


@pytest.mark.parametrize(
    "value, same_as",
    [
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
        ("2016-12-31T23:59:60.25Z", "2017-01-01T00:00:00.25Z"),
        ("2016-12-31T20:59:60-03:00", "2017-01-01T00:00:00Z"),
        ("2024-06-01T24:00:00Z", "2024-06-02T00:00:00Z"),
        ("2024-12-31T24:00Z", "2025-01-01T00:00:00Z"),
        ("2024-06-01T24:00:00.000+02:00", "2024-06-01T22:00:00Z"),
    ],
    ids=["leap-second", "leap-second-fraction", "leap-second-offset", "end-of-day", "end-of-year", "end-of-day-offset"],
)
def test_a_leap_second_and_the_end_of_a_day_are_the_second_after(value, same_as):
    """ISO 8601's 23:59:60 (a leap second, as GPS-disciplined clocks send it) and 24:00:00 (the end of a day)
    are read as PostgreSQL reads them, as the instant after, not refused as no time."""
    assert parse_time(value) == parse_time(same_as)


@pytest.mark.parametrize("value", ["2024-06-01T12:00:00+25:00", "2024-06-01T12:00:00-24:00",
                                   "2024-06-01T12:00:00+05:60", "20240601T120000+9999", "1 Jun 2024 12:00 +2500"])
def test_an_offset_past_23_hours_or_59_minutes_is_no_time(value):
    """``+25:00`` was read as 25 hours east (and ``+05:60`` as six hours): a time that is none was stored as one.
    RFC 3339's offsets, as Python's, have hours up to 23 and minutes up to 59."""
    with pytest.raises(ValueError, match=r"not a valid date-time: .* \(the offset [+-]\d\d:?\d\d is none: its "
                                         r"hours go to 23, its minutes to 59\)"):
        parse_time(value)
    assert parse_time("2024-06-01T12:00:00-23:59") == parse_time("2024-06-02T11:59:00Z")


@pytest.mark.parametrize(
    "value, same_as",
    [
        ("20240601T120000Z", "2024-06-01T12:00:00Z"),
        ("20240601T120000.125+0200", "2024-06-01T10:00:00.125Z"),
        ("20240601T1200-05", "2024-06-01T17:00:00Z"),
        ("20240601T120000", "2024-06-01T12:00:00"),
        ("Sat, 01 Jun 2024 12:00:00 GMT", "2024-06-01T12:00:00Z"),
        ("1 Jun 2024 12:00 +0200", "2024-06-01T10:00:00Z"),
        ("Sat, 01 Jun 2024 12:00:00 -0000", "2024-06-01T12:00:00Z"),
        ("Sat, 01 Jun 2024 12:00:00", "2024-06-01T12:00:00"),
        ("Sat Jun 01 2024 12:00:00 GMT+0200 (Central European Summer Time)", "2024-06-01T10:00:00Z"),
        ("Sat Jun 01 2024 12:00:00 GMT-0530", "2024-06-01T17:30:00Z"),
        ("2024-06-01 12:00:00 CEST", "2024-06-01T10:00:00Z"),
        ("2024-01-01 12:00:00 CET", "2024-01-01T11:00:00Z"),
        ("2024-06-01 12:00:00.5 UTC", "2024-06-01T12:00:00.5Z"),
        ("2016/08/14 21:02:06 MESZ", "2016-08-14T19:02:06Z"),
    ],
    ids=["basic", "basic-fraction-offset", "basic-minutes", "basic-local", "rfc-2822-gmt", "rfc-2822-offset",
         "rfc-2822-unknown-zone", "rfc-2822-local", "javascript", "javascript-west", "named-cest", "named-cet",
         "named-utc", "logger-named-mesz"],
)
def test_the_other_forms_devices_write_a_time_in(value, same_as):
    """ISO 8601's basic format, RFC 2822's (HTTP's, JavaScript's ``toUTCString()``), JavaScript's
    ``Date.toString()``, and a time followed by its zone's name (UTC, GMT, CET, CEST, MEZ, MESZ; Kotori takes
    CET and CEST), as Node-RED flows and HTTP-minded devices send them: they were dead letters. Without a
    zone, the channel's ``timezone`` applies, as to ISO 8601 text."""
    from zoneinfo import ZoneInfo

    assert parse_time(value) == parse_time(same_as)
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_time(value, berlin) == parse_time(same_as, berlin)


@pytest.mark.parametrize("value", ["2024-02-30T00:00:00Z", "noon", True, None, float("nan"), "2024-06-01T24:00:01Z",
                                   "2024-06-01T24:00:00.5Z", "2024-06-01T23:59:61Z", "2024-06-01T24:00:60Z",
                                   "9999-12-31T23:59:60Z", "Sat, 32 Jun 2024 12:00:00 GMT",
                                   "Sat, 01 Foo 2024 12:00:00 GMT", "12:00:00", "20241301T000000Z",
                                   "2024-06-01 12:00:00+02:00 CEST", "12:00 UTC", "2024-06-01 12:00:00 PST"],
                         ids=["feb-30", "word", "bool", "none", "nan", "past-24h", "past-24h-fraction", "second-61",
                              "24h-leap", "leap-past-9999", "rfc-2822-day-32", "rfc-2822-no-month", "time-of-day",
                              "basic-month-13", "offset-and-name", "named-time-of-day", "unknown-name"])
def test_bad_times(value):
    """Values that are no time raise ValueError."""
    with pytest.raises(ValueError):
        parse_time(value)


@pytest.mark.parametrize("value", [10**29, 1e30, -(10**20), -(10**11) + 1, "99999999999999999999999999999",
                                   "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1e99999",
                                   "-1e999999999", 10**4000, 10**5000],
                         ids=["ns-1e29", "float-1e30", "ns-minus-1e20", "seconds-year-minus-1199", "text-1e28",
                              "past-9999", "before-year-1", "text-1e99999", "text-past-the-decimal-context",
                              "int-of-4001-digits", "int-past-the-str-limit"])
def test_times_past_the_years_1_to_9999_are_refused(value):
    """A broken clock's number is refused with what it was read as, not stored as year -1199 or past 9999 (a
    storage's time text could not hold it, and 1e29 made the SQLite writer's time text fail)."""
    with pytest.raises(ValueError, match=r"outside the years 1 to 9999 \(read as .*seconds (since|from) 1970\)"):
        parse_time(value)


def test_the_first_and_the_last_instant_of_the_years_1_to_9999_are_times():
    assert parse_time("0001-01-01T00:00:00Z") == MIN_NS
    assert parse_time("9999-12-31T23:59:59.999999999Z") == MAX_NS
    assert parse_time(-62_135_596_800) == MIN_NS
    iso = IsoTime()
    assert (iso(MIN_NS), iso(MAX_NS)) == ("0001-01-01T00:00:00.000000000Z", "9999-12-31T23:59:59.999999999Z")


def test_a_time_text_refused_once_is_refused_again_not_given_the_last_seconds_text():
    """IsoTime caches the text of the last second: a second that gmtime() refuses must not be remembered with
    the text of the one before (a retry then stored 1e29 ns as the previous message's second)."""
    iso = IsoTime()
    assert iso(1_717_243_200_000_000_000) == "2024-06-01T12:00:00.000000000Z"
    for _ in range(2):
        with pytest.raises((OverflowError, ValueError, OSError)):
            iso(10**29)
    assert iso(1_717_243_200_500_000_000) == "2024-06-01T12:00:00.500000000Z"


def test_a_json_time_past_the_years_is_a_decode_error_that_says_what_to_send():
    chain = DecoderChain([JsonDecoder()])
    for payload in (b'{"time": 1e30, "v": 1}', b'{"time": 99999999999999999999999999999, "v": 1}',
                    b'[{"ts": -99999999999999999999, "v": 1}]'):
        with pytest.raises(DecodeError, match="outside the years 1 to 9999.*ISO 8601 text"):
            chain.decode(Message("t/data.json", payload), None)


class Raising:
    name = "broken"

    def decode(self, message, address):
        raise KeyError("boom")


def test_chain_reports_every_decline():
    """When every decoder declines, the error lists each decoder with its reason."""
    chain = DecoderChain((JsonDecoder(),))
    with pytest.raises(NoDecoderMatched, match=r"chain \[json\].*json: not JSON"):
        chain.decode(message(b"x"), ADDRESS)


def test_chain_turns_a_crashing_decoder_into_a_decode_error():
    """A decoder that raises anything else is a DecodeError naming it, not a crash."""
    with pytest.raises(DecodeError, match="decoder 'broken': KeyError"):
        DecoderChain((Raising(),)).decode(message(b"{}"), ADDRESS)


def test_chain_names_the_decoder_that_worked():
    """decode() returns the name of the decoder that produced the records."""
    assert DecoderChain((JsonDecoder(),)).decode(message(b"{}"), ADDRESS)[0] == "json"


@pytest.mark.parametrize("nanos, text", [
    (0, "1970-01-01T00:00:00.000000000Z"),
    (-62_100_000_000 * 10**9 + 5, "0002-02-17T00:00:00.000000005Z"),
], ids=["epoch", "year-2"])
def test_times_are_fixed_width_in_every_year(nanos, text):
    """Time text has four-digit years, so that it sorts as time does, also before the year 1000."""
    from lorrygate.decoding.timestamps import to_iso

    assert to_iso(nanos) == text

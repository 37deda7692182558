"""Kotori's export: its times, its columns, and the formats' bytes."""

import datetime as dt
import json

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from lorrygate.sources.export import (
    ExportRefused,
    Query,
    Renderer,
    _Stream,
    choose,
    padded,
    parse_time,
    query_of,
    scalar_text,
    split_format,
)

NOW = 1_700_000_000.0


def ns(text: str) -> int:
    when = dt.datetime.fromisoformat(text)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


@pytest.mark.parametrize("text, expected", [
    ("2016-06-25T22:00:00.000Z", ns("2016-06-25T22:00:00+00:00")),
    ("2016-06-26T00:00:00.000+02:00", ns("2016-06-25T22:00:00+00:00")),
    ("2016-06-26T00:00:00.000 02:00", ns("2016-06-25T22:00:00+00:00")),  # (the "+" a query string made a space)
    ("2016-06-25", ns("2016-06-25T00:00:00+00:00")),
    ("20160625", ns("2016-06-25T00:00:00+00:00")),
    ("20160626T124259+0200", ns("2016-06-26T10:42:59+00:00")),
    ("20160626T124259Z", ns("2016-06-26T12:42:59+00:00")),
    ("2016-06-26 12:42:59", ns("2016-06-26T12:42:59+00:00")),
    ("2016-06-26T12:42:59.123456", ns("2016-06-26T12:42:59.123456+00:00")),
    ("now", int(NOW) * 1_000_000_000),
    ("now-4h", int(NOW - 4 * 3600) * 1_000_000_000),
    ("now-8d5h3m", int(NOW - 8 * 86400 - 5 * 3600 - 3 * 60) * 1_000_000_000),
    ("now-1w", int(NOW - 7 * 86400) * 1_000_000_000),
    ("now+30s", int(NOW + 30) * 1_000_000_000),
])
def test_kotoris_times(text, expected):
    assert parse_time(text, NOW) == expected


def test_a_to_of_a_date_alone_is_the_end_of_that_day():
    assert parse_time("2016-06-25", NOW, end=True) == ns("2016-06-26T00:00:00+00:00") - 1
    assert parse_time("20160625", NOW, end=True) == ns("2016-06-26T00:00:00+00:00") - 1
    assert parse_time("2016-06-25T12:00:00Z", NOW, end=True) == ns("2016-06-25T12:00:00+00:00")


@pytest.mark.parametrize("text", ["yesterday", "now-", "now-4", "now-4x", "now*2h", "2016-13-01", "", "1466892179"])
def test_what_is_no_time_is_a_400_that_says_what_is(text):
    with pytest.raises(ExportRefused) as caught:
        parse_time(text, NOW)
    assert caught.value.code == 400 and "now-4h" in str(caught.value)


def test_the_suffix_is_the_format():
    assert split_format("a/b/data.CSV") == ("a/b/data.CSV", "csv")
    for topic in ("a/b/data", "a/b/data.xlsx", "a.csv/b"):
        with pytest.raises(ExportRefused) as caught:
            split_format(topic)
        assert caught.value.code == 400 and ".csv, .txt, .tsv, .json, .ndjson" in str(caught.value)


def test_columns_time_first_include_and_exclude_and_unknown_names_left_out():
    columns = ["time", "temperature", "humidity", "weight"]
    assert choose(columns, [], []) == columns
    assert choose(columns, [], ["weight", "nothing"]) == ["time", "temperature", "humidity"]
    assert choose(columns, ["humidity", "nothing"], []) == ["time", "humidity"]
    assert choose(columns, ["humidity", "weight"], ["weight", "time"]) == ["time", "humidity"]


def test_the_formats_bytes_chunk_by_chunk():
    rows = [("2024-06-01T12:00:00.000000000Z", 21.5, None, b"\x00\x01", '{"a": 1}'),
            (dt.datetime(2024, 6, 1, 14, 0, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), -1, "a,\"b\"\nc",
             None, {"a": [1, 2]})]
    columns = ["time", "t", "text", "raw", "nested"]
    csv = Renderer("csv", columns)
    assert (csv.head() + csv.rows(rows[:1]) + csv.rows(rows[1:]) + csv.tail()).decode() == (
        "time,t,text,raw,nested\n"
        '2024-06-01T12:00:00.000000000Z,21.5,,AAE=,"{""a"": 1}"\n'
        '2024-06-01T12:00:01.000005Z,-1,"a,""b""\nc",,"{""a"":[1,2]}"\n')
    as_json = Renderer("json", columns)
    text = as_json.head() + as_json.rows(rows[:1]) + as_json.rows(rows[1:]) + as_json.tail()
    assert json.loads(text) == [
        {"time": "2024-06-01T12:00:00.000000000Z", "t": 21.5, "text": None, "raw": "AAE=", "nested": '{"a": 1}'},
        {"time": "2024-06-01T12:00:01.000005Z", "t": -1, "text": 'a,"b"\nc', "raw": None, "nested": {"a": [1, 2]}}]
    empty = Renderer("json", columns)
    assert json.loads(empty.head() + empty.tail()) == []
    ndjson = Renderer("ndjson", columns)
    lines = (ndjson.head() + ndjson.rows(rows) + ndjson.tail()).decode().splitlines()
    assert [json.loads(line)["t"] for line in lines] == [21.5, -1]


def test_cratedb_columns_are_the_leaves_of_fields_and_tags():
    from lorrygate.sources.export import crate_columns

    rows = [["fields", "object"], ["fields['it''s']", "double precision"], ["fields['site']", "text"],
            ["fields['wifi']", "object"], ["fields['wifi']['rssi']", "bigint"], ["tags", "object"],
            ["tags['site']", "text"], ["tags['zone']", "text"], ["time", "timestamp with time zone"],
            ["extra_fields", "object"]]
    assert crate_columns(rows) == [("it's", "\"fields\"['it''s']"), ("site", "\"fields\"['site']"),
                                   ("wifi.rssi", "\"fields\"['wifi']['rssi']"), ("tags.site", "\"tags\"['site']"),
                                   ("zone", "\"tags\"['zone']"), ("extra_fields", '"extra_fields"')]
    # (a field of that name keeps it; the column of the fields CrateDB does not index is extra_fields_2)
    assert crate_columns([["fields['extra_fields']", "text"], ["extra_fields", "object"]])[1][0] == "extra_fields_2"


def test_an_export_reads_a_database_before_a_sink():
    from lorrygate.sources.export import preferred

    class Dialect:
        def __init__(self, name):
            self.name, self.path, self.url = name, "x.sqlite", "postgresql://"

    class Sql:
        def __init__(self, name):
            self.dialect = Dialect(name)

    class CrateStorage:
        pass

    class Sink:
        pass

    sink, crate, sqlite = Sink(), CrateStorage(), Sql("sqlite")
    assert preferred([sink, crate, sqlite]) is sqlite
    assert preferred([sink, crate]) is crate
    assert preferred([sink]) is sink


def test_a_span_past_the_years_a_database_takes_is_the_first_or_the_last_time():
    from lorrygate.decoding.timestamps import IsoTime
    from lorrygate.sources.export import _PostgresReader

    first, last = parse_time("now-99999999w", NOW), parse_time("now+99999999w", NOW)
    assert IsoTime()(first) == "0001-01-01T00:00:00.000000000Z" and IsoTime()(last) == "9999-12-31T23:59:59.999999999Z"
    assert str(_PostgresReader.time(first)) == "0001-01-01 00:00:00+00:00"
    assert str(_PostgresReader.time(last)) == "9999-12-31 23:59:59.999999+00:00"


class _Transport:
    aborted = False

    def abortConnection(self):
        self.aborted = True


class _Request:
    """What `_Stream` asks of its request (twisted.web's Request) and of its channel's transport."""

    def __init__(self):
        self.channel = type("Channel", (), {"transport": _Transport()})()
        self._disconnected = False
        self.producer = None
        self.finished = Deferred()
        self.written = []

    def write(self, data):
        self.written.append(data)

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def notifyFinish(self):
        return self.finished


def test_a_client_that_takes_nothing_for_the_stall_is_cut_and_one_that_reads_is_not():
    clock, stalls = Clock(), []
    request = _Request()
    stream = _Stream(request, clock, 300.0, stalls.append)
    stream.pauseProducing()
    clock.advance(299)
    stream.resumeProducing()  # the client took the buffer: its time starts again at the next pause
    stream.pauseProducing()
    stream.pauseProducing()  # (one timer however often the transport says it)
    clock.advance(299)
    assert not stream.gone and not request.channel.transport.aborted and stalls == []
    waiting = stream.write(b"rows")  # the reading thread waits for the client
    assert isinstance(waiting, Deferred) and not waiting.called
    clock.advance(1)
    assert stalls == [stream] and stream.stalled and stream.gone and request.channel.transport.aborted
    assert waiting.result is False  # the reading thread ends its read
    assert clock.getDelayedCalls() == []


def test_an_export_that_ends_leaves_no_stall_timer():
    clock = Clock()
    request = _Request()
    stream = _Stream(request, clock, 300.0, lambda _: None)
    stream.pauseProducing()
    request.finished.callback(None)  # the client went away, or the answer is whole
    assert clock.getDelayedCalls() == [] and stream.gone and not stream.stalled


def test_kotoris_query_options_read_and_checked():
    assert query_of({}) == Query()
    assert query_of({"sort": "weight, time", "direction": "DESCENDING", "limit": "10", "scalar": "weight",
                     "pad": "yes", "backfill": "false", "_": "1717243200"}) == Query(
        [], [], ["weight", "time"], True, 10, "weight", True)
    assert query_of({"direction": "asc"}).descending is False
    assert query_of({"limit": "9" * 40}).limit == 2**62  # SQLite refuses a LIMIT past 64 bits
    for args, why in [({"limit": "-1"}, "limit=-1"), ({"limit": "\u0661"}, "limit="), ({"pad": "maybe"}, "pad=maybe"),
                      ({"direction": "sideways"}, "direction=sideways"), ({"interpolate": "1"}, "interpolate")]:
        with pytest.raises(ExportRefused, match=why) as caught:
            query_of(args)
        assert caught.value.code == 400
    quote = lambda name: f'"{name}"'  # noqa: E731
    assert Query(sort=["weight"], descending=True).order(quote) == '"weight" DESC, "time" DESC'
    assert Query().order(quote) == '"time"'
    with pytest.raises(ExportRefused, match="sort=nope: no such column"):
        Query(sort=["nope"]).checked(["time", "weight"], ["time", "weight"])
    with pytest.raises(ExportRefused, match="scalar=weight: no such column exported"):
        Query(scalar="weight").checked(["time", "weight"], ["time"])


@pytest.mark.parametrize("include, exclude, asked", [
    ([], ["time", "weight"], "exclude=time,weight"),
    (["nope"], ["time"], "include=nope&exclude=time"),
], ids=["all-excluded", "unknown-included"])
def test_include_and_exclude_that_leave_no_column_are_a_400_not_rows_of_nothing(include, exclude, asked):
    """A CSV of empty lines or a JSON array of empty objects answers nothing: the 400 says which options left
    no column and what the table has."""
    columns = ["time", "weight"]
    with pytest.raises(ExportRefused) as caught:
        Query(include, exclude).checked(columns, choose(columns, include, exclude))
    assert caught.value.code == 400
    assert str(caught.value) == f"{asked} leaves no column to answer (the table has: time, weight)"
    Query([], ["time"]).checked(columns, choose(columns, [], ["time"]))  # the time left out, the weight answered
    Query(["nope"], []).checked(columns, choose(columns, ["nope"], []))  # the time alone, as Kotori answers


def test_pad_carries_the_last_value_across_chunks_and_a_scalar_is_text():
    last = [None, None, None]
    assert padded([("t1", None, 1), ("t2", 5, None)], last) == [["t1", None, 1], ["t2", 5, 1]]
    assert padded([("t3", None, None)], last) == [["t3", 5, 1]]
    assert [scalar_text(v) for v in (21.5, None, True, "a,b", {"x": 1})] == [b"21.5", b"", b"true", b"a,b", b'{"x":1}']

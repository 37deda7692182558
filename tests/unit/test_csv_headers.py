"""
Kotori's header-once CSV: a device announces its column names once (``## temperature,humidity`` or a data
logger's header line) and then sends data lines only; the header is remembered per address in
``<data_dir>/csv-headers.sqlite``, across restarts and channels.
"""

import json

import pytest
from twisted.internet.task import Clock

from lorrygate.config import loads
from lorrygate.decoding import csvheaders
from lorrygate.decoding.csvheaders import Announced, HeaderStore
from lorrygate.decoding.text import CsvDecoder
from lorrygate.decoding.timestamps import to_iso
from lorrygate.errors import Declined
from lorrygate.model import Address, Message
from lorrygate.service.channel_service import ChannelService
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage

RECEIVED = 1_700_000_000.0
TOPIC = "mqttkit-1/itest/foo/bar/data.csv"


def gateway(data_dir, channels=("main",)):
    """A WAN channel (a Kotori migration) per name, on one data directory; each storing into memory."""
    config = f"[lorrygate]\ndata_dir = {data_dir}\n[broker:b]\nhost = localhost\n[storage:db]\nurl = sqlite:///unused.sqlite\n"
    for name in channels:
        config += f"[channel:{name}]\ntopics = mqttkit-1/#\ntimezone = Europe/Berlin\n"
    settings = loads(config)
    clock = Clock()
    services = []
    for channel in settings.channels:
        storage = MemoryStorage()
        service = ChannelService.from_settings(settings, channel, {"db": Batcher(storage, clock, max_rows=1)}, clock)
        service.storage = storage
        services.append(service)
    return services


def stop(channel):
    for decoder in channel.decoders:
        if hasattr(decoder, "stop"):
            decoder.stop()


def send(channel, payload: bytes, topic=TOPIC, received=RECEIVED):
    channel.router(Message(topic, payload, 1, False, received, "mqttkit-1/#"))
    return channel.storage


def rows(storage) -> list:
    return [dict(record.fields, time=to_iso(record.time)) for records in storage.tables.values() for record in records]


def test_a_header_announced_alone_holds_for_later_data_lines(tmp_path):
    """Kotori's test_http_csv_comma_valid, sent as its clients do: the header once, then readings."""
    (channel,) = gateway(tmp_path)
    storage = send(channel, b"## temperature,humidity\n")
    assert storage.dead_letters == [] and rows(storage) == []
    assert channel.router.stats.ignored == 1  # acknowledged, nothing to store
    send(channel, b"25.26,51.8\n")
    send(channel, b"25.3,51.9\n25.4,52.0\n")
    assert storage.dead_letters == []
    assert [(r["temperature"], r["humidity"]) for r in rows(storage)] == [(25.26, 51.8), (25.3, 51.9), (25.4, 52.0)]


def test_the_header_survives_a_restart_and_holds_on_every_channel(tmp_path):
    (first,) = gateway(tmp_path)
    send(first, b"## temperature,humidity\n")
    stop(first)
    a, b = gateway(tmp_path, channels=("a", "b"))  # a restart, with the same address reached by two channels
    for channel in (a, b):
        assert rows(send(channel, b"21.5,40\n")) == [{"temperature": 21.5, "humidity": 40, "time": rows(channel.storage)[0]["time"]}]
    send(a, b"## t,h,p\n")
    assert rows(send(b, b"1,2,3\n"))[-1] | {"time": None} == {"t": 1, "h": 2, "p": 3, "time": None}


def test_data_lines_without_an_announced_header_are_a_dead_letter_that_says_how_to_announce(tmp_path):
    (channel,) = gateway(tmp_path)
    storage = send(channel, b"25.26,51.8\n25.3,51.9\n")
    (dead,) = storage.dead_letters
    assert "line 1 holds values (25.26, 51.8), not column names" in dead.error
    assert "'## name,name'" in dead.error and "replay" in dead.error
    assert rows(storage) == []  # not a table with columns named "25.26" and "51.8"


def test_a_header_and_data_in_one_message_is_remembered_too(tmp_path):
    (channel,) = gateway(tmp_path)
    send(channel, b"## temperature,humidity\n25.26,51.8\n")
    send(channel, b"26,52\n")
    assert [(r["temperature"], r["humidity"]) for r in rows(channel.storage)] == [(25.26, 51.8), (26, 52)]


def test_a_plain_header_line_is_not_an_announcement(tmp_path):
    """As in Kotori: only a ``##`` line or a data logger's header is remembered; a plain header is this
    message's only (no write for every CSV message with a header)."""
    (channel,) = gateway(tmp_path)
    send(channel, b"temperature,humidity\n25.26,51.8\n")
    send(channel, b"26,52\n")
    assert len(rows(channel.storage)) == 1 and len(channel.storage.dead_letters) == 1
    assert not (tmp_path / "csv-headers.sqlite").exists()


def test_a_variometer_header_announced_alone_dates_its_later_lines(tmp_path):
    """Kotori's test_http_csv_semicolon_valid, the header and the readings sent apart: ``Date;Time`` in the
    header makes it an announcement, and the later lines' Date and Time are their time (UTC)."""
    (channel,) = gateway(tmp_path)
    send(channel, b"Runtime;BatVolt;batPercent;Date;Time;Startflag;alt[ft]\n")
    storage = send(channel, b"05;4.0;75.67;21/09/21;07:21:55;0;2213.7\n06;4.0;75.23;21/09/21;07:21:56;0;2213.5\n")
    assert storage.dead_letters == []
    assert [(r["time"], r["batPercent"]) for r in rows(storage)] == [
        ("2021-09-21T07:21:55.000000000Z", 75.67), ("2021-09-21T07:21:56.000000000Z", 75.23)]


def test_data_lines_that_do_not_fit_the_announced_header_are_a_dead_letter_naming_it(tmp_path):
    (channel,) = gateway(tmp_path)
    send(channel, b"## temperature,humidity\n")
    storage = send(channel, b"21.5,40,1013\n")
    (dead,) = storage.dead_letters
    assert "line 1 has 3 values for 2 columns (temperature, humidity)" in dead.error
    assert rows(send(channel, b"21.5,40\n"))[-1]["temperature"] == 21.5  # the stream keeps flowing


def test_a_replayed_older_announcement_does_not_replace_a_newer_header(tmp_path):
    (channel,) = gateway(tmp_path)
    send(channel, b"## new_a,new_b\n", received=RECEIVED + 60)
    send(channel, b"## old_a,old_b\n", received=RECEIVED)  # a dead letter replayed later, say
    assert set(rows(send(channel, b"1,2\n"))[-1]) == {"new_a", "new_b", "time"}


def test_each_address_has_its_own_header(tmp_path):
    (channel,) = gateway(tmp_path)
    send(channel, b"## a,b\n", topic="mqttkit-1/itest/foo/one/data.csv")
    send(channel, b"## c,d\n", topic="mqttkit-1/itest/foo/two/data.csv")
    send(channel, b"1,2\n", topic="mqttkit-1/itest/foo/one/data.csv")
    send(channel, b"3,4\n", topic="mqttkit-1/itest/foo/two/data.csv")
    assert sorted(tuple(sorted(k for k in r if k != "time")) for r in rows(channel.storage)) == [("a", "b"), ("c", "d")]
    send(channel, b"5,6\n", topic="mqttkit-1/itest/foo/three/data.csv")
    assert len(channel.storage.dead_letters) == 1


def test_a_header_of_too_many_columns_is_a_dead_letter_not_remembered(tmp_path):
    (channel,) = gateway(tmp_path)
    names = ",".join(f"c{i}" for i in range(csvheaders.MAX_COLUMNS + 1))
    storage = send(channel, f"## {names}\n".encode())
    (dead,) = storage.dead_letters
    assert f"an announced header of {csvheaders.MAX_COLUMNS + 1:,} columns" in dead.error
    values = ",".join("1" for _ in range(csvheaders.MAX_COLUMNS + 1))
    send(channel, f"## {names}\n{values}\n".encode())  # with data lines: those are stored all the same
    assert len(rows(storage)) == 1 and len(rows(storage)[0]) == csvheaders.MAX_COLUMNS + 2
    assert len(send(channel, f"{values}\n".encode()).dead_letters) == 2  # but the header is not remembered


def test_announcements_to_ever_new_addresses_stop_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(csvheaders, "MAX_ADDRESSES", 2)
    (channel,) = gateway(tmp_path)
    for node in ("one", "two", "three"):
        send(channel, b"## a,b\n", topic=f"mqttkit-1/itest/foo/{node}/data.csv")
    (dead,) = channel.storage.dead_letters
    assert dead.message.topic.endswith("/three/data.csv")
    assert "could not remember the announced CSV header" in dead.error and "2 addresses" in dead.error
    send(channel, b"## x,y\n", topic="mqttkit-1/itest/foo/one/data.csv")  # a known address may change its header
    assert rows(send(channel, b"1,2\n", topic="mqttkit-1/itest/foo/one/data.csv"))[-1] | {"time": 0} == {"x": 1, "y": 2, "time": 0}


def test_an_unwritable_store_keeps_the_data_lines_of_an_announcement(tmp_path):
    data_dir = tmp_path / "var"
    (channel,) = gateway(data_dir)
    (data_dir / "csv-headers.sqlite").mkdir(parents=True)  # a directory where the file should be
    send(channel, b"## a,b\n1,2\n")
    storage = send(channel, b"## a,b\n")
    assert rows(storage)[0] | {"time": 0} == {"a": 1, "b": 2, "time": 0}
    (dead,) = storage.dead_letters  # the header alone: kept, to be replayed once the store is writable
    assert "could not remember the announced CSV header" in dead.error


def test_store_round_trip(tmp_path):
    store = HeaderStore(str(tmp_path))
    address = Address("r", "n", "g", "node", "data", "data.csv")
    assert store.get(address) is None
    assert store.remember(address, Announced(("a", "b"), ";", 2.0, "r/n/g/node/data.csv"))
    assert not store.remember(address, Announced(("x",), ",", 1.0, "r/n/g/node/data.csv"))
    assert store.get(address) == Announced(("a", "b"), ";", 2.0, "r/n/g/node/data.csv")
    assert [json.loads(key) for key, _ in store.all()] == [["r", "n", "g", "node", []]]
    store.stop()


def test_a_decoder_without_a_store_declines_data_lines():
    """Library use: a CsvDecoder made alone has no store; data-only lines are declined, not read as a header."""
    message = Message("t", b"1,2\n3,4\n", received=RECEIVED)
    with pytest.raises(Declined, match="holds values"):
        CsvDecoder().decode(message, Address("r", "n", "g", "node", "data"))
    assert [r.fields for r in CsvDecoder(columns=("a", "b")).decode(message, None)] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


def test_a_dry_run_reads_the_gateways_headers_and_writes_none(tmp_path):
    """``--dry-run --messages``: data lines are read with the headers announced to the gateway; an announcement
    among the recorded messages holds for the later ones there, and the gateway's own store is not changed."""
    import io

    from lorrygate.pipeline.dryrun import dry_run

    data_dir = tmp_path / "var"
    settings = loads(f"[lorrygate]\ndata_dir = {data_dir}\n[broker:b]\nhost = localhost\n[storage:db]\n"
                     f"url = sqlite:///{tmp_path}/db.sqlite\n[channel:main]\ntopics = mqttkit-1/#\n")
    store = HeaderStore(str(data_dir))
    store.remember(Address("mqttkit-1", "itest", "foo", "bar", "data"), Announced(("t", "h"), ",", 1.0, "x"))
    recorded = tmp_path / "messages.txt"
    recorded.write_text("mqttkit-1/itest/foo/bar/data.csv 21.5,40\n"
                        "mqttkit-1/itest/foo/baz/data.csv ## a,b\n"
                        "mqttkit-1/itest/foo/baz/data.csv 1,2\n")
    out = io.StringIO()
    assert dry_run(settings, str(recorded), out) == 0
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [p.get("fields") or p.get("reason") for p in printed] == [
        {"t": 21.5, "h": 40}, "CSV header announced: a, b", {"a": 1, "b": 2}]
    assert [json.loads(key)[3] for key, _ in store.all()] == ["bar"]  # nothing of the dry run's
    assert not (tmp_path / "db.sqlite").exists()


def test_describe_shows_the_header_announced_for_a_topics_address(tmp_path):
    from lorrygate.pipeline.describe import describe

    settings = loads(f"[lorrygate]\ndata_dir = {tmp_path}\n[broker:b]\nhost = localhost\n[storage:db]\n"
                     f"url = sqlite:///{tmp_path}/db.sqlite\n[channel:main]\ntopics = mqttkit-1/#\n")
    topic = "mqttkit-1/itest/foo/bar/data.csv"
    assert "csv header announced: none (data lines alone are a dead letter" in describe(settings, [topic], ())
    assert not (tmp_path / "csv-headers.sqlite").exists()  # a description writes nothing
    store = HeaderStore(str(tmp_path))
    store.remember(Address("mqttkit-1", "itest", "foo", "bar", "data"), Announced(("t", "h"), ";", RECEIVED, topic))
    text = describe(settings, [topic], ())
    assert f"csv header announced: t, h (delimiter ';'; on 2023-11-14T22:13:20Z by {topic})" in text
    assert "csv header announced" not in describe(settings, ["mqttkit-1/itest/foo/bar/data.json"], ())


def test_a_header_sent_with_every_message_costs_no_query_after_the_first(tmp_path, monkeypatch):
    """A logger's header before every upload, or before every line of a file (``header = true``): the store
    knows it wrote it and asks the file no more; a different header is written."""
    store = HeaderStore(str(tmp_path))
    address = Address("r", "n", "g", "node", "data")
    assert store.remember(address, Announced(("a", "b"), ",", 1.0, "t"))

    def no_file(create=True):
        raise AssertionError("the file was asked")

    monkeypatch.setattr(store, "_connection", no_file)
    assert store.remember(address, Announced(("a", "b"), ",", 2.0, "t"))
    monkeypatch.undo()
    assert store.remember(address, Announced(("a", "c"), ",", 3.0, "t"))
    assert store.get(address).columns == ("a", "c")


def test_an_announcement_to_a_decoder_of_configured_columns_names_its_own_lines_only():
    """With ``columns`` configured, a ``## a,b`` line was a data row of the texts "a" and "b"; now it names
    the lines of its message, and lines alone keep the configured columns."""
    from lorrygate.errors import Ignored

    decoder = CsvDecoder(columns=("x", "y"))
    address = Address("r", "n", "g", "node", "data")
    rows = decoder.decode(Message("t", b"## b,a\n1,2\n", received=RECEIVED), address)
    assert [r.fields for r in rows] == [{"b": 1, "a": 2}]
    assert [r.fields for r in decoder.decode(Message("t", b"1,2\n", received=RECEIVED), address)] == [{"x": 1, "y": 2}]
    with pytest.raises(Ignored, match="header line alone"):
        decoder.decode(Message("t", b"## b,a\n", received=RECEIVED), address)


def test_a_data_line_of_a_time_and_words_is_data_not_a_header(tmp_path):
    """A line that starts with a date holds values although none is a number (``2024-06-01T12:00:00Z,on``)."""
    (channel,) = gateway(tmp_path)
    send(channel, b"## time,state\n")
    storage = send(channel, b"2024-06-01T12:00:00Z,on\n")
    assert storage.dead_letters == [] and rows(storage) == [{"state": "on", "time": "2024-06-01T12:00:00.000000000Z"}]


def test_a_device_of_one_column_announces_it_and_sends_single_values(tmp_path):
    """Kotori takes ``## weight`` and then ``42.3``: a CSV of one column has no delimiter. It was refused ("no ','
    delimiter"), the announcement and every reading after it a dead letter."""
    (channel,) = gateway(tmp_path)
    storage = send(channel, b"## weight\n")
    assert storage.dead_letters == [] and channel.router.stats.ignored == 1
    send(channel, b"42.3\n")
    send(channel, b"42.5\n42.6\n")
    send(channel, b"## weight\n43.1\n")  # the header with its readings, as a logger's file sends it
    assert storage.dead_letters == []
    assert [r["weight"] for r in rows(storage)] == [42.3, 42.5, 42.6, 43.1]


def test_a_value_without_the_delimiter_where_the_announced_header_has_more_columns_is_no_csv(tmp_path):
    """Without a one-column header, a line without the delimiter is still declined, so that the decoders after
    csv in the chain get it; the dead letter says why."""
    (channel,) = gateway(tmp_path)
    storage = send(channel, b"## temperature,humidity\n")
    send(channel, b"25.26\n")
    (letter,) = storage.dead_letters
    assert "csv: no ',' delimiter, and the header announced for this address has 2 columns" in letter.error
    send(channel, b"21.5\n", topic="mqttkit-1/itest/foo/other/data.csv")  # no header announced: as before
    assert "csv: no ',' delimiter" in storage.dead_letters[-1].error
    send(channel, b"##\n")  # an announcement of no name
    assert "csv: no ',' delimiter" in storage.dead_letters[-1].error


def test_a_decoder_of_one_configured_column_takes_single_values_and_leaves_other_text_to_the_chain():
    decoder = CsvDecoder(columns=("weight",))
    message = Message(TOPIC, b"42.3\n42.5\n", 1, False, RECEIVED, "mqttkit-1/#")
    assert [record.fields for record in decoder.decode(message, None)] == [{"weight": 42.3}, {"weight": 42.5}]
    with pytest.raises(Declined, match="no ',' delimiter"):
        decoder.decode(Message(TOPIC, b'{"weight": 42.3}', 1, False, RECEIVED, "mqttkit-1/#"), None)

"""
The files source on a Clock, against real files in a temporary directory:
lines and their byte ranges, acknowledgements and the offsets file,
rotation by rename and by truncation, archives, over-long lines, the
in-flight window.
"""

import gzip
import hashlib
import json
import os

import pytest
from twisted.internet.task import Clock

from lorrygate.config.settings import SourceSettings
from lorrygate.sources.files import LINGER, FilesSource


class Collector:
    def __init__(self):
        self.messages = []

    def __call__(self, message):
        self.messages.append(message)

    def ack_all(self):
        for message in self.messages:
            message.ack.ack()

    def lines(self):
        return [m.payload for m in self.messages]


def make(tmp_path, pattern="logs/*.ndjson", clock=None, **options):
    settings = SourceSettings(name="logs", type="files", path=str(tmp_path / pattern), interval=1.0, **options)
    collector = Collector()
    source = FilesSource("main", settings, collector, clock or Clock(), data_dir=str(tmp_path / "var"), watch=False)
    return source, collector


def write(path, *lines, mode="a"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode + "b") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else line.encode() + b"\n")


def turn(source, clock, seconds=0.0):
    """Let the source run: its pump (callLater 0) and timers up to ``seconds``."""
    for _ in range(50):
        clock.advance(0)
    if seconds:
        clock.advance(seconds)
        for _ in range(50):
            clock.advance(0)


def state(tmp_path):
    with open(tmp_path / "var" / "files" / "main.json") as handle:
        return json.load(handle)["streams"]


@pytest.fixture
def clock():
    return Clock()


def test_lines_become_messages_with_their_byte_ranges_and_topic(tmp_path, clock):
    write(tmp_path / "logs/node-1.ndjson", '{"a": 1}', "", '{"a": 2}')
    source, got = make(tmp_path, clock=clock, topic="testdrive/{stem}")
    source.startService()
    turn(source, clock)
    assert got.lines() == [b'{"a": 1}', b'{"a": 2}']
    first, second = got.messages
    assert first.topic == "testdrive/node-1"
    stream = first.position[0]
    # a blank line goes with the line after it: the ranges meet
    assert first.position == (stream, 0, 9) and second.position == (stream, 9, 19)
    assert stream.startswith("files:main:")
    source.stopService()


def test_default_topic_is_the_channel_and_the_stem_and_crlf_is_cut(tmp_path, clock):
    write(tmp_path / "logs/a.b.ndjson", b"x=1\r\n")
    source, got = make(tmp_path, clock=clock)
    source.startService()
    turn(source, clock)
    assert got.messages[0].topic == "logs/a" and got.lines() == [b"x=1"]
    source.stopService()


def test_the_offset_is_noted_only_up_to_the_first_line_not_acknowledged(tmp_path, clock):
    write(tmp_path / "logs/n.ndjson", *[f'{{"i": {i}}}' for i in range(5)])
    source, got = make(tmp_path, clock=clock)
    source.startService()
    turn(source, clock)
    got.messages[0].ack.ack()
    got.messages[2].ack.ack()  # out of order: the third line waits for the second
    turn(source, clock, 1.0)
    (entry,) = state(tmp_path).values()
    assert entry["offset"] == got.messages[0].position[2]
    got.messages[1].ack.ack()
    turn(source, clock, 1.0)
    (entry,) = state(tmp_path).values()
    assert entry["offset"] == got.messages[2].position[2]
    source.stopService()


def test_a_restart_reads_on_from_the_noted_offset(tmp_path, clock):
    path = tmp_path / "logs/n.ndjson"
    write(path, "one", "two")
    source, got = make(tmp_path, clock=clock)
    source.startService()
    turn(source, clock)
    got.ack_all()
    source.stopService()  # notes the offsets
    write(path, "three")
    again, got2 = make(tmp_path, clock=clock)
    again.startService()
    turn(again, clock)
    assert got2.lines() == [b"three"]
    assert got2.messages[0].position[0] == got.messages[0].position[0]  # the same stream
    again.stopService()


def test_without_acknowledgements_a_restart_reads_the_same_lines_with_the_same_ranges(tmp_path, clock):
    write(tmp_path / "logs/n.ndjson", "one", "two")
    source, got = make(tmp_path, clock=clock)
    source.startService()
    turn(source, clock)
    source.stopService()
    again, got2 = make(tmp_path, clock=clock)
    again.startService()
    turn(again, clock)
    assert [m.position for m in got2.messages] == [m.position for m in got.messages]
    again.stopService()


def test_start_end_skips_what_files_hold_at_the_first_start_only(tmp_path, clock):
    write(tmp_path / "logs/old.ndjson", "old 1", "old 2")
    source, got = make(tmp_path, clock=clock, start="end")
    source.startService()
    turn(source, clock)
    assert got.lines() == []
    write(tmp_path / "logs/old.ndjson", "new 1")
    write(tmp_path / "logs/later.ndjson", "later 1")
    turn(source, clock, 1.0)
    assert sorted(got.lines()) == [b"later 1", b"new 1"]
    source.stopService()


def test_a_renamed_file_is_read_to_its_end_and_the_new_one_from_its_start(tmp_path, clock):
    live = tmp_path / "logs/app.ndjson"
    write(live, "a1", "a2")
    source, got = make(tmp_path, "logs/app.ndjson", clock=clock)
    source.startService()
    turn(source, clock)
    write(live, "a3")  # the writer still writes to the old file, then rotates
    os.rename(live, tmp_path / "logs/app.ndjson.1")
    write(tmp_path / "logs/app.ndjson.1", "a4")  # until it reopens
    write(live, "b1")
    turn(source, clock, 1.0)
    assert got.lines() == [b"a1", b"a2", b"a3", b"a4", b"b1"]
    assert len({m.position[0] for m in got.messages}) == 2
    assert all(m.topic == "logs/app" for m in got.messages)
    got.ack_all()
    turn(source, clock, LINGER + 1)
    turn(source, clock, 1.0)
    assert [f["path"] for f in source.status()["files"]] == [str(live)]
    assert len(state(tmp_path)) == 1
    source.stopService()


def test_a_rename_within_the_glob_continues_the_stream(tmp_path, clock):
    live = tmp_path / "logs/app.ndjson"
    write(live, "a1")
    source, got = make(tmp_path, "logs/app.ndjson*", clock=clock)
    source.startService()
    turn(source, clock)
    os.rename(live, tmp_path / "logs/app.ndjson.1")
    write(tmp_path / "logs/app.ndjson.1", "a2")
    turn(source, clock, 1.0)
    assert got.lines() == [b"a1", b"a2"]
    assert got.messages[0].position[0] == got.messages[1].position[0]
    assert got.messages[1].position[1] == got.messages[0].position[2]
    assert source.rotations == 1
    source.stopService()


def test_a_file_renamed_away_before_it_was_read_is_found_again_after_a_restart(tmp_path, clock):
    live = tmp_path / "logs/app.ndjson"
    write(live, "a1", "a2")
    source, got = make(tmp_path, "logs/app.ndjson", clock=clock)
    source.startService()
    turn(source, clock)
    got.messages[0].ack.ack()
    source.stopService()  # a2 not acknowledged
    os.rename(live, tmp_path / "logs/app.ndjson.1")
    write(tmp_path / "logs/app.ndjson.1", "a3")
    write(live, "b1")
    again, got2 = make(tmp_path, "logs/app.ndjson", clock=clock)
    again.startService()
    turn(again, clock)
    assert sorted(got2.lines()) == [b"a2", b"a3", b"b1"]
    a2 = next(m for m in got2.messages if m.payload == b"a2")
    assert a2.position == got.messages[1].position
    again.stopService()


def test_a_truncated_file_is_a_new_stream_read_from_its_start(tmp_path, clock):
    live = tmp_path / "logs/app.ndjson"
    write(live, "header", "a1", "a2")
    source, got = make(tmp_path, clock=clock)
    source.startService()
    turn(source, clock)
    got.ack_all()
    write(live, "header", "b1", mode="w")  # copytruncate: the same first line, shorter
    turn(source, clock, 1.0)
    assert got.lines()[3:] == [b"header", b"b1"]
    old, new = got.messages[0].position[0], got.messages[3].position[0]
    assert old != new and new.endswith("-1")
    assert got.messages[3].position[1] == 0
    source.stopService()


def test_a_header_goes_before_every_line(tmp_path, clock):
    write(tmp_path / "logs/room.csv", "temperature,humidity", "21.5,40", "22.0,41")
    source, got = make(tmp_path, "logs/*.csv", clock=clock, header=True)
    source.startService()
    turn(source, clock)
    assert got.lines() == [b"temperature,humidity\n21.5,40", b"temperature,humidity\n22.0,41"]
    assert got.messages[0].position[1] == 0  # the header's bytes go with the first line
    got.messages[0].ack.ack()
    source.stopService()
    write(tmp_path / "logs/room.csv", "23.0,42")
    again, got2 = make(tmp_path, "logs/*.csv", clock=clock, header=True)
    again.startService()
    turn(again, clock)
    assert got2.lines() == [b"temperature,humidity\n22.0,41", b"temperature,humidity\n23.0,42"]
    again.stopService()


def test_the_header_written_again_is_no_message(tmp_path, clock):
    """A logger that appends to its file after a restart writes its header line again: that line is no data (it
    was a dead letter, ``'time': not a time``), and its bytes go with the next line's range, as a blank line's."""
    write(tmp_path / "logs/room.csv", "time,temperature", "10:00,21.5", "time,temperature\r", "10:01,22.0")
    source, got = make(tmp_path, "logs/*.csv", clock=clock, header=True)
    source.startService()
    turn(source, clock)
    assert got.lines() == [b"time,temperature\n10:00,21.5", b"time,temperature\n10:01,22.0"]
    assert got.messages[1].position[1:] == (28, 57)
    source.stopService()


def test_a_header_of_other_columns_mid_file_holds_for_the_lines_after_it(tmp_path, clock):
    """A logger whose firmware added a column (or reordered them) writes its new header after a restart: the lines
    after it were read by the file's first header, a line of another length a dead letter, a reordered one with
    its values under the wrong names. A line that begins with the first column's name is a header: the lines
    after it go with it, and a restart that resumes after it takes it up again (the state file keeps it)."""
    path = tmp_path / "logs/room.csv"
    write(path, "time,temperature", "10:00,21.5", "time,humidity,temperature", "10:01,48,22.0")
    source, got = make(tmp_path, "logs/*.csv", clock=clock, header=True)
    source.startService()
    turn(source, clock)
    assert got.lines() == [b"time,temperature\n10:00,21.5", b"time,humidity,temperature\n10:01,48,22.0"]
    got.ack_all()
    turn(source, clock, LINGER)
    assert [entry.get("header") for entry in state(tmp_path).values()] == ["time,humidity,temperature"]
    source.stopService()
    write(path, "10:02,49,22.5", "time;temperature;humidity", "10:03;23,0;50")
    again, got2 = make(tmp_path, "logs/*.csv", clock=clock, header=True)
    again.startService()
    turn(again, clock)
    assert got2.lines() == [b"time,humidity,temperature\n10:02,49,22.5", b"time;temperature;humidity\n10:03;23,0;50"]
    again.stopService()
    # a restart that resumes before the new header reads the lines before it by the first one
    other = tmp_path / "other"
    write(other / "logs/hall.csv", "time,temperature", "10:00,21.5", "time,humidity,temperature", "10:01,48,22.0")
    third, got3 = make(other, "logs/hall.csv", clock=clock, header=True)
    third.startService()
    turn(third, clock)
    got3.messages[0].ack.ack()
    turn(third, clock, LINGER)
    third.stopService()
    fourth, got4 = make(other, "logs/hall.csv", clock=clock, header=True)
    fourth.startService()
    turn(fourth, clock)
    assert got4.lines() == [b"time,humidity,temperature\n10:01,48,22.0"]
    fourth.stopService()


def test_a_data_line_is_not_taken_for_a_header(tmp_path, clock):
    """Only a line that begins with the first column's name and a delimiter is a header: a value that begins with
    it (``time2``), a line of another file's first column, and any line of a file whose header is numbers are
    data."""
    write(tmp_path / "logs/a.csv", "time,v", "timer,1", "time", "2,3")
    write(tmp_path / "logs/b.csv", "1,2", "1,5")
    source, got = make(tmp_path, "logs/*.csv", clock=clock, header=True)
    source.startService()
    turn(source, clock)
    assert sorted(got.lines()) == [b"1,2\n1,5", b"time,v\n2,3", b"time,v\ntime", b"time,v\ntimer,1"]
    source.stopService()


def test_lines_in_the_charset_the_source_names_are_read_in_it(tmp_path, clock):
    """A logger on Windows writes cp1252 (an older device Latin-1): ``21,5 °C`` was a dead letter for bytes that
    are not UTF-8. With ``charset``, its lines (and header) go out as UTF-8; the byte ranges stay the file's."""
    write(tmp_path / "logs/room.csv", "Zeit;Temperatur °C".encode("cp1252") + b"\r\n",
          "10:00;21,5 °C;Küche €".encode("cp1252") + b"\r\n")
    source, got = make(tmp_path, "logs/*.csv", clock=clock, header=True, charset="cp1252")
    source.startService()
    turn(source, clock)
    assert got.lines() == ["Zeit;Temperatur °C\n10:00;21,5 °C;Küche €".encode()]
    assert got.messages[0].position[1:] == (0, 43)
    source.stopService()


@pytest.mark.parametrize("charset, expected", [
    ("latin-1", "iso8859-1"), ("Windows-1252", "cp1252"), ("ISO-8859-15", "iso8859-15"), ("UTF8", "utf-8")])
def test_a_files_charset_is_python_s_codec_name(charset, expected):
    from lorrygate.config import values as v

    assert v.line_charset(charset) == expected


@pytest.mark.parametrize("charset", ["utf-16", "utf-32", "cp037", "zlib", "klingon"])
def test_a_charset_whose_lines_are_not_found_by_their_newline_byte_is_refused(charset):
    """UTF-16's newline is two bytes (and EBCDIC's is no 0x0A): the lines would be cut in the wrong places."""
    from lorrygate.config import values as v

    with pytest.raises(v.Invalid, match="not utf-16 or utf-32"):
        v.line_charset(charset)


def test_archives_are_read_once_and_remembered(tmp_path, clock):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "logs").mkdir()
    with gzip.open(tmp_path / "logs/old.ndjson.gz", "wb") as handle:
        handle.write(b"g1\ng2\n")
    (tmp_path / "logs/older.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(b"z1\nz2\n"))
    source, got = make(tmp_path, "logs/*", clock=clock)
    source.startService()
    turn(source, clock)
    assert sorted(got.lines()) == [b"g1", b"g2", b"z1", b"z2"]
    assert {m.topic for m in got.messages} == {"logs/old", "logs/older"}
    got.ack_all()
    turn(source, clock, 1.0)
    assert all(entry["done"] for entry in state(tmp_path).values())
    source.stopService()
    again, got2 = make(tmp_path, "logs/*", clock=clock)
    again.startService()
    turn(again, clock, 1.0)
    assert got2.lines() == []
    again.stopService()


def test_the_last_line_of_an_archive_needs_no_line_end(tmp_path, clock):
    """Exports and ``printf '%s'`` leave a file's last line without a newline: an archive's end ends it (it was
    lost, and the archive recorded as done); an archive of one such line is read too (it was never opened)."""
    (tmp_path / "logs").mkdir()
    with gzip.open(tmp_path / "logs/day.ndjson.gz", "wb") as handle:
        handle.write(b'{"n": 1}\n{"n": 2}\r')
    with gzip.open(tmp_path / "logs/one.ndjson.gz", "wb") as handle:
        handle.write(b'{"n": 3}')
    source, got = make(tmp_path, "logs/*", clock=clock)
    source.startService()
    turn(source, clock, 1.0)
    assert sorted(got.lines()) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    day = [m for m in got.messages if m.topic == "logs/day"]
    assert day[1].position[1:] == (9, 18)  # to the archive's end
    assert not any(entry["done"] for entry in state(tmp_path).values())  # not before they are committed
    got.ack_all()
    turn(source, clock, 1.0)
    assert all(entry["done"] for entry in state(tmp_path).values()) and len(state(tmp_path)) == 2
    source.stopService()


def test_the_last_line_of_a_file_renamed_away_needs_no_line_end(tmp_path, clock):
    """A file renamed out of the glob and idle at its end is closed: the bytes after its last newline are its
    last line (they were left unread with a warning); an over-long last line is a dead letter by its hash."""
    live = tmp_path / "logs/app.ndjson"
    other = tmp_path / "logs/big.ndjson"
    write(live, "a1", b"a2")
    write(other, "b1", b"x" * 300)
    source, got = make(tmp_path, "logs/*.ndjson", clock=clock, max_line=100)
    source.startService()
    turn(source, clock)
    assert sorted(got.lines()) == [b"a1", b"b1"]
    os.rename(live, tmp_path / "logs/app.ndjson.1")
    os.rename(other, tmp_path / "logs/big.ndjson.1")
    turn(source, clock, 1.0)
    turn(source, clock, LINGER + 1)
    assert sorted(got.lines()) == [b"", b"a1", b"a2", b"b1"]
    big = next(m for m in got.messages if m.oversize is not None)
    assert big.oversize == (300, hashlib.sha256(b"x" * 300).hexdigest(), "max_line")
    got.ack_all()
    turn(source, clock, 1.0)
    turn(source, clock, LINGER + 1)
    assert source.status()["files"] == [] and state(tmp_path) == {}
    source.stopService()


def test_an_archive_resumes_in_the_middle(tmp_path, clock):
    (tmp_path / "logs").mkdir()
    with gzip.open(tmp_path / "logs/old.ndjson.gz", "wb") as handle:
        handle.write(b"".join(b"line %d\n" % i for i in range(1000)))
    source, got = make(tmp_path, "logs/*.gz", clock=clock, window=10)
    source.startService()
    turn(source, clock)
    assert len(got.messages) == 10  # the window
    got.ack_all()
    turn(source, clock)
    assert len(got.messages) == 20  # ten more, not acknowledged
    source.stopService()
    again, got2 = make(tmp_path, "logs/*.gz", clock=clock)
    again.startService()
    turn(again, clock)
    assert got2.lines() == [b"line %d" % i for i in range(10, 1000)]
    again.stopService()


# (a line longer than a read spans reads; one of 300 bytes comes whole in a read: under max_line = 100 it was a
# message as any, stored, since the limit held only across reads)
@pytest.mark.parametrize("size, limit", [(300_000, 100_000), (300, 100)], ids=["spans-reads", "whole-in-a-read"])
def test_a_line_over_max_line_is_passed_by_its_hash_and_the_rest_flows(tmp_path, clock, size, limit):
    long = b"x" * size
    write(tmp_path / "logs/n.ndjson", b"before\n" + long + b"\nafter\n")
    source, got = make(tmp_path, clock=clock, max_line=limit)
    source.startService()
    turn(source, clock)
    assert [m.payload for m in got.messages] == [b"before", b"", b"after"]
    assert got.messages[1].oversize == (size, hashlib.sha256(long).hexdigest(), "max_line")
    assert got.messages[1].position[1:] == (7, 7 + size + 1)
    assert source.oversized == 1
    source.stopService()


def test_a_files_first_over_long_line_is_logged_the_others_counted(tmp_path, clock):
    """Where a small max_line leaves lines of blobs out on purpose, an error a line flooded the log (and the
    channel's warnings, each naming another hash, were a line each too: `lorrygate.errors.reason_kind`)."""
    from twisted.logger import globalLogPublisher

    write(tmp_path / "logs/n.ndjson", *["z" * 300 if i % 2 else "short" for i in range(20)])
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        source, got = make(tmp_path, clock=clock, max_line=100)
        source.startService()
        turn(source, clock)
    finally:
        globalLogPublisher.removeObserver(events.append)
    told = [e for e in events if "longer than max_line" in e.get("log_format", "")]
    assert source.oversized == 10 and len(got.messages) == 20 and len(told) == 1
    assert "this file's next ones are counted" in told[0]["log_format"]
    source.stopService()


def test_the_window_bounds_lines_in_flight_and_pauses_stop_reading(tmp_path, clock):
    write(tmp_path / "logs/n.ndjson", *[f"l{i}" for i in range(100)])
    source, got = make(tmp_path, clock=clock, window=30)
    source.startService()
    turn(source, clock)
    assert len(got.messages) == 30
    source.pause("storage")
    got.ack_all()
    turn(source, clock, 1.0)
    assert len(got.messages) == 30 and source.paused_by == ("storage",)
    source.resume("storage")
    turn(source, clock)
    assert len(got.messages) == 60
    for _ in range(3):
        got.ack_all()
        turn(source, clock)
    assert got.lines() == [b"l%d" % i for i in range(100)]
    source.stopService()


def test_an_unreadable_offsets_file_is_an_error_that_says_where(tmp_path, clock):
    (tmp_path / "var/files").mkdir(parents=True)
    (tmp_path / "var/files/main.json").write_text("{broken")
    write(tmp_path / "logs/n.ndjson", "x")
    source, got = make(tmp_path, clock=clock)
    source.startService()
    turn(source, clock)
    assert got.messages == [] and "main.json" in source.last_error and not source.subscribed
    source.stopService()


def test_a_new_file_is_noted_before_it_is_read_so_a_crash_and_a_rename_lose_nothing(tmp_path, clock):
    live = tmp_path / "logs/app.ndjson"
    write(live, "a1", "a2")
    source, got = make(tmp_path, "logs/app.ndjson", clock=clock)
    source.startService()
    turn(source, clock)  # read, nothing acknowledged, no stop: the process dies here
    assert list(state(tmp_path).values())[0]["offset"] == 0
    os.rename(live, tmp_path / "logs/app.ndjson.1")
    write(live, "b1")
    again, got2 = make(tmp_path, "logs/app.ndjson", clock=clock)
    again.startService()
    turn(again, clock)
    assert sorted(got2.lines()) == [b"a1", b"a2", b"b1"]
    again.stopService()


def test_more_archives_than_may_be_open_are_read_one_after_another(tmp_path, clock, monkeypatch):
    import lorrygate.sources.files as files

    monkeypatch.setattr(files, "MAX_OPEN", 1)
    (tmp_path / "logs").mkdir()
    for name in ("a", "b", "c"):
        with gzip.open(tmp_path / f"logs/{name}.ndjson.gz", "wb") as handle:
            handle.write(f"{name}1\n{name}2\n".encode())
    source, got = make(tmp_path, "logs/*.gz", clock=clock)
    source.startService()
    for _ in range(4):
        turn(source, clock)
        got.ack_all()
        turn(source, clock, 1.0)
    assert sorted(got.lines()) == [b"a1", b"a2", b"b1", b"b2", b"c1", b"c2"]
    assert len(got.messages) == 6  # each once
    source.stopService()


def test_a_file_renamed_on_between_listing_and_stat_is_found_again(tmp_path, monkeypatch):
    """At a restart a file not read to its end is looked for by its inode; a writer that rotates it on between
    the directory's listing and the stat (readings.1 -> readings.2) made the gateway die at start. The
    directory is listed again and the file found under its new name."""
    import lorrygate.sources.files as files

    path = tmp_path / "readings.ndjson.1"
    path.write_text("x\n")
    inode = path.stat().st_ino
    real, rotated = os.stat, []

    def racing(name, *args, **kwargs):
        if str(name) == str(path) and not rotated:
            os.rename(path, tmp_path / "readings.ndjson.2")
            rotated.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(files.os, "stat", racing)
    found = files.FilesSource._by_inode(str(tmp_path), inode)
    assert rotated and [name for name, _ in found] == [str(tmp_path / "readings.ndjson.2")]
    assert found[0][1].st_ino == inode
    assert files.FilesSource._by_inode(str(tmp_path / "gone"), inode) == []

"""The disk spool: records round-trip, damage is moved aside, the bound holds, the batcher spools and drains."""

import os

import attrs
import pytest
from twisted.internet.task import Clock

from lorrygate.model import Address, Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage
from lorrygate.storage.spool import DamagedRecord, Spool, SpoolFull, decode, encode
from tests.doubles import Ack, Source

TABLE = TableName("s", "t")


def entry(n, ack=None):
    message = Message("r/n/g/d/data.json", b'{"n": %d}' % n, 1, False, 1.5, "#", ack or Ack())
    address = Address("r", "n", "g", "d", "data", "data.json", None, (("site", "b"),))
    return Entry(TABLE, [Record(n, {"n": n, "nested": {"a": [1, 2]}, "raw": b"\x00"}, {"t": "x"})], "main", message,
                 "json", address)


def test_record_round_trip():
    """A batch survives encode/decode: rows, messages, addresses and dead letters."""
    batch = Batch()
    batch.add(entry(1))
    batch.add_dead_letter(DeadLetter("main", Message("a//b", b"\xff", 1, True, 2.0, "#"), "topology", "empty", ""))
    typed = Message("a//c", b"\xa0", 1, False, 2.5, "#", content_type="application/cbor")
    batch.add_dead_letter(DeadLetter("main", typed, "topology", "empty", ""))
    batch.add_dead_letter(DeadLetter("main", attrs.evolve(typed, position=("f", 0, 9)), "decode", "bad", "cbor"))
    sent = Message("a//d", b"x", 1, False, 3.5, "#", headers=(("device", "d-1"), ("zone", "a"), ("zone", "b")))
    batch.add_dead_letter(DeadLetter("main", sent, "decode", "bad", "json"))
    batch.add_dead_letter(DeadLetter("main", attrs.evolve(sent, content_type="text/csv"), "decode", "bad", "csv"))
    batch.add_dead_letter(DeadLetter("main", attrs.evolve(typed, sent=1_717_243_200.123), "decode", "bad", "cbor"))
    batch.add_dead_letter(DeadLetter("main", Message("a//e", b"x", 1, False, 3.5, "#", sent=1.5), "decode", "bad"))
    again = decode(encode(batch))
    assert again.entries[0].records == batch.entries[0].records
    assert again.entries[0].message == batch.entries[0].message
    assert again.entries[0].address == batch.entries[0].address
    assert again.dead_letters == batch.dead_letters


def test_a_record_too_deep_to_spool_is_a_dead_letter_and_the_rest_is_spooled():
    """A decoder of your own made a record nested past msgpack's limit (~1,020 levels): the batch could not be
    spooled at all, so while the database was away every later batch waited in memory behind it. Its message
    is a dead letter in the spool record, as the database would make it; the batch's other rows are kept."""
    deep: object = 1
    for _ in range(1_100):
        deep = {"a": deep}
    batch = Batch()
    batch.add(entry(1))
    message = Message("r/n/g/deep/data.json", b"(a decoder's input)", 1, False, 2.5, "#", Ack())
    batch.add(Entry(TABLE, [Record(2, {"deep": deep}, {})], "main", message, "mine"))
    batch.add(entry(3))
    again = decode(encode(batch))
    assert [e.records for e in again.entries] == [batch.entries[0].records, batch.entries[2].records]
    [dead] = again.dead_letters
    assert (dead.channel, dead.message.topic, dead.stage, dead.decoder) == ("main", message.topic, "store", "mine")
    assert dead.message.payload == message.payload and "nested too deeply" in dead.error


def test_committed_rows_are_not_spooled_again():
    """Rows a storage already committed (progress) are left out of the record."""
    batch = Batch()
    batch.add(entry(1))
    batch.add(entry(2))
    batch.progress.add((0, 0))
    assert [e.records[0].time for e in decode(encode(batch)).entries] == [2]


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[:-5], "truncated"),
    (lambda data: data[:20] + bytes([data[20] ^ 0xFF]) + data[21:], "checksum mismatch"),
    (lambda data: b"XXXX" + data[4:], "not a spool record"),
    (lambda data: data[:5], "shorter than a record header"),
], ids=["truncated", "bit-flip", "bad-magic", "header-only"])
def test_damaged_records_are_detected(damage, reason):
    """Truncation and corruption are detected, never decoded into wrong rows."""
    batch = Batch()
    batch.add(entry(1))
    with pytest.raises(DamagedRecord, match=reason):
        decode(damage(encode(batch)))


def make_spool(tmp_path, max_bytes=1 << 20):
    spool = Spool(str(tmp_path / "spool"), Clock(), max_bytes)
    spool.start(threaded=False)
    return spool


def put(spool, *entries):
    batch = Batch()
    for item in entries:
        batch.add(item)
    out = []
    spool.put(batch).addBoth(out.append)
    return out[0]


def test_oldest_first_and_damage_moved_aside(tmp_path):
    """Files come back oldest first; a damaged one is moved to damaged/ and the next is returned."""
    spool = make_spool(tmp_path)
    first, second = put(spool, entry(1)), put(spool, entry(2))
    with open(first, "r+b") as handle:
        handle.truncate(30)
    out = []
    spool.oldest().addCallback(out.append)
    path, batch = out[0]
    assert path == second and batch.entries[0].records[0].time == 2
    assert os.path.exists(os.path.join(str(tmp_path / "spool"), "damaged", os.path.basename(first)))
    assert spool.damaged == 1 and spool.batches == 1


def test_bound_refuses_what_does_not_fit(tmp_path):
    """A batch that would pass the size bound fails with SpoolFull; nothing is written."""
    spool = make_spool(tmp_path, max_bytes=300)
    assert os.path.exists(put(spool, entry(1)))
    failure = put(spool, entry(2))
    assert failure.check(SpoolFull) and "is full" in failure.getErrorMessage()
    assert spool.batches == 1


def test_spool_survives_a_restart(tmp_path):
    """A new Spool on the same directory finds the batches (and drops unfinished temporary files)."""
    spool = make_spool(tmp_path)
    put(spool, entry(1))
    (tmp_path / "spool" / "00000000000000000099.batch.tmp").write_bytes(b"half")
    again = Spool(str(tmp_path / "spool"), Clock())
    found = []
    again.start(threaded=False).addCallback(found.append)
    assert found == [1] and not (tmp_path / "spool" / "00000000000000000099.batch.tmp").exists()


def test_batcher_spools_while_down_and_drains_when_back(tmp_path):
    """A failing storage: batches are spooled and acknowledged; after the backoff the spool drains in order."""
    clock = Clock()
    storage = MemoryStorage(manual=True)
    spool = Spool(str(tmp_path / "spool"), clock)
    spool.start(threaded=False)
    batcher = Batcher(storage, clock, max_rows=1, spool=spool, retry_initial=1.0)
    acks = [Ack() for _ in range(3)]
    batcher.add(entry(0, acks[0]))
    storage.fail("connection refused")
    assert acks[0].count == 1 and spool.batches == 1 and batcher.down
    batcher.add(entry(1, acks[1]))
    batcher.add(entry(2, acks[2]))
    assert [a.count for a in acks] == [1, 1, 1] and spool.batches == 3 and storage.in_flight == 0
    clock.advance(1.0)  # the probe: the oldest spooled batch
    assert storage.in_flight == 1
    storage.complete()
    clock.advance(0)
    storage.complete()
    clock.advance(0)
    storage.complete()
    clock.advance(0)
    assert [r.time for r in storage.tables[TABLE]] == [0, 1, 2]
    assert spool.batches == 0 and not batcher.down and batcher.stats.drained == 3


def test_batcher_holds_in_memory_when_the_spool_is_full(tmp_path):
    """With the spool full, a failed batch stays in memory unacknowledged and the sources are paused."""
    clock = Clock()
    storage = MemoryStorage(manual=True)
    spool = Spool(str(tmp_path / "spool"), clock, max_bytes=10)
    spool.start(threaded=False)
    batcher = Batcher(storage, clock, max_rows=1, max_pending=2, spool=spool, retry_initial=1.0)

    source = Source()
    batcher.attach(source)
    ack = Ack()
    batcher.add(entry(0, ack))
    storage.fail()
    batcher.add(entry(1))
    assert ack.count == 0 and source.paused
    clock.advance(1.0)
    storage.complete()
    assert ack.count == 1


def test_a_failed_spool_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """A spool write that fails (ENOSPC) fails its put and leaves no temporary file behind."""
    import errno

    spool = make_spool(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    failure = put(spool, entry(1))
    assert failure.check(OSError) and spool.batches == 0
    assert [name for name in os.listdir(tmp_path / "spool") if name.endswith(".tmp")] == []


def test_any_string_a_decoder_made_round_trips(tmp_path):
    """A lone surrogate in a field (possible from a user decoder) does not stop a spool write."""
    batch = Batch()
    batch.add(Entry(TABLE, [Record(1, {"s": "\ud800x"})], "main", Message("t", b"x"), "user"))
    assert decode(encode(batch)).entries[0].records[0].fields == {"s": "\ud800x"}


def test_a_spool_for_another_target_is_refused(tmp_path):
    """Batches spooled for one database are not drained into another: start fails naming both targets."""
    from lorrygate.storage.spool import SpoolMismatch

    first = Spool(str(tmp_path / "spool"), Clock(), kind="crate", target="crate://a:4200")
    first.start(threaded=False)
    put(first, entry(1))
    second = Spool(str(tmp_path / "spool"), Clock(), kind="postgresql", target="postgresql://b:5432/db")
    failures = []
    second.start(threaded=False).addErrback(failures.append)
    assert failures and failures[0].check(SpoolMismatch)
    message = failures[0].getErrorMessage()
    assert "crate crate://a:4200" in message and "postgresql postgresql://b:5432/db" in message


def test_spool_files_are_private(tmp_path):
    """The spool directory is 0700 and its batch files 0600: they hold acknowledged data."""
    import stat

    spool = make_spool(tmp_path)
    path = put(spool, entry(1))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700

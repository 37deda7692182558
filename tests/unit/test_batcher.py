"""Batching: when batches commit, acks only after commit, retries, backpressure, drain."""

import pytest
from twisted.internet.task import Clock

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import DeadLetter, Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage
from tests.doubles import Ack, Source

TABLE = TableName("s", "t")


def entry(n: int, ack=None) -> Entry:
    message = Message("t", b"{}", 1, False, 0.0, "#", ack or Ack())
    return Entry(TABLE, [Record(n, {"n": n})], "main", message, "json")


@pytest.fixture
def clock():
    return Clock()


def make(clock, **kwargs):
    storage = MemoryStorage(manual=True)
    options = dict(max_rows=3, linger=0.1, max_pending=6)
    options.update(kwargs)
    return storage, Batcher(storage, clock, **options)


def test_full_batch_is_written_at_once(clock):
    """Reaching max_rows writes the batch without waiting for a timer."""
    storage, batcher = make(clock)
    for n in range(3):
        batcher.add(entry(n))
    assert len(storage.writes) == 1 and len(storage.writes[0]) == 3


def test_idle_storage_writes_after_linger(clock):
    """With no write in flight, a partial batch is written linger seconds after its first entry."""
    storage, batcher = make(clock)
    batcher.add(entry(1))
    clock.advance(0.09)
    batcher.add(entry(2))
    assert storage.writes == []
    clock.advance(0.02)
    assert len(storage.writes) == 1 and len(storage.writes[0]) == 2


def test_group_commit_collects_while_a_write_is_in_flight(clock):
    """While a write is in flight no timer fires; what arrived is written the moment it ends."""
    storage, batcher = make(clock, max_rows=1000)
    batcher.add(entry(0))
    clock.advance(0.1)
    assert storage.in_flight == 1
    for n in range(1, 12):
        batcher.add(entry(n))
        clock.advance(1)
    assert storage.in_flight == 1 and len(storage.writes) == 1
    storage.complete()
    assert len(storage.writes) == 2 and len(storage.writes[1]) == 11


def test_ack_only_after_commit(clock):
    """Messages are acknowledged when their write succeeds, not before."""
    storage, batcher = make(clock)
    acks = [Ack() for _ in range(3)]
    for n, ack in enumerate(acks):
        batcher.add(entry(n, ack))
    assert [a.count for a in acks] == [0, 0, 0]
    storage.complete()
    assert [a.count for a in acks] == [1, 1, 1]


def test_failed_write_is_retried_and_never_acked_before(clock):
    """A failed write keeps its messages unacknowledged and is retried with backoff."""
    storage, batcher = make(clock)
    acks = [Ack() for _ in range(3)]
    for n, ack in enumerate(acks):
        batcher.add(entry(n, ack))
    storage.fail()
    assert batcher.stats.failures == 1 and "database unavailable" in batcher.stats.last_error
    assert [a.count for a in acks] == [0, 0, 0]
    clock.advance(0.5)
    assert storage.in_flight == 1
    storage.complete()
    assert [a.count for a in acks] == [1, 1, 1]
    assert [r.fields["n"] for r in storage.tables[TABLE]] == [0, 1, 2]


def test_entries_arriving_during_a_write_follow_it(clock):
    """What arrives while a write is in flight is written right after it (group commit)."""
    storage, batcher = make(clock)
    for n in range(3):
        batcher.add(entry(n))
    batcher.add(entry(3))
    clock.advance(1)
    assert storage.in_flight == 1
    storage.complete()
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 1


def test_backpressure_pauses_and_resumes_sources(clock):
    """At max_pending rows the sources are paused; once committed they resume."""
    storage, batcher = make(clock)
    source = Source()
    batcher.attach(source)
    for n in range(6):
        batcher.add(entry(n))
    assert source.paused
    storage.complete()
    storage.complete()
    assert not source.paused


def test_the_next_batch_gathers_while_a_large_one_is_written(clock):
    """A source paused at max_pending resumes as soon as the waiting batch goes to the writer, however large:
    the batch after it gathers during that write (paused through it, the writer would then idle)."""
    storage, batcher = make(clock, max_rows=1000, max_pending=12)
    source = Source()
    batcher.attach(source)
    batcher.add(entry(0))
    clock.advance(0.1)
    for n in range(1, 12):
        batcher.add(entry(n))
    assert source.paused and storage.in_flight == 1
    storage.complete()  # the 11 waiting rows go to the writer: more than half the bound still pending
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 11
    assert not source.paused
    batcher.add(entry(12))  # gathers for the next write; the bound still holds
    assert source.paused and batcher.pending == 12
    storage.complete()
    assert len(storage.writes[-1]) == 1 and not source.paused


def test_drain_commits_everything(clock):
    """drain() writes what is buffered and fires once it is committed."""
    storage, batcher = make(clock)
    batcher.add(entry(1))
    batcher.add_dead_letter(DeadLetter("main", Message("x", b"?"), "topology", "bad topic"))
    done = []
    batcher.drain().addCallback(done.append)
    assert done == []
    storage.complete()
    assert done == [None]
    assert len(storage.dead_letters) == 1 and batcher.stats.dead_letters == 1


def test_drain_when_idle_fires_at_once(clock):
    """drain() on an empty batcher fires immediately."""
    _, batcher = make(clock)
    done = []
    batcher.drain().addCallback(done.append)
    assert done == [None]

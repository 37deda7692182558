"""Batching: when batches commit, acks only after commit, retries, backpressure, drain."""

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from lorrygate.model import Message, Record, TableName
from lorrygate.sources.pauses import QUIET
from lorrygate.storage.batch import DeadLetter, Entry
from lorrygate.storage.batcher import WIDE_GATHER_BACKLOG, WIDE_GATHER_CONFIRM, Batcher
from lorrygate.storage.memory import MemoryStorage
from tests.doubles import Ack, Peer, Source

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


def test_the_next_write_starts_before_the_last_one_is_acknowledged(clock):
    """A batch that waits behind a write goes to the storage before the write's messages are acknowledged: the
    writer's thread starts on it while the reactor sends the acknowledgements. Nothing waits: its messages go
    after, the storage drained, and the barrier of a stop fires once every write is acknowledged."""
    storage, batcher = make(clock)
    writes_at_ack = []

    class Seen(Ack):
        def ack(self):
            super().ack()
            writes_at_ack.append(len(storage.writes))

    for n in range(6):
        batcher.add(entry(n, Seen()))
    assert len(storage.writes) == 1 and len(batcher._batch) == 3
    storage.complete()
    assert writes_at_ack == [2, 2, 2]  # the second write had started when the first's were acknowledged
    drained = batcher.drain()
    storage.complete()
    assert writes_at_ack == [2, 2, 2, 2, 2, 2]
    assert drained.called and storage.in_flight == 0


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


@pytest.mark.parametrize("max_rows", [1, 5000])
def test_a_bound_of_one_row_resumes_its_sources(clock, max_rows):
    """``max_pending = 1`` resumed below half the bound, 0 rows, never: the first message paused the channel's
    source for good (its status said "0 rows pending, sources paused"). It resumes once no row waits."""
    storage, batcher = make(clock, max_rows=max_rows, max_pending=1, linger=0)
    source = Source()
    batcher.attach(source)
    big = Entry(TABLE, [Record(n, {"n": n}) for n in range(10)], "main", Message("t", b"{}", 1, False, 0.0, "#", Ack()),
                "json")
    batcher.add(big)
    assert source.paused
    clock.advance(0)
    while storage.in_flight:
        storage.complete()
    assert batcher.pending == 0 and not source.paused
    batcher.add(entry(1))
    clock.advance(0)
    storage.complete()
    assert not source.paused and len(storage.writes) == 2


@pytest.fixture
def logged():
    events: list = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def pause_lines(events, batcher, level=None) -> list:
    return [(event["state"], event["log_level"]) for event in events
            if event.get("log_source") is batcher and "state" in event and level in (None, event["log_level"])]


def drain(storage, batcher, source, cycles: int, start: int = 0) -> int:
    """Fill to the bound and write until reading resumes, ``cycles`` times (a backlog's drain); the next n."""
    n = start
    for _ in range(cycles):
        while not source.paused:
            batcher.add(entry(n))
            n += 1
        while source.paused:
            storage.complete()
    return n


def test_a_backlog_logs_its_first_pause_and_one_summary_not_every_pause(clock, logged):
    """Draining a backlog pauses and resumes reading many times a second: the first pause and its resume are
    info lines, the others debug lines, and once reading has not paused for QUIET seconds one info line says
    how many pauses the backlog took. A backlog after that quiet starts over with an info line."""
    storage, batcher = make(clock)
    source = Source()
    batcher.attach(source)
    n = drain(storage, batcher, source, 2)
    clock.advance(0.5)
    n = drain(storage, batcher, source, 3, n)
    assert pause_lines(logged, batcher, LogLevel.info) == [("pausing", LogLevel.info), ("resuming", LogLevel.info)]
    assert len(pause_lines(logged, batcher, LogLevel.debug)) == 8
    assert batcher.stats.pauses == 5
    clock.advance(QUIET - 0.01)
    assert not [event for event in logged if event.get("event") == "backlog_paused"]
    clock.advance(0.02)
    (summary,) = [event for event in logged if event.get("event") == "backlog_paused"]
    assert summary["log_level"] == LogLevel.info and summary["pauses"] == 5 and summary["most"] == 6
    assert formatEvent(summary).startswith("storage memory: a backlog paused reading 5 times in 0.5 s")
    del logged[:]
    drain(storage, batcher, source, 1, n)
    assert pause_lines(logged, batcher) == [("pausing", LogLevel.info), ("resuming", LogLevel.info)]
    clock.advance(QUIET)
    assert not [event for event in logged if event.get("event") == "backlog_paused"], "one pause: no summary"
    assert batcher.stats.pauses == 6


def test_the_commit_line_counts_refused_rows_as_dead_letters(clock, logged):
    """Rows the storage refused (into the dead-letter table) are not told as committed rows: a write whose every
    row the database refused said "committed 3 rows and 0 dead letters" (the benchmark adds these lines up)."""
    storage, batcher = make(clock)
    for n in range(3):
        batcher.add(entry(n))
    (batch,) = storage.writes
    batch.refused_rows = 2
    batch.extra_dead = [DeadLetter("main", e.message, "store", "refused", "json") for e in batch.entries[:2]]
    storage.complete()
    (line,) = [event for event in logged if event.get("event") == "batch_committed"]
    assert (line["rows"], line["dead"]) == (1, 2)
    assert formatEvent(line).startswith("storage memory: committed 1 rows and 2 dead letters in ")


def test_a_stop_in_a_backlog_says_what_it_paused(clock, logged):
    storage, batcher = make(clock)
    source = Source()
    batcher.attach(source)
    drain(storage, batcher, source, 3)
    batcher.stop()
    (summary,) = [event for event in logged if event.get("event") == "backlog_paused"]
    assert summary["pauses"] == 3
    assert not clock.getDelayedCalls()


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


def spread(first: int, count: int) -> list:
    """Entries for ``count`` tables, one row each: a wide batch."""
    return [Entry(TableName("s", f"t{n}"), [Record(n, {"n": n})], "main", Message("t", b"{}", 1, False, 0.0, "#",
                                                                                   Ack()), "json")
            for n in range(first, first + count)]


def elapse(clock, seconds: float) -> None:
    """Advance in 5 ms steps: the gathering looks every 10 ms at what came since (one `Clock.advance` runs
    every call due in it at its end time)."""
    for _ in range(round(seconds / 0.005)):
        clock.advance(0.005)


def wide(clock, storage, batcher, took: float = 0.5) -> None:
    """Write one wide batch (4 tables, a row each) that takes ``took`` seconds."""
    for item in spread(0, 4):
        batcher.add(item)
    assert storage.in_flight == 1
    clock.advance(took)
    storage.complete()


def test_after_a_wide_write_the_next_batch_gathers_while_rows_come_and_is_written_with_reading_held(clock):
    """A write into many tables with few rows each makes the next batch gather past max_rows while rows keep
    coming; once they stop for 10 ms it is written, with the sources held paused meanwhile."""
    storage, batcher = make(clock, max_rows=4, max_pending=40, wide_tables=3)
    source = Source()
    batcher.attach(source)
    wide(clock, storage, batcher, took=1.0)
    assert not source.paused
    for item in spread(10, 8):
        batcher.add(item)
        clock.advance(0.049)
    assert storage.in_flight == 0  # past max_rows, gathering
    clock.advance(0.051)
    clock.advance(WIDE_GATHER_CONFIRM)  # the look after the reactor read: still nothing
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 8
    assert source.paused  # reading and the wide write take turns
    storage.complete()
    assert not source.paused


def test_a_gathering_wide_batch_is_written_soon_after_its_last_row(clock):
    """Quiet is counted from the last row seen, not from the last look: rows that come every 40 ms keep a
    wide batch gathering, and once they stop it is written 50 ms after a look saw the last one (looking
    every 50 ms, that had been up to 100 ms)."""
    storage, batcher = make(clock, max_rows=4, max_pending=1000, wide_tables=3)
    wide(clock, storage, batcher, took=1.0)
    for item in spread(10, 10):
        batcher.add(item)
        elapse(clock, 0.04 if item.table.table != "t19" else 0.045)
    assert storage.in_flight == 0  # 0.4 s, never 50 ms without a row; 45 ms since the last one
    elapse(clock, 0.03)  # 75 ms: (this clock looks every 15 ms, at 5 ms steps)
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 10


def test_a_wide_batch_gathers_no_longer_than_twice_the_last_write(clock):
    """Rows that keep coming do not hold a wide batch back longer than twice what the last (gathered) write
    took."""
    storage, batcher = make(clock, max_rows=4, max_pending=1000, wide_tables=3)
    wide(clock, storage, batcher, took=1.0)
    for item in spread(10, 4):
        batcher.add(item)
    while not storage.in_flight:
        clock.advance(0.005)  # until quiet: written, gathered as wide
    clock.advance(0.1)
    storage.complete()
    for item in spread(20, 60):
        batcher.add(item)
        clock.advance(0.005)
        if storage.in_flight:
            break
    assert storage.in_flight == 1 and len(storage.writes[-1]) in (40, 41)  # in twice 0.1 s (float steps)


def test_a_batch_wide_by_itself_is_written_with_reading_held(clock):
    """The first wide batch of a drain (the broker's in-flight window, a row for each of many tables) is
    written with the sources held, as a gathered one is: beside reading, each of its statements waits for
    the GIL. A batch of as many rows in a few tables is not held."""
    storage, batcher = make(clock, max_rows=4, max_pending=40, wide_tables=3)
    source = Source()
    batcher.attach(source)
    for item in [entry(n) for n in range(4)]:  # four rows, one table
        batcher.add(item)
    assert storage.in_flight == 1 and not source.paused
    storage.complete()
    batcher.add(entry(9))
    clock.advance(0.1)
    assert storage.in_flight == 1 and not source.paused
    for item in spread(10, 4):  # four rows, four tables, behind the write in flight
        batcher.add(item)
    storage.complete()
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 4 and source.paused
    storage.complete()
    assert not source.paused


def test_a_batch_with_many_rows_a_table_is_not_wide_by_itself(clock):
    """Wide by itself takes many tables with few rows each: four rows in each of three tables are not."""
    storage, batcher = make(clock, max_rows=12, max_pending=100, wide_tables=3)
    source = Source()
    batcher.attach(source)
    for n in range(12):
        batcher.add(Entry(TableName("s", f"t{n % 3}"), [Record(n, {"n": n})], "main", Message("t", b"{}"), "json"))
    assert storage.in_flight == 1 and not source.paused
    storage.complete()
    for item in spread(10, 12):
        batcher.add(item)
    assert storage.in_flight == 1 and source.paused


def test_after_a_first_wide_write_the_next_gathers_for_what_a_full_batch_would_take(clock):
    """A first wide write is smaller than a gathered one: the next batch gathers up to twice what max_pending
    rows take at its cost a row, not twice its own time (that wrote a drain's next batch half full)."""
    storage, batcher = make(clock, max_rows=4, max_pending=100, wide_tables=3)
    wide(clock, storage, batcher, took=0.004)  # 1 ms a row: 100 rows in 0.1 s
    for item in spread(10, 60):
        batcher.add(item)
        clock.advance(0.005)
        if storage.in_flight:
            break
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 40  # 40 rows in twice 0.1 s, not 2 in 8 ms


def test_a_flowing_stream_that_stops_is_written_after_two_quiet_looks(clock):
    """Rows that came at every look and then stop are written 20 ms after the last one, not 50: the end of
    a drain. A stream with longer gaps keeps the 50 ms (the test above)."""
    storage, batcher = make(clock, max_rows=4, max_pending=1000, wide_tables=3)
    wide(clock, storage, batcher, took=1.0)
    for item in spread(10, 20):
        batcher.add(item)
        elapse(clock, 0.005)
    assert storage.in_flight == 0
    elapse(clock, 0.015)
    assert storage.in_flight == 0
    elapse(clock, 0.02)  # 35 ms since the last row: the look after 20 ms (and its second look) wrote it
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 20


def flowing(clock):
    """A wide batch gathering ten rows that came every 5 ms, the last one seen by a look."""
    storage, batcher = make(clock, max_rows=4, max_pending=1000, wide_tables=3)
    wide(clock, storage, batcher, took=1.0)
    for item in spread(10, 10):
        batcher.add(item)
        elapse(clock, 0.005)
    elapse(clock, 0.01)
    return storage, batcher


def test_a_look_held_up_reads_what_waits_before_it_takes_the_stream_for_stopped(clock):
    """On a loaded machine the reactor thread can wait for a core while rows wait in its socket; it runs timed
    calls before it reads, so a look that finds the stream quiet looks once more 1 ms later, after the reactor
    read: rows then keep the batch gathering. With none, the batch is written at that second look."""
    storage, batcher = flowing(clock)
    clock.advance(0.06)  # held up for 60 ms: the look comes late and finds nothing new
    assert storage.in_flight == 0
    for item in spread(20, 5):  # what waited in the socket, read before the look after it
        batcher.add(item)
    clock.advance(WIDE_GATHER_CONFIRM)
    assert storage.in_flight == 0  # still gathering
    elapse(clock, 0.06)
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 15


def test_after_a_look_held_up_a_stream_needs_the_50_ms_quiet_again(clock):
    """A look held up (a loaded machine, where the broker waits for a core as well) ends the 20 ms rule: rows
    that come 30 ms after the last still join the batch."""
    storage, batcher = flowing(clock)
    clock.advance(0.025)  # held up: the next look comes 25-30 ms after that one, and nothing came
    clock.advance(WIDE_GATHER_CONFIRM)
    assert storage.in_flight == 0
    for item in spread(20, 5):
        batcher.add(item)
    elapse(clock, 0.1)
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 15


def live(clock, *sources, rows=30, every=0.002):
    """A wide write, then a stream of a row every 2 ms from ``sources``: what the batch gathered when the
    next write began (None: still gathering after ``rows`` rows)."""
    storage, batcher = make(clock, max_rows=4, max_pending=1000, wide_tables=3)
    for source in sources:
        batcher.attach(source)
    wide(clock, storage, batcher, took=1.0)
    for item in spread(10, rows):
        batcher.add(item)
        clock.advance(every)
        if storage.in_flight:
            return len(storage.writes[-1])
    return None


def test_a_live_stream_is_written_at_the_first_look_that_finds_nothing_unread(clock):
    """After a wide write the next batch gathers only while the broker has more waiting: a look (every
    10 ms) that finds every source read up writes it, however fast the rows come (a live stream of 20,000
    msg/s over 10,000 tables gathered a second's worth before, p99 523 ms)."""
    assert live(clock, Peer(0), Peer(100)) == 5  # the look at 10 ms


def test_a_drain_keeps_gathering_while_bytes_wait(clock):
    """A source with a backlog (a queue worked off) keeps the batch gathering up to its bound, as before."""
    assert live(clock, Peer(0), Peer(WIDE_GATHER_BACKLOG)) is None
    assert live(Clock(), Peer(5 * WIDE_GATHER_BACKLOG)) is None


def test_a_source_that_cannot_tell_keeps_the_gathering_as_it_was(clock):
    """Without a word from every source (one that cannot tell, none attached), the rows decide, as before."""
    assert live(clock, Peer(0), Peer(None)) is None
    assert live(Clock(), Source()) is None
    assert live(Clock()) is None


def test_what_came_during_the_held_write_is_read_before_the_batch_is_written(clock):
    """The first look finds what the broker sent while the write held reading; the batch is written at the
    first look after the source read it."""
    source = Peer(3 * WIDE_GATHER_BACKLOG)
    storage, batcher = make(clock, max_rows=4, max_pending=1000, wide_tables=3)
    batcher.attach(source)
    wide(clock, storage, batcher, took=1.0)
    for item in spread(10, 8):
        batcher.add(item)
    clock.advance(0.01)
    assert storage.in_flight == 0
    source.waiting = 200
    for item in spread(20, 2):
        batcher.add(item)
    clock.advance(0.01)
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 10 and source.paused


def test_a_small_write_between_wide_ones_keeps_them_wide(clock):
    """A few rows written in a lull (fewer than max_rows, fewer tables than a wide write) say nothing about
    the fleet: the batch after them still gathers, and still holds reading while it is written."""
    storage, batcher = make(clock, max_rows=4, max_pending=40, wide_tables=3, linger=0.0)
    source = Source()
    batcher.attach(source)
    wide(clock, storage, batcher, took=1.0)
    batcher.add(entry(1))
    clock.advance(0.051)  # quiet: written after one more look
    clock.advance(WIDE_GATHER_CONFIRM)
    assert storage.in_flight == 1 and source.paused
    clock.advance(0.01)
    storage.complete()
    for item in spread(10, 6):
        batcher.add(item)
    assert storage.in_flight == 0  # gathering, past max_rows
    clock.advance(0.021)  # twice as long as the last write took
    assert storage.in_flight == 1 and source.paused


def test_a_wide_batch_is_written_once_the_bound_is_reached(clock):
    """Gathering ends at max_pending: the batch is written at once, and the bound holds reading meanwhile."""
    storage, batcher = make(clock, max_rows=4, max_pending=12, wide_tables=3)
    source = Source()
    batcher.attach(source)
    wide(clock, storage, batcher)
    for item in spread(10, 12):
        batcher.add(item)
    assert storage.in_flight == 1 and len(storage.writes[-1]) == 12 and source.paused
    storage.complete()
    assert not source.paused and batcher.pending == 0


def test_a_write_with_many_rows_a_table_keeps_the_group_commit(clock):
    """Many tables with several rows each, or few tables: not wide; max_rows writes, reading goes on."""
    storage, batcher = make(clock, max_rows=16, max_pending=80, wide_tables=3)
    source = Source()
    batcher.attach(source)
    for _ in range(4):
        for item in spread(0, 4):  # 16 rows into 4 tables: four a table, the threshold
            batcher.add(item)
    storage.complete()
    for n in range(16):
        batcher.add(entry(n))
    assert storage.in_flight == 1 and not source.paused


def test_a_barrier_does_not_wait_for_a_wide_batch_to_gather(clock):
    """A stop's barrier writes what waits at once, gathering or not."""
    storage, batcher = make(clock, max_rows=4, max_pending=40, wide_tables=3)
    wide(clock, storage, batcher, took=5.0)
    for item in spread(10, 2):
        batcher.add(item)
    done = []
    batcher.barrier().addCallback(done.append)
    assert storage.in_flight == 1
    storage.complete()
    assert done == [None]


def test_a_failed_wide_write_lets_reading_go_on(clock):
    """Reading held for a wide write only is let go when the write fails; the retry is not wide."""
    storage, batcher = make(clock, max_rows=4, max_pending=40, wide_tables=3, retry_initial=1.0)
    source = Source()
    batcher.attach(source)
    wide(clock, storage, batcher)
    for item in spread(10, 4):
        batcher.add(item)
    elapse(clock, 0.065)  # none for 50 ms since the first look saw them: quiet
    assert storage.in_flight == 1 and source.paused
    storage.fail()
    assert not source.paused and storage.in_flight == 0
    clock.advance(1.0)
    assert storage.in_flight == 1 and not source.paused
    storage.complete()
    assert len(storage.writes[-1]) == 4 and batcher.pending == 0


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

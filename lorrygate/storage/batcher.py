"""
Batching in front of a storage, with acknowledgement after commit.

Group commit: one write is in flight at a time. When the storage is idle, a
batch is written ``linger`` seconds after its first entry (default 0: in the
next reactor turn, so everything that arrived in one network read goes
together); while a write is in flight, entries collect and are written as
soon as it finishes. Batches thus grow with the load and the write latency
by themselves: a trickle is committed at once, a flood in large batches. A
batch is also written when it reaches ``max_rows``. A broker waiting for
acknowledgements (its in-flight window full) never waits for a timer. Messages are acknowledged only after the write
that holds them succeeded.

With a spool (`lorrygate.storage.spool`), a failed write marks the storage
as down for a backoff delay: the batch, and every batch while the storage
is down, goes to the spool, and its messages are acknowledged once spooled.
After the delay the oldest spooled batch is tried (the probe); once it is
written the storage counts as up, live batches go to it again, and the
spool drains oldest first alongside them. Without a spool, or when the spool
is full, a failed batch stays in memory and is retried with backoff. While
``max_pending`` rows wait (buffered and being written), the batcher holds
its sources paused (backpressure; each batcher holds its own pause, see
`lorrygate.sources.pauses`) until a write ends and less than half of that
waits behind the next one; nothing is ever dropped.

Wide writes. A write that puts a few rows into each of many tables (a
fleet of 10,000 nodes: 20,000 rows, two a table) costs an INSERT a table,
and the writer thread gives the GIL up around each statement; while the
reactor thread reads beside it, every statement waits to get the GIL back.
After such a write the next batch therefore gathers up to ``max_pending``
rows (or until rows stop coming for 50 ms, or for twice as long as the last
write took, at most a second), and the sources stay paused while it is
written: reading and writing take turns, each at full speed, and each table
gets more rows a statement. Gathering is for a queue worked off (a drain):
a look (every 10 ms) that finds every source read up, nothing of what the
broker sent waiting in its socket, writes the batch at once, for a live
stream gains nothing by waiting (`lorrygate.sources.unread`). A write of
``max_rows`` rows or more that is not wide (fewer tables, or more rows a
table) returns to the group commit above.

`Batcher.barrier` fires once everything added so far is committed (or
spooled) and acknowledged, however much more keeps arriving: a channel that
stops waits on it. `Batcher.stop` cancels every timer and waits for the
write in flight; what is not committed then stays unacknowledged, and the
broker delivers it again.
"""

from operator import attrgetter
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger

from lorrygate.sources.pauses import PauseLog, SourceHolder
from lorrygate.storage.batch import Batch

#: a write is wide when it put rows into at least this many tables, with fewer than `WIDE_ROWS_PER_TABLE`
#: rows a table on average. Measured (`make bench`, 100,000 messages into 10,000 existing SQLite tables):
#: with reading beside it, 4,331 one- and two-row INSERTs took 0.2 s of wall time for 0.044 s of CPU, against
#: 10,000 in 0.1 s with reading paused; taking turns raised the drain from a median 24.1k to 28.0k msg/s
#: (four alternating pairs), 0.38 -> 0.47 of the single-table rate in a full run. At 100 tables and below the
#: statements carry up to 64 rows each, and reading beside the write is what keeps up the rate.
WIDE_TABLES = 1000
WIDE_ROWS_PER_TABLE = 4
#: how long a wide batch gathers at most (seconds), however long the last write took (one that created
#: 10,000 tables took 11 s)
WIDE_GATHER_MAX = 1.0
#: a gathering wide batch is written once no row came for this long (seconds): the stream went quiet, or
#: another holder paused the sources (waiting out the whole gathering time at the end of a drain cost ~0.4 s;
#: 10 ms was too short: after a commit, the broker took up to 26 ms to send again, measured)
WIDE_GATHER_QUIET = 0.05
#: how often a gathering wide batch looks whether rows still come (seconds): it is written within this
#: much after ``WIDE_GATHER_QUIET`` without rows (looking every 50 ms, 50 to 100 ms passed: the end of a
#: drain into 10,000 tables waited ~75 ms for its last rows, 4 % of the drain, measured)
WIDE_GATHER_LOOK = 0.01
#: rows that came at every look and then not for this long (two looks) have stopped: the gathering batch is
#: written (the last batch of a drain into 10,000 tables waited the 50 ms of `WIDE_GATHER_QUIET`, ~3 % of it)
WIDE_GATHER_STOPPED = 0.02
#: a gathering batch found quiet is looked at once more this much later, after the reactor polled its sockets
WIDE_GATHER_CONFIRM = 0.001

#: a gathering wide batch is written at a look that finds less than this many bytes unread in every source
#: (`lorrygate.sources.unread`): the stream is live, and the reactor keeps up with it. Measured at every look
#: (10 ms): draining into 10,000 tables 100-500 KB waited, and 0 only once the queue was empty; a live
#: stream of 20,000 msg/s over 10,000 tables left 0-600 bytes after the first look (which found what came
#: while the write held reading: 40-130 KB). One read of the reactor takes up to 64 KB.
WIDE_GATHER_BACKLOG = 65536

_table_of = attrgetter("table")
_records_of = attrgetter("records")


@attrs.define
class BatchStats:
    batches: int = 0
    rows: int = 0
    dead_letters: int = 0
    failures: int = 0
    last_error: str = ""
    #: why the last batch's rows were all refused ("" while rows get stored)
    failing: str = ""
    #: clock time and size of the last successful write
    last_flush: float | None = None
    last_flush_rows: int = 0
    last_flush_seconds: float = 0.0
    spooled: int = 0
    drained: int = 0
    #: times the storage paused its sources (its ``max_pending`` bound, a wide write)
    pauses: int = 0


@attrs.define(eq=False)
class Batcher(SourceHolder):
    storage: Any
    clock: Any
    max_rows: int = 5000
    linger: float = 0.0
    max_pending: int = 20_000
    retry_initial: float = 0.5
    retry_max: float = 30.0
    stats: BatchStats = attrs.Factory(BatchStats)
    #: why the spool refused the last batch while the storage was down ("" when it took it)
    spool_refused: str = ""
    #: ``f(batch, seconds)`` called for every committed batch (metrics, first-sample hooks);
    #: ``seconds`` is None for a batch drained from the spool
    observers: list = attrs.Factory(list)
    _sources: list = attrs.Factory(list)
    _batch: Batch = attrs.Factory(Batch)
    _writing: Batch | None = None
    _timer: Any = None
    _retry_delay: float = 0.0
    _paused: bool = False
    _waiters: list = attrs.Factory(list)
    _retry: Any = None
    _drain_call: Any = None
    #: Deferreds of the writes, spool writes and spool reads in flight
    _inflight: set = attrs.Factory(set)
    _stopped: bool = False
    #: a `lorrygate.storage.spool.Spool`, or None
    spool: Any = None
    _down_until: float | None = None
    _probe: Any = None
    _draining: bool = False
    #: tables and average rows a table from which on a write is wide (see `WIDE_TABLES`)
    wide_tables: int = WIDE_TABLES
    wide_rows_per_table: int = WIDE_ROWS_PER_TABLE
    #: whether the last write was wide: the next one gathers and holds the sources while it is written
    _wide: bool = False
    #: how long the last write took: a wide batch gathers twice as long at most (as long only, the
    #: gathering ended before the bound in a drain: reading 20,000 messages took about as long as writing)
    _gather: float = 0.0
    #: when a gathering wide batch is written at the latest, and its rows at the last look
    _gather_until: float = 0.0
    _gather_rows: int = 0
    #: when the gathering batch was last seen to have grown
    _gather_grew: float = 0.0
    #: whether the sources are held for a wide write only (not at the ``max_pending`` bound)
    _exclusive: bool = False
    #: whether the write in flight is wide by itself, not gathered as wide (`_spans_tables`)
    _sampled: bool = False
    #: whether rows came at (nearly) every look of the gathering: a flowing stream
    _gather_flowing: bool = False
    #: when the gathering last looked
    _gather_looked: float = 0.0
    #: the lines of its pauses: a backlog's first, and a summary (`lorrygate.sources.pauses.PauseLog`)
    _pause_log: PauseLog | None = None

    log = Logger()

    @property
    def pause_name(self) -> str:
        return f"storage {self.storage.name}"

    @property
    def paused(self) -> bool:
        """Whether this batcher holds its sources paused (backpressure)."""
        return self._paused

    @property
    def _resume_below(self) -> int:
        """Paused sources resume once fewer rows than this wait: half the bound, and at least one (a bound of 1
        resumed below 0 rows, never: one message, and its channel read nothing more for good)."""
        return max(1, self.max_pending // 2)

    @property
    def pending(self) -> int:
        """Rows buffered or being written, not yet acknowledged."""
        return len(self._batch) + (len(self._writing) if self._writing is not None else 0)

    def add(self, entry) -> None:
        # `Batch.add` written out (a call less a message)
        batch = self._batch
        batch.entries.append(entry)
        batch.rows += len(entry.records)
        if entry.message.position is not None:
            batch.positioned = True
        self._added_one()

    def add_dead_letter(self, dead_letter) -> None:
        self._batch.add_dead_letter(dead_letter)
        self._added_one()

    def add_together(self, entries: list, dead_letter) -> None:
        """The entries and the dead letter of one message in one batch: committed together (a message stored in
        part: its positions, taken once, cover both)."""
        batch = self._batch
        for entry in entries:
            batch.add(entry)
        batch.add_dead_letter(dead_letter)
        self._added_one()

    def _added_one(self) -> None:
        if self._stopped:
            return
        writing = self._writing
        if self._batch.rows + (writing.rows if writing is not None else 0) >= self.max_pending:
            if not self._paused:
                self._set_paused(True)
            self._exclusive = False
        if self._batch.rows >= (self.max_pending if self._wide else self.max_rows):
            self.flush()
        elif self._timer is None and self._writing is None:
            self._start_timer()

    def _start_timer(self) -> None:
        """Write the batch ``linger`` seconds from now; a wide batch gathers instead (`_gathering`)."""
        if not self._wide:
            self._timer = self.clock.callLater(self.linger, self._tick)
            return
        wait = max(self.linger, min(2 * self._gather, WIDE_GATHER_MAX))
        now = self.clock.seconds()
        self._gather_until = now + wait
        self._gather_rows, self._gather_grew, self._gather_flowing = len(self._batch), now, False
        self._gather_looked = now
        self._timer = self.clock.callLater(min(WIDE_GATHER_LOOK, wait), self._gathering)

    def _tick(self) -> None:
        self._timer = None
        if not self._batch.empty:
            self.flush()

    def _gathering(self, confirming: bool = False) -> None:
        """Write a wide batch once rows stop coming (the stream went quiet) or its time is up."""
        self._timer = None
        if self._batch.empty:
            return
        now = self.clock.seconds()
        if len(self._batch) != self._gather_rows:
            # rows at every look: a stream that flows, and a pause of two looks means it stopped
            self._gather_flowing = now - self._gather_grew <= 2 * WIDE_GATHER_LOOK
            self._gather_rows, self._gather_grew = len(self._batch), now
        elif now - self._gather_looked > 2 * WIDE_GATHER_LOOK:
            # a look held up: on a loaded machine the broker may be held up as well, and 20 ms say little
            self._gather_flowing = False
        self._gather_looked = now
        quiet = WIDE_GATHER_STOPPED if self._gather_flowing else WIDE_GATHER_QUIET
        if now >= self._gather_until or (confirming and now - self._gather_grew >= quiet) or self._read_up():
            self.flush()
            return
        if now - self._gather_grew >= quiet:
            # once more after the reactor read what waits in its sockets (it runs timed calls before it reads),
            # and a look held up took the rows that came meanwhile for a stream that had stopped (under load, a
            # drain into 10,000 tables wrote batches of 207, 1,178 and 5,889 rows between full ones)
            self._timer = self.clock.callLater(WIDE_GATHER_CONFIRM, self._gathering, True)
            return
        self._timer = self.clock.callLater(
            min(WIDE_GATHER_LOOK, self._gather_until - now, self._gather_grew + quiet - now), self._gathering)

    def _read_up(self) -> bool:
        """Whether every source has read what its peer sent: a live stream, not a queue worked off (a
        source that cannot tell counts as behind)."""
        if not self._sources:
            return False
        for source in self._sources:
            unread = getattr(source, "unread", None)
            waiting = unread() if unread is not None else None
            if waiting is None or waiting >= WIDE_GATHER_BACKLOG:
                return False
        return True

    def flush(self) -> None:
        """Write what is buffered now (or as soon as the current write ends)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._writing is not None or self._batch.empty or self._stopped:
            self._check_drained()
            return
        self._writing, self._batch = self._batch, Batch()
        if self.spool is not None and self.down:
            self._spool(self._writing)
        else:
            self._write()

    @property
    def down(self) -> bool:
        """Whether the storage failed recently and waits for its next probe."""
        return self._down_until is not None

    def _write(self) -> None:
        batch = self._writing
        assert batch is not None
        started = self.clock.seconds()
        # a batch wide by itself (the first of a fleet's drain: the broker's in-flight window, one row for each
        # of ~2,000 tables) is written with reading held as well; not a retry after a failure
        self._sampled = not self._wide and not self._retry_delay and self._spans_tables(batch)
        if (self._wide or self._sampled) and not self._paused:
            self._set_paused(True, exclusive=True)
        d = self._track(maybeDeferred(self.storage.write, batch))
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch, started), errbackArgs=(batch,))

    def _spans_tables(self, batch: Batch) -> bool:
        """Whether ``batch`` is wide by itself: at least `wide_tables` tables among its first entries, with
        fewer than `wide_rows_per_table` rows a table (a look at 4,000 entries at most, ~0.1 ms)."""
        if len(batch) < self.wide_tables:
            return False
        entries = batch.entries[: self.wide_tables * self.wide_rows_per_table]
        named = list(map(_table_of, entries))
        # by identity first (a channel hands out one object a topic), then by value
        objects = dict(zip(map(id, named), named))
        if len(objects) < self.wide_tables:
            return False
        tables = len(set(objects.values()))
        return tables >= self.wide_tables and sum(map(len, map(_records_of, entries))) < self.wide_rows_per_table * tables

    def _track(self, d: Deferred) -> Deferred:
        """Remember a Deferred in flight until it fires (`stop` waits for them)."""
        self._inflight.add(d)

        def done(result):
            self._inflight.discard(d)
            return result

        return d.addBoth(done)

    def _written(self, _, batch: Batch, started: float) -> None:
        stats = self.stats
        stats.batches += 1
        self._count(batch)
        stats.last_flush = self.clock.seconds()
        stats.last_flush_rows = len(batch)
        stats.last_flush_seconds = stats.last_flush - started
        self._retry_delay = 0.0
        self._writing = None
        if len(batch) >= self.max_rows or batch.tables >= self.wide_tables:
            # (a small write says little: the few rows that came in a lull between two wide writes)
            self._wide = batch.tables >= self.wide_tables and len(batch) < self.wide_rows_per_table * batch.tables
        # a gathered wide write bounds the next gathering; a first one (not gathered, smaller) tells the cost of
        # a row: the next gathers up to twice what ``max_pending`` rows at that cost take (after a 50 ms write of
        # 2,000 rows: 100 ms bounded a batch that took ~150 ms to read, and cost a write more a drain)
        self._gather = stats.last_flush_seconds * (max(1.0, self.max_pending / max(1, len(batch))) if self._sampled else 1.0)
        self._up()
        if not self._stopped and not self._batch.empty and self._flush_due():
            # the next write starts before this one is acknowledged: its thread writes while this one sends the
            # acknowledgements and lets the batch go (~8 ms for 10,000 messages, measured, in which it idled)
            self.flush()
        for entry in batch.entries:  # (not batch.messages(): a generator's step a message costs more)
            entry.message.ack.ack()
        for dead_letter in batch.dead_letters:
            dead_letter.message.ack.ack()
        for observe in self.observers:
            observe(batch, stats.last_flush_seconds)
        self.log.debug(
            "storage {storage}: committed {rows} rows and {dead} dead letters in {seconds:.3f} s",
            event="batch_committed",
            storage=self.storage.name,
            rows=len(batch) - len(batch.dead_letters) - batch.refused_rows,
            dead=len(batch.dead_letters) + len(batch.extra_dead),
            seconds=stats.last_flush_seconds,
        )
        self._done(batch)
        self._next()

    def _count(self, batch: Batch) -> None:
        """Count a committed batch's rows and dead letters as the storage stored them."""
        stored = len(batch) - len(batch.dead_letters) - batch.refused_rows
        self.stats.rows += stored
        self.stats.dead_letters += len(batch.dead_letters) + len(batch.extra_dead)
        if batch.refused_rows and not stored:
            # Every row of the batch was refused: the storage is failing, not
            # committing (a DDL that fails on every table, say).
            self.stats.failing = batch.extra_dead[0].error if batch.extra_dead else "every row refused"
        elif stored:
            self.stats.failing = ""

    @staticmethod
    def _done(batch: Batch) -> None:
        """Fire the barriers of a batch that is committed or spooled (and so acknowledged)."""
        waiters, batch.waiters = batch.waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _flush_due(self) -> bool:
        """Whether what waits is written as soon as the writer is free: a wide batch gathers first, up to half
        the bound (from there the sources stay paused: nothing more would come) or until a barrier waits."""
        return not self._wide or len(self._batch) >= self.max_pending // 2 or bool(self._waiters or self._batch.waiters)

    def _next(self) -> None:
        """After a batch is done with: write what waits, then release backpressure."""
        if self._stopped:
            return
        if self._batch.empty:
            self._check_drained()
        elif self._flush_due():
            self.flush()
        elif self._timer is None:
            self._start_timer()  # a wide batch gathers first
        # Resume once what waits behind the write is below half the bound, however large the write: the
        # next batch then gathers while it runs. Counting the write as well kept a source paused through a
        # large write, after which the writer idled on a trickle (measured: 400-row commits after every
        # 15,000-row one in a drain; with 10,000 tables the writer was busy 3.5 s of a 4.4 s drain).
        if self._paused and len(self._batch) < self._resume_below and not ((self._wide or self._exclusive) and self._writing is not None):
            self._set_paused(False)

    def _failed(self, failure, batch: Batch) -> None:
        self._mark_down(failure)
        if self._stopped:
            return  # not acknowledged: the broker delivers it again
        self._wide = False
        if self._paused and self.pending < self._resume_below:
            self._set_paused(False)  # held for a wide write only: reading goes on up to the bound
        if self.spool is not None:
            self.log.error(
                "storage {storage}: writing {rows} rows failed: {error}; spooling to disk while it is down, "
                "next try in {delay:.1f} s",
                storage=self.storage.name,
                rows=len(batch),
                delay=self._retry_delay,
                error=self.stats.last_error,
            )
            self._spool(batch)
            return
        self.log.error(
            "storage {storage}: writing {rows} rows failed, nothing of them acknowledged; "
            "retrying in {delay:.1f} s: {error}",
            storage=self.storage.name,
            rows=len(batch),
            delay=self._retry_delay,
            error=self.stats.last_error,
        )
        self._retry = self.clock.callLater(self._retry_delay, self._write)

    def storage_failed(self, exc: Exception) -> None:
        """The storage failed outside a write (at start): treat it as down."""
        from twisted.python.failure import Failure

        self._mark_down(Failure(exc))

    def _mark_down(self, failure) -> None:
        self.stats.failures += 1
        self.stats.last_error = failure.getErrorMessage()
        self._retry_delay = min(max(self._retry_delay * 2, self.retry_initial), self.retry_max)
        self._down_until = self.clock.seconds() + self._retry_delay
        if self._stopped:
            return
        if self.spool is not None and (self._probe is None or not self._probe.active()):
            self._probe = self.clock.callLater(self._retry_delay, self._probe_storage)

    def _up(self) -> None:
        self.spool_refused = ""
        if self._down_until is not None:
            self._down_until = None
            self.log.info("storage {storage}: writing again", storage=self.storage.name)
        self._drain_spool()

    # -- the spool ------------------------------------------------------------

    def _spool(self, batch: Batch) -> None:
        d = self._track(maybeDeferred(self.spool.put, batch))
        d.addCallbacks(self._spooled, self._spool_failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _spooled(self, path, batch: Batch) -> None:
        self.spool_refused = ""
        for message in batch.messages():
            message.ack.ack()
        self.stats.spooled += 1
        self._writing = None
        self._done(batch)
        self._next()

    def _spool_failed(self, failure, batch: Batch) -> None:
        if self._stopped:
            return
        self.spool_refused = failure.getErrorMessage()
        self.log.error(
            "storage {storage}: cannot spool {rows} rows ({error}); holding them in memory, "
            "nothing acknowledged, retrying in {delay:.1f} s",
            storage=self.storage.name,
            rows=len(batch),
            error=failure.getErrorMessage(),
            delay=self._retry_delay or self.retry_initial,
        )
        self._retry = self.clock.callLater(self._retry_delay or self.retry_initial, self._write)

    def _probe_storage(self) -> None:
        self._probe = None
        if self.spool is not None and self.spool.batches and not self._draining:
            self._drain_spool(probe=True)
        else:
            self._down_until = None  # the next live batch is the probe

    def _drain_spool(self, probe: bool = False) -> None:
        spool = self.spool
        if spool is None or self._draining or not spool.batches or (self.down and not probe) or self._stopped:
            return
        self._draining = True

        def take(found):
            if found is None:
                self._draining = False
                if probe:
                    self._down_until = None
                return None
            path, batch = found
            d = self._track(maybeDeferred(self.storage.write, batch))
            d.addCallbacks(drained, failed, callbackArgs=(path, batch))
            return d

        def drained(_, path, batch):
            self.stats.drained += 1
            self._count(batch)
            for observe in self.observers:
                observe(batch, None)
            self._draining = False
            self._retry_delay = 0.0
            self._track(spool.remove(path)).addErrback(
                lambda f: self.log.error("spool: {error}", error=f.getErrorMessage()))
            if self._down_until is not None:
                self._down_until = None
                self.log.info("storage {storage}: writing again; draining the spool", storage=self.storage.name)
            if not self._stopped:
                self._drain_call = self.clock.callLater(0, self._drain_spool)

        def failed(failure):
            self._draining = False
            self._mark_down(failure)
            self.log.error(
                "storage {storage}: still down ({error}); {batches} batch(es) wait in the spool, next try in "
                "{delay:.1f} s",
                storage=self.storage.name,
                error=self.stats.last_error,
                batches=spool.batches,
                delay=self._retry_delay,
            )

        def broken(failure):
            self._draining = False
            self.log.error("spool {storage}: {error}", storage=self.storage.name, error=failure.getErrorMessage())

        self._track(spool.oldest()).addCallback(take).addErrback(broken)

    def _set_paused(self, paused: bool, exclusive: bool = False) -> None:
        if paused == self._paused:
            return
        if paused:
            self.stats.pauses += 1
        if exclusive or self._exclusive:
            say = self.log.debug  # a pause for a wide write comes with every write of a big fleet
        else:
            if self._pause_log is None:
                self._pause_log = PauseLog(self.pause_name, self.clock, self.log)
            say = self._pause_log.changed(paused, self.pending)
        say(
            "storage {storage}: {state} reading ({pending} rows pending, bound {bound}{why})",
            storage=self.storage.name,
            state="pausing" if paused else "resuming",
            pending=self.pending,
            bound=self.max_pending,
            why=", wide write" if exclusive or self._exclusive else "",
        )
        self._exclusive = exclusive and paused
        self._hold_sources(paused)

    def buffered(self) -> list:
        """Per table: rows waiting (buffered or being written) and the age of the oldest, oldest first."""
        now = self.clock.seconds()
        tables = {}
        for batch in (self._writing, self._batch):
            if batch is None:
                continue
            for entry in batch.entries:
                key = str(entry.table) if entry.table is not None else "(none)"
                rows, oldest = tables.get(key, (0, now))
                tables[key] = (rows + len(entry.records), min(oldest, entry.message.received))
            if batch.dead_letters:
                rows, oldest = tables.get("(dead letters)", (0, now))
                tables["(dead letters)"] = (rows + len(batch.dead_letters),
                                            min([oldest] + [d.message.received for d in batch.dead_letters]))
        return sorted(
            ({"table": table, "rows": rows, "oldest_age": round(now - oldest, 3)} for table, (rows, oldest) in tables.items()),
            key=lambda item: -item["oldest_age"],
        )

    def drain(self) -> Deferred:
        """Flush everything; fires once nothing is buffered or being written."""
        d = Deferred()
        self._waiters.append(d)
        self.flush()
        return d

    def barrier(self) -> Deferred:
        """Fires once everything added until now is committed or spooled, and
        so acknowledged; entries added later do not hold it back."""
        if not self._batch.empty:
            batch = self._batch
        elif self._writing is not None:
            batch = self._writing
        else:
            return succeed(None)
        d = Deferred(lambda d: batch.waiters.remove(d) if d in batch.waiters else None)
        batch.waiters.append(d)
        self.flush()
        return d

    def stop(self) -> Deferred:
        """Cancel every timer and wait for what is in flight; nothing new starts."""
        self._stopped = True
        if self._pause_log is not None:
            self._pause_log.end()
        for name in ("_timer", "_retry", "_probe", "_drain_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        for source in list(self._sources):
            self.detach(source)
        return DeferredList(list(self._inflight), consumeErrors=True).addCallback(lambda _: None)

    def _check_drained(self) -> None:
        if self._writing is None and self._batch.empty and self._waiters:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

"""
A storage for SQL databases reached through a blocking driver (SQLite,
PostgreSQL), on one named thread that the storage starts and stops.

Each batch is one transaction: tables and columns are created on first
sight, rows are inserted per (table, columns) group, dead letters go to
``lorrygate_dead_letter``. When the database refuses the batch for something
in the data (a type conflict, a bad name), the batch is written again entry
by entry, each in a savepoint, and the entries the database refuses become
dead letters with its reason; the rest is committed. Errors that say the
database itself is unwell fail the write, and the batcher retries it.

A `Dialect` holds what differs between databases.
"""

from operator import attrgetter
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lorrygate.errors import StorageError, TableBudgetExceeded
from lorrygate.interfaces import IStorage
from lorrygate.model import Record
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.layout import (
    DEAD_LETTER_TABLE,
    EXTRA_COLUMN,
    ID_COLUMN,
    column_names,
    flatten,
    merge_details,
    merge_id,
    row_id,
    to_json,
    within_budget,
)
from lorrygate.storage.positions import POSITIONS_TABLE, Positions, encode
from lorrygate.storage.retention import Retention
from lorrygate.storage.shared_layout import ADDRESS_COLUMNS, address_values, shared_table, sqlite_view_statement
from lorrygate.storage.view_rounds import ViewRounds, ViewsInTheWay

_ADDRESS_COLUMNS = frozenset(ADDRESS_COLUMNS)
_UNSEEN = object()
_table_of = attrgetter("table")
#: locks of the database's lock table that one transaction takes for a table it creates (the table, its index,
#: its TOAST table and index, ...: 7.1 measured in PostgreSQL 15) and for a table that exists (1, and a new
#: column 2), rounded up; a transaction writes tables for at most `SqlStorage.lock_budget` of them
LOCKS_NEW_TABLE = 8
#: new tables in a write from which some are made on a connection of their own (`SqlStorage._make_new`)
BESIDE_MIN_TABLES = 16
LOCKS_KNOWN_TABLE = 2
#: in ``Batch.progress``: the batch's dead letters (and replays) are committed, with its first part
_DEAD_WRITTEN = ("dead", "written")
#: per-network, PostgreSQL: times a batch is written again after dropping the views that kept a column of
#: its shared table from widening (`ViewsInTheWay`)
WIDEN_ATTEMPTS = 3

#: whether a row's values include an object (a dict) or a null, by set lookups of their types: `dict in
#: map(type, ...)` compared the types (~1,600 instructions a row, callgrind); such a row goes through
#: `flatten` (dotted names; a null is left out, so that it makes no column)
_NESTED = frozenset((dict, type(None)))


def _tags_key(tags):
    """A record's tags as a dictionary key, as fine as their JSON that `merge_id` keys rows on: their items (with
    the type of a value that is not text: 1, 1.0 and true are equal in Python and other keys to the database),
    or their JSON for a tag that is no key (a list, from a decoder of your own)."""
    if not tags:
        return None
    try:
        for value in tags.values():
            if value.__class__ is not str:
                return frozenset([(name, value, value.__class__) for name, value in tags.items()])
        return frozenset(tags.items())
    except TypeError:
        return to_json(dict(tags))


@attrs.define(slots=True)
class _Flat(Record):
    """Records of one key merged (`SqlStorage._merged`): their fields flat already (as `flatten` makes them, the
    tags among them), so that a column is merged as the database merges it (``wifi`` and ``wifi.rssi`` are
    two)."""


@implementer(IStorage)
@attrs.define(eq=False)
class SqlStorage:
    name: str
    dialect: Any
    reactor: Any
    idempotent: bool = False
    #: `lorrygate.storage.ddl.DdlTemplate` by channel name ("" for every
    #: channel), run before the dialect's CREATE TABLE IF NOT EXISTS
    ddl: dict = attrs.Factory(dict)
    #: objects nested deeper than this are stored as one JSON column
    flatten_depth: int = 3
    #: columns per table (time and id included); a row's fields beyond go
    #: into one JSON column, `layout.EXTRA_COLUMN`
    max_columns: int = 250
    #: tables the storage holds at most (those of the database it knows, in all); a new table beyond is not
    #: made and its messages are dead letters (`TableBudgetExceeded`); 0: no limit
    max_tables: int = 100_000
    _pool: ThreadPool | None = None
    _conn: Any = None
    #: physical table name -> {column name as the dialect folds it: its type (PostgreSQL), its name as made
    #: (SQLite, whose columns keep their spelling: `_spelled`)}
    _columns: dict = attrs.Factory(dict)
    #: whether `_columns` holds what the database had when this connection was made
    _columns_read: bool = False
    #: field names of a row -> the distinct column names they get (`layout.column_names`), None: the same
    _renames: dict = attrs.Factory(dict)
    #: physical tables whose rows had text the database cannot store (`_scrub_from_now`): their rows go
    #: through the dialect's ``scrub_row`` first
    _scrubbed: set = attrs.Factory(set)
    stats: dict = attrs.Factory(dict)
    #: what of each positioned stream (a files source's) is stored (`lorrygate.storage.positions`)
    _positions: Positions = attrs.Factory(Positions)
    #: locks one transaction may take for its tables (None: no limit), from the dialect at each connection;
    #: a batch over more tables is written in several transactions (`_parts`)
    lock_budget: int | None = None
    #: (physical table, columns, value types) whose table and columns a committed transaction made
    #: sure of: a row of that shape needs no look at the schema (with 10,000 tables, that look was
    #: a third of the writer's own time); each to the columns its rows go in where a name's column has
    #: another spelling (`_spelled`), else None
    _verified: dict = attrs.Factory(dict)
    _pending_verified: list = attrs.Factory(list)
    #: the last reason a checkpoint failed, logged once ("" while they work)
    _checkpoint_error: str = ""
    #: SQLite: rows older than this many seconds are deleted (`lorrygate.storage.retention`); 0: kept
    retention: float = 0.0
    _expiry: Retention | None = None
    #: id of a TableName -> (that TableName, its physical name)
    _physical: dict = attrs.Factory(dict)
    #: per-address, or per-network (`lorrygate.storage.shared_layout`; SQLite only, the config says)
    layout: str = "per-address"
    #: SQLite: an index on each table's time, made at the first write into a table without one
    time_index: bool = False
    #: time_index: the tables that have it (read with the columns), and those this transaction indexed (a dict:
    #: in the order indexed, so that an entry rolled back to its savepoint takes back its own)
    _indexed: set = attrs.Factory(set)
    _indexing: dict = attrs.Factory(dict)
    #: nanoseconds of the buckets whose rows of a table and tags are merged into one (0: a row a record)
    merge: int = 0
    #: the channels' own merge (``merge`` of a channel section), nanoseconds by channel name
    merges: dict = attrs.Factory(dict)
    #: `merge_id` by (physical table, tags) (`_merge_id`)
    _merge_ids: dict = attrs.Factory(dict)
    #: the tables whose unique key on (time, lorrygate_id) is known, and those this transaction looked at (in order)
    _merge_keyed: set = attrs.Factory(set)
    _merge_keying: dict = attrs.Factory(dict)
    #: the tables with a ``lorrygate_id`` column (made with the key, or given it), by physical name
    _id_tables: set = attrs.Factory(set)
    #: new tables in a write from which some are made on a connection of their own (None: never)
    beside_min_tables: int | None = BESIDE_MIN_TABLES
    #: per-network: id of a per-address TableName -> (it, its shared TableName or None); one object per shared table
    _shared_of: dict = attrs.Factory(dict)
    _shared_tables: dict = attrs.Factory(dict)
    #: per-network: the keys of a row's fields (or tags) -> whether none is named as an address column
    _free_keys: dict = attrs.Factory(dict)
    #: per-network: the views of this connection's database (physical names; None: not read yet), those this
    #: transaction wants (view physical name -> (per-address TableName, shared TableName)) and makes, and
    #: those refused with the reason
    _views: set | None = None
    _wanted_views: dict = attrs.Factory(dict)
    _made_views: list = attrs.Factory(list)
    refused_views: dict = attrs.Factory(dict)
    #: per-network, a dialect that makes views beside the writes (PostgreSQL): their rounds
    _rounds: ViewRounds = attrs.Factory(lambda self: ViewRounds(self), takes_self=True)

    log = Logger()

    def start(self) -> Deferred:
        """Start the writer thread and connect; fails with `StorageError`."""
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"lorrygate-{self.dialect.name}-{self.name}")
        self._pool.start()
        if self.retention:
            self._expiry = Retention(self, self.retention)
            self._expiry.start()
        return self._call(self._connect, False).addCallback(self._read_columns_soon)

    def _read_columns_soon(self, result):
        """Read the columns of every table on the writer thread after the start returned, while the
        channels connect (10,000 tables: ~90 ms that a start no longer waits for). The writer has one
        thread, so a write queued later finds them read; should this read fail, that write reads
        them again and says why."""
        self._call(self._read_columns).addErrback(
            lambda failure: self.log.debug("storage {storage}: {error} (the next write reads them again)",
                                           storage=self.name, error=failure.getErrorMessage()))
        self._rounds.schedule()
        return result

    @property
    def _views_beside(self) -> bool:
        return self.layout == "per-network" and getattr(self.dialect, "views_beside", False)

    def interrupt(self) -> None:
        """Abort the statement the writer thread runs now, from another thread (a stop that waited long
        enough): the write fails and rolls back."""
        conn = self._conn
        if conn is not None:
            try:
                self.dialect.interrupt(conn)
            except Exception as exc:  # closed meanwhile (the write ended): nothing to interrupt
                self.log.debug("storage {storage}: nothing to interrupt ({error})", storage=self.name, error=exc)

    def stop(self) -> Deferred:
        if self._expiry is not None:
            self._expiry.stop()
        if self._pool is None:
            return succeed(None)
        pool, d = self._pool, self._call(self._close)

        def stop_pool(result):
            self._pool = None
            pool.stop()
            return result

        return d.addBoth(stop_pool)

    def write(self, batch) -> Deferred:
        d = self._call(self._commit, batch)
        if self._views_beside:
            # after the write, as a job of its own: the acknowledgements never wait for views
            d.addBoth(self._rounds.after)
        if hasattr(self.dialect, "checkpoint"):
            # after the write, as a job of its own: its Deferred fires (the acknowledgements leave, the
            # sources read on) while the writer thread copies the WAL (`SQLiteDialect.checkpoint`)
            self._call(self._checkpoint).addCallbacks(self._checkpointed, self._checkpoint_failed)
        return d

    def details(self) -> dict:
        """For the status: messages left out as held already, the positioned streams known, and the views of
        the per-network layout."""
        details = {"held_already": self.stats.get("held_already", 0), "streams": len(self._positions.streams)}
        if self._expiry is not None:
            details.update(self._expiry.details())
        details.update(merge_details(self.merge, self.merges))
        if self.layout == "per-network":
            details.update(layout=self.layout, views=len(self._views or ()), refused_views=dict(self.refused_views))
            if self._views_beside:
                details["views_to_make"] = self._rounds.to_make()
        return details

    @property
    def expired_rows(self) -> int | None:
        """Rows the retention deleted since the start (None: the storage has none)."""
        return None if self._expiry is None else self._expiry.expired

    def _checkpointed(self, _) -> None:
        if self._checkpoint_error:
            self._checkpoint_error = ""
            self.log.info("storage {storage}: checkpointing works again", storage=self.name)

    def _checkpoint_failed(self, failure) -> None:
        error = failure.getErrorMessage()
        if error != self._checkpoint_error:
            self._checkpoint_error = error
            self.log.warn(
                "storage {storage}: copying the WAL of {database} into the database failed: {error}; the rows "
                "are committed (in the WAL) and the copy is tried again after the next write",
                storage=self.name, database=self.dialect.describe(), error=error)

    def _call(self, function, *args) -> Deferred:
        assert self._pool is not None, "the storage is started"
        return deferToThreadPool(self.reactor, self._pool, function, *args)

    def call_writer(self, function, *args) -> Deferred:
        """``function(conn, *args)`` on the writer thread, after the jobs queued before it; fails with
        StorageError while the storage is stopped or has no connection (it is down)."""
        if self._pool is None:
            return fail(StorageError(f"storage {self.name} is stopped"))
        return self._call(self._with_connection, function, args)

    def _with_connection(self, function, args):
        if self._conn is None:
            raise StorageError(f"storage {self.name}: no connection to {self.dialect.describe()} (it is down)")
        return function(self._conn, *args)

    def expire_rows(self, conn, table: str, cutoff: str, limit: int) -> int:
        """In the writer thread: delete at most ``limit`` rows of ``table`` older than ``cutoff`` in a
        transaction of their own; the rows deleted."""
        try:
            self.dialect.begin(conn)
            count = self.dialect.expire(conn, table, cutoff, limit)
            self.dialect.commit(conn)
        except Exception:
            self.dialect.rollback(conn)
            raise
        return count

    # -- in the writer thread -------------------------------------------------

    def _connect(self, columns: bool = True) -> None:
        try:
            self._conn = self.dialect.connect()
            self.dialect.prepare(self._conn, DEAD_LETTER_TABLE)
        except Exception as exc:
            self._close()
            error = StorageError(f"storage {self.name}: cannot use {self.dialect.describe()}: "
                                 f"{self.dialect.unusable(exc)}")
            error.passing = self.dialect.passing(exc)
            raise error from None
        self._columns_read = False
        self._verified.clear()
        self._views = None
        self._rounds.connected()
        budget = self.dialect.lock_budget(self._conn)
        # (a budget halved after the database ran out of locks stays halved)
        self.lock_budget = budget if self.lock_budget is None or budget is None else min(self.lock_budget, budget)
        if columns:
            self._read_columns()

    def _read_columns(self) -> None:
        """What tables and columns the database has, once a connection; fails with `StorageError`."""
        if self._conn is None or self._columns_read:
            return
        try:
            self._columns = self.dialect.existing_columns(self._conn)
            if self.time_index:
                self._indexed = self.dialect.time_indexes(self._conn)
            self._merge_keyed = set()  # (looked at again on this connection: the database may be another)
            fold = self.dialect.fold
            self._id_tables = {physical for physical, columns in self._columns.items() if fold(ID_COLUMN) in columns}
        except Exception as exc:
            try:
                self.dialect.rollback(self._conn)
            except Exception:
                pass  # a lost connection: `_reset_after` closes it, and the next write connects anew
            self._reset_after(exc)
            raise StorageError(f"storage {self.name}: cannot read the tables of {self.dialect.describe()}: {exc}"
                               ) from None
        self._columns_read = True

    def _checkpoint(self) -> None:
        if self._conn is not None:
            self.dialect.checkpoint(self._conn)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                close = getattr(self.dialect, "close", None)
                close(self._conn) if close is not None else self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _commit(self, batch) -> None:
        if self._conn is None:
            self._connect()
        elif not self._columns_read:
            self._read_columns()
        if batch.positioned and not self._positions.loaded:
            try:
                self._positions.load(self.dialect.read_positions(self._conn, POSITIONS_TABLE))
            except Exception as exc:
                self.dialect.rollback(self._conn)
                self._reset_after(exc)
                raise StorageError(f"storage {self.name}: cannot read {POSITIONS_TABLE}: {exc}") from None
        parts = self._parts(batch)
        if parts is None:
            self._commit_whole(batch)
        else:
            self._commit_parts(batch, parts)

    def _parts(self, batch) -> list | None:
        """The batch's entries (indices) in parts whose tables fit `lock_budget`, or None when one transaction
        takes the whole batch. PostgreSQL's lock table is shared by all its sessions, 6,400 locks by default
        (with some slack: 5,000 new tables went in at once, measured): one transaction that created 8,000
        tables ran out of it ("out of shared memory"), and such a batch never succeeded."""
        budget = self.lock_budget
        entries = batch.entries
        progress = batch.progress
        if budget is None or (not progress and len(entries) * LOCKS_NEW_TABLE <= budget):
            return None
        if not progress and len(set(map(id, map(_table_of, entries)))) * LOCKS_NEW_TABLE <= budget:
            return None  # few tables (one object a topic): ~50 ns an entry, not a TableName's hash
        tables: dict = {}
        for index, entry in enumerate(entries):
            if progress and entry.records and (index, len(entry.records) - 1) in progress:
                continue  # committed by an earlier part of this batch (a part marks all of an entry's records)
            tables.setdefault(entry.table, []).append(index)
        known = self._columns
        physical = self.dialect.physical
        parts: list = []
        part: list = []
        locks = 0
        for table, indices in tables.items():
            cost = 0 if table is None else LOCKS_KNOWN_TABLE if physical(table) in known else LOCKS_NEW_TABLE
            if part and locks + cost > budget:
                parts.append(part)
                part, locks = [], 0
            part += indices
            locks += cost
        if not progress and not parts:
            return None
        parts.append(part)
        return parts

    def _commit_parts(self, batch, parts: list) -> None:
        """Write the parts of a batch in a transaction each; what each commits is marked in ``batch.progress``, so
        that a retry after a later part failed (or the spool) writes the rest only. The dead letters go with
        the first part."""
        entries = batch.entries
        progress = batch.progress
        tables = 0
        refused: set = set()  # (a replay: messages refused in an earlier part, not marked in a later one)
        for number, indices in enumerate(parts):
            part = Batch()
            for index in indices:
                part.add(entries[index])
                key = id(entries[index].message)
                if key in batch.replaying and key not in refused:
                    part.replaying[key] = batch.replaying[key]
            dead = number == 0 and _DEAD_WRITTEN not in progress
            if dead:
                part.dead_letters = batch.dead_letters
            self._commit_whole(part)
            for index in indices:
                progress.update((index, position) for position in range(len(entries[index].records)))
            if dead:
                # (the spool counts the dead letters and then the extra ones as ("dead", i))
                progress.update(("dead", i) for i in range(len(batch.dead_letters)))
                progress.add(_DEAD_WRITTEN)
            batch.extra_dead.extend(part.extra_dead)
            refused.update(id(d.message) for d in part.extra_dead)
            progress.update(id(d) for d in part.extra_dead)
            batch.refused_rows += part.refused_rows
            tables += part.tables
        batch.tables = tables

    def _commit_whole(self, batch) -> None:
        for _ in range(WIDEN_ATTEMPTS):
            try:
                return self._commit_once(batch)
            except ViewsInTheWay as exc:
                # (the transaction is rolled back) the views go, the column widens, the views come back
                self._rounds.drop(exc.table, str(exc).splitlines()[0])
        raise StorageError(f"storage {self.name}: {self.dialect.name} write failed: views kept a column from widening "
                           f"{WIDEN_ATTEMPTS} times")

    def _commit_once(self, batch) -> None:
        try:
            self._transaction(batch, isolate=False)
        except ViewsInTheWay:
            raise
        except StorageError as exc:
            self._reset_after(exc)
            raise
        except Exception as exc:
            if self.dialect.out_of_locks(exc):
                self._lock_budget_exceeded(exc)
            if self.dialect.transient(exc):
                self._reset_after(exc)
                raise StorageError(f"storage {self.name}: {self.dialect.name} write failed: {self.dialect.unwell(exc)}"
                                   ) from None
            # One bad entry must not hold back the rest.
            try:
                self._transaction(batch, isolate=True)
            except ViewsInTheWay:
                raise
            except Exception as again:
                if self.dialect.out_of_locks(again):
                    self._lock_budget_exceeded(again)  # (the entry by entry write takes the same locks, and more)
                self._reset_after(again)
                raise StorageError(f"storage {self.name}: {self.dialect.name} write failed: "
                                   f"{self.dialect.unwell(again)}") from None

    def _lock_budget_exceeded(self, exc) -> None:
        """The database ran out of locks (other sessions hold some, or its lock table is small): the next
        transactions take half as many tables."""
        if self.lock_budget is None:
            return
        halved = max(LOCKS_NEW_TABLE, self.lock_budget // 2)
        self.log.warn(
            "storage {storage}: {database} ran out of locks for one transaction ({error}); writing at most "
            "{budget} locks' worth of tables a transaction from now on (raise max_locks_per_transaction to "
            "write more at once)", storage=self.name, database=self.dialect.name, error=str(exc).splitlines()[0],
            budget=halved)
        self.lock_budget = halved

    def _reset_after(self, exc) -> None:
        if self.dialect.connection_lost(exc):
            self._close()

    def _transaction(self, batch, isolate: bool) -> None:
        conn = self._conn
        dialect = self.dialect
        entries, dead_letters = batch.entries, batch.dead_letters
        changed: dict = {}
        skipped = 0
        if batch.positioned:
            entries, dead_letters, changed, skipped = self._positions.select(entries, dead_letters)
        added = {}
        extra_dead = []
        refused = 0
        self._pending_verified = []
        self._wanted_views.clear()
        self._made_views = []
        self._indexing = {}
        self._merge_keying = {}
        dialect.begin(conn)
        try:
            if changed:
                dialect.write_positions(conn, POSITIONS_TABLE, [(stream, encode(ranges))
                                                               for stream, ranges in changed.items()])
            if isolate:
                for entry in entries:
                    failed = self._entry_in_savepoint(conn, entry, added)
                    if failed is not None and dialect.unstorable_text(failed[0]) and self._scrub_from_now(entry):
                        failed = self._entry_in_savepoint(conn, entry, added)  # its text without what was refused
                    if failed is not None:
                        extra_dead.append(DeadLetter(entry.channel, entry.message, "store",
                                                     self._refusal(failed[0], entry, failed[1]), entry.decoder))
                        refused += len(entry.records)
            else:
                batch.tables = self._insert(conn, entries, added)
            if self._wanted_views and not self._views_beside:
                self._make_views(conn)
            replaying = batch.replaying
            all_dead = list(dead_letters) + [d for d in extra_dead if id(d.message) not in replaying]
            if all_dead:
                dialect.insert_dead_letters(conn, DEAD_LETTER_TABLE, all_dead)
            if replaying:
                batch.extra_dead = extra_dead
                again = batch.refused_again()
                if again:
                    dialect.fail_again(conn, DEAD_LETTER_TABLE, again)
                kept = {key for key, _ in again}
                replayed = sorted({key for key in replaying.values() if key not in kept})
                if replayed:
                    dialect.mark_replayed(conn, DEAD_LETTER_TABLE, replayed)
            dialect.commit(conn)
        except BaseException:
            dialect.rollback(conn)
            raise
        id_column = dialect.fold(ID_COLUMN)
        for table, columns in added.items():
            self._columns.setdefault(table, {}).update(columns)
            if id_column in columns:
                self._id_tables.add(table)
        self._indexed.update(self._indexing)
        self._merge_keyed.update(self._merge_keying)
        if len(self._verified) > 200_000:
            self._verified.clear()
        self._verified.update(self._pending_verified)
        if self._views_beside:
            self._rounds.committed(self._wanted_views, added)
        if self._made_views:
            assert self._views is not None
            self._views.update(self._made_views)
            self.log.info("storage {storage}: created {count} view(s) over shared tables, such as {view}",
                          storage=self.name, count=len(self._made_views), view=self._made_views[0])
        self._positions.apply(changed)
        if skipped:
            self.stats["held_already"] = self.stats.get("held_already", 0) + skipped
        batch.extra_dead, batch.refused_rows = extra_dead, refused
        if extra_dead:
            self.log.warn(
                "storage {storage}: {count} message(s) refused, kept in {table}: {reason}",
                storage=self.name,
                count=len(extra_dead),
                table=DEAD_LETTER_TABLE,
                reason=extra_dead[0].error,
            )

    def _entry_in_savepoint(self, conn, entry, added: dict) -> tuple | None:
        """Write one entry in a savepoint of the transaction; when the database refuses it, roll back to the
        savepoint (``added``, the columns the transaction added, as before it) and return the error and those
        columns. An error that says the database is unwell is raised."""
        dialect = self.dialect
        dialect.execute(conn, "SAVEPOINT lorrygate_entry")
        before = {table: dict(columns) for table, columns in added.items()}
        verified = len(self._pending_verified)
        wanted = len(self._wanted_views)
        indexed = len(self._indexing)
        keying = len(self._merge_keying)
        failed = None
        try:
            self._insert(conn, [entry], added)
        except Exception as exc:
            if dialect.transient(exc) or isinstance(exc, ViewsInTheWay):
                raise
            dialect.execute(conn, "ROLLBACK TO SAVEPOINT lorrygate_entry")
            added.clear()
            added.update(before)
            del self._pending_verified[verified:]
            for view in list(self._wanted_views)[wanted:]:  # (a dict keeps the order of insertion)
                del self._wanted_views[view]  # the views of the entry's rows, which are not written
            dialect.entry_rolled_back()  # (columns noted for its rows, schemas it made)
            for physical in list(self._indexing)[indexed:]:
                del self._indexing[physical]  # (the time index its table got)
            for physical in list(self._merge_keying)[keying:]:
                del self._merge_keying[physical]  # (the merge key its table got)
            failed = (exc, before)
        dialect.execute(conn, "RELEASE SAVEPOINT lorrygate_entry")
        return failed

    def _scrub_from_now(self, entry) -> bool:
        """The database refused text of the entry's rows that it cannot store (PostgreSQL: the character NUL,
        as firmware pads C strings): its table's text goes without it from now on (`_insert`). False when the
        table's text was scrubbed already (the refusal is something else)."""
        physical = {self.dialect.physical(table) for table in self._tables_of(entry)}
        if physical <= self._scrubbed:
            return False
        self._scrubbed.update(physical)
        self.log.warn("storage {storage}: {table} got text that {database} cannot store ({what}); it is left out of "
                      "the table's text values from now on", storage=self.name, table=sorted(physical)[0],
                      database=self.dialect.name, what=self.dialect.unstorable_text_is)
        return True

    def _refusal(self, exc: Exception, entry, added: dict) -> str:
        """Why the database refused an entry's rows; for a value its column's type refuses, the dialect says
        how to store such values (`explain_refusal`). ``added``: the columns this transaction had added."""

        def columns_of(physical: str) -> dict:
            return {**self._columns.get(physical, {}), **added.get(physical, {})}

        if isinstance(exc, UnicodeEncodeError):
            return _surrogate_refusal(exc, entry)
        return self.dialect.explain_refusal(exc, self._tables_of(entry), columns_of)

    def _check_table_budget(self, physical: str, added: dict, new: dict | None) -> None:
        """Raise `TableBudgetExceeded` when a new table would take the storage beyond ``max_tables``: the
        tables it knows, those this transaction made and those it is about to make."""
        known = self._columns
        count = len(known) + len(added) + len(new or ())
        if count < self.max_tables:
            return
        count = len(known) + sum(1 for table in added if table not in known) + len(new or ())
        if count >= self.max_tables:
            raise TableBudgetExceeded(
                f"storage {self.name} holds {count} tables, its max_tables: {physical} is not made. For a fleet "
                f"this large, raise max_tables in [storage:{self.name}] (a table costs the gateway ~4 KB of memory), "
                "then run lorrygate dead-letters replay --stage store; a counter or a time in a topic level makes "
                "a table a message: fix that publisher")

    def _merge_of(self, channel: str) -> int:
        """The nanoseconds of a channel's merge buckets: its own merge, else the storage's (0: a row a record)."""
        return self.merges.get(channel, self.merge) if self.merges else self.merge

    def _keyed_for(self, entry) -> bool:
        """Whether the tables of an entry are made with the key (time, lorrygate_id): idempotent rows, and merged
        ones."""
        return self.idempotent or bool(self._merge_of(entry.channel))

    def _tables_of(self, entry) -> list:
        """The tables an entry's rows go to: its own, and first its shared table (per-network layout)."""
        shared = shared_table(entry.table, entry.address) if self.layout == "per-network" else None
        return [entry.table] if shared is None else [shared, entry.table]

    def _insert(self, conn, entries, added: dict) -> int:
        """Insert the rows of ``entries`` grouped by table and columns; returns the number of groups."""
        dialect = self.dialect
        if self.layout == "per-network":
            entries = self._to_shared(entries)
        merging = bool(self.merge or self.merges)
        if merging:
            entries = self._merged(entries)
        groups: dict = {}
        #: the keys of the groups whose rows merge into the rows of their key (``merge``), and of those whose rows
        #: got an id of their content for a table made with the key (`ID_COLUMN`) where this storage is not keyed
        merged_groups: set = set()
        id_groups: set = set()
        id_column = dialect.fold(ID_COLUMN)
        id_tables = self._id_tables
        idempotent = self.idempotent
        merge = 0
        keyed = idempotent
        depth = self.flatten_depth
        renames = self._renames
        row = dialect.row
        known = self._columns
        room = self.column_budget - 2  # time and id
        #: fields from which a row may be beyond the bytes a row can have (PostgreSQL: `lorrygate.storage.row_size`)
        wide = getattr(dialect, "row_fields", None) or 1 << 62
        physical_names = self._physical
        verified = self._verified
        #: SQLite: the groups whose rows go in columns of other names (`_spelled`): {key: columns}
        respelled: dict = {}
        #: new tables whose making waits for the end of the loop (`_make_new`): ``{physical: (entry, row)}``
        new: dict | None = {} if (self.layout == "per-address" and not self.ddl
                                  and hasattr(dialect, "create_tables")) else None
        #: (physical table, field names) -> the rows of its group, for rows stored as their fields are (no
        #: tags, nothing nested, renamed or over the column budget): the next row of that table with those
        #: fields joins the group in one look (the writer's Python for a row, without the database: 2.40 ->
        #: 2.10 us with SQLite, measured)
        plain: dict = {}
        for entry in entries:
            records = entry.records
            if not records:
                continue
            key_table = entry.table
            # the physical name by the table object's identity (the router hands out the same object for a
            # topic): no Python-level hash of a TableName per row
            cached = physical_names.get(id(key_table))
            if cached is not None and cached[0] is key_table:
                physical = cached[1]
            else:
                physical = self._physical_name(key_table)
            if merging:
                merge = self._merge_of(entry.channel)
                keyed = idempotent or bool(merge)
            for record in records:
                fields = record.fields
                names = None
                if record.tags or keyed or not _NESTED.isdisjoint(map(type, fields.values())):
                    flat = dict(fields) if type(record) is _Flat else flatten(fields, record.tags, depth=depth)
                else:
                    names = tuple(fields)
                    rows = plain.get((physical, names))
                    if rows is not None:
                        rows.append(row(record.time, fields.values()))
                        continue
                    flat = fields  # flat already, and not changed below (0.65 -> 0.24 us a row)
                waiting = new.get(physical) if new else None  # (a table to make: its first row's columns count too)
                if len(flat) + len(known.get(physical) or ()) + len(added.get(physical) or ()) + (
                        len(waiting[1]) if waiting is not None else 0) > room:
                    if waiting is not None and new is not None:
                        self._make_new(conn, new, added)  # (the budget counts the columns the table has)
                    flat = self._budget(physical, flat, added)
                if len(flat) > wide:
                    flat = self._fit_row(physical, flat, added)
                columns = names if names is not None and flat is fields else tuple(flat)
                renamed = renames.get(columns, _UNSEEN)
                if renamed is _UNSEEN:
                    if flat is fields and not all(type(name) is str for name in columns):
                        # a user decoder's non-text keys: names as flatten() writes them
                        flat = self._budget(physical, flatten(fields, None, depth=depth), added)
                        columns = tuple(flat)
                    if len(renames) > 10_000:
                        renames.clear()
                    renamed = column_names(columns, dialect.fold, dialect.reserved, dialect.identifier_limit)
                    renames[columns] = renamed = None if renamed == columns else renamed
                named = columns
                if renamed is not None:
                    flat = dict(zip(renamed, flat.values()))
                    columns = renamed
                time = record.time
                own_id = False
                if merge:
                    time -= time % merge  # (the bucket's start: the rows of a bucket have one time and one key)
                    flat[ID_COLUMN] = self._merge_id(physical, key_table, record.tags)
                    columns = tuple(flat)
                elif idempotent:
                    flat[ID_COLUMN] = row_id(key_table, time, flat)
                    columns = tuple(flat)
                elif (id_tables and physical in id_tables) or (added and id_column in (added.get(physical) or ())):
                    # a table made with the key (merge or idempotent on then, or another channel's merge): its
                    # id is NOT NULL, so the row gets one of its content, as an idempotent row (each was a dead
                    # letter, "NOT NULL constraint failed")
                    own_id = True
                    flat = dict(flat)
                    flat[ID_COLUMN] = row_id(key_table, time, flat)
                    columns = tuple(flat)
                key = (physical, columns)
                group = groups.get(key)
                if group is None:
                    groups[key] = group = (key_table, [])
                    shape = (physical, columns, tuple(map(type, flat.values())))
                    spelled = verified.get(shape, _UNSEEN)
                    if spelled is _UNSEEN:
                        spelled = self._spelled(physical, named, columns, added)
                        made = flat if spelled is None else dict(zip(spelled, flat.values()))
                        if self.max_tables and physical not in known and physical not in added and (
                                new is None or physical not in new):
                            self._check_table_budget(physical, added, new)
                        if new is None:
                            self._ensure(conn, entry, made, added)
                        elif physical in new:
                            # a table still to make gets rows of another shape: the tables first, then its columns
                            self._make_new(conn, new, added)
                            self._ensure(conn, entry, made, added)
                        elif physical not in known and physical not in added:
                            new[physical] = (entry, made)
                        else:
                            self._ensure(conn, entry, made, added)
                        self._pending_verified.append((shape, spelled))
                    if spelled is not None:
                        respelled[key] = spelled
                if merge:
                    merged_groups.add(key)
                elif own_id:
                    id_groups.add(key)
                group[1].append(row(time, flat.values()))
                if flat is fields and renamed is None and not keyed and len(flat) <= wide:
                    plain[key] = group[1]
        if new:
            self._make_new(conn, new, added)
        if respelled:
            groups, merged_groups, id_groups = _respelled(groups, merged_groups, id_groups, respelled)
        if self._scrubbed:
            scrub = dialect.scrub_row
            for (physical, _), (_, rows) in groups.items():
                if physical in self._scrubbed:
                    rows[:] = [scrub(one) for one in rows]
        # the columns that rows need, all at once before the rows (SQLite: one schema re-read for all of them)
        dialect.add_pending_columns(conn)
        if merged_groups:
            self._key_merges(conn, groups, merged_groups)
        insert_all = getattr(dialect, "insert_all", None)
        if insert_all is not None:
            # the dialect writes several tables at once (PostgreSQL: one COPY for the tables of a shape; the
            # values of its JSON columns as JSON text)
            insert_all(conn, [(table, physical, columns, rows) for (physical, columns), (table, rows) in groups.items()],
                       idempotent, lambda physical, columns: self._types(physical, columns, added), merged_groups,
                       id_groups)
            return len(groups)
        if self.time_index:
            self._index_times(conn, groups, merged_groups)
        for key, (table, rows) in groups.items():
            merged = key in merged_groups
            dialect.insert(conn, table, key[1], rows, idempotent or merged or key in id_groups, merged)
        return len(groups)

    def _spelled(self, physical: str, named: tuple, columns: tuple, added: dict) -> tuple | None:
        """The columns a group's rows go in where the database compares names without case (SQLite) and one
        of ``columns`` is a column of the table by another spelling, else None. ``named``: the row's names
        before `column_names` made them distinct (``columns`` may end with the id column).

        Field names that differ only in case got distinct columns in a row (``Temp``, ``temp_2``), but a later
        row of ``temp`` alone went into ``Temp``, which SQLite matched: one field's values in two columns,
        mixed with another's. Each name now keeps the column of its own spelling, as in PostgreSQL
        (`column_names` with the table's columns), after a restart too, as the names are read from the file.
        Called once for a shape of rows (`_verified`); the tables of `_make_new` are PostgreSQL's only."""
        if not getattr(self.dialect, "folds_case", False):
            return None
        have = self._columns.get(physical)
        pending = added.get(physical)
        if not have and not pending:
            return None  # a new table: its columns are the row's
        fold = self.dialect.fold
        table: dict = {**have, **pending} if have and pending else have or pending or {}
        if all(table.get(fold(name)) in (None, name) for name in columns):
            return None
        dialect = self.dialect
        spelled = column_names(named, fold, dialect.reserved, dialect.identifier_limit, table) + columns[len(named):]
        return None if spelled == columns else spelled

    def _merged(self, entries) -> list:
        """``merge``: the records of ``entries`` of one table, tags and bucket as one record, in the entry of the
        first (the others lose it): rows of other columns go in other statements, in the order of their groups,
        so that a batch ``{power, voltage}``, ``{power}``, ``{power, voltage}`` left the second's power. Values
        are taken in the messages' order, by their columns (`_Flat`), a null leaves a value (as a null leaves a
        column). Entries written one by one after a refusal are merged by the
        database, in their order. A batch without two records of a key is left as it is."""
        depth = self.flatten_depth
        keys: list = []
        seen: set = set()
        repeated = False
        for entry in entries:
            merge = self._merge_of(entry.channel)
            if not entry.records or not merge:
                continue
            physical = self._physical_name(entry.table)
            for record in entry.records:
                key = (physical, record.time - record.time % merge, _tags_key(record.tags))
                repeated = repeated or key in seen
                seen.add(key)
                keys.append(key)
        if not repeated:
            return entries
        first: dict = {}
        out = []
        at = iter(keys)
        for entry in entries:
            records = entry.records
            if not records or not self._merge_of(entry.channel):
                out.append(entry)
                continue
            kept = []
            for record in records:
                key = next(at)
                into = first.get(key)
                flat = flatten(record.fields, record.tags, depth=depth)
                if into is None:
                    first[key] = into = _Flat(key[1], flat, record.tags)
                    kept.append(into)
                else:
                    for name, value in flat.items():  # (a null tag, the only null flatten keeps, leaves a value)
                        if value is not None or name not in into.fields:
                            into.fields[name] = value
            # (a new entry even when nothing was merged into it yet: later entries merge into its records, copies)
            out.append(Entry(entry.table, kept, entry.channel, entry.message, entry.decoder, entry.address))
        return out

    def _physical_name(self, table) -> str:
        """The dialect's name of ``table``, by the table object's identity (the router hands out the same object
        for a topic): no Python-level hash of a TableName a row."""
        cached = self._physical.get(id(table))
        if cached is not None and cached[0] is table:
            return cached[1]
        if len(self._physical) > 100_000:
            self._physical.clear()
        physical = self.dialect.physical(table)
        self._physical[id(table)] = (table, physical)
        return physical

    def _merge_id(self, physical: str, table, tags) -> str:
        """`merge_id` of a table and tags, remembered (a table's rows have a few tag sets; hashing them was a
        third of a merged row's cost, measured)."""
        key = (physical, _tags_key(tags))
        known = self._merge_ids.get(key)
        if known is None:
            if len(self._merge_ids) > 100_000:
                self._merge_ids.clear()
            known = self._merge_ids[key] = merge_id(table, tags)
        return known

    def _key_merges(self, conn, groups: dict, merged_groups: set) -> None:
        """``merge``: the unique key on (time, lorrygate_id) that rows are merged on, for each table written
        whose key this connection has not seen yet: a table made before merge was on (or by a DDL template)
        gets a unique index, at its first write (its existing rows have no id: nulls, which do not conflict)."""
        known, keying = self._merge_keyed, self._merge_keying
        tables: dict = {}
        for key in merged_groups:
            physical = key[0]
            if physical not in known and physical not in keying:
                tables.setdefault(physical, groups[key][0])
        if not tables:
            return
        have = self.dialect.merge_keys(conn, list(tables.values()))
        for physical, table in tables.items():
            if physical not in have:
                self.log.info("storage {storage}: {table} gets a unique index on (time, lorrygate_id), the key its "
                              "rows are merged on (merge)", storage=self.name, table=physical)
                self.dialect.key_for_merge(conn, table)
            keying[physical] = None

    def _index_times(self, conn, groups: dict, merged_groups: set) -> None:
        """``time_index``: the time index of each table written that has none yet (a new table's, or an
        existing table's at its first write: SQLite reads its rows once for that, in this transaction)."""
        indexed, indexing = self._indexed, self._indexing
        keyed = {physical for physical, _ in merged_groups}
        for (physical, _), (table, _) in groups.items():
            if physical in indexed or physical in indexing:
                continue
            shared = table in self._shared_tables
            # (an idempotent or merged table's key, (time, lorrygate_id), is one)
            if shared or not (self.idempotent or physical in keyed):
                self.dialect.index_time(conn, table, shared)
            indexing[physical] = None

    def _to_shared(self, entries) -> list:
        """Per-network: the entries whose tables have a shared one, as rows of it with the address in their first
        columns (a field or tag of such a name gets ``_2``); the views their addresses need are noted for this
        transaction (`_make_views`)."""
        out = []
        cache, tables, wanted = self._shared_of, self._shared_tables, self._wanted_views
        # (None: not read yet; SQLite reads them in the transaction, `_make_views`, and PostgreSQL's views
        # wanted meanwhile are told from those it has when its look arrives, `view_rounds`)
        views, refused = self._views or (), self.refused_views
        fold = self.dialect.fold
        for entry in entries:
            table = entry.table
            if not entry.records or table is None or entry.address is None:
                out.append(entry)
                continue
            cached = cache.get(id(table))
            if cached is None or cached[0] is not table:
                shared = shared_table(table, entry.address)
                if shared is not None:
                    shared = tables.setdefault(shared, shared)
                if len(cache) > 100_000:
                    cache.clear()
                cache[id(table)] = cached = (table, shared)
            shared = cached[1]
            if shared is None:
                out.append(entry)
                continue
            head = dict(zip(ADDRESS_COLUMNS, address_values(table, entry.address)))
            records = []
            for record in entry.records:
                fields, tags = record.fields, record.tags
                if not self._free(fields):
                    fields = _clear(fields, fold)
                if tags and not self._free(tags):
                    tags = _clear(tags, fold)
                records.append(Record(record.time, {**head, **fields}, tags))
            out.append(Entry(shared, records, entry.channel, entry.message, entry.decoder, entry.address))
            if shared != table:
                view = self._physical_name(table)
                if view not in views and view not in refused:
                    wanted[view] = (table, shared)
        return out

    def _free(self, values) -> bool:
        """Whether no key of ``values`` folds onto an address column (cached by the keys: one look a row)."""
        keys = tuple(values)
        free = self._free_keys.get(keys)
        if free is None:
            if len(self._free_keys) > 10_000:
                self._free_keys.clear()
            fold = self.dialect.fold
            self._free_keys[keys] = free = not any(type(key) is str and fold(key) in _ADDRESS_COLUMNS for key in keys)
        return free

    def _make_views(self, conn) -> None:
        """Make the views this transaction's rows of shared tables need (inside the transaction)."""
        dialect = self.dialect
        if self._views is None:
            self._views = dialect.existing_views(conn)
        for view, (table, shared) in self._wanted_views.items():
            if view in self._views or view in self.refused_views:
                continue
            if view in self._columns:
                self.refuse_view(view, dialect.physical(shared), table.table)
                continue
            dialect.execute(conn, sqlite_view_statement(view, dialect.physical(shared), table.table))
            self._made_views.append(view)

    def refuse_view(self, view: str, shared: str, address: str, reason: str = "") -> None:
        """No view ``view`` of the per-network layout, for good (`refused_views`, in the status)."""
        reason = reason or (f"a table {view} exists (the per-address layout's, or a view of yours): its rows stay "
                            f"there, the new ones are in {shared} (address = '{address}'); rename or drop it to "
                            "get the view")
        self.refused_views[view] = reason
        self.log.warn("storage {storage}: no view {view}: {reason}", storage=self.name, view=view, reason=reason)

    def _types(self, physical: str, columns: tuple, added: dict) -> tuple | None:
        """The database's types of a table's time column and ``columns`` as this writer knows them, or None."""
        known = self._columns.get(physical) or {}
        pending = added.get(physical) or {}
        fold = self.dialect.fold
        types = []
        for column in ("time",) + columns:
            name = fold(column)
            kind = pending.get(name) or known.get(name)
            if kind is None:
                return None
            types.append(kind)
        return tuple(types)

    @property
    def column_budget(self) -> int:
        """``max_columns``, held to the most columns a table of the database can have: beyond, a wide row went
        to the database, which added columns up to its limit (one by one: seconds, while nothing else was
        stored) and then refused the row."""
        return min(self.max_columns, getattr(self.dialect, "column_limit", self.max_columns))

    def _budget(self, physical: str, flat: dict, added: dict) -> dict:
        """Keep a table within ``max_columns``: fields that would add columns beyond it go into one JSON column."""
        known = self._columns.get(physical) or {}
        pending = added.get(physical) or {}
        budget = self.column_budget
        if len(known) + len(pending) + len(flat) + 2 <= budget:
            return flat  # cannot break the budget (time, id and every field counted as new)
        fold = self.dialect.fold
        count = len(known) + sum(1 for name in pending if name not in known) or 1
        new = [name for name in flat if fold(name) not in known and fold(name) not in pending]
        room = budget - count - (0 if fold(EXTRA_COLUMN) in known or fold(EXTRA_COLUMN) in pending else 1)
        if len(new) <= room:
            return flat
        self.stats["over_budget"] = self.stats.get("over_budget", 0) + 1
        return within_budget(flat, [n for n in new if n != EXTRA_COLUMN], room)

    def _fit_row(self, physical: str, flat: dict, added: dict) -> dict:
        """A row within the bytes a row of the database can have (PostgreSQL's 8 kB page, `row_size.fit`): the
        fields it has no room for go into `EXTRA_COLUMN`, as those beyond the column budget do."""
        from lorrygate.storage import row_size

        fitted = row_size.fit(flat, self._columns.get(physical) or {}, added.get(physical) or {}, self.dialect.fold)
        if fitted is None:
            return flat
        self.stats["over_row_size"] = self.stats.get("over_row_size", 0) + 1
        return self._budget(physical, fitted, added)  # (the JSON column may be one column more)

    def _new_columns(self, flat: dict) -> list:
        """A new table's columns, ``[(name, first value)]``: the row's, but time and the id column, each once."""
        fold = self.dialect.fold
        seen = {fold("time"), fold(ID_COLUMN)}
        fields = []
        for column, value in flat.items():
            if fold(column) not in seen:
                seen.add(fold(column))
                fields.append((column, value))
        return fields

    def _make_new(self, conn, new: dict, added: dict) -> None:
        """Make the tables of ``new``, ``{physical: (entry, row)}``, that a write's rows need: the writer's
        connection makes them in the transaction and reads their columns with one query
        (`PostgresDialect.create_tables`); from ``beside_min_tables`` on, every other one is made meanwhile on
        a connection of its own (`PostgresDialect.create_tables_beside`). A fleet's first batch, or a drain's
        into new tables, waited for a hundred tables made one after the other, two queries each: measured,
        2,000 rows into 100 new tables (a fresh server, in-process, six runs) 415-551 ms, 317-359 ms with the
        one query, 271-318 ms with the connection beside. Then `_ensure` checks each row's columns against
        what the tables have. Empties ``new``."""
        items = list(new.values())
        new.clear()
        if not self.merges:  # (every table of the storage made alike)
            self._make_tables(conn, items, self.idempotent or bool(self.merge), added)
            return
        keyed = [self._keyed_for(entry) for entry, _ in items]
        for which in (True, False):
            part = [item for item, made_keyed in zip(items, keyed) if made_keyed is which]
            if part:
                self._make_tables(conn, part, which, added)

    def _make_tables(self, conn, items: list, keyed: bool, added: dict) -> None:
        """`_make_new` of ``[(entry, row)]`` whose tables are made alike (``keyed``: with the key (time,
        lorrygate_id))."""
        dialect = self.dialect
        tables = [(entry.table, self._new_columns(flat)) for entry, flat in items]
        there = []
        if self.beside_min_tables is not None and len(items) >= self.beside_min_tables:
            there = dialect.beside_schemas(tables[1::2])
        beside = {id(item) for item in there}  # (`beside_schemas` returns the items themselves)
        beside_result: list = [{}, ""]  # (the columns made, why it failed)
        thread = None
        if there:
            import threading

            def make_beside():
                beside_result[:] = dialect.create_tables_beside(there, keyed, ready)

            ready = threading.Event()
            thread = threading.Thread(target=make_beside, name=f"lorrygate-{self.name}-tables", daemon=True)
            thread.start()
            ready.wait()
        try:
            here = dialect.create_tables(conn, [item for item in tables if id(item) not in beside], keyed)
        finally:
            if thread is not None:
                thread.join()
        made, failed = beside_result
        if failed:
            self.log.warn("storage {storage}: making {count} new tables on a connection of their own failed ({error}); "
                          "the writer's connection makes them", storage=self.name, count=len(there), error=failed)
        for physical, columns in {**made, **here}.items():
            added.setdefault(physical, columns)  # (known to this transaction as if it had made the table)
        for entry, flat in items:
            self._ensure(conn, entry, flat, added)  # (those made: their columns checked; those not made beside: made now)

    def _ensure(self, conn, entry, flat: dict, added: dict) -> None:
        """Create the table and add the columns a row needs (inside the transaction)."""
        table = entry.table
        dialect = self.dialect
        physical = dialect.physical(table)
        known = self._columns.get(physical)
        pending = added.get(physical)
        created = known is None and (pending is None or "time" not in pending)
        if created:
            if pending is None:
                pending = added[physical] = {}
            template = self.ddl.get(entry.channel) or self.ddl.get("")
            if template is not None:
                dialect.ensure_schema(conn, table)
                dialect.run_ddl(conn, template.render(table, entry, physical if getattr(dialect, "folds_case", False)
                                                      else None))
            dialect.create_table(conn, table, self._keyed_for(entry), self._new_columns(flat))
            pending.update(dialect.columns_of(conn, table))
        # a table known and a row of its columns (the common case) leaves ``added`` as it is: no empty
        # entry for each of 10,000 tables
        known = known or {}
        fold = dialect.fold
        for column, value in flat.items():
            lowered = fold(column)
            if pending is not None and lowered in pending:
                current = pending[lowered]
            elif lowered in known:
                current = known[lowered]
            else:
                if pending is None:
                    pending = added[physical] = {}
                pending[lowered] = dialect.add_column(conn, table, column, value)
                continue
            try:
                widened = dialect.widen(conn, table, column, current, value)
            except Exception as exc:
                if self._views_beside and not self._rounds.foreign(physical) and dialect.blocked_by_views(exc):
                    raise ViewsInTheWay(table, dialect.explain(exc)) from None
                raise
            if widened is not None:
                if pending is None:
                    pending = added[physical] = {}
                pending[lowered] = widened
        if created and self.layout == "per-network" and hasattr(dialect, "index_addresses") \
                and table in self._shared_tables:
            dialect.index_addresses(conn, table)  # (after the columns: a custom DDL's table gets them above)


def _respelled(groups: dict, merged: set, ids: set, spelled: dict) -> tuple:
    """``groups`` (and the keys of ``merged`` and ``ids`` among them) keyed by the columns their rows go in:
    those of ``spelled`` for its keys (`SqlStorage._spelled`). Groups that end in the same columns (``temp``
    into ``temp_2``, and a field named ``temp_2``) are one."""
    out: dict = {}
    out_merged: set = set()
    out_ids: set = set()
    for key, (table, rows) in groups.items():
        columns = spelled.get(key)
        final = key if columns is None else (key[0], columns)
        there = out.get(final)
        if there is None:
            out[final] = (table, rows)
        else:
            there[1].extend(rows)
        if key in merged:
            out_merged.add(final)
        elif key in ids:
            out_ids.add(final)
    return out, out_merged, out_ids - out_merged


def _clear(values, fold):
    """``values`` with the keys that fold onto an address column renamed ``<key>_2`` (``_3``, ...); called for
    the rows `SqlStorage._free` found such a key in."""
    used = {fold(key) for key in values if type(key) is str} | _ADDRESS_COLUMNS
    out = {}
    for key, value in values.items():
        if type(key) is str and fold(key) in _ADDRESS_COLUMNS:
            number = 2
            while fold(f"{key}_{number}") in used:
                number += 1
            key = f"{key}_{number}"
            used.add(fold(key))
        out[key] = value
    return out


def _surrogate_refusal(exc: UnicodeEncodeError, entry) -> str:
    """Why text with a lone UTF-16 surrogate is stored nowhere, and which field of the entry has it: the
    database's driver said only "surrogates not allowed", naming no field and no fix."""
    from lorrygate.decoding.jsonobject import lone_surrogate

    where = next((f"{kind} {name!r}" for record in entry.records
                  for kind, values in (("field", record.fields), ("tag", record.tags or {}))
                  for name, value in values.items() if lone_surrogate(name) or lone_surrogate(value)), "a value")
    return (f"UnicodeEncodeError: {where} holds a lone UTF-16 surrogate ({exc.object[exc.start:exc.end]!r}), "
            "which no UTF-8 text holds, so no database stores it: the decoder that made it is to mend (bytes "
            "decoded with errors='surrogateescape', a string cut inside a surrogate pair), then lorrygate "
            "dead-letters replay --stage store")

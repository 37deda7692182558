"""
SQLite storage: the embedded default.

One database file in WAL mode (``synchronous = FULL`` by default: a commit
survives power loss, as acknowledging after commit promises), written by one
named thread.

Layout. SQLite has no schemas, so the table of address (schema, table) is
named ``<schema>__<table>``, e.g. ``mqttkit_1_testdrive__area_42_node_1_sensors``.
Each table has a ``time`` column (TEXT, ISO 8601 UTC with nanoseconds:
``2024-06-01T17:00:00.123456789Z``, which sorts as it reads and which SQLite's
date functions understand) and one column per field (see
`lorrygate.storage.layout`), typed INTEGER or REAL by its first value, or of
no type (any value as it is) when that is text; lists are JSON text. Messages that could not be routed or decoded land in
``lorrygate_dead_letter`` with their raw payload (a BLOB) and the reason.
"""

import os
import sqlite3
from itertools import chain
from operator import length_hint
from typing import Any

import attrs

from lorrygate.decoding.timestamps import IsoTime, seconds_to_ns
from lorrygate.errors import StorageError
from lorrygate.sources import headers as message_headers
from lorrygate.storage import sqlite_schema, sqlite_wal
from lorrygate.storage.layout import ID_COLUMN, INT64, MERGED_ROW, kind_of, merge_clause, reserved, to_json
from lorrygate.storage.positions import POSITIONS_TABLE
from lorrygate.storage.sqlite_alter import ColumnAdder
from lorrygate.storage.sqlite_schema import STATEMENTS, fold
from lorrygate.storage.sqlstorage import DEAD_LETTER_TABLE, SqlStorage
from lorrygate.topology.naming import quote

#: a column's declared type by its first value. A column made by text (or JSON text) has none, so no affinity:
#: each value is stored as it is. TEXT's affinity stored every number after a first text as text (Home
#: Assistant's ``unavailable`` before a sensor's first state made its readings text); a type of another name
#: has NUMERIC affinity, which reads text such as ``1.10`` or ``007`` as a number.
_TYPES = {"bool": "INTEGER", "int": "INTEGER", "float": "REAL", "text": "", "json": "", "bytes": "BLOB"}


def _column(name: str, value) -> str:
    """A column's definition, typed by its first value (as ALTER TABLE writes one of no type: the name alone)."""
    kind = _TYPES[kind_of(value)]
    return f"{quote(name)} {kind}" if kind else quote(name)


#: primary SQLite result codes that say the database itself is unwell (the
#: batch is retried whole, the storage is down): BUSY, LOCKED, NOMEM,
#: READONLY, INTERRUPT, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
#: Every other code (ERROR, TOOBIG, CONSTRAINT, MISMATCH, RANGE, ...) is about
#: the data: the offending entry becomes a dead letter. Classified by code,
#: never by the message, which holds table and column names from topics.
_TRANSIENT_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


def table_name(table) -> str:
    """The SQLite table of a `TableName` (just the table without a schema). A name that SQLite reserves for its
    own objects (``sqlite_...`` in any case, e.g. from a realm ``sqlite`` or ``SQLite-lab``) gets the prefix
    ``lg_``, as `lorrygate.storage.postgresql.schema_name` does for ``pg_``: CREATE TABLE refuses it ("object name
    reserved for internal use"), and every message of that realm was a dead letter. So does the name of one of
    lorrygate's own tables (`lorrygate.storage.layout.OWN_TABLES`): its rows went into the files source's
    positions, or were refused by the dead letters' table."""
    name = f"{table.schema}__{table.table}" if table.schema else table.table
    return "lg_" + name if name[:7].lower() == "sqlite_" or reserved(name, fold=True) else name


def _value(value):
    kind = type(value)
    if kind is float or kind is str or kind is bytes or value is None:
        return value
    if kind is int:
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if kind is bool:
        return int(value)
    return to_json(value)


class FileReplaced(StorageError):
    """The database file is not the one the connection has open."""


#: the page size of a new database file: per-address tables are many small b-trees, and a commit
#: writes at least a page of each table it touches (10,000 existing tables: 19.5k msg/s with 4 KiB
#: pages, 21.3k with 2 KiB; one table the same within the noise; 1 KiB cost large tables more)
PAGE_SIZE = 2048
#: WAL frames (pages) not yet copied into the database at which a write is followed by a checkpoint,
#: as SQLite's own ``wal_autocheckpoint`` default
CHECKPOINT_PAGES = 1000
#: rows per INSERT at most: a batch's rows of one table shape go in multi-row ``VALUES`` statements of
#: power-of-two sizes (so a shape needs at most 7 prepared statements), not one statement step per
#: row; measured on 200,000 rows: 1.74 -> 0.6 us of CPU a row, and with the reactor thread busy
#: beside it (the sqlite3 module lets go of the GIL at every step, and gets it back only when the
#: reactor thread lets go) 1,700 -> 17 us a row of wall time with 500 rows a statement. Not more than
#: 64: a prepared statement's memory grows with its rows (measured, 6 columns: 11 KB at 16 rows,
#: 78 KB at 128, 589 KB at 1,024), and up to `STATEMENTS` of them stay prepared
ROWS_PER_STATEMENT = 64
#: a group of fewer rows than this (and what is left of a larger one after its multi-row INSERTs) goes in
#: with the one-row INSERT, one step a row (``executemany``): the statement of two, three, ... rows costs
#: more to bind and to prepare than the steps it saves, and a table then keeps one statement for its
#: small groups, not one per size. Measured with 10,000 tables, the writer alone: 2 rows a table per
#: commit 140 -> 133 ms a commit of 20,000 rows, 3 rows a table a third less time a row than 2 (one
#: statement instead of a two- and a one-row one), 4 rows a table the same and 8 rows within the noise
FEW_ROWS = 8


def _statement_rows(columns: int, variables: int) -> int:
    """The most rows one INSERT of ``columns`` values a row takes: a power of two, within the variable limit."""
    most = max(1, min(ROWS_PER_STATEMENT, variables // columns))
    return 1 << (most.bit_length() - 1)


@attrs.define(slots=True)
class _Plan:
    """How the rows of one table shape go in: multi-row INSERTs of power-of-two sizes, made when first needed."""

    #: ``INSERT INTO "t" ("time", ...) VALUES ``
    head: str
    #: the values of one row, ``(?, ?, ...)``
    one: str
    #: after the values (``ON CONFLICT DO NOTHING`` for idempotent tables, `merge_clause` for merged rows)
    tail: str
    #: rows in one statement at most
    most: int
    #: statement by rows
    statements: dict = attrs.Factory(dict)
    #: whether values go through `_value` first (a value of this shape was one the module does not bind)
    adapt: bool = False

    @classmethod
    def of(cls, table: str, columns: tuple, idempotent: bool, variables: int, texts: dict,
           merge: bool = False) -> "_Plan":
        """``texts`` keeps the column list's text by columns: the tables of a fleet share a few shapes
        (a batch's first write into 10,000 tables quoted 70,000 names). ``merge``: rows of a key are merged
        (the rows of a statement too, one after the other)."""
        text = texts.get(columns)
        if text is None:
            if len(texts) > 1_000:
                texts.clear()
            text = texts[columns] = ", ".join(quote(column) for column in ("time",) + columns)
        return cls(f"INSERT INTO {quote(table)}{f' AS {MERGED_ROW}' if merge else ''} ({text}) VALUES ", f"({', '.join('?' * (len(columns) + 1))})",
                   merge_clause(columns, quote) if merge else " ON CONFLICT DO NOTHING" if idempotent else "",
                   _statement_rows(len(columns) + 1, variables))

    def statement(self, rows: int) -> str:
        statement = self.statements[rows] = self.head + ",".join([self.one] * rows) + self.tail
        return statement


@attrs.define(eq=False)
class SQLiteDialect:
    path: str
    synchronous: str = "FULL"
    name: str = "sqlite"
    #: row times as text (the bound method: calling an IsoTime object itself costs ~800 instructions more a row)
    _iso: Any = attrs.Factory(lambda: IsoTime().__call__)
    #: (device, inode) of the file the connection has open
    _identity: tuple | None = None
    #: a `_Plan` by (table, columns, idempotent, merge)
    _statements: dict = attrs.Factory(dict)
    #: the quoted column list by columns (`_Plan.of`)
    _column_texts: dict = attrs.Factory(dict)
    #: the connection's limit on ``?`` parameters in one statement
    _variables: int = 999
    #: the most columns a table can have (SQLITE_MAX_COLUMN as the library was built; 2,000 by default)
    column_limit: int = 2000
    #: one cursor of the connection for every INSERT (``conn.execute`` makes a cursor a statement)
    _cursor: Any = None
    #: whether `checkpoint` leaves checkpoints to SQLite (a WAL index of a format it does not know)
    _autocheckpoint: bool = False
    #: (connection, columns) read ahead of the start, until `existing_columns` hands them over
    _ahead: tuple | None = None
    #: the columns the write in progress adds, (table, definition), until `add_pending_columns`
    _adding: list = attrs.Factory(list)
    _adder: ColumnAdder = attrs.Factory(ColumnAdder)
    #: ``{folded name: name}`` of the database's tables and views, and the names `physical` gave (`own_name`)
    _objects: dict = attrs.Factory(dict)

    #: SQLite has no limit on the length of names
    identifier_limit = None
    #: names no field's column may have (``rowid`` and ``oid`` may: a column of the name takes the place of the alias)
    reserved = ("time", ID_COLUMN)

    fold = staticmethod(sqlite_schema.fold)
    #: the storage's columns of a table are ``{folded name: name as made}``, and a field gets the column of
    #: its own spelling (`SqlStorage._spelled`)
    folds_case = True

    def describe(self) -> str:
        return f"SQLite database {self.path!r}"

    def connect(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        new = os.path.getsize(self.path) == 0
        ahead = sqlite_schema.take(self.path)
        if ahead is not None:
            conn, identity, columns = ahead
            self._ahead = (conn, columns)
        else:
            conn = sqlite_schema.connect(self.path)
            identity = None
        if new:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        # the WAL is copied into the database by `checkpoint`, after the write's acknowledgement, not in COMMIT
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._autocheckpoint = False
        self._identity = identity or sqlite_schema.identity(self.path)
        self._variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.column_limit = conn.getlimit(sqlite3.SQLITE_LIMIT_COLUMN)
        self._statements.clear()
        self._cursor = conn.cursor()
        return conn

    def close(self, conn) -> None:
        """Close the connection, the INSERT cursor first: its last ``executemany`` statement is not reset, and
        a connection with such a statement open stays open (and its WAL and ``-shm`` stay) until the
        statement goes."""
        cursor, self._cursor = self._cursor, None
        self._adder.close()
        try:
            if cursor is not None:
                cursor.close()
        finally:
            conn.close()

    def _check_file(self) -> None:
        """Refuse to commit into a file that was deleted or replaced while open:
        the rows would land in an unlinked inode and vanish."""
        try:
            same = sqlite_schema.identity(self.path) == self._identity
        except FileNotFoundError:
            same = False
        if not same:
            raise FileReplaced(
                f"the SQLite database file {self.path!r} was deleted or replaced while open; this batch is not "
                "committed there, and the file is opened anew"
            )

    def prepare(self, conn, dead_letter_table: str) -> None:
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {quote(dead_letter_table)} (
                id INTEGER PRIMARY KEY AUTOINCREMENT, received TEXT NOT NULL, channel TEXT NOT NULL,
                topic TEXT NOT NULL, qos INTEGER, retain INTEGER, payload BLOB, stage TEXT NOT NULL,
                error TEXT NOT NULL, decoder TEXT, replayed TEXT, content_type TEXT, headers TEXT, sent TEXT)"""
        )
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({quote(dead_letter_table)})")}
        for column in ("decoder", "replayed", "content_type", "headers", "sent"):
            if column not in columns:
                conn.execute(f"ALTER TABLE {quote(dead_letter_table)} ADD COLUMN {column} TEXT")

    def mark_replayed(self, conn, table: str, ids: list) -> None:
        conn.executemany(f"UPDATE {quote(table)} SET replayed = strftime('%Y-%m-%dT%H:%M:%fZ') WHERE id = ?",
                         [(i,) for i in ids])

    def fail_again(self, conn, table: str, refused: list) -> None:
        """Replayed dead letters whose rows were refused again: ``(id, DeadLetter)``, the new stage and reason."""
        conn.executemany(f"UPDATE {quote(table)} SET stage = ?, error = ?, replayed = NULL WHERE id = ?",
                         [(d.stage, d.error, i) for i, d in refused])

    def read_positions(self, conn, table: str) -> list:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(table)} (stream TEXT PRIMARY KEY, ranges TEXT NOT NULL, "
                     "updated TEXT NOT NULL)")
        return conn.execute(f"SELECT stream, ranges FROM {quote(table)}").fetchall()

    def write_positions(self, conn, table: str, rows: list) -> None:
        conn.executemany(
            f"INSERT INTO {quote(table)} (stream, ranges, updated) VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ')) "
            "ON CONFLICT (stream) DO UPDATE SET ranges = excluded.ranges, updated = excluded.updated", rows)

    def existing_columns(self, conn) -> dict:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] is conn:
            columns = ahead[1]  # read ahead, while the gateway started (`sqlite_schema.read_ahead`)
        else:
            # one query for every table (10,000 tables: 0.17 -> 0.08 s at each start, measured)
            columns = sqlite_schema.read_columns(conn)
        self._objects.update(sqlite_schema.objects(conn))
        return columns

    def physical(self, table) -> str:
        """The table of ``table`` in this database: `table_name`, unless a table of another case of that name is
        there (SQLite would take it for the same), then a name of its own (`sqlite_schema.own_name`), which this
        process keeps once given. The storage reads the database's names (`existing_columns`) before it
        writes, and finds them again after a restart."""
        name = table_name(table)
        objects = self._objects
        have = objects.setdefault(fold(name), name)
        if have == name:
            return name
        while True:  # (setdefault: the writer's thread and the reactor's give one name for a name)
            own = sqlite_schema.own_name(name, objects)
            if objects.setdefault(fold(own), own) == own:
                return own

    @staticmethod
    def time_indexes(conn) -> set:
        """The tables that have their time index (`index_statement`)."""
        return {row[0] for row in conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = tbl_name || ?", (TIME_INDEX,))}

    def merge_keys(self, conn, tables: list) -> set:
        """Of ``tables``, those with a unique key on exactly (time, lorrygate_id) (``merge``)."""
        out = set()
        for table in tables:
            name = self.physical(table)
            for (index,) in conn.execute('SELECT name FROM pragma_index_list(?) WHERE "unique"', (name,)).fetchall():
                columns = {row[0].lower() for row in conn.execute("SELECT name FROM pragma_index_info(?)", (index,))}
                if columns == {"time", ID_COLUMN}:
                    out.add(name)
                    break
        return out

    def key_for_merge(self, conn, table) -> None:
        name = self.physical(table)
        conn.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS {quote(name + MERGE_KEY)} ON {quote(name)} ("time", {ID_COLUMN})')

    def index_time(self, conn, table, shared: bool) -> None:
        conn.execute(index_statement(self.physical(table), shared))

    @staticmethod
    def expiry_tables(conn) -> list:
        """The tables whose old rows a retention deletes: every table with a ``time`` column but lorrygate's own
        (dead letters, positions) and SQLite's."""
        return [row[0] for row in conn.execute(
            "SELECT m.name FROM sqlite_master AS m WHERE m.type = 'table' AND m.name NOT IN (?, ?) "
            "AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) WHERE name = 'time') ORDER BY m.name",
            (DEAD_LETTER_TABLE, POSITIONS_TABLE))]

    @staticmethod
    def expire(conn, table: str, cutoff: str, limit: int) -> int:
        """Delete at most ``limit`` rows of ``table`` whose time (ISO text, which sorts as time does) is before
        ``cutoff``: by the time index where the table has one, else in the table's order (the oldest rows first,
        as they came), so that a chunk reads only as far as its rows, and a table with none left once a run. A table of a DDL template WITHOUT
        ROWID: its old rows at once."""
        name = quote(table)
        try:
            return conn.execute(f"DELETE FROM {name} WHERE rowid IN (SELECT rowid FROM {name} WHERE time < ? "
                                f"LIMIT ?)", (cutoff, limit)).rowcount
        except sqlite3.OperationalError as exc:
            if "rowid" not in str(exc):
                raise
            return conn.execute(f"DELETE FROM {name} WHERE time < ?", (cutoff,)).rowcount

    def existing_views(self, conn) -> set:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}

    def interrupt(self, conn) -> None:
        conn.interrupt()  # safe from another thread: the statement fails with SQLITE_INTERRUPT

    def lock_budget(self, conn) -> None:
        return None  # one lock for the whole database: a transaction takes any number of tables

    def out_of_locks(self, exc: Exception) -> bool:
        return False

    def columns_of(self, conn, table) -> dict:
        return sqlite_schema.spellings(row[1] for row in conn.execute(f"PRAGMA table_info({quote(self.physical(table))})"))

    def begin(self, conn) -> None:
        self._adding.clear()
        conn.execute("BEGIN")

    def checkpoint(self, conn) -> int:
        """Copy the WAL into the database once ``CHECKPOINT_PAGES`` wait there; returns the pages copied.

        `SqlStorage` runs this on the writer thread after each write, as a job of its own: the write is
        acknowledged and the sources read on while SQLite copies (one call without the GIL). Inside COMMIT
        (SQLite's ``wal_autocheckpoint``) that copy held every acknowledgement and, with reading paused
        for a write into 10,000 tables, the sources too: a third of such a commit's time. A PASSIVE
        checkpoint never waits for readers or blocks a writer; what it cannot copy now, the next copies.
        """
        if self._autocheckpoint:
            return 0
        waiting = sqlite_wal.waiting_pages(self.path)
        if waiting is None:
            # a WAL index this code does not know: SQLite checkpoints itself, in COMMIT, as it did before
            self._autocheckpoint = True
            conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            return 0
        if waiting < CHECKPOINT_PAGES:
            return 0
        (_, _, copied), = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return max(copied, 0)

    def commit(self, conn) -> None:
        self._check_file()
        conn.execute("COMMIT")

    def rollback(self, conn) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def execute(self, conn, sql: str) -> None:
        conn.execute(sql)

    def ensure_schema(self, conn, table) -> None:
        pass  # SQLite has no schemas: the schema is a name prefix

    def run_ddl(self, conn, statements: list) -> None:
        for statement in statements:
            conn.execute(statement)

    def create_table(self, conn, table, idempotent: bool, fields: list) -> None:
        """One CREATE TABLE with the first row's columns: in SQLite every ALTER TABLE rewrites and
        re-reads the whole schema, which made 10,000 tables quadratic (measured)."""
        columns = ["time TEXT NOT NULL"] + [_column(name, value) for name, value in fields]
        if idempotent:
            columns += [f"{ID_COLUMN} TEXT NOT NULL", f"PRIMARY KEY (time, {ID_COLUMN})"]
        conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(self.physical(table))} ({', '.join(columns)})")

    def add_column(self, conn, table, column: str, value) -> str:
        """Note the column; `add_pending_columns` adds it, with the write's other new columns at once. Returns
        its name as made (the storage keeps each column's spelling: `sqlite_schema.spellings`)."""
        self._adding.append((self.physical(table), _column(column, value)))
        return column

    def add_pending_columns(self, conn) -> None:
        """Add the columns noted since the last call (before the rows that need them go in): one schema
        re-read for all of them, not one per column (`lorrygate.storage.sqlite_alter`)."""
        adding, self._adding = self._adding, []
        if adding:
            self._adder.add_columns(conn, adding)

    def entry_rolled_back(self) -> None:
        """An entry's statements were rolled back to its savepoint: the columns noted for its rows are not added."""
        self._adding.clear()

    def widen(self, conn, table, column: str, current, value):
        return None  # SQLite columns take any type

    def row(self, time: int, values) -> tuple:
        """A row's parameters; values the sqlite3 module cannot bind are made storable in `insert`."""
        return (self._iso(time), *values)

    def insert(self, conn, table, columns: tuple, rows: list, idempotent: bool, merge: bool = False) -> None:
        """``idempotent``: a row whose key (time, lorrygate_id) is stored is left out, or with ``merge`` merged
        into the stored row (`merge_clause`)."""
        key = (table, columns, idempotent, merge)
        plan = self._statements.get(key)
        if plan is None:
            if len(self._statements) > STATEMENTS:
                self._statements.clear()
            plan = self._statements[key] = _Plan.of(self.physical(table), columns, idempotent, self._variables,
                                                     self._column_texts, merge)
        cursor = self._cursor
        start, total, most = 0, len(rows), plan.most
        while total - start >= FEW_ROWS and most > 1:
            count = min(most, 1 << ((total - start).bit_length() - 1))
            statement = plan.statements.get(count) or plan.statement(count)
            part = rows[start : start + count]
            if plan.adapt:
                cursor.execute(statement, list(map(_value, chain.from_iterable(part))))
            else:
                values: list = []
                for row in part:  # (faster than list(chain.from_iterable(part)): 3.4 -> 1.6 us for 64 rows of 6 values)
                    values += row
                try:
                    cursor.execute(statement, values)
                except (sqlite3.ProgrammingError, OverflowError):
                    # a value the module does not bind (a list, an integer past 64 bits): this shape's
                    # values go through `_value` from now on; nothing of the failed statement was written
                    plan.adapt = True
                    cursor.execute(statement, list(map(_value, chain.from_iterable(part))))
            start += count
        if start < total:
            self._insert_few(cursor, plan, rows[start:] if start else rows)

    @staticmethod
    def _insert_few(cursor, plan: "_Plan", rows: list) -> None:
        """The last rows of a group (fewer than `FEW_ROWS`), one step each of the one-row INSERT."""
        statement = plan.statements.get(1) or plan.statement(1)
        if plan.adapt:
            cursor.executemany(statement, [tuple(map(_value, row)) for row in rows])
            return
        left = iter(rows)
        try:
            cursor.executemany(statement, left)
        except (sqlite3.ProgrammingError, OverflowError):
            # the module binds a row just before its step: the rows before the one it could not bind are
            # written, that row and the rest are not (the iterator holds the rest)
            plan.adapt = True
            failed = len(rows) - length_hint(left) - 1
            cursor.executemany(statement, [tuple(map(_value, row)) for row in rows[failed:]])

    def insert_dead_letters(self, conn, table: str, dead_letters: list) -> None:
        conn.executemany(
            f"INSERT INTO {quote(table)} (received, channel, topic, qos, retain, payload, stage, error, decoder, "
            "content_type, headers, sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (self._iso(seconds_to_ns(d.message.received)), d.channel, d.message.topic, d.message.qos,
                 int(d.message.retain), d.payload, d.stage, d.error, d.decoder, d.message.content_type,
                 message_headers.as_json(d.message.headers),
                 self._iso(seconds_to_ns(d.message.sent)) if d.message.sent is not None else None)
                for d in dead_letters
            ],
        )

    def transient(self, exc: Exception) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in _TRANSIENT_CODES

    def connection_lost(self, exc: Exception) -> bool:
        return isinstance(exc, FileReplaced)

    @staticmethod
    def passing(exc: Exception) -> bool:
        """Whether a database that cannot be used at the start is so for a state that passes: a full disk, a lock
        another program holds, memory (the gateway starts, and its batches wait); not a damaged file, a path
        that cannot be opened or a read-only file, which need someone to fix them."""
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in (5, 6, 7, 13)

    def explain(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}"

    def explain_refusal(self, exc: Exception, tables: list, columns_of) -> str:
        return self.explain(exc)  # (SQLite takes any value in any column: no type to change)

    def unwell(self, exc: Exception) -> str:
        """What a write that failed for the database's state says: SQLite's message, and what to do where SQLite's
        own message says neither who nor what (BUSY and LOCKED: who may hold the lock; a full disk, a file
        that cannot be written, a damaged file)."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if code is not None else None
        if primary in (5, 6):
            return (f"{exc} (another connection holds the file's write lock: a sqlite3 shell in a transaction, "
                    "a backup, another program; the writes wait in the spool until it lets go)")
        if primary == 13:
            return (f"{exc} (the disk of {self.path} is full: free some room there; nothing is acknowledged "
                    "meanwhile, the broker keeps the rest, and the writes go on once there is room)")
        if primary in (8, 11, 26):
            return f"{self.unusable(exc)}; the writes wait in the spool meanwhile"
        return str(exc)

    def unusable(self, exc: Exception) -> str:
        """Why the file cannot be used, and what to do, for a file that cannot be written or is damaged (at the
        start, or in a write); else SQLite's message."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if code is not None else None
        if primary == 8:
            return (f"{exc} ({self.path}, its directory or its -wal and -shm files cannot be written: a file "
                    "system mounted read-only, as an SD card's after errors, or a file of another owner)")
        if primary in (11, 26):
            return (f"{exc} ({self.path} is damaged or no SQLite database: with lorrygate stopped, move it and "
                    "its -wal and -shm files aside (sqlite3 OLD .recover | sqlite3 NEW saves what it can); the "
                    "start makes a new one)")
        return str(exc)

    #: SQLite stores any text, the character NUL too
    unstorable_text_is = ""

    def unstorable_text(self, exc: Exception) -> bool:
        return False

    @staticmethod
    def scrub_row(row: tuple) -> tuple:
        return row


#: the name of a table's time index: the table's name and this (no table of lorrygate's has a colon in its name)
TIME_INDEX = ":time"
#: the name of a table's unique index on (time, lorrygate_id) after the table's (``merge``, a table made without it)
MERGE_KEY = ":merge"


def index_statement(table: str, shared: bool) -> str:
    """The time index of a table (``time_index = true``): on (address, time) for a shared table of the
    per-network layout, whose views read one address."""
    columns = "address, time" if shared else "time"
    return f"CREATE INDEX IF NOT EXISTS {quote(table + TIME_INDEX)} ON {quote(table)} ({columns})"


def SQLiteStorage(name: str, path: str, reactor, synchronous: str = "FULL", idempotent: bool = False, ddl=None,
                  merge: float = 0.0):
    """The SQLite storage: a `SqlStorage` with the SQLite dialect; ``merge``: seconds of the buckets whose rows
    of a table and tags are one row (0: a row a record)."""
    storage = SqlStorage(name, SQLiteDialect(path, synchronous), reactor, idempotent, ddl or {})
    storage.merge = round(merge * 1e9)
    return storage

"""
SQLite storage: the embedded default.

One database file in WAL mode, written by one named thread (SQLite serialises
writers anyway); the reactor only hands batches over. Each batch is one
transaction.

Layout. SQLite has no schemas, so the table of address (schema, table) is
named ``<schema>__<table>``, e.g. ``mqttkit_1_testdrive__area_42_node_1_sensors``.
Each table has a ``time`` column (TEXT, ISO 8601 UTC with nanoseconds:
``2024-06-01T17:00:00.123456789Z``, which sorts as it reads and which SQLite's
date functions understand) and one column per field, created on the field's
first appearance with the type of its first value (INTEGER, REAL or TEXT).
Nested objects become dotted column names (``"wifi.rssi"``); lists are stored
as JSON text. Messages that could not be routed or decoded land in
``lorrygate_dead_letter`` with their raw payload and the reason.
"""

import json
import os
import sqlite3

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lorrygate.decoding.timestamps import IsoTime
from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.storage.batch import DeadLetter
from lorrygate.topology.naming import quote

DEAD_LETTER_TABLE = "lorrygate_dead_letter"

_DEAD_LETTER_DDL = f"""
CREATE TABLE IF NOT EXISTS {quote(DEAD_LETTER_TABLE)} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received TEXT NOT NULL,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER,
    retain INTEGER,
    payload BLOB,
    stage TEXT NOT NULL,
    error TEXT NOT NULL,
    decoder TEXT
)
"""
_DEAD_LETTER_INSERT = (
    f"INSERT INTO {quote(DEAD_LETTER_TABLE)} "
    "(received, channel, topic, qos, retain, payload, stage, error, decoder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: errors that say the database itself is unwell; the batch is retried whole
_TRANSIENT = ("locked", "busy", "disk i/o", "full", "unable to open", "readonly", "no such table")

_INT64 = (-(2**63), 2**63 - 1)


def table_name(table) -> str:
    """The SQLite table of a `TableName`."""
    return f"{table.schema}__{table.table}"


def _column_type(value) -> str:
    if isinstance(value, bool) or isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "TEXT"


def _flatten(fields, tags, prefix="", out=None) -> dict:
    """Tags and fields as one flat dict: nested objects become dotted names."""
    if out is None:
        out = dict(tags) if tags else {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if type(value) is dict:
            _flatten(value, None, name + ".", out)
        else:
            out[name] = value
    return out


def _sql_value(value):
    kind = type(value)
    if kind is float or kind is str or value is None:
        return value
    if kind is int:
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if kind is bool:
        return int(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _is_transient(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(word in text for word in _TRANSIENT)


@implementer(IStorage)
@attrs.define(eq=False)
class SQLiteStorage:
    name: str
    path: str
    reactor: object
    synchronous: str = "FULL"
    _pool: ThreadPool | None = None
    _conn: sqlite3.Connection | None = None
    #: table -> {lower-case column name}
    _columns: dict = attrs.Factory(dict)
    _iso: IsoTime = attrs.Factory(IsoTime)

    log = Logger()

    def start(self) -> Deferred:
        """Start the writer thread and open the database; fails with `StorageError`."""
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"lorrygate-sqlite-{self.name}")
        self._pool.start()
        return self._call(self._open)

    def stop(self) -> Deferred:
        """Close the database and stop the writer thread."""
        if self._pool is None:
            return Deferred.fromCoroutine(_nothing())
        pool, d = self._pool, self._call(self._close)

        def stop_pool(result):
            self._pool = None
            pool.stop()
            return result

        return d.addBoth(stop_pool)

    def write(self, batch) -> Deferred:
        return self._call(self._commit, batch)

    def _call(self, function, *args) -> Deferred:
        return deferToThreadPool(self.reactor, self._pool, function, *args)

    # -- in the writer thread ---------------------------------------------------

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(_DEAD_LETTER_DDL)
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"storage {self.name}: cannot open SQLite database {self.path!r}: {exc}") from None
        for table in tables:
            self._columns[table] = {
                row[1].lower() for row in conn.execute(f"PRAGMA table_info({quote(table)})")
            }
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _commit(self, batch) -> None:
        try:
            self._transaction(batch.entries, batch.dead_letters, isolate=False)
        except StorageError:
            raise
        except Exception as exc:
            if _is_transient(exc):
                raise StorageError(f"storage {self.name}: SQLite write failed: {exc}") from None
            # One bad row must not hold back the rest: write entry by entry and
            # send the ones the database refuses to the dead-letter table.
            self._transaction(batch.entries, batch.dead_letters, isolate=True)

    def _transaction(self, entries, dead_letters, isolate: bool) -> None:
        conn = self._conn
        added = {}
        extra_dead = []
        conn.execute("BEGIN")
        try:
            if isolate:
                for entry in entries:
                    conn.execute("SAVEPOINT entry")
                    try:
                        self._insert(conn, [entry], added)
                    except Exception as exc:
                        if _is_transient(exc):
                            raise
                        conn.execute("ROLLBACK TO entry")
                        extra_dead.append(
                            DeadLetter(entry.channel, entry.message, "store", f"{type(exc).__name__}: {exc}")
                        )
                    conn.execute("RELEASE entry")
            else:
                self._insert(conn, entries, added)
            self._insert_dead_letters(conn, list(dead_letters) + extra_dead)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for table, columns in added.items():
            self._columns.setdefault(table, set()).update(columns)
        if extra_dead:
            self.log.warn(
                "storage {storage}: the database refused {count} message(s); they are in {table}",
                storage=self.name,
                count=len(extra_dead),
                table=DEAD_LETTER_TABLE,
            )

    def _insert(self, conn, entries, added: dict) -> None:
        iso = self._iso
        groups = {}
        for entry in entries:
            if not entry.records:
                continue
            table = table_name(entry.table)
            for record in entry.records:
                flat = _flatten(record.fields, record.tags)
                columns = tuple(flat)
                key = (table, columns)
                row = [iso(record.time)]
                row.extend(_sql_value(value) for value in flat.values())
                rows = groups.get(key)
                if rows is None:
                    groups[key] = rows = []
                    self._ensure(conn, table, flat, added)
                rows.append(row)
        for (table, columns), rows in groups.items():
            names = ", ".join(quote(column) for column in ("time",) + columns)
            marks = ", ".join("?" * (len(columns) + 1))
            conn.executemany(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", rows)

    def _ensure(self, conn, table: str, flat: dict, added: dict) -> None:
        """Create the table and add the columns a row needs (inside the transaction)."""
        known = self._columns.get(table)
        pending = added.get(table)
        if pending is None:
            pending = added[table] = set()
        if known is None and "time" not in pending:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(table)} (time TEXT NOT NULL)")
            pending.update(row[1].lower() for row in conn.execute(f"PRAGMA table_info({quote(table)})"))
        known = known or ()
        for column, value in flat.items():
            lowered = column.lower()
            if lowered in known or lowered in pending:
                continue
            conn.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {_column_type(_sql_value(value))}")
            pending.add(lowered)

    def _insert_dead_letters(self, conn, dead_letters) -> None:
        if not dead_letters:
            return
        iso = self._iso
        conn.executemany(
            _DEAD_LETTER_INSERT,
            [
                (
                    iso(int(round(d.message.received * 1_000_000)) * 1000),
                    d.channel,
                    d.message.topic,
                    d.message.qos,
                    int(d.message.retain),
                    d.message.payload,
                    d.stage,
                    d.error,
                    d.decoder,
                )
                for d in dead_letters
            ],
        )


async def _nothing() -> None:
    return None

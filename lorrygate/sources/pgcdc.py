"""
PostgreSQL change data capture (``[source:NAME] type = pgcdc``): inserts,
updates, deletes and truncates of chosen tables, read from a logical replication slot
with the ``wal2json`` output plugin (Debian: ``postgresql-15-wal2json``).

Each change becomes a message under ``<topic>/<schema>/<table>`` whose
payload is the row as JSON with its operation: ``{"op": "insert", "id": 7,
"value": 1.5}`` (a delete carries the replica identity, usually the key).
The slot is read with ``pg_logical_slot_peek_changes`` (SQL, psycopg) and
advanced with ``pg_replication_slot_advance`` only to the commit of a
transaction all of whose changes are committed (or spooled) downstream, in
order: a gateway that dies replays from the last advance and loses nothing.
A peek's rows are streamed (psycopg's single-row mode) and handed over
`CHUNK` changes at a time, at most `CHUNKS_QUEUED` chunks ahead of the
reactor and none while the storage holds the source paused, so a
transaction of millions of rows (a bulk ``INSERT ... SELECT``) is never held
whole: its changes go downstream before its commit has been read.
At least once (a change committed downstream but not yet advanced past comes
again). A change's time, where its row has no ``time`` column, is its
transaction's commit time (wal2json's ``include-timestamp``, as
`Message.sent`), not the time the gateway read it: the rows of one
transaction share it, and a change that comes again has it again (an
idempotent storage keeps one row of it). A lost connection is not a replay: the transactions handed over are
still on their way downstream, so the new connection's peek skips them and
their acknowledgements advance the slot as before.

The slot is created on request (``create_slot = true``, the default) and is
never dropped by lorrygate: a slot keeps WAL on the server until it is read,
so drop it yourself (``SELECT pg_drop_replication_slot('...')``) when the
gateway goes away for good. The server needs ``wal_level = logical``.
"""

import json
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.sources.pauses import Pauses, SourcePlumbing
from lorrygate.sources.threaded import ReadingThread

#: changes one peek returns at most (whole transactions: it may be more)
PEEK = 2000
#: changes handed to the reactor at a time, and chunks handed over and not yet delivered at most
CHUNK, CHUNKS_QUEUED = 1000, 2
#: wal2json's actions of changes, and the ``op`` of each (a ``TRUNCATE`` of a table is a row of ``op`` alone, as
#: Debezium has a truncate event: the rows before it are gone at the source)
OPERATIONS = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}


def lsn_int(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@attrs.define(eq=False)
class CdcAck:
    source: Any
    xid: int

    def ack(self) -> None:
        self.source._ack(self.xid)


#: the column types whose values wal2json writes as JSON text
_JSON_TYPES = ("json", "jsonb")


def commit_time(text) -> float | None:
    """A transaction's commit time as wal2json writes it (``2024-06-01 12:00:00.123456+00``, in the connection's
    time zone) -> epoch seconds; None where it wrote none."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@implementer(ISource)
@attrs.define(eq=False)
class CdcSource(ReadingThread, SourcePlumbing, Service):
    name: str  # type: ignore[assignment]  # Service.name, always set here
    settings: Any  # lorrygate.config.settings.SourceSettings, type pgcdc
    deliver: Any
    _reactor: Any
    broker: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    _may_read: threading.Event = attrs.Factory(threading.Event)
    connected: bool = False
    #: xid -> [changes not yet committed downstream, commit LSN or 0 while its commit is not read], in commit order
    _transactions: OrderedDict = attrs.Factory(OrderedDict)
    #: (the reading thread's) xid -> [changes handed over, commit LSN or 0, commit time (epoch seconds) or None]
    #: of the transactions the slot is not advanced past: a peek returns them again, and what was handed over is
    #: left out
    _handed: dict = attrs.Factory(dict)
    #: chunks handed to the reactor and not yet delivered
    _queued: threading.Semaphore = attrs.Factory(lambda: threading.Semaphore(CHUNKS_QUEUED))
    #: the reading thread waits with a chunk in hand (the source paused, or the reactor behind)
    held_back: bool = False
    #: the commit LSN to advance the slot to (set in the reactor thread, done in the reading thread)
    _advance_to: int = 0
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    changes: int = 0

    log = Logger()

    def __attrs_post_init__(self):
        from urllib.parse import urlsplit

        from lorrygate.sources.periodic import _Where

        parts = urlsplit(self._url())
        self.client_id = self.client_id or f"slot {self.settings.slot}"
        self.broker = _Where(parts.hostname or "localhost", str(parts.port or 5432))
        self._pauses = Pauses(self._may_read.clear, self._may_read.set)
        self._may_read.set()

    @property
    def claim(self) -> tuple[str, str]:
        """What this source holds alone (`lorrygate.service.locks.claim_of`)."""
        return f"the replication slot {self.settings.slot!r} at {self.broker.host}:{self.broker.port}", "slot"

    def _url(self) -> str:
        database = self.settings.database
        return database.reveal() if hasattr(database, "reveal") else database



    publish = None

    thread_kind = "cdc"

    def startService(self) -> None:
        super().startService()
        self._start_thread()

    def stopService(self) -> Deferred:
        super().stopService()
        return self._stop_thread()

    # -- the reading thread ---------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._read()
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), 30.0)
                self._reactor.callFromThread(self._failed, f"{type(exc).__name__}: {exc}".strip(), delay)
                self._stop.wait(delay)

    def _read(self) -> None:
        import psycopg

        from lorrygate.storage.postgresql import liveness

        settings = self.settings
        url = self._url()
        with psycopg.connect(url, autocommit=True, connect_timeout=10, **liveness(url)) as conn:
            self._ensure_slot(conn)
            self._reactor.callFromThread(self._ready)
            options = ["format-version", "2", "include-lsn", "true", "include-transaction", "true",
                       "include-timestamp", "true"]
            if settings.tables:
                options += ["add-tables", ",".join(settings.tables)]
            marks = ", ".join(["%s"] * len(options))
            query = (f"SELECT lsn::text, xid::text::bigint, data FROM pg_logical_slot_peek_changes(%s, NULL, %s, "
                     f"{marks})")
            while not self._stop.is_set():
                self._advance(conn)
                if not self._may_read.wait(0.5):
                    continue
                rows = conn.cursor().stream(query, [settings.slot, PEEK, *options])
                try:
                    handed = self._hand_over(rows)
                finally:
                    # (a generator: stopped in the middle, its query is cancelled while the connection is open)
                    rows.close()  # type: ignore[attr-defined]
                if not handed:
                    self._stop.wait(settings.interval)

    def _ensure_slot(self, conn) -> None:
        settings = self.settings
        found = conn.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", [settings.slot]).fetchone()
        if found is None:
            if not settings.create_slot:
                raise RuntimeError(f"the replication slot {settings.slot!r} does not exist (create_slot = true makes "
                                   f"it)")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", [settings.slot])
            self._reactor.callFromThread(self.log.info, "source {source}: created the replication slot {slot}; "
                                         "drop it when this gateway goes away for good", source=self.name,
                                         slot=settings.slot)
        elif found[0] != "wal2json":
            raise RuntimeError(f"the replication slot {settings.slot!r} uses the plugin {found[0]!r}, not wal2json")

    def _hand_over(self, rows) -> int:
        """Hand the reactor what ``rows`` (a peek, streamed) hold that was not handed over yet, a chunk at a
        time: ``(xid, (topic, payload))`` for a change, ``(xid, commit LSN)`` for a transaction's commit; how
        many were."""
        chunk: list = []
        handed = 0
        seen: dict = {}  # xid -> changes of it in this peek so far
        for lsn, xid, data in rows:
            record = json.loads(data)
            action = record.get("action")
            known = self._handed.setdefault(xid, [0, 0, None])
            if action in OPERATIONS:
                seen[xid] = seen.get(xid, 0) + 1
                if seen[xid] <= known[0]:
                    continue  # handed over before (a peek returns all the slot is not advanced past)
                chunk.append((xid, self._change(record) + (known[2],)))
                known[0] += 1
            elif action == "B":
                known[2] = commit_time(record.get("timestamp"))
                continue
            elif action == "C" and not known[1]:
                known[1] = lsn_int(lsn)
                chunk.append((xid, known[1]))
            else:
                continue
            if len(chunk) >= CHUNK:
                if not self._send(chunk):
                    return handed
                handed += len(chunk)
                chunk = []
        if chunk and self._send(chunk):
            handed += len(chunk)
        return handed

    def _send(self, chunk: list) -> bool:
        """Hand ``chunk`` to the reactor once it takes more (`CHUNKS_QUEUED`) and the source is not paused;
        False if the source stops first."""
        while True:
            if self._stop.is_set():
                return False
            if self._may_read.is_set() and self._queued.acquire(timeout=0.1):
                break
            self.held_back = True
            self._may_read.wait(0.5)
        self.held_back = False
        if self._stop.is_set():
            self._queued.release()
            return False
        self._reactor.callFromThread(self._deliver, chunk, time.time())
        return True

    def _change(self, record) -> tuple:
        operation = OPERATIONS[record["action"]]
        columns = record.get("columns") or record.get("identity") or []
        row = {"op": operation}
        row.update((column["name"], column.get("value")) for column in columns)
        topic = f"{self.settings.topic}/{record['schema']}/{record['table']}"
        if any(column.get("type") in _JSON_TYPES for column in columns):
            # wal2json writes a json or jsonb value as its text: the value itself, so that its keys become
            # fields (``payload.temperature``) as those of any JSON payload do, not one column of JSON text
            parsed = dict(row)
            for column in columns:
                if column.get("type") in _JSON_TYPES and isinstance(column.get("value"), str):
                    try:
                        parsed[column["name"]] = json.loads(column["value"])
                    except (ValueError, RecursionError):
                        pass  # (kept as the text it is)
            try:
                return topic, json.dumps(parsed, default=str).encode()
            except (ValueError, RecursionError):
                pass  # a value nested too deeply to write again: the text as it came
        return topic, json.dumps(row, default=str).encode()

    def _advance(self, conn) -> None:
        with self._lock:
            target, self._advance_to = self._advance_to, 0
        if target:
            try:
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                             [self.settings.slot, lsn_text(target)])
            except BaseException:
                with self._lock:  # done on the next connection instead
                    self._advance_to = max(self._advance_to, target)
                raise
            # the slot returns those no more
            self._handed = {xid: known for xid, known in self._handed.items() if not 0 < known[1] <= target}

    # -- in the reactor thread --------------------------------------------------------------

    def _ready(self) -> None:
        self.connected, self.last_error = True, ""
        self.log.info("source {source}: reading the replication slot {slot} ({tables}; at least once)",
                      source=self.name, slot=self.settings.slot, tables=", ".join(self.settings.tables) or "every table")
        if not self.subscribed:
            self._subscribed()

    def _failed(self, why: str, delay: float) -> None:
        self.connected = False
        if why != self.last_error:
            self.log.error("source {source}: {error}; next try in {delay:.1f} s", source=self.name, error=why,
                           delay=delay)
        self.last_error = why
        # What was handed over is still on its way downstream: the reconnection's peek returns it again (the
        # slot is not advanced past it) and `_hand_over` leaves it out; its acks advance the slot as before.

    def _deliver(self, chunk, received: float) -> None:
        self._queued.release()
        transactions = self._transactions
        for xid, item in chunk:
            pending = transactions.get(xid)
            if pending is None:
                pending = transactions[xid] = [0, 0]
            if type(item) is int:  # the transaction's commit
                pending[1] = item
                continue
            topic, payload, committed = item
            pending[0] += 1
            self.changes += 1
            self.deliver(Message(topic, payload, 1, False, received, topic, CdcAck(self, xid), sent=committed))
        self._release()

    def _ack(self, xid: int) -> None:
        pending = self._transactions.get(xid)
        if pending is not None:
            pending[0] -= 1
            self._release()

    def _release(self) -> None:
        """Advance past every transaction at the head whose changes are all committed downstream."""
        target = 0
        while self._transactions:
            xid, (left, commit) = next(iter(self._transactions.items()))
            if left > 0 or not commit:  # (its commit not read yet: more of its changes may come)
                break
            self._transactions.popitem(last=False)
            target = commit
        if target:
            with self._lock:
                self._advance_to = max(self._advance_to, target)

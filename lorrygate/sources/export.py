"""
Kotori's data export on the HTTP source (``export = yes``): ``GET
/api/<topic>`` answers the rows of the table the channel's strategy routes
that topic to, read from the channel's storage (SQLite or PostgreSQL on a
thread a read, CrateDB over its HTTP endpoint a page at a time):

    GET /api/mqttkit-1/testdrive/area-42/node-1/data.csv?from=now-2h&exclude=weight

The topic's suffix is the format: ``.csv`` (``.txt``: the same as text),
``.json`` (an array of objects), ``.ndjson`` (an object a line). ``from`` and
``to`` take Kotori's times: ISO 8601 (``2016-06-25T22:00:00.000Z``, an offset,
``2016-06-25``, ``20160626T124259+0200``, ``20160625``; UTC without an offset;
a ``to`` of a date alone is the end of that day) or ``now`` less a span
(``now-4h``, ``now-8d5h3m``; units ``w d h m s``); they default to
``now-10d`` and ``now``. ``include`` and ``exclude`` take column names,
comma-separated; ``sort``, ``direction``, ``limit``, ``scalar`` and ``pad`` as
Kotori reads them (`Query`); ``.tsv`` is CSV separated by tabs. Rows come oldest first
(unless ``direction=descending``), streamed as they are read (a
client that reads slowly holds the read, not the gateway's memory), at most
``MAX_EXPORTS`` exports at once (``503`` beyond).

Errors: ``400`` for a time that is none or a suffix of no format (the answer
lists them), ``404`` for a topic the strategy stores nowhere or whose table
does not exist yet, ``501`` for a storage that keeps nothing to read (a sink),
``503`` while the database is away.
"""

import base64
import csv
import datetime as dt
import io
import re
import threading
from typing import Any

import attrs
import orjson
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

#: formats by the topic's suffix: (content type, renderer name)
FORMATS = {"csv": (b"text/csv; charset=utf-8", "csv"), "txt": (b"text/plain; charset=utf-8", "csv"),
           "tsv": (b"text/tab-separated-values; charset=utf-8", "tsv"),
           "json": (b"application/json", "json"), "ndjson": (b"application/x-ndjson", "ndjson")}
#: exports running at once, at most (each holds a database connection and a thread)
MAX_EXPORTS = 4
#: rows read and written at a time
CHUNK = 2000
#: rows a CrateDB query answers at a time
PAGE = 10_000
DEFAULT_FROM = "now-10d"
_SPAN = re.compile(r"(\d+)([wdhms])")
_SPANS = re.compile(r"(\d+[wdhms])+")
#: an offset whose "+" a query string made a space (``...T00:00:00.000 02:00``: Kotori asks for %2B)
_SPACED_OFFSET = re.compile(r"(T[\d:.]+) (\d{2}:?\d{2})$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DATE_ONLY = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")


class ExportRefused(Exception):
    """An export that cannot be answered with rows: ``code`` and why."""

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


def split_format(topic: str) -> tuple:
    """``(topic, format)`` of an export's path: the format is the suffix of its last level."""
    last = topic.rsplit("/", 1)[-1]
    if "." not in last:
        raise ExportRefused(400, f"no format: end the path with one of {_format_list()} (data.csv, data.json)")
    suffix = last.rsplit(".", 1)[1].lower()
    if suffix not in FORMATS:
        raise ExportRefused(400, f"no format {suffix!r}: end the path with one of {_format_list()}")
    return topic, suffix


def _format_list() -> str:
    return ", ".join("." + name for name in FORMATS)


def parse_time(text: str, now: float, end: bool = False) -> int:
    """Kotori's ``from``/``to``: nanoseconds since the epoch; ExportRefused(400) for text that is no time.
    ``end``: a date alone is the last nanosecond of that day."""
    value = text.strip()
    if value.startswith("now"):
        rest = value[3:]
        seconds = 0
        if rest:
            if rest[0] not in "+-" or not _SPANS.fullmatch(rest[1:]):
                raise ExportRefused(400, f"time {text!r}: now, or now-<span> as now-4h or now-8d5h3m (w d h m s)")
            seconds = sum(int(n) * _UNITS[unit] for n, unit in _SPAN.findall(rest[1:]))
            seconds = -seconds if rest[0] == "-" else seconds
        return _bounded(int(round((now + seconds) * 1_000_000)) * 1000)
    try:
        when = dt.datetime.fromisoformat(_SPACED_OFFSET.sub(r"\1+\2", value))
    except ValueError:
        raise ExportRefused(400, f"time {text!r}: ISO 8601 (2016-06-25T22:00:00Z, 2016-06-25, 20160625T220000Z, "
                                 "an offset as +02:00) or now-<span> (now-4h)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - _EPOCH
    nanos = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if end and _DATE_ONLY.match(value):
        nanos += 86_400_000_000_000 - 1
    return _bounded(nanos)


#: the times a database takes (years 1 to 9999): a span beyond them (now-99999999w) is the first or last
_FIRST_NS = -62_135_596_800 * 1_000_000_000
_LAST_NS = 253_402_300_800 * 1_000_000_000 - 1


def _bounded(nanos: int) -> int:
    return min(max(nanos, _FIRST_NS), _LAST_NS)


def names(text: str | None) -> list:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


_TRUE, _FALSE = ("true", "yes", "on", "y", "t", "1"), ("false", "no", "off", "n", "f", "0", "")


@attrs.frozen
class Query:
    """What an export's query string asks besides its range, as Kotori's HTTP API reads it."""

    include: list = attrs.Factory(list)
    exclude: list = attrs.Factory(list)
    #: the columns to order by before the time (Kotori's ``sort``), and the direction of all of them
    sort: list = attrs.Factory(list)
    descending: bool = False
    #: the most rows to answer (``limit``), or None
    limit: int | None = None
    #: the column whose value in the first row is the whole answer, as text (``scalar``), or None
    scalar: str | None = None
    #: a row's empty value is the last value of its column before it (``pad``)
    pad: bool = False

    def order(self, quote) -> str:
        """The ORDER BY of a SQL reader: the ``sort`` columns, then the time, in the direction asked."""
        way = " DESC" if self.descending else ""
        names = [name for name in self.sort if name != "time"] + ["time"]
        return ", ".join(f"{quote(name)}{way}" for name in names)

    def checked(self, columns: list, chosen: list) -> None:
        """ExportRefused(400) for a ``sort`` column the table lacks, ``include`` and ``exclude`` that leave no
        column, or a ``scalar`` column not exported."""
        for name in self.sort:
            if name not in columns and name != "time":
                raise ExportRefused(400, f"sort={name}: no such column (the table has: {', '.join(columns)})")
        if "time" in self.exclude:
            chosen = chosen[1:]
        if not chosen:  # (rows of nothing: a CSV of empty lines, a JSON array of empty objects)
            asked = "&".join(f"{name}={','.join(value)}" for name, value in (("include", self.include),
                                                                              ("exclude", self.exclude)) if value)
            raise ExportRefused(400, f"{asked} leaves no column to answer (the table has: {', '.join(columns)})")
        if self.scalar is not None and self.scalar not in chosen:
            raise ExportRefused(400, f"scalar={self.scalar}: no such column exported (there are: {', '.join(chosen)})")


def query_of(args: dict) -> Query:
    """The `Query` of an export's arguments; ExportRefused(400) for one that says what is not understood
    (arguments of no meaning here are left alone: a client's cache buster)."""
    def flag(name: str) -> bool:
        value = args.get(name, "").strip().lower()
        if value not in _TRUE + _FALSE:
            raise ExportRefused(400, f"{name}={args[name]}: true or false")
        return value in _TRUE

    direction = args.get("direction", "ascending").strip().lower() or "ascending"
    if not direction.startswith(("asc", "desc")):
        raise ExportRefused(400, f"direction={args['direction']}: ascending or descending (asc, desc)")
    limit = None
    if args.get("limit", "").strip():
        text = args["limit"].strip()
        if not text.isdigit() or not text.isascii():
            raise ExportRefused(400, f"limit={text}: a count of rows, 0 or more")
        limit = min(int(text), 2**62)  # (more rows than any table has: a 64-bit LIMIT)
    for name in ("backfill", "interpolate"):
        if flag(name):
            raise ExportRefused(400, f"{name}=true is not offered: it needs the whole answer in memory, which an "
                                     f"export streams; fill the gaps where you read it (pandas: "
                                     f"{'bfill()' if name == 'backfill' else 'interpolate()'}); pad=true is offered")
    return Query(names(args.get("include")), names(args.get("exclude")), names(args.get("sort")),
                 direction.startswith("desc"), limit, (args.get("scalar") or "").strip() or None, flag("pad"))


def padded(rows: list, last: list) -> list:
    """Rows whose empty values (after the time) are the last value of their column before them; ``last``
    holds each column's last value across the chunks of one export."""
    out = []
    for row in rows:
        row = list(row)
        for index in range(1, len(row)):
            if row[index] is None:
                row[index] = last[index]
            else:
                last[index] = row[index]
        out.append(row)
    return out


def scalar_text(value) -> bytes:
    """A ``scalar`` answer: the value as text (a time in ISO 8601, an empty value empty)."""
    value = _cell(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode("utf-8", "surrogatepass")


def choose(columns: list, include: list, exclude: list) -> list:
    """The columns to read: ``time`` first, then the table's (those of ``include`` where given), less
    ``exclude``; names the table does not have are left out (as Kotori does). The time is read even where
    ``exclude`` names it (the pages go by it; `Renderer` leaves it out)."""
    rest = [c for c in columns if c != "time"]
    if include:
        rest = [c for c in rest if c in include]
    return ["time"] + [c for c in rest if c not in exclude]


def _from_millis(millis) -> str:
    """CrateDB's timestamp (epoch milliseconds over HTTP) as ISO 8601 UTC."""
    if not isinstance(millis, int):
        return millis
    seconds, rest = divmod(millis, 1000)
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest:03d}Z"


def _text(value) -> Any:
    """A value as a CSV cell or a JSON value."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _cell(value) -> Any:
    value = _text(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return "" if value is None else value


class Renderer:
    """Rows as the bytes of a format, a chunk at a time."""

    def __init__(self, kind: str, columns: list, without_time: bool = False):
        """``columns``: the time first, then the others; ``without_time``: the time is read (the rows come with
        it) but not answered (Kotori's ``exclude=time``)."""
        self.kind, self._first = kind, True
        self.columns = columns[1:] if without_time else columns
        self._without_time = without_time

    def head(self) -> bytes:
        if self.kind in ("csv", "tsv"):
            return self._csv([self.columns], self.kind)
        return b"[" if self.kind == "json" else b""

    def rows(self, rows: list) -> bytes:
        if self._without_time:
            rows = [row[1:] for row in rows]
        if self.kind in ("csv", "tsv"):
            return self._csv([[_cell(v) for v in row] for row in rows], self.kind)
        objects = [orjson.dumps(dict(zip(self.columns, map(_text, row))), default=str,
                                option=orjson.OPT_NON_STR_KEYS) for row in rows]
        if self.kind == "ndjson":
            return b"".join(o + b"\n" for o in objects)
        text = (b"\n" if self._first else b",\n") + b",\n".join(objects)
        self._first = False
        return text

    def tail(self) -> bytes:
        return b"\n]\n" if self.kind == "json" else b""

    @staticmethod
    def _csv(rows: list, kind: str) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n", delimiter="\t" if kind == "tsv" else ",").writerows(rows)
        return out.getvalue().encode("utf-8", "surrogatepass")


class _SQLiteReader:
    mark = "?"

    def __init__(self, dialect):
        from lorrygate.decoding.timestamps import IsoTime

        self.path, self._iso = dialect.path, IsoTime()

    def connect(self):
        from lorrygate.storage.sqlite_schema import read_only

        return read_only(self.path, timeout=30)

    @staticmethod
    def relation(conn, table) -> tuple:
        """(the quoted table of ``table``, whether it exists): the storage's own of the name where another case
        of it is a table (`lorrygate.storage.sqlite_schema.own_name`), not the one SQLite would find by it."""
        from lorrygate.storage.sqlite import table_name
        from lorrygate.storage.sqlite_schema import own_in
        from lorrygate.topology.naming import quote

        name, exists = own_in(conn, table_name(table))
        return quote(name), exists

    def time(self, nanos: int):
        return self._iso(nanos)

    def cursor(self, conn):
        return conn.cursor()


class _PostgresReader:
    mark = "%s"

    def __init__(self, dialect):
        self.url = dialect.url

    def connect(self):
        import psycopg

        from lorrygate.storage.postgresql import liveness

        return psycopg.connect(self.url, connect_timeout=10, application_name="lorrygate export", **liveness(self.url))

    @staticmethod
    def relation(conn, table) -> tuple:
        """(the quoted table of ``table``, whether it exists)."""
        from lorrygate.storage.postgresql import qualified

        name = qualified(table)
        return name, conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None

    @staticmethod
    def time(nanos: int):
        return _EPOCH + dt.timedelta(microseconds=nanos // 1000)

    def cursor(self, conn):
        return conn.cursor(name="lorrygate_export")  # server side: the rows come as they are fetched


#: the reader of a CrateDB storage: its HTTP endpoint, on the reactor (`Exporter._crate`)
CRATEDB = "cratedb"


def reader_of(backend):
    """The reader of a storage's backend, or ExportRefused(501)."""
    dialect = getattr(backend, "dialect", None)
    name = getattr(dialect, "name", None)
    if name == "sqlite":
        return _SQLiteReader(dialect)
    if name == "postgresql":
        return _PostgresReader(dialect)
    if type(backend).__name__ == "CrateStorage":
        return CRATEDB
    raise ExportRefused(501, f"storage {getattr(backend, 'name', '?')} keeps nothing to read: the export reads "
                             "SQLite, PostgreSQL and CrateDB")


def preferred(backends: list):
    """The storage of a channel an export reads: its first SQLite or PostgreSQL, else its first CrateDB, else its
    first (a sink: the export says it keeps nothing)."""
    def rank(backend) -> int:
        try:
            return 1 if reader_of(backend) is CRATEDB else 0
        except ExportRefused:
            return 2
    return min(backends, key=rank)


def crate_columns(rows: list) -> list:
    """``(name, expression)`` of the leaves of a CrateDB table's ``fields`` and ``tags`` objects, from its
    ``information_schema.columns`` rows (``column_name``, ``data_type``): ``fields['wifi']['rssi']`` is the
    column ``wifi.rssi`` (as the SQL storages name it); a tag named as a field is ``tags.<name>``. Objects are
    left out (their leaves are listed on their own), but ``extra_fields``, whose keys CrateDB does not list
    (`lorrygate.storage.crate_extra`): one column of objects, as in the SQL storages."""
    from lorrygate.storage.layout import EXTRA_COLUMN
    from lorrygate.storage.shared_layout import literal
    from lorrygate.topology.naming import quote

    fields, tags = [], []
    extra = []
    for path, kind in rows:
        if path == EXTRA_COLUMN:
            extra.append((EXTRA_COLUMN, quote(EXTRA_COLUMN)))
            continue
        top, bracket, _ = path.partition("[")
        if top not in ("fields", "tags") or not bracket or kind == "object":
            continue
        keys = [key.replace("''", "'") for key in _KEYS.findall(path)]
        expression = quote(top) + "".join(f"[{literal(key)}]" for key in keys)
        (fields if top == "fields" else tags).append((".".join(keys), expression))
    named = {name for name, _ in fields}
    tags = [(f"tags.{name}" if name in named else name, expression) for name, expression in tags]
    named |= {name for name, _ in tags}
    return fields + tags + [(f"{name}_2" if name in named else name, expression) for name, expression in extra]


_KEYS = re.compile(r"\['((?:[^']|'')*)'\]")


@implementer(IPushProducer)
class _Stream:
    """An export's rows written to its request as the client reads them: the reading thread waits while the
    request's transport is paused (the client reads slower than the rows come) and stops once it is gone.

    A client that reads nothing for ``stall`` seconds is cut (``on_stall`` is told): its export holds a read of
    the storage (SQLite's WAL cannot be checkpointed past it, PostgreSQL cannot vacuum past its snapshot), and a
    client that stopped reading, or a peer gone without a word, would hold it for good."""

    def __init__(self, request, reactor, stall: float, on_stall) -> None:
        self.request, self._reactor, self._stall, self._on_stall = request, reactor, stall, on_stall
        self.paused = False
        self.gone = False
        self.stalled = False
        self._resumed: Deferred | None = None
        self._timer = None
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)

    def _finished(self, _) -> None:
        self.gone = True
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        if self._timer is None and not self.gone:
            self._timer = self._reactor.callLater(self._stall, self._stalled)

    def resumeProducing(self) -> None:
        self.paused = False
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self.gone = True
        self.resumeProducing()

    def _stalled(self) -> None:
        self._timer = None
        self.stalled = True
        self._on_stall(self)
        self.stopProducing()
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()  # (a close would wait for the buffer the client does not read)

    def write(self, data: bytes):
        """On the reactor: write; a Deferred while the transport is paused. False once the client is gone."""
        if self.gone or self.request._disconnected:
            return False
        if data:
            self.request.write(data)
        if self.paused:
            self._resumed = Deferred()
            return self._resumed.addCallback(lambda _: not self.gone)
        return True

    def finish(self) -> None:
        if not self.gone and not self.request._disconnected:
            self.request.unregisterProducer()
            self.request.finish()


class _Pool(ThreadPool):
    """Daemon threads: an export still reading when the gateway exits does not hold the process."""

    def threadFactory(self, *args, **kwargs):
        return threading.Thread(*args, daemon=True, **kwargs)


class Exporter:
    """The HTTP source's exports: a topic's table from the channel's storage, on threads of its own."""

    log = Logger()

    def __init__(self, reactor, router, backend, source_name: str, stall: float = 300.0):
        self.reactor, self.router, self.backend, self.source_name = reactor, router, backend, source_name
        self.stall = stall
        self._pool: ThreadPool | None = None
        self.running = 0
        self.exports = 0
        self.stalls = 0
        self._stopping = threading.Event()
        self._streams: set = set()

    @property
    def waiting(self) -> int:
        """Exports waiting for their clients to read (the transport's buffer is full)."""
        return sum(1 for stream in self._streams if stream.paused)

    def stop(self) -> None:
        """Cut the exports running (their clients see an answer cut short) and let their threads end; the
        gateway's stop does not wait for a read."""
        self._stopping.set()
        for stream in list(self._streams):
            stream.stopProducing()
            if not stream.request.finished and not stream.request._disconnected:
                stream.request.loseConnection()
        pool, self._pool = self._pool, None
        if pool is not None:
            threading.Thread(target=pool.stop, daemon=True, name="lorrygate-export-stop").start()

    def table_of(self, topic: str) -> tuple:
        """``(address, table)`` of a topic's data, as the channel routes it; ExportRefused(404) for none. The
        format's suffix picks no table (``data.txt`` and ``data.csv`` are the table of ``data.json``)."""
        base = topic.rsplit(".", 1)[0]
        for candidate in (topic, base + ".json", base):
            address, table, why = self.router.table_for_topic(candidate)
            if table is not None:
                return address, table
        _, _, why = self.router.table_for_topic(topic)
        raise ExportRefused(404, f"the channel stores nothing for the topic {topic!r} ({why or 'no table'})")

    def begin(self, request, topic: str, kind: str, args: dict, now: float):
        """Start the export of ``topic`` (its format ``kind``); raise ExportRefused for one that cannot be."""
        reader = reader_of(self.backend)
        start = parse_time(args.get("from") or DEFAULT_FROM, now)
        end = parse_time(args.get("to") or "now", now, end=True)
        query = query_of(args)
        if reader is CRATEDB and any(name != "time" for name in query.sort):
            raise ExportRefused(400, f"sort={','.join(query.sort)}: an export from CrateDB is sorted by time only "
                                     "(sort=time, direction=descending); it reads in pages by time")
        address, table = self.table_of(topic)
        if self.running >= MAX_EXPORTS:
            raise ExportRefused(503, f"{MAX_EXPORTS} exports are running: send it again")
        if self._stopping.is_set():
            raise ExportRefused(503, "the gateway is stopping: send it again")
        self.running += 1
        self.exports += 1
        stream = _Stream(request, self.reactor, self.stall, lambda _: self._stalled(topic))
        self._streams.add(stream)
        content_type, renderer = FORMATS[kind]
        if query.scalar is not None:
            content_type = b"text/plain; charset=utf-8"
        if reader is CRATEDB:
            d = Deferred.fromCoroutine(self._crate(table, address, start, end, query, renderer, content_type, stream,
                                                   request))
        else:
            if self._pool is None:
                self._pool = _Pool(minthreads=0, maxthreads=MAX_EXPORTS, name=f"lorrygate-export-{self.source_name}")
                self._pool.start()
            d = threads.deferToThreadPool(self.reactor, self._pool, self._run, reader, table, start, end, query,
                                          renderer, content_type, stream, request)
        d.addErrback(self._failed, request, topic)
        d.addBoth(self._ended, stream)

    def _stalled(self, topic: str) -> None:
        self.stalls += 1
        self.log.warn("source {source}: export of {topic} cut: its client read nothing for {stall:g} s (an export "
                      "holds a read of the storage meanwhile); the client may send it again (export_stall)",
                      source=self.source_name, topic=topic, stall=self.stall)

    def _ended(self, _, stream) -> None:
        self.running -= 1
        self._streams.discard(stream)

    def _failed(self, failure, request, topic: str) -> None:
        error = failure.value
        # a database away or busy (both drivers call it OperationalError; CrateDB unreachable is a StorageError, a
        # cluster that cannot answer now a CrateError 5000 or over): a 503 to try again, not a 500
        away = type(error).__name__ in ("OperationalError", "StorageError") or (
            type(error).__name__ == "CrateError" and getattr(error, "code", 0) >= 5000)
        code = error.code if isinstance(error, ExportRefused) else 503 if away else 500
        why = str(error) if isinstance(error, ExportRefused) else \
            f"reading the storage failed: {type(error).__name__}: {error}" + ("; send it again" if away else "")
        if not isinstance(error, ExportRefused):
            self.log.error("source {source}: export of {topic} failed: {error}", source=self.source_name,
                           topic=topic, error=why)
        if request.startedWriting or request.finished or request._disconnected:
            if not request.finished and not request._disconnected:
                request.loseConnection()  # (a cut answer, not one that looks whole)
            return
        from lorrygate.sources.http import _respond

        request.unregisterProducer()
        _respond(request, code, {"error": why}, retry=code == 503)

    async def _crate(self, table, address, start: int, end: int, query: Query, renderer: str, content_type: bytes,
                     stream: _Stream, request) -> None:
        """CrateDB: the table's columns from ``information_schema.columns``, then its rows a page at a time, in
        time order (oldest first, or newest with ``direction=descending``), each page written once the client
        has read the one before.

        Pages by time, not by ``OFFSET`` over the range: each page starts past the last time of the one before
        (a deep ``OFFSET`` makes every shard sort all the rows before it again, quadratic in the export, and
        rows written into the range meanwhile would shift the pages). The rows of a page's last time are read
        whole with a query of their own (``"time" = ?``, by ``OFFSET`` only among them), since rows may share
        a time and the next page starts after it."""
        from lorrygate.storage.shared_layout import crate_table, qualified, shared_table

        backend = self.backend
        table = crate_table(table)  # (the table the writer names so: a name CrateDB creates no table of)
        shared = shared_table(table, address) if backend.layout == "per-network" else None
        source = shared or table
        found = await backend._sql("SELECT column_name, data_type FROM information_schema.columns "
                                   "WHERE table_schema = ? AND table_name = ? ORDER BY column_name",
                                   args=[source.schema or "doc", source.table])
        if not found.get("rows"):
            raise ExportRefused(404, f"no data yet: the table {qualified(source)} does not exist")
        leaves = dict(crate_columns(found["rows"]))
        columns = choose(["time", *leaves], query.include, query.exclude)
        query.checked(["time", *leaves], columns)
        selected = ", ".join(leaves[c] for c in columns[1:]) or "1"
        by_address = ' AND "address" = ?' if shared is not None else ""
        address_arg = [table.table] if shared is not None else []
        way = " DESC" if query.descending else ""

        def select(condition: str) -> str:
            return (f'SELECT "time", {selected} FROM {qualified(source)} WHERE {condition}{by_address} '
                    f'ORDER BY "time"{way} LIMIT ? OFFSET ?')

        # the first page, the pages past the last time of the one before (later, or earlier when descending),
        # and the rows of one time
        first, at = select('"time" >= ? AND "time" <= ?'), select('"time" = ?')
        after = select('"time" >= ? AND "time" < ?') if query.descending else select('"time" > ? AND "time" <= ?')
        left = 1 if query.scalar is not None else query.limit
        render = Renderer(renderer, columns, "time" in query.exclude)
        last_values = [None] * len(columns)
        if query.scalar is None:
            request.setResponseCode(200)
            request.setHeader(b"content-type", content_type)
            if not await self._written(stream, render.head()):
                return

        async def send(page: list) -> bool:
            nonlocal left
            rows = [(_from_millis(row[0]), *row[1:len(columns)]) for row in page]
            if left is not None:
                rows, left = rows[:left], left - min(left, len(rows))
            if query.pad:
                rows = padded(rows, last_values)
            if query.scalar is not None:
                await self._scalar(stream, request, rows, columns.index(query.scalar))
                return False
            return not rows or await self._written(stream, render.rows(rows))

        async def done() -> None:
            if query.scalar is not None:
                await self._scalar(stream, request, [], 0)
            elif await self._written(stream, render.tail()):
                stream.finish()

        statement, lower, high = first, start // 1_000_000, end // 1_000_000
        while not self._stopping.is_set():
            if left == 0:
                return await done()
            page = (await backend._sql(statement, args=[lower, high, *address_arg, min(PAGE, left or PAGE), 0]))["rows"]
            if len(page) < min(PAGE, left or PAGE) or (left is not None and len(page) >= left):
                if await send(page):
                    await done()
                return
            last = page[-1][0]
            if not await send([row for row in page if row[0] != last]):
                return
            offset = 0
            while not self._stopping.is_set() and left != 0:  # every row of the page's last time
                same = (await backend._sql(at, args=[last, *address_arg, PAGE, offset]))["rows"]
                if not await send(same):
                    return
                if len(same) < PAGE:
                    break
                offset += PAGE
            if query.descending:
                statement, high = after, last
            else:
                statement, lower = after, last
        request.loseConnection()

    async def _scalar(self, stream: _Stream, request, rows: list, index: int) -> None:
        """A ``scalar`` answer from CrateDB: the value of the first row, or 404 for none."""
        if not rows:
            raise ExportRefused(404, "no data in the range: no value for scalar")
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if await self._written(stream, scalar_text(rows[0][index])):
            stream.finish()

    @staticmethod
    async def _written(stream: _Stream, data: bytes) -> bool:
        done = stream.write(data)
        return bool(await done if isinstance(done, Deferred) else done)

    # -- on the export's thread --------------------------------------------------

    def _run(self, reader, table, start: int, end: int, query: Query, renderer: str, content_type: bytes,
             stream: _Stream, request) -> None:
        conn = reader.connect()
        try:
            relation, exists = reader.relation(conn, table)
            if not exists:
                raise ExportRefused(404, f"no data yet: the table {relation} does not exist")
            probe = conn.cursor()
            probe.execute(f"SELECT * FROM {relation} WHERE 1 = 0")
            present = [d[0] for d in probe.description]
            columns = choose(present, query.include, query.exclude)
            query.checked(present, columns)
            probe.close()
            from lorrygate.topology.naming import quote

            limit = 1 if query.scalar is not None else query.limit
            statement = (f"SELECT {', '.join(quote(c) for c in columns)} FROM {relation} "
                         f"WHERE {quote('time')} >= {reader.mark} AND {quote('time')} <= {reader.mark} "
                         f"ORDER BY {query.order(quote)}" + (f" LIMIT {int(limit)}" if limit is not None else ""))
            cursor = reader.cursor(conn)
            cursor.execute(statement, (reader.time(start), reader.time(end)))
            if query.scalar is not None:
                row = cursor.fetchone()
                if row is None:
                    raise ExportRefused(404, "no data in the range: no value for scalar")
                answer = scalar_text(row[columns.index(query.scalar)])
            render = Renderer(renderer, columns, "time" in query.exclude)

            def headers():
                request.setResponseCode(200)
                request.setHeader(b"content-type", content_type)

            threads.blockingCallFromThread(self.reactor, headers)
            if query.scalar is not None:
                if self._write(stream, answer):
                    threads.blockingCallFromThread(self.reactor, stream.finish)
                return
            if not self._write(stream, render.head()):
                return
            last = [None] * len(columns)
            while not self._stopping.is_set():
                rows = cursor.fetchmany(CHUNK)
                if not rows:
                    break
                if query.pad:
                    rows = padded(rows, last)
                if not self._write(stream, render.rows(rows)):
                    return
            if self._stopping.is_set():
                threads.blockingCallFromThread(self.reactor, request.loseConnection)
                return
            self._write(stream, render.tail())
            threads.blockingCallFromThread(self.reactor, stream.finish)
        finally:
            conn.close()

    def _write(self, stream: _Stream, data: bytes) -> bool:
        return bool(threads.blockingCallFromThread(self.reactor, stream.write, data))

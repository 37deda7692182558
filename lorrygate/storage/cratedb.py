"""
CrateDB storage over CrateDB's HTTP endpoint, non-blocking with treq.

CrateDB 5.10.11 or newer is needed (checked at start): older versions fail
every row of a request for one value that cannot be cast, and 5.9 and older
report no per-row errors. One bulk request per table per flush: ``POST
/_sql`` with ``{"stmt": "INSERT ...", "bulk_args": [[...], ...]}``; the answer
has one result per row, and each row is acted on by itself:

===================================  ===========================================
row result                           what happens
===================================  ===========================================
``rowcount`` 1                       stored
``rowcount`` 0 (``idempotent``:      already stored (a redelivered message)
``ON CONFLICT DO NOTHING``), 4091
4030-4037 (cluster blocks, such as   retried with backoff: backpressure, never a
the disk flood stage), 5000 and up   dead letter
a bare ``-2`` (CrateDB gives the     sent again in requests of 10 rows, which
reason for the first 10 failed rows  get a reason each; after 3 rounds without
of a shard only)                     one, a dead letter saying so
any other error (4000 a value that   the row's message goes to the dead-letter
cannot be cast, 4008 ...)            table with CrateDB's message
===================================  ===========================================

A whole request that fails:

- 4041/4045 (unknown table or schema): the table is created (``IF NOT
  EXISTS``, also for a table created before and dropped since) and the
  request is sent again;
- 4030-4037, 5000 and above, HTTP 5xx, connection errors: retried with
  backoff (rows already stored are not sent again);
- 401 (plain text), 4010/4011: an authentication or privilege error, retried
  with backoff while the operator fixes it;
- 4043 (unknown column): the ``idempotent`` column of a table created
  without it is added, then the request is sent again; otherwise the rows
  are dead letters (a custom DDL without ``fields``);
- any other error, such as 4000 for a value that cannot be cast to a column
  the table has: the request is split in halves and sent again until the
  offending rows are alone; those are dead letters, the rest is stored.

Values are converted by `lorrygate.storage.crate_values` (numbers as DOUBLE,
so no column truncates; NaN as null; keys CrateDB refuses renamed).

Layout: ``time TIMESTAMP WITH TIME ZONE`` (milliseconds), ``tags`` and
``fields`` as ``OBJECT(DYNAMIC)``, a generated column named after the
partition period (``year`` by default) for ``PARTITIONED BY``, ``CLUSTERED
INTO 1 SHARDS``, ``number_of_replicas = '0-1'``. Before a table is created,
its shards are checked against the cluster's budget
(``cluster.max_shards_per_node`` x nodes, `shard_budget`): a table that does
not fit is refused with the arithmetic, its messages become dead letters and
the table is listed in the status. ``idempotent = true`` adds
``lorrygate_id`` and the primary key ``(time, lorrygate_id, <period>)``;
``merge`` the same key, the id a hash of the address and the tags, and
``ON CONFLICT (key) DO UPDATE SET "fields" = concat("fields",
excluded."fields")``: the rows of a bucket are one row.
``layout = per-network``: one table per network and kind, with the address
in columns, and a view per address (`lorrygate.storage.shared_layout`).
"""

import base64
import json
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs
import orjson
import treq
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.decoding.timestamps import seconds_to_ns
from lorrygate.errors import LorrygateError, StorageError
from lorrygate.interfaces import IStorage
from lorrygate.model import TableName
from lorrygate.sources import headers as message_headers
from lorrygate.storage import crate_extra
from lorrygate.storage.batch import DeadLetter
from lorrygate.storage.crate_moved_keys import MovedKeys, place
from lorrygate.storage.crate_values import Conversions, crate_object
from lorrygate.storage.layout import EXTRA_COLUMN, ID_COLUMN, merge_details, merge_id, row_id
from lorrygate.storage.shared_layout import (
    ADDRESS_COLUMNS,
    address_values,
    crate_table,
    qualified,
    shared_table,
    view_statement,
)
from lorrygate.topology.naming import quote

DEAD_LETTER_TABLE = '"doc"."lorrygate_dead_letter"'
#: the oldest CrateDB that fails only the offending rows of a bulk insert
MINIMUM_VERSION = (5, 10, 11)
CREATE_CODES = {4041, 4045}
AUTH_CODES = {4010, 4011}
#: whole-request errors about the statement, not about a row: no bisecting
STATEMENT_CODES = CREATE_CODES | AUTH_CODES | {4043}
#: rows per request when asking for the reasons of bare -2 answers (CrateDB
#: gives the first 10 failed rows of a shard an error object)
REASON_CHUNK = 10
#: rounds of resending bare -2 rows before they become dead letters
BARE_ROUNDS = 3
#: dead-letter error texts are cut here, with a marker
ERROR_LIMIT = 16_384
#: the most bytes of rows one request carries (a single row larger goes alone). CrateDB takes at most
#: ``http.max_content_length`` (100 MB by default) and answers HTTP 413 beyond; a batch of 5,000 camera
#: snapshots of 130 KB was one request of 650 MB, refused again and again, and the storage stopped for good
MAX_REQUEST = 16 << 20
#: the code of a CrateError for HTTP 413 (a request larger than CrateDB or a proxy before it takes)
TOO_LARGE = 4130


class CrateError(Exception):
    def __init__(self, code: int, message: str, status: int):
        self.code = code
        self.status = status
        #: the bytes of the request CrateDB answered so (a bulk insert's, `CrateStorage._send`)
        self.size = 0
        super().__init__(f"CrateDB error {code}: {message}")


class UnsupportedServer(LorrygateError):
    """The CrateDB server is too old for the writer."""


def transient(code) -> bool:
    """Cluster blocks (4030-4037, the disk flood stage among them) and server-side failures (5000
    and above: rejected execution, circuit breakers, shards unavailable) pass; rows wait for them."""
    return code is not None and (4030 <= code <= 4037 or code >= 5000)


def _passing(exc: CrateError) -> bool:
    """An error that a later request may not get: a cluster block, a server-side failure, a node down."""
    return transient(exc.code) or exc.status >= 500


def default_ddl(table, partition: str, shards: int, replicas: str, idempotent: bool, shared: bool = False) -> str:
    """The CREATE TABLE of a new per-address table (``shared``: of a per-network one, with the address columns,
    `lorrygate.storage.shared_layout`)."""
    columns = ['"time" TIMESTAMP WITH TIME ZONE NOT NULL']
    if shared:
        columns += ['"address" TEXT NOT NULL', '"gateway" TEXT', '"node" TEXT']
    columns += ['"tags" OBJECT(DYNAMIC)', '"fields" OBJECT(DYNAMIC)']
    key = ['"time"']
    if partition != "none":
        columns.append(
            f"{quote(partition)} TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('{partition}', \"time\")"
        )
    if idempotent:
        columns.append(f'"{ID_COLUMN}" TEXT NOT NULL')
        key.append(f'"{ID_COLUMN}"')
        if partition != "none":
            key.append(quote(partition))
        columns.append(f"PRIMARY KEY ({', '.join(key)})")
    sql = f"CREATE TABLE IF NOT EXISTS {qualified(table)} ({', '.join(columns)}) CLUSTERED INTO {shards} SHARDS"
    if partition != "none":
        sql += f" PARTITIONED BY ({quote(partition)})"
    replicas_literal = "'" + replicas.replace("'", "''") + "'"
    return sql + f" WITH (number_of_replicas = {replicas_literal})"


#: payloads and errors of any size: not indexed, no column store (an indexed
#: TEXT value is limited to 32,766 bytes)
_LARGE_TEXT = "TEXT INDEX OFF STORAGE WITH (columnstore = false)"
DEAD_LETTER_DDL = (
    f"CREATE TABLE IF NOT EXISTS {DEAD_LETTER_TABLE} ("
    '"received" TIMESTAMP WITH TIME ZONE NOT NULL, "channel" TEXT, "topic" TEXT, "qos" INTEGER, '
    f'"retain" BOOLEAN, "payload" {_LARGE_TEXT}, "payload_base64" {_LARGE_TEXT}, "stage" TEXT, '
    f'"error" {_LARGE_TEXT}, "decoder" TEXT, "replayed" TIMESTAMP WITH TIME ZONE, "content_type" TEXT, '
    f'"headers" {_LARGE_TEXT}, "sent" TIMESTAMP WITH TIME ZONE'
    ") CLUSTERED INTO 1 SHARDS WITH (number_of_replicas = '0-1')"
)
DEAD_LETTER_NAME = TableName("doc", "lorrygate_dead_letter")
#: the columns a dead-letter table an earlier lorrygate made lacks (a message's Content Type, headers and the bus's
#: time of it), and the statements that add them
DEAD_LETTER_TYPED = {"content_type": f'ALTER TABLE {DEAD_LETTER_TABLE} ADD COLUMN "content_type" TEXT',
                     "headers": f'ALTER TABLE {DEAD_LETTER_TABLE} ADD COLUMN "headers" {_LARGE_TEXT}',
                     "sent": f'ALTER TABLE {DEAD_LETTER_TABLE} ADD COLUMN "sent" TIMESTAMP WITH TIME ZONE'}
_DEAD_LETTER_COLUMNS = '"received", "channel", "topic", "qos", "retain", "payload", "payload_base64", "stage", "error", ' \
    '"decoder"'
DEAD_LETTER_INSERT = f"INSERT INTO {DEAD_LETTER_TABLE} ({_DEAD_LETTER_COLUMNS}) VALUES ({', '.join('?' * 10)})"
#: the insert with the message's Content Type (MQTT 5), which a replay decodes by, its headers and the bus's time
DEAD_LETTER_INSERT_TYPED = f'INSERT INTO {DEAD_LETTER_TABLE} ({_DEAD_LETTER_COLUMNS}, "content_type", "headers", ' \
    f'"sent") VALUES ({", ".join("?" * 13)})'


def insert_statement(table, idempotent: bool, shared: bool = False, extra: bool = False,
                     merge_key: tuple = ()) -> str:
    """The INSERT of a table's rows; ``extra``: with the column of the fields CrateDB does not index, last
    (`lorrygate.storage.crate_extra`). ``merge_key``: the table's primary key, which rows of the same key are
    merged on (``merge``): the fields of a row are added to the stored row's (first-level keys, the later value
    of a key wins)."""
    named = ("time",) + (ADDRESS_COLUMNS if shared else ()) + ("tags", "fields") + ((ID_COLUMN,) if idempotent else ()) \
        + ((EXTRA_COLUMN,) if extra else ())
    columns = ", ".join(f'"{name}"' for name in named)
    marks = ", ".join("?" * len(named))
    statement = f"INSERT INTO {qualified(table)} ({columns}) VALUES ({marks})"
    if merge_key:
        merged = ("fields", EXTRA_COLUMN) if extra else ("fields",)
        return statement + f" ON CONFLICT ({', '.join(map(quote, merge_key))}) DO UPDATE SET " + ", ".join(
            f'"{name}" = concat("{name}", excluded."{name}")' for name in merged)
    return statement + " ON CONFLICT DO NOTHING" if idempotent else statement


def merge_key(partition: str) -> tuple:
    """The primary key of a table `default_ddl` makes with idempotent (or merged) rows."""
    return ("time", ID_COLUMN) if partition == "none" else ("time", ID_COLUMN, partition)


def cut(text: str, limit: int = ERROR_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" [... {len(text) - limit} more characters cut by lorrygate]"


def dead_letter_row(dead: DeadLetter, with_payload: bool = True, typed: bool = True) -> list:
    """The values of `DEAD_LETTER_INSERT_TYPED` (``typed``) or of `DEAD_LETTER_INSERT`."""
    payload = dead.payload
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    row = [
        seconds_to_ns(dead.message.received) // 1_000_000,
        dead.channel,
        dead.message.topic,
        dead.message.qos,
        dead.message.retain,
        text if with_payload else None,
        base64.b64encode(payload).decode("ascii") if with_payload else None,
        dead.stage,
        cut(dead.error),
        dead.decoder,
    ]
    if typed:
        sent = dead.message.sent
        row += [dead.message.content_type, message_headers.as_json(dead.message.headers),
                seconds_to_ns(sent) // 1_000_000 if sent is not None else None]
    return row


def _plain(value):
    """The JSON-able form of a row's values that its idempotent id is computed from."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def parse_version(text: str) -> tuple:
    numbers = []
    for part in str(text).split("-")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers + [0] * (3 - len(numbers)))


def shard_copies(replicas: str, nodes: int) -> int:
    """Copies of each shard: 1 + replicas; a range such as ``0-1`` expands up to the nodes there are."""
    text = replicas.strip()
    if "-" in text:
        low, high = text.split("-", 1)
        most = nodes - 1 if high.strip() == "all" else int(high)
        return 1 + max(int(low), min(most, nodes - 1))
    return 1 + int(text)


@attrs.define(eq=False)
class _Row:
    index: int
    position: int
    entry: Any
    args: list
    #: rounds this row was answered with a bare -2
    bare: int = 0
    #: the fields moved into the column CrateDB does not index (`crate_extra`), once they are
    extra: dict | None = None
    #: CrateDB's refusal that moved them
    refused: str = ""
    #: whether the row merges into the row of its key (``merge``), and whether its values end in its
    #: ``lorrygate_id`` (merged and idempotent rows, and rows of a table made with the key)
    merge: bool = False
    keyed: bool = False


@implementer(IStorage)
@attrs.define(eq=False)
class CrateStorage:
    name: str
    url: str
    reactor: Any
    http: Any = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    shards: int = 1
    replicas: str = "0-1"
    partition: str = "year"
    idempotent: bool = False
    ddl: dict = attrs.Factory(dict)
    timeout: float = 30.0
    #: nanoseconds of the buckets whose rows of a table and tags are merged into one row (0: a row a record), and
    #: the channels' own (``merge`` of a channel section) by channel name
    merge: int = 0
    merges: dict = attrs.Factory(dict)
    #: tables that require ``lorrygate_id`` (made with the key) where this storage's rows are not keyed: their
    #: rows get an id of their content, as idempotent ones
    _keyed_tables: set = attrs.Factory(set)
    _created: set = attrs.Factory(set)
    _ready: bool = False
    #: whether the dead-letter table has the "content_type" column (one that cannot be added: written without)
    _dead_typed: bool = True
    #: the server's version, once read
    version: tuple | None = None
    #: values and keys changed on the way (NaN as null, keys renamed)
    conversions: Conversions = attrs.Factory(Conversions)
    #: tables refused for the shard budget: name -> reason
    refused_tables: dict = attrs.Factory(dict)
    #: tables whose idempotent column was added
    _altered: set = attrs.Factory(set)
    #: per-address (one table per address) or per-network (`lorrygate.storage.shared_layout`)
    layout: str = "per-address"
    #: per-network: the shared tables written so far, and the views known to exist (None: not read yet)
    _shared: set = attrs.Factory(set)
    _views: set | None = None
    #: per-network: views to make (view -> shared table), what makes them, and who waits for that
    _views_wanted: dict = attrs.Factory(dict)
    _view_maker: Deferred | None = None
    _view_waiters: list = attrs.Factory(list)
    #: per-network: views not made, by name, with the reason (a per-address table of that name, say)
    refused_views: dict = attrs.Factory(dict)
    #: the base URLs of every node of the cluster (default: ``url`` alone); requests go round them
    nodes: tuple = ()
    #: per node: until when it counts as down, its backoff, its last error
    _health: dict = attrs.Factory(dict)
    _turn: int = 0
    #: writes whose node failed after it got them, to be sent again (their rows may be stored twice
    #: unless ``idempotent``)
    resent_unsure: int = 0
    failovers: int = 0
    #: tables with the column of fields CrateDB does not index, and the top-level keys that go there
    #: (`crate_extra`): a key moved once stays there, so that it is in one place
    _extra_tables: set = attrs.Factory(set)
    _extra_keys: dict = attrs.Factory(dict)
    #: rows whose fields went partly into that column
    rows_with_extra: int = 0
    #: those keys as kept in CrateDB, for a restart and other gateways (`crate_moved_keys`)
    _moves: MovedKeys = attrs.field(init=False)
    #: per-network: the views made with that column (a shared table that got it later makes its views again)
    _views_extra: set = attrs.Factory(set)
    #: the most bytes of rows a request carries: `MAX_REQUEST`, lowered to half a request CrateDB (or a proxy
    #: before it) answered with HTTP 413
    max_request: int = MAX_REQUEST

    log = Logger()

    def __attrs_post_init__(self):
        self.nodes = tuple(self.nodes) or (self.url,)
        self.url = self.nodes[0]
        self._health = {node: {"down_until": 0.0, "delay": 0.0, "error": ""} for node in self.nodes}
        self._moves = MovedKeys(self._sql, self._bulk, CrateError, _passing, self._now, self._time_of_day, self.name)

    @classmethod
    def from_settings(cls, settings, reactor, ddl: dict) -> "CrateStorage":
        from lorrygate.config.values import crate_nodes

        parts = urlsplit(settings.url.raw)
        https, hosts = crate_nodes(settings.url.raw)
        scheme = "https" if https else "http"
        nodes = tuple(urlunsplit((scheme, f"{host}:{port}", "", "", "")) for host, port in hosts)
        return cls(
            settings.name,
            nodes[0],
            reactor,
            nodes=nodes,
            http=make_client(reactor, scheme == "https", settings.tls_ca),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            shards=settings.shards,
            replicas=settings.replicas,
            partition=settings.partition,
            idempotent=settings.idempotent,
            ddl=ddl,
            timeout=settings.timeout,
            merge=round(settings.merge * 1e9),
            merges={channel: round(seconds * 1e9) for channel, seconds in settings.channel_merge},
            layout=settings.layout,
        )

    # -- IStorage -------------------------------------------------------------

    def start(self) -> Deferred:
        """Check the server's version; a server that is down is checked at the first write."""
        if len(self.nodes) > 1 and not self.idempotent:
            self.log.warn("storage {storage}: {count} CrateDB nodes without idempotent = true: a node that dies "
                          "after it got a write makes it sent again, and its rows may be stored twice",
                          storage=self.name, count=len(self.nodes))
        return Deferred.fromCoroutine(self._check_version())

    def stop(self) -> Deferred:
        """Stop making views (the one on its way is waited for: a request, at most ``timeout``)."""
        self._views_wanted.clear()
        return self.views_made()

    def views_made(self) -> Deferred:
        """A Deferred that fires once the views wanted so far are made, or tried (per-network layout)."""
        if self._view_maker is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._view_waiters.append(d)
        return d

    def write(self, batch) -> Deferred:
        return Deferred.fromCoroutine(self._write(batch))

    def details(self) -> dict:
        """For the status: the server's version, its nodes, and what the writer changed or refused."""
        now = self._now()
        return {
            "version": ".".join(map(str, self.version)) if self.version else None,
            "nodes": [{"url": node, "up": self._health[node]["down_until"] <= now,
                       "last_error": self._health[node]["error"]} for node in self.nodes],
            "failovers": self.failovers,
            "resent_unsure": self.resent_unsure,
            "nonfinite_as_null": self.conversions.nonfinite,
            "keys_renamed": self.conversions.renamed,
            "rows_with_extra_fields": self.rows_with_extra,
            "refused_tables": dict(self.refused_tables),
            "layout": self.layout,
            **({"views": len(self._views or ()), "refused_views": dict(self.refused_views)}
               if self.layout == "per-network" else {}),
            **merge_details(self.merge, self.merges),
        }

    # -- for the admin commands (`lorrygate.storage.crate_dead_letters`) ------

    def query(self, statement: str, args=None) -> Deferred:
        """One SQL statement through this writer's client (its nodes, user and TLS): CrateDB's answer."""
        return Deferred.fromCoroutine(self._sql(statement, args))

    def query_many(self, statement: str, bulk_args: list) -> Deferred:
        """One statement with many sets of values (``bulk_args``) in one request: CrateDB's answer, a result
        per set."""
        return Deferred.fromCoroutine(self._bulk(statement, bulk_args))

    def columns(self, table: TableName) -> Deferred:
        """The columns of ``table``, sub-columns as paths (empty: no such table)."""
        return Deferred.fromCoroutine(self._columns(table))

    # -- the protocol ---------------------------------------------------------

    async def _check_version(self) -> None:
        answer = await self._request("GET", "/")
        number = (answer.get("version") or {}).get("number") if isinstance(answer, dict) else None
        version = parse_version(number or "0")
        if version < MINIMUM_VERSION:
            raise UnsupportedServer(
                f"storage {self.name}: CrateDB {number} at {self.url} is older than "
                f"{'.'.join(map(str, MINIMUM_VERSION))}, the oldest that fails only the offending rows of a bulk "
                "insert (older versions fail every row for one bad value, 5.9 and older give no reason per row); "
                "upgrade CrateDB")
        self.version = version

    async def _write(self, batch) -> None:
        if self.version is None:
            try:
                await self._check_version()
            except UnsupportedServer as exc:
                raise StorageError(str(exc)) from None
        if self._moves.due():
            await self._moves.read()
        progress = batch.progress
        groups: dict = {}
        views: dict = {}
        per_network = self.layout == "per-network"
        keyed_tables = self._keyed_tables
        for index, entry in enumerate(batch.entries):
            table = crate_table(entry.table)  # (a name CrateDB creates no table of: `crate_table`)
            merge = self._merge_of(entry.channel)
            keyed = self.idempotent or bool(merge) or (bool(keyed_tables) and table in keyed_tables)
            shared = shared_table(table, entry.address) if per_network and entry.records else None
            if shared is not None:
                self._shared.add(shared)
                if shared != table:
                    views[table] = shared
                where = address_values(table, entry.address)
            for position, record in enumerate(entry.records):
                if (index, position) in progress:
                    continue
                try:
                    args = self._args(table, record, merge, keyed) if shared is None else \
                        self._args(table, record, merge, keyed, where)
                except (ValueError, TypeError, RecursionError) as exc:
                    # a value no JSON request carries (nested 1,000 levels deep): this message is a dead letter,
                    # not every write of the storage a failure
                    self._reject([_Row(index, position, entry, [])], f"a value CrateDB cannot be sent: {exc}",
                                 progress, batch, who="could not send")
                    continue
                groups.setdefault((table if shared is None else shared, merge), []).append(
                    _Row(index, position, entry, args, merge=bool(merge), keyed=keyed))
        retry = 0
        for (table, merge), rows in groups.items():
            retry += await self._write_table(table, rows, progress, batch, bool(merge))
        if views:
            self._want_views(views)
        await self._write_dead_letters(batch)
        if retry:
            raise StorageError(f"storage {self.name}: CrateDB could not take {retry} row(s) now; retrying")

    def _args(self, table, record, merge: int = 0, keyed: bool = False, where: list | None = None) -> list:
        """A row's values; ``merge``: the nanoseconds of its bucket (0: a row a record); ``keyed``: with an id
        (of its content, unless merged); ``where``: the values of the address columns (a shared table's row)."""
        counts = self.conversions
        time = record.time
        if merge:
            time -= time % merge  # (the bucket's start: the rows of a bucket have one time and one key)
        fields = crate_object(record.fields, counts)
        if merge:  # (a null leaves the value the row has, as in SQLite and PostgreSQL)
            fields = {key: value for key, value in fields.items() if value is not None}
        args = [time // 1_000_000, crate_object(record.tags, counts), fields]
        if where is not None:
            args[1:1] = where
        if merge:
            args.append(merge_id(table, record.tags))
        elif keyed:
            args.append(row_id(table, record.time, {"tags": _plain(record.tags), "fields": _plain(record.fields)}))
        return args

    async def _write_table(self, table, rows, progress: set, batch, merge: bool = False) -> int:
        """Send one table's rows (``merge``: rows that merge into the rows of their key); return how many must be
        retried."""
        if str(table) in self.refused_tables:
            self._reject(rows, self.refused_tables[str(table)], progress, batch)
            return 0
        stored = self._moves.known.get(place(table))
        if stored:  # (keys moved before a restart, or by another gateway)
            self._extra_tables.add(table)
            self._extra_keys.setdefault(table, set()).update(stored)
        queue = [rows]
        created = False
        retry = 0
        while queue:
            part = queue.pop(0)
            extra = table in self._extra_tables
            if extra:
                await self._move_known(table, part)
            statement = insert_statement(table, part[0].keyed, table in self._shared, extra,
                                         merge_key(self.partition) if merge else ())
            args = [row.args + [row.extra] for row in part] if extra else [row.args for row in part]
            try:
                answer = await self._send(statement, part, args, queue)
            except CrateError as exc:
                if exc.status == 413:
                    if len(part) == 1:
                        self._reject(part, self._too_large(exc.size), progress, batch)
                    else:
                        self._lower_max_request(exc.size)
                        middle = len(part) // 2
                        queue[:0] = [part[:middle], part[middle:]]
                elif exc.code in CREATE_CODES and not created:
                    created = True
                    refused = await self._create(table, part[0].entry, part, progress, batch)
                    if refused:
                        self._reject([r for p in [part] + queue for r in p], refused, progress, batch)
                        return retry
                    queue.insert(0, part)
                elif transient(exc.code) or exc.status >= 500:
                    raise StorageError(f"storage {self.name}: {exc}; retrying") from None
                elif exc.code in AUTH_CODES:
                    raise StorageError(f"storage {self.name}: {exc}; check the user and its privileges") from None
                elif not part[0].keyed and ID_COLUMN in str(exc) and "is required but is missing" in str(exc):
                    # a table made with the key (merge or idempotent on then): its rows get an id, and are sent again
                    self._keyed_tables.add(table)
                    for row in part + [r for p in queue for r in p]:
                        if not row.keyed:
                            record = row.entry.records[row.position]
                            row.args.append(row_id(crate_table(row.entry.table), record.time,
                                                   {"tags": _plain(record.tags), "fields": _plain(record.fields)}))
                            row.keyed = True
                    self.log.info("storage {storage}: {table} was made with the key on lorrygate_id; its rows get an "
                                  "id of their content (idempotent rows)", storage=self.name, table=str(table))
                    queue.insert(0, part)
                elif merge and "conflict target" in str(exc).lower():
                    self._reject(part + [r for p in queue for r in p], self._no_merge_key(table, exc), progress, batch)
                    return retry
                elif exc.code == 4043 and (self.idempotent or merge) and ID_COLUMN in str(exc) and \
                        table not in self._altered:
                    await self._add_id_column(table)
                    queue.insert(0, part)
                elif len(part) == 1 and not part[0].refused and crate_extra.refusal(str(exc)):
                    # a refusal of the whole request that the row's fields mend (a CrateDB that fails the
                    # request, not the row, for its column limit): as a refused row's
                    part[0].refused = str(exc)
                    await self._mend(table, part, queue, progress, batch)
                elif exc.code in STATEMENT_CODES or len(part) == 1:
                    self._reject(part, cut(str(exc)), progress, batch)
                else:
                    # One value of the request cannot be cast: halve until the offending rows are alone.
                    middle = len(part) // 2
                    queue[:0] = [part[:middle], part[middle:]]
                continue
            if answer is None:  # (more than a request carries: back in the queue in runs)
                continue
            mend: list = []
            retry += self._results(part, answer, queue, progress, batch, mend)
            if mend:
                await self._mend(table, mend, queue, progress, batch)
        return retry

    def _fields_at(self, row) -> int:
        """Where a row's fields are in its values (before the idempotent id, if any)."""
        return len(row.args) - (2 if row.keyed else 1)

    async def _move_known(self, table, rows) -> None:
        """Rows of a table with the column CrateDB does not index: the keys moved for earlier rows, and values it
        does not take for a new column (`crate_extra.unindexable`), go there at once (not after a refusal each);
        a key moved so for the first time goes there for the later rows too, and is kept (`crate_moved_keys`)."""
        moved = self._extra_keys.setdefault(table, set())
        for row in rows:
            if row.extra is None:
                at = self._fields_at(row)
                fields = row.args[at]
                if not moved.isdisjoint(fields) or any(map(crate_extra.unindexable, fields.values())):
                    row.args[at], row.extra = crate_extra.split(fields, set(), None, moved)
                    moved.update(row.extra)
                    self.rows_with_extra += 1
        if moved:
            await self._moves.remember(place(table), moved, int(self._time_of_day() * 1000))

    async def _mend(self, table, rows, queue, progress, batch) -> None:
        """Rows CrateDB refused for its column limit or a value it does not index (a text too long, a list of lists,
        a list of mixed types): their fields that do not fit go into the column it does not index (`crate_extra`),
        added to the table if it has none, and they are sent again; where that fails, they are dead letters with
        CrateDB's reason."""
        try:
            columns = await self._columns(table)
            if EXTRA_COLUMN not in columns:
                try:
                    await self._sql(f"ALTER TABLE {qualified(table)} ADD COLUMN {crate_extra.EXTRA_DDL}")
                except CrateError as exc:
                    if EXTRA_COLUMN not in await self._columns(table):  # (not added meanwhile by another gateway)
                        for row in rows:
                            self._reject([row], cut(f"{row.refused}; adding the column {EXTRA_COLUMN} for such fields "
                                                    f"failed: {exc}"), progress, batch)
                        return
                self.log.info("storage {storage}: added the column {column} to {table}, for fields beyond CrateDB's "
                              "column limit or too long to index", storage=self.name, column=EXTRA_COLUMN,
                              table=str(table))
        except CrateError as exc:
            raise StorageError(f"storage {self.name}: reading the columns of {table} failed: {exc}; retrying") from None
        self._extra_tables.add(table)
        moved = self._extra_keys.setdefault(table, set())
        for row in rows:
            _, limit = crate_extra.refusal(row.refused) or ("value", None)
            at = self._fields_at(row)
            fields = row.args[at]
            if row.extra:  # (moved before: put together again, to be split anew)
                fields = {**fields, **row.extra}
            kept, extra = crate_extra.split(fields, columns, limit, moved)
            if not extra:  # (nothing of the fields to move: a text too long elsewhere, say)
                self._reject([row], cut(row.refused), progress, batch)
                continue
            moved.update(extra)
            if row.extra is None:
                self.rows_with_extra += 1
            row.args[at], row.extra = kept, extra
            columns |= crate_extra.paths(kept, "fields", set())
        await self._moves.remember(place(table), moved, int(self._time_of_day() * 1000))
        queue.append([row for row in rows if row.extra])

    async def _columns(self, table) -> set:
        answer = await self._sql("SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
                                 "table_name = ?", args=[table.schema or "doc", table.table])
        return {row[0] for row in answer.get("rows") or ()}

    def _results(self, part, answer, queue, progress, batch, mend: list | None = None) -> int:
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(part):
            raise StorageError(f"storage {self.name}: CrateDB answered a bulk insert without one result per row "
                               f"(CrateDB {'.'.join(map(str, MINIMUM_VERSION))} or newer is needed)")
        retry = 0
        bare = []
        for row, result in zip(part, results):
            count = result.get("rowcount") if isinstance(result, dict) else None
            error = result.get("error") if isinstance(result, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            if count == 1 or code == 4091 or (count == 0 and row.keyed):
                progress.add((row.index, row.position))
            elif transient(code):
                retry += 1
            elif code is not None:
                reason = f"CrateDB error {code}: {(error or {}).get('message', '')}"
                if mend is not None and not row.refused and crate_extra.refusal(reason):
                    row.refused = reason  # (once: a row refused again so is a dead letter)
                    mend.append(row)
                else:
                    self._reject([row], cut(reason), progress, batch)
            else:
                row.bare += 1
                if row.bare > BARE_ROUNDS:
                    self._reject([row], f"CrateDB refused the row {BARE_ROUNDS + 1} times without a reason (a bare "
                                        "rowcount -2)", progress, batch)
                else:
                    bare.append(row)
        # Sent again in small requests, each failed row gets its reason.
        queue.extend(bare[i:i + REASON_CHUNK] for i in range(0, len(bare), REASON_CHUNK))
        return retry

    def _reject(self, rows, reason: str, progress: set, batch, who: str = "CrateDB refused") -> None:
        seen = set()
        batch.refused_rows += len(rows)
        for row in rows:
            progress.add((row.index, row.position))
            if id(row.entry) in seen:
                continue
            seen.add(id(row.entry))
            entry = row.entry
            batch.extra_dead.append(DeadLetter(entry.channel, entry.message, "store", reason, entry.decoder))
        self.log.warn(
            "storage {storage}: {who} {count} row(s), kept in the dead-letter table: {reason:.500}",
            storage=self.name,
            who=who,
            count=len(rows),
            reason=reason,
        )

    async def _create(self, table, entry, part, progress, batch) -> str:
        """Create a table (again); "" once it is there, or why it cannot be: the shard budget refuses it (until
        the budget changes: `refused_tables`), or CrateDB refused the CREATE TABLE for good (a DDL template's
        statement CrateDB does not take): the rows are dead letters that say so, and the next batch tries again,
        where they failed the whole batch at every retry and the storage stood still. A table made anew forgets
        the keys moved into extra_fields for the one before it (dropped meanwhile), which its rows had."""
        if table in self._extra_tables or place(table) in self._moves.known:
            self._extra_tables.discard(table)
            self._extra_keys.pop(table, None)
            for row in part:
                if row.extra:
                    row.args[self._fields_at(row)] = {**row.args[self._fields_at(row)], **row.extra}
                    row.extra = None
            await self._moves.forget(place(table))
        template = self.ddl.get(entry.channel) or self.ddl.get("")
        if template is None:
            refused = await self._over_budget(table)
            if refused:
                self.refused_tables[str(table)] = refused
                self.log.error("storage {storage}: {reason}", storage=self.name, reason=refused)
                return refused
        statements = template.render(table, entry) if template is not None else [
            default_ddl(table, self.partition, self.shards, self.replicas, self._keyed_for(entry), table in self._shared)
        ]
        for statement in statements:
            try:
                await self._sql(statement)
            except CrateError as exc:
                if exc.code == 4093:  # created meanwhile by someone else
                    continue
                if _passing(exc) or exc.code in AUTH_CODES:
                    raise StorageError(f"storage {self.name}: creating {table} failed: {exc}; retrying") from None
                how = "mend the ddl template" if template is not None else "see docs/storage.rst, CrateDB"
                reason = (f"CrateDB refused to create the table {table}: {cut(str(exc), 2000)} ({how}; then "
                          "'lorrygate dead-letters replay' stores these rows)")
                self.log.error("storage {storage}: {reason}", storage=self.name, reason=reason)
                return reason
        if table not in self._created:
            self.log.info("storage {storage}: created table {table}", storage=self.name, table=str(table))
        self._created.add(table)
        return ""

    def _want_views(self, views: dict) -> None:
        """Have the views of per-address tables whose rows went into a shared table made (`shared_layout`), those
        not made yet, one after the other beside the writes: a first run of 10,000 devices makes 10,000 views,
        each a change of the cluster's state, and the rows (and their acknowledgements) must not wait for that.
        A view that fails for a passing reason is tried again with the next rows of its address."""
        known, wanted, extra = self._views, self._views_wanted, self._extra_tables
        for view, shared in views.items():
            if (known is None or view not in known or (shared in extra and view not in self._views_extra)) \
                    and str(view) not in self.refused_views:
                wanted[view] = shared
        if wanted and self._view_maker is None:
            self._view_maker = Deferred.fromCoroutine(self._make_views())
            self._view_maker.addBoth(self._views_done)

    def _views_done(self, result) -> None:
        self._view_maker = None
        if isinstance(result, Failure):  # (`_make_views` handles what CrateDB answers; this is a bug)
            self.log.failure("storage {storage}: making views failed", result, storage=self.name)
        waiters, self._view_waiters = self._view_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _make_views(self) -> None:
        wanted = self._views_wanted
        if self._views is None:
            try:
                answer = await self._sql("SELECT table_schema, table_name FROM information_schema.views")
                self._views = {TableName(schema, name) for schema, name in answer.get("rows") or ()}
            except (CrateError, StorageError) as exc:
                self.log.warn("storage {storage}: cannot read CrateDB's views ({error}); trying again with the next "
                              "rows", storage=self.name, error=str(exc))
                wanted.clear()
                return
        while wanted:
            view = next(iter(wanted))
            shared = wanted.pop(view)
            extra = shared in self._extra_tables
            if (view in self._views and (not extra or view in self._views_extra)) or str(view) in self.refused_views \
                    or str(shared) in self.refused_tables:
                continue
            try:
                await self._sql(view_statement(view, shared, extra))
            except CrateError as exc:
                if transient(exc.code) or exc.status >= 500:
                    self.log.warn("storage {storage}: view {view} not made now ({error}); trying again with the next "
                                  "rows", storage=self.name, view=str(view), error=str(exc))
                    wanted.clear()
                    return
                reason = (f"a table {view} exists (the per-address layout's): its rows stay there, the new ones "
                          f"are in {shared} (address = '{view.table}'); rename or drop it to get the view"
                          if exc.code == 4093 else f"CrateDB refused it: {cut(str(exc), 500)}")
                self.refused_views[str(view)] = reason
                self.log.warn("storage {storage}: no view {view} over {shared}: {reason}", storage=self.name,
                              view=str(view), shared=str(shared), reason=reason)
                continue
            except StorageError as exc:
                self.log.warn("storage {storage}: view {view} not made now ({error}); trying again with the next rows",
                              storage=self.name, view=str(view), error=str(exc))
                wanted.clear()
                return
            self._views.add(view)
            if extra:
                self._views_extra.add(view)
            self.log.info("storage {storage}: created view {view} over {shared}", storage=self.name, view=str(view),
                          shared=str(shared))

    async def _over_budget(self, table) -> str:
        """Why a new default table would not fit the cluster's shard budget ("" when it fits)."""
        try:
            limit = int((await self._sql("SELECT settings['cluster']['max_shards_per_node'] FROM sys.cluster"))["rows"][0][0])
            nodes = int((await self._sql("SELECT count(*) FROM sys.nodes"))["rows"][0][0])
            used = int((await self._sql("SELECT count(*) FROM sys.shards"))["rows"][0][0])
            needed = self.shards * shard_copies(self.replicas, nodes)
        except (CrateError, LookupError, TypeError, ValueError) as exc:
            self.log.warn("storage {storage}: cannot read the shard budget ({error}); creating {table} unchecked",
                          storage=self.name, error=str(exc), table=str(table))
            return ""
        budget = limit * nodes
        if used + needed <= budget:
            return ""
        return (f"table {table} not created: it needs {needed} shard copies and the cluster holds {used} of its "
                f"{budget} ({limit} per node x {nodes} node(s), cluster.max_shards_per_node); its messages are dead "
                "letters. Add nodes, drop old tables or partitions, use fewer shards or replicas, or raise "
                "cluster.max_shards_per_node")

    def _merge_of(self, channel: str) -> int:
        """The nanoseconds of a channel's merge buckets: its own merge, else the storage's (0: a row a record)."""
        return self.merges.get(channel, self.merge) if self.merges else self.merge

    def _keyed_for(self, entry) -> bool:
        """Whether an entry's table is made with the key on ``lorrygate_id``: idempotent rows, and merged ones."""
        return self.idempotent or bool(self._merge_of(entry.channel))

    def _no_merge_key(self, table, exc) -> str:
        key = ", ".join(map(quote, merge_key(self.partition)))
        return (f"{exc}: merge needs the primary key ({key}) in {table}, which it lacks (a table made before merge "
                f"was set, or by a DDL template of another key): rename the table (ALTER TABLE {qualified(table)} "
                "RENAME TO ...) so that lorrygate makes it anew with that key, or give the template that primary "
                "key; then lorrygate dead-letters replay --stage store")

    async def _add_id_column(self, table) -> None:
        self._altered.add(table)
        await self._sql(f'ALTER TABLE {qualified(table)} ADD COLUMN "{ID_COLUMN}" TEXT')
        self.log.warn("storage {storage}: table {table} was created without the idempotent column {column}; added it "
                      "(without a primary key: redelivered messages are not recognised in this table)",
                      storage=self.name, table=str(table), column=ID_COLUMN)

    async def _type_dead_letters(self) -> None:
        """Add the "content_type", "headers" and "sent" columns to a dead-letter table an earlier lorrygate made;
        when one cannot be added (a user without DDL privilege), dead letters are written without them, and a
        warning says so."""
        for column, statement in DEAD_LETTER_TYPED.items():
            try:
                if column in await self._columns(DEAD_LETTER_NAME):
                    continue
                try:
                    await self._sql(statement)
                    continue
                except CrateError as exc:
                    if column in await self._columns(DEAD_LETTER_NAME):  # (another gateway added it meanwhile)
                        continue
                    error = exc
            except CrateError as exc:
                raise StorageError(f"storage {self.name}: reading the dead-letter table's columns failed: "
                                   f"{exc}") from None
            self._dead_typed = False
            self.log.warn("storage {storage}: cannot add the column {column} to {table} ({error}); dead letters are "
                          "kept without their MQTT 5 Content Type, headers and bus time, so a replay decodes them "
                          "by the channel's decoders alone, without the headers' tags, at their receive time: add it "
                          "with {statement}",
                          storage=self.name, column=column, table=DEAD_LETTER_TABLE, error=str(error),
                          statement=statement)
            return

    async def _write_dead_letters(self, batch) -> None:
        """Write the batch's dead letters, each row's success kept in the batch's progress."""
        progress = batch.progress
        pending: list[tuple[Any, Any]] = [(("dead", i), d) for i, d in enumerate(batch.dead_letters)
                                          if ("dead", i) not in progress]
        # (a replay's message refused again keeps its dead letter: `lorrygate.storage.crate_dead_letters`)
        pending += [(id(d), d) for d in batch.extra_dead if id(d) not in progress and id(d.message) not in
                    batch.replaying]
        if not pending:
            return
        if not self._ready:
            try:
                await self._sql(DEAD_LETTER_DDL)
            except CrateError as exc:
                if exc.code != 4093:
                    raise StorageError(f"storage {self.name}: creating the dead-letter table failed: {exc}") from None
            await self._type_dead_letters()
            self._ready = True
        insert = DEAD_LETTER_INSERT_TYPED if self._dead_typed else DEAD_LETTER_INSERT
        rows = [dead_letter_row(d, typed=self._dead_typed) for _, d in pending]
        failed = 0
        queue = [list(range(len(pending)))]
        while queue:
            part = queue.pop(0)
            args = [rows[i] for i in part]
            try:
                answer = await self._send(insert, part, args, queue)
            except CrateError as exc:
                if exc.status == 413 and len(part) > 1:
                    self._lower_max_request(exc.size)
                    queue[:0] = [part[:len(part) // 2], part[len(part) // 2:]]
                    continue
                if exc.status == 413:
                    answer = {"results": [{"rowcount": -2, "error": {"code": exc.code, "message": str(exc)}}]}
                else:
                    raise StorageError(f"storage {self.name}: writing dead letters failed: {exc}") from None
            if answer is None:
                continue
            results = answer.get("results") or []
            if len(results) != len(part):
                failed += len(part)
                continue
            for index, result in zip(part, results):
                key, dead = pending[index]
                error = result.get("error") if isinstance(result, dict) else None
                code = error.get("code") if isinstance(error, dict) else None
                if isinstance(result, dict) and result.get("rowcount") == 1:
                    progress.add(key)
                elif code is not None and not transient(code):
                    # The row itself is refused (an old dead-letter table with indexed TEXT columns, a payload
                    # larger than a request may be): keep the reason and the payload's size at least.
                    reason = (f"{dead.error}; the payload ({len(dead.payload)} bytes) could not be stored: "
                              f"CrateDB error {code}: {(error or {}).get('message', '')}")
                    short = attrs.evolve(dead, error=reason)
                    try:
                        again = await self._sql(insert, args=dead_letter_row(short, with_payload=False,
                                                                             typed=self._dead_typed))
                    except CrateError:
                        again = {}
                    if again.get("rowcount") == 1:
                        progress.add(key)
                    else:
                        failed += 1
                else:
                    failed += 1
        if failed:
            raise StorageError(f"storage {self.name}: CrateDB did not take {failed} dead letter(s); retrying")

    async def _sql(self, statement: str, args=None) -> dict:
        """One statement; bulk inserts go as `bulk_body`."""
        body: dict = {"stmt": statement}
        if args is not None:
            body["args"] = args
        return await self._request("POST", "/_sql", json.dumps(body, allow_nan=False).encode("utf-8"))

    async def _bulk(self, statement: str, args: list) -> dict:
        """One statement with many sets of values (``bulk_args``): one result each."""
        return await self._request("POST", "/_sql", bulk_body(statement, args))

    async def _send(self, statement: str, part: list, args: list, queue: list) -> dict | None:
        """The bulk insert of ``part`` (its values ``args``); None when it is more than a request carries
        (`max_request`): ``part`` goes back to the front of ``queue`` in runs within that, each row measured. A
        CrateError tells the request's bytes (``size``)."""
        body = bulk_body(statement, args)
        if len(body) > self.max_request and len(part) > 1:
            queue[:0] = by_size(part, [len(bulk_body("", [one])) for one in args], self.max_request)
            return None
        try:
            return await self._request("POST", "/_sql", body)
        except CrateError as exc:
            exc.size = len(body)
            raise

    def _lower_max_request(self, size: int) -> None:
        """A request of ``size`` bytes was answered with HTTP 413: requests from now on carry at most half."""
        lowered = max(1024, min(self.max_request, size) // 2)
        if lowered < self.max_request:
            self.log.warn("storage {storage}: CrateDB (or a proxy before it) refused a request of {size} bytes as too "
                          "large (HTTP 413); requests carry at most {lowered} bytes from now on. CrateDB takes "
                          "http.max_content_length (100 MB by default): raise the limit that refused it",
                          storage=self.name, size=size, lowered=lowered)
            self.max_request = lowered

    def _too_large(self, size: int) -> str:
        return (f"the row is {size:,} bytes of JSON, more than CrateDB (or a proxy before it) takes in one request "
                f"(HTTP 413): raise CrateDB's http.max_content_length (100 MB by default) or the proxy's limit, "
                "then run lorrygate dead-letters replay; or lower max_payload")

    def _time_of_day(self) -> float:
        import time

        return time_of_day(self.reactor)() if self.reactor is not None else time.time()

    def _now(self) -> float:
        import time

        return self.reactor.seconds() if self.reactor is not None else time.monotonic()

    def _order(self) -> list:
        """The nodes to try, in turn: those up, starting with the next one round the cluster, then
        those down (soonest back first), so that a request is tried everywhere before it fails."""
        count = len(self.nodes)
        if count == 1:
            return list(self.nodes)
        now = self._now()
        self._turn = (self._turn + 1) % count
        turned = [self.nodes[(self._turn + i) % count] for i in range(count)]
        up = [node for node in turned if self._health[node]["down_until"] <= now]
        down = sorted((node for node in turned if node not in up), key=lambda node: self._health[node]["down_until"])
        return up + down

    def _failed(self, node: str, exc: Exception) -> None:
        health = self._health[node]
        health["delay"] = min(30.0, health["delay"] * 2 or 1.0)
        health["down_until"] = self._now() + health["delay"]
        health["error"] = f"{type(exc).__name__}: {exc}"

    async def _request(self, method: str, path: str, data: bytes | None = None) -> dict:
        kwargs = {"headers": {"Content-Type": ["application/json"]}, "timeout": self.timeout}
        if self.username:
            kwargs["auth"] = (self.username, self.password or "")
        errors = []
        for attempt, node in enumerate(self._order()):
            try:
                response = await self.http.request(method, f"{node}{path}", data=data, **kwargs)
                content = await treq.content(response)
            except Exception as exc:
                self._failed(node, exc)
                errors.append(f"{node}: {type(exc).__name__}: {exc}")
                if not never_sent(exc) and not safe_again(method, data):
                    self.resent_unsure += 1
                    self.log.warn(
                        "storage {storage}: CrateDB node {node} failed after it got a write ({error}); the write is "
                        "sent again: its rows may be stored twice (idempotent = true prevents it)",
                        storage=self.name, node=node, error=f"{type(exc).__name__}: {exc}")
                if attempt + 1 < len(self.nodes):
                    self.failovers += 1
                continue
            self.url = node
            health = self._health[node]
            if health["delay"]:
                health.update(down_until=0.0, delay=0.0)
            break
        else:
            where = f"CrateDB at {self.url}" if len(self.nodes) == 1 else f"every CrateDB node ({len(self.nodes)})"
            raise StorageError(f"storage {self.name}: {where} unreachable: {'; '.join(errors)}") from None
        try:
            answer = json.loads(content)
        except ValueError:
            if response.code == 413:  # (Netty's HttpObjectAggregator answers it without a body)
                raise CrateError(TOO_LARGE, f"HTTP 413: a request of {len(data or b''):,} bytes is larger than CrateDB "
                                            "takes (http.max_content_length)", 413) from None
            if response.code == 401:  # a failed authentication answers in plain text
                raise StorageError(
                    f"storage {self.name}: CrateDB at {self.url} refused the authentication (HTTP 401: "
                    f"{content[:200].decode('utf-8', 'replace').strip()}); check the user and password of the "
                    "crate:// URL (percent-encode special characters) and CrateDB's host based authentication") from None
            raise StorageError(
                f"storage {self.name}: CrateDB answered HTTP {response.code} with something that is not JSON: "
                f"{content[:200]!r}") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            raise CrateError(int(error.get("code", response.code * 10)), str(error.get("message", "")), response.code)
        if response.code >= 400:
            raise CrateError(response.code * 10, f"HTTP {response.code}", response.code)
        return answer


def bulk_body(statement: str, args: list) -> bytes:
    """The JSON of a bulk request: orjson (5,000 rows of a drain: 1.4 ms, against 17.5 ms with the json module,
    measured), or the json module for a value orjson does not write (a lone surrogate a decoder of your own
    made), as before."""
    try:
        return orjson.dumps({"stmt": statement, "bulk_args": args})
    except TypeError:
        return json.dumps({"stmt": statement, "bulk_args": args}, allow_nan=False).encode("utf-8")


def by_size(rows: list, sizes: list, limit: int) -> list:
    """``rows`` in runs whose JSON (``sizes``: bytes a row) is at most ``limit`` bytes, in order; a row larger
    than that is a run of its own."""
    runs: list = []
    run: list = []
    total = 0
    for row, size in zip(rows, sizes):
        if run and total + size > limit:
            runs.append(run)
            run, total = [], 0
        run.append(row)
        total += size
    if run:
        runs.append(run)
    return runs


def never_sent(exc: Exception) -> bool:
    """Whether a request surely did not reach the node (no connection, or the request not sent whole)."""
    from twisted.internet.error import ConnectError
    from twisted.web.client import RequestTransmissionFailed

    return isinstance(exc, (ConnectError, RequestTransmissionFailed))


def safe_again(method: str, data: bytes | None) -> bool:
    """Whether sending a request twice does no harm: reads, CREATE ... IF NOT EXISTS, and
    inserts that leave a stored primary key alone (idempotent rows)."""
    if method == "GET" or not data:
        return True
    head = data[:200]
    return (b'"stmt": "SELECT' in head or b'"stmt": "CREATE TABLE IF NOT EXISTS' in head
            or b'"stmt": "CREATE OR REPLACE VIEW' in head
            or b"ON CONFLICT DO NOTHING" in data[:4000])


def make_client(reactor, https: bool, ca_path: str):
    """A treq client; for https with the configured CA (verification stays on)."""
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    policy = BrowserLikePolicyForHTTPS()
    if https and ca_path:
        from twisted.internet import ssl

        with open(ca_path, "rb") as handle:
            trust = ssl.Certificate.loadPEM(handle.read())
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
    return treq.client.HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))

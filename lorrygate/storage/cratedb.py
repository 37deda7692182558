"""
CrateDB storage over CrateDB's HTTP endpoint, non-blocking with treq.

One bulk request per table per flush: ``POST /_sql`` with
``{"stmt": "INSERT ...", "bulk_args": [[...], ...]}``. The answer has one
result per row, and each row is acted on by itself (CrateDB 5.10 or newer
reports per-row errors; older versions fail the whole request):

==============================  ================================================
row result                      what happens
==============================  ================================================
``rowcount`` 1                  stored
error 4091 (duplicate key)      already stored (a redelivered message, with
                                ``idempotent = true``)
error 4003 (type validation)    the row's message goes to the dead-letter
                                table with CrateDB's message: a type conflict
                                is reported, never silent
error 5002, or a bare ``-2``    retried with backoff
==============================  ================================================

A whole request that fails with 4041/4045 (unknown table or schema) creates
the table and is sent again; 503x, 5002 and connection errors are retried
with backoff (rows already stored are not sent again); any other error of a
request (4043 unknown column, from a custom DDL without ``fields``) sends
that request's messages to the dead-letter table with the reason.

Layout: ``time TIMESTAMP WITH TIME ZONE`` (milliseconds), ``tags`` and
``fields`` as ``OBJECT(DYNAMIC)`` (new fields need no DDL; nested objects stay
nested), a generated column named after the partition period
(``month`` by default, ``date_trunc('month', "time")``) for
``PARTITIONED BY``, ``CLUSTERED INTO 1 SHARDS`` and ``number_of_replicas``
from the config: within CrateDB's shard budget for thousands of per-device
tables. ``idempotent = true`` adds ``lorrygate_id`` and the primary key
``(time, lorrygate_id, <period>)``.
"""

import base64
import json
from urllib.parse import urlsplit, urlunsplit

import attrs
import treq
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.decoding.timestamps import seconds_to_ns
from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.storage.batch import DeadLetter
from lorrygate.storage.layout import ID_COLUMN, row_id
from lorrygate.topology.naming import quote

DEAD_LETTER_TABLE = '"doc"."lorrygate_dead_letter"'
#: the oldest CrateDB with per-row errors in bulk answers
MINIMUM_VERSION = "5.10"

RETRY_ROW_CODES = {5002}
RETRY_REQUEST_CODES = {5002, 5030, 5031, 5032, 5033, 5034, 5035}
CREATE_CODES = {4041, 4045}


class CrateError(Exception):
    def __init__(self, code: int, message: str, status: int):
        self.code = code
        self.status = status
        super().__init__(f"CrateDB error {code}: {message}")


def default_ddl(table, partition: str, shards: int, replicas: str, idempotent: bool) -> str:
    """The CREATE TABLE of a new per-address table."""
    columns = ['"time" TIMESTAMP WITH TIME ZONE NOT NULL', '"tags" OBJECT(DYNAMIC)', '"fields" OBJECT(DYNAMIC)']
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


DEAD_LETTER_DDL = (
    f"CREATE TABLE IF NOT EXISTS {DEAD_LETTER_TABLE} ("
    '"received" TIMESTAMP WITH TIME ZONE NOT NULL, "channel" TEXT, "topic" TEXT, "qos" INTEGER, '
    '"retain" BOOLEAN, "payload" TEXT, "payload_base64" TEXT, "stage" TEXT, "error" TEXT, "decoder" TEXT'
    ") CLUSTERED INTO 1 SHARDS WITH (number_of_replicas = '0-1')"
)
DEAD_LETTER_INSERT = (
    f"INSERT INTO {DEAD_LETTER_TABLE} "
    '("received", "channel", "topic", "qos", "retain", "payload", "payload_base64", "stage", "error", "decoder") '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def qualified(table) -> str:
    return f"{quote(table.schema or 'doc')}.{quote(table.table)}"


def insert_statement(table, idempotent: bool) -> str:
    columns = '"time", "tags", "fields"' + (f', "{ID_COLUMN}"' if idempotent else "")
    marks = "?, ?, ?" + (", ?" if idempotent else "")
    return f"INSERT INTO {qualified(table)} ({columns}) VALUES ({marks})"


def dead_letter_row(dead: DeadLetter) -> list:
    payload = dead.message.payload
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return [
        seconds_to_ns(dead.message.received) // 1_000_000,
        dead.channel,
        dead.message.topic,
        dead.message.qos,
        dead.message.retain,
        text,
        base64.b64encode(payload).decode("ascii"),
        dead.stage,
        dead.error,
        dead.decoder,
    ]


def _plain(value):
    """Values CrateDB's JSON endpoint takes (bytes as base64 text)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


@implementer(IStorage)
@attrs.define(eq=False)
class CrateStorage:
    name: str
    url: str
    reactor: object
    http: object = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    shards: int = 1
    replicas: str = "0"
    partition: str = "month"
    idempotent: bool = False
    ddl: dict = attrs.Factory(dict)
    timeout: float = 30.0
    _created: set = attrs.Factory(set)
    _ready: bool = False

    log = Logger()

    @classmethod
    def from_settings(cls, settings, reactor, ddl: dict) -> "CrateStorage":
        parts = urlsplit(settings.url.raw)
        scheme = "https" if parts.scheme == "crate+https" else "http"
        host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
        base = urlunsplit((scheme, f"{host}:{parts.port or 4200}", "", "", ""))
        return cls(
            settings.name,
            base,
            reactor,
            http=make_client(reactor, scheme == "https", settings.tls_ca),
            username=parts.username,
            password=parts.password,
            shards=settings.shards,
            replicas=settings.replicas,
            partition=settings.partition,
            idempotent=settings.idempotent,
            ddl=ddl,
            timeout=settings.timeout,
        )

    # -- IStorage -------------------------------------------------------------

    def start(self) -> Deferred:
        return succeed(None)

    def stop(self) -> Deferred:
        return succeed(None)

    def write(self, batch) -> Deferred:
        return Deferred.fromCoroutine(self._write(batch))

    # -- the protocol ---------------------------------------------------------

    async def _write(self, batch) -> None:
        progress = batch.progress
        dead = [d for i, d in enumerate(batch.dead_letters) if ("dead", i) not in progress]
        groups = {}
        for index, entry in enumerate(batch.entries):
            for position, record in enumerate(entry.records):
                if (index, position) in progress:
                    continue
                groups.setdefault(entry.table, []).append((index, position, entry, record))
        retry = 0
        for table, rows in groups.items():
            retry += await self._write_table(table, rows, progress, batch)
        extra = [d for d in batch.extra_dead if id(d) not in progress]
        if dead or extra:
            await self._write_dead_letters(dead + extra)
            progress.update(("dead", i) for i in range(len(batch.dead_letters)))
            progress.update(id(d) for d in extra)
        if retry:
            raise StorageError(f"storage {self.name}: CrateDB could not take {retry} row(s) now (shards unavailable); retrying")

    def _args(self, table, record) -> list:
        fields = _plain(record.fields)
        tags = _plain(record.tags)
        args = [record.time // 1_000_000, tags, fields]
        if self.idempotent:
            args.append(row_id(table, record.time, {"tags": tags, "fields": fields}))
        return args

    async def _write_table(self, table, rows, progress: set, batch) -> int:
        """Send one table's rows; return how many must be retried."""
        statement = insert_statement(table, self.idempotent)
        bulk = [self._args(table, record) for _, _, _, record in rows]
        try:
            answer = await self._sql(statement, bulk_args=bulk)
        except CrateError as exc:
            if exc.code in CREATE_CODES and table not in self._created:
                await self._create(table, rows[0][2])
                answer = await self._sql(statement, bulk_args=bulk)
            elif exc.code in RETRY_REQUEST_CODES or exc.status >= 500:
                raise StorageError(f"storage {self.name}: {exc}; retrying") from None
            elif exc.code in (4010, 4011):
                raise StorageError(f"storage {self.name}: {exc}; check the user and its privileges") from None
            else:
                self._reject(rows, str(exc), progress, batch)
                return 0
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(rows):
            raise StorageError(f"storage {self.name}: CrateDB answered a bulk insert without one result per row "
                               f"(CrateDB {MINIMUM_VERSION} or newer is needed)")
        retry = 0
        refused = []
        for (index, position, entry, record), result in zip(rows, results):
            count = result.get("rowcount") if isinstance(result, dict) else None
            error = result.get("error") if isinstance(result, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            if count == 1 or code == 4091:
                progress.add((index, position))
            elif code is not None and code not in RETRY_ROW_CODES:
                refused.append(((index, position, entry, record), f"CrateDB error {code}: {error.get('message', '')}"))
            else:
                retry += 1
        for row, reason in refused:
            self._reject([row], reason, progress, batch)
        return retry

    def _reject(self, rows, reason: str, progress: set, batch) -> None:
        seen = set()
        batch.refused_rows += len(rows)
        for index, position, entry, _ in rows:
            progress.add((index, position))
            if id(entry) in seen:
                continue
            seen.add(id(entry))
            batch.extra_dead.append(DeadLetter(entry.channel, entry.message, "store", reason, entry.decoder))
        self.log.warn(
            "storage {storage}: CrateDB refused {count} row(s), kept in the dead-letter table: {reason}",
            storage=self.name,
            count=len(rows),
            reason=reason,
        )

    async def _create(self, table, entry) -> None:
        template = self.ddl.get(entry.channel) or self.ddl.get("")
        statements = template.render(table, entry) if template is not None else [
            default_ddl(table, self.partition, self.shards, self.replicas, self.idempotent)
        ]
        for statement in statements:
            try:
                await self._sql(statement)
            except CrateError as exc:
                if exc.code != 4093:  # created meanwhile by someone else
                    raise StorageError(f"storage {self.name}: creating {table} failed: {exc}") from None
        self._created.add(table)
        self.log.info("storage {storage}: created table {table}", storage=self.name, table=str(table))

    async def _write_dead_letters(self, dead_letters: list) -> None:
        if not self._ready:
            try:
                await self._sql(DEAD_LETTER_DDL)
            except CrateError as exc:
                if exc.code != 4093:
                    raise StorageError(f"storage {self.name}: creating the dead-letter table failed: {exc}") from None
            self._ready = True
        try:
            answer = await self._sql(DEAD_LETTER_INSERT, bulk_args=[dead_letter_row(d) for d in dead_letters])
        except CrateError as exc:
            raise StorageError(f"storage {self.name}: writing dead letters failed: {exc}") from None
        failed = [r for r in answer.get("results", []) if not (isinstance(r, dict) and r.get("rowcount") == 1)]
        if failed:
            raise StorageError(f"storage {self.name}: CrateDB refused {len(failed)} dead letter(s); retrying")

    async def _sql(self, statement: str, args=None, bulk_args=None) -> dict:
        body = {"stmt": statement}
        if bulk_args is not None:
            body["bulk_args"] = bulk_args
        elif args is not None:
            body["args"] = args
        kwargs = {"headers": {"Content-Type": ["application/json"]}, "timeout": self.timeout}
        if self.username:
            kwargs["auth"] = (self.username, self.password or "")
        try:
            response = await self.http.post(f"{self.url}/_sql", data=json.dumps(body).encode("utf-8"), **kwargs)
            content = await treq.content(response)
        except Exception as exc:
            raise StorageError(f"storage {self.name}: CrateDB at {self.url} unreachable: {type(exc).__name__}: {exc}") from None
        try:
            answer = json.loads(content)
        except ValueError:
            raise StorageError(
                f"storage {self.name}: CrateDB answered HTTP {response.code} with something that is not JSON: "
                f"{content[:200]!r}") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            raise CrateError(int(error.get("code", response.code * 10)), str(error.get("message", "")), response.code)
        if response.code >= 400:
            raise CrateError(response.code * 10, f"HTTP {response.code}", response.code)
        return answer


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

"""
The keys of CrateDB tables that went into ``extra_fields``, kept in CrateDB.

`lorrygate.storage.crate_extra` moves a key that CrateDB would not index
into ``extra_fields``, and every later row of the table puts that key there
too, so that a field stays in one place. The writer kept those keys in
memory only: after a restart, or in a second gateway writing the same table
(MQTT shared subscriptions), a short value of a key moved for a long text
went into ``fields`` again, and a query had to look in both.

The keys are kept in ``"doc"."lorrygate_extra_keys"``, one row per table
and key (its primary key), written before the rows that moved them are sent
again. A writer reads that small table (only tables with ``extra_fields``
have rows) at its first write and every `READ_EVERY` seconds after, then
only the keys moved since its last read (less `CLOCKS_APART`, for the
clocks of other gateways): two gateways may differ for that long. A table
made anew (dropped meanwhile) forgets its keys.
"""

from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

from lorrygate.errors import StorageError
from lorrygate.storage.crate_extra import TEXT_LIMIT

KEYS_TABLE = '"doc"."lorrygate_extra_keys"'
KEYS_DDL = (
    f'CREATE TABLE IF NOT EXISTS {KEYS_TABLE} ("table_schema" TEXT, "table_name" TEXT, "key" TEXT, '
    '"moved" TIMESTAMP WITH TIME ZONE, PRIMARY KEY ("table_schema", "table_name", "key")) '
    "CLUSTERED INTO 1 SHARDS WITH (number_of_replicas = '0-1')"
)
KEYS_INSERT = (f'INSERT INTO {KEYS_TABLE} ("table_schema", "table_name", "key", "moved") VALUES (?, ?, ?, ?) '
               "ON CONFLICT DO NOTHING")
KEYS_REFRESH = f"REFRESH TABLE {KEYS_TABLE}"
KEYS_SELECT = f'SELECT "table_schema", "table_name", "key" FROM {KEYS_TABLE}'
KEYS_SINCE = f'{KEYS_SELECT} WHERE "moved" >= ?'
KEYS_FORGET = f'DELETE FROM {KEYS_TABLE} WHERE "table_schema" = ? AND "table_name" = ?'
#: seconds between two reads of the whole table (what other gateways moved)
READ_EVERY = 30.0
#: how far apart the clocks of gateways that write the same tables may be (a key's "moved" is its gateway's
#: time of day), in seconds
CLOCKS_APART = 300.0
#: codes of a table (or schema) that does not exist
_UNKNOWN = {4041, 4045}


def place(table) -> tuple:
    """A table's ``(schema, name)`` as the keys table holds it (``doc``: a table without a schema)."""
    return table.schema or "doc", table.table


@attrs.define(eq=False)
class MovedKeys:
    #: the writer's ``_sql(statement, args)`` and ``_bulk(statement, rows)`` coroutines, and the error they raise
    #: for CrateDB's answers (`lorrygate.storage.cratedb.CrateError`)
    sql: Callable
    bulk: Callable
    error: type[Exception]
    #: whether such an error passes (a cluster block, a node down): the write fails and is retried, as for rows
    passing: Callable[[Any], bool]
    #: the writer's clock, and the time of day (what "moved" holds), in seconds
    now: Callable
    wall: Callable
    storage: str
    #: as read and written: (schema, name) -> keys
    known: dict = attrs.Factory(dict)
    _read_at: float | None = None
    #: the time of day of the last read that was made, in epoch milliseconds (the next reads what was moved since)
    _read_ms: int | None = None
    _made: bool = False
    #: the keys table could not be read or written (no privilege, say): told once
    _told: bool = False

    log = Logger()

    def due(self) -> bool:
        return self._read_at is None or self.now() - self._read_at >= READ_EVERY

    async def read(self) -> None:
        """Read every table's moved keys (what this and other gateways moved), at first all of them."""
        started = int(self.wall() * 1000)
        try:
            await self.sql(KEYS_REFRESH)
            if self._read_ms is None:
                answer = await self.sql(KEYS_SELECT)
            else:
                answer = await self.sql(KEYS_SINCE, [self._read_ms - int(CLOCKS_APART * 1000)])
        except self.error as exc:
            self._failed("reading", exc)  # (raises where it passes: read again when the write is retried)
            self._read_at = self.now()
            return
        self._read_at = self.now()
        self._read_ms = started
        self._made = True
        for schema, name, key in answer.get("rows") or ():
            self.known.setdefault((schema, name), set()).add(key)

    async def remember(self, where: tuple, moved: set, moved_at_ms: int) -> None:
        """Keep the keys of ``moved`` not kept yet, before the rows that moved them are sent (where that
        fails for now, the write fails and is retried, and they are written then)."""
        have = self.known.setdefault(where, set())
        new = moved - have
        if not new:
            return
        rows = [[*where, key, moved_at_ms] for key in sorted(new)
                if len(key) * 4 <= TEXT_LIMIT or len(key.encode("utf-8", "surrogatepass")) <= TEXT_LIMIT]
        try:
            if rows and not self._made:
                await self.sql(KEYS_DDL)
                self._made = True
            if rows:
                await self.bulk(KEYS_INSERT, rows)
        except self.error as exc:
            self._failed("writing", exc)
        have.update(new)

    async def forget(self, where: tuple) -> None:
        """A table made anew: the keys moved for the one before it no longer hold."""
        if self.known.pop(where, None) is None:
            return
        try:
            await self.sql(KEYS_FORGET, list(where))
        except self.error as exc:
            self._failed("writing", exc)

    def _failed(self, doing: str, exc: Any) -> None:
        """An error that passes fails the write (retried); one that does not (no privilege on the keys table, a
        schema doc not there) leaves the keys in this process only, told once; a keys table not made yet holds
        no keys."""
        if self.passing(exc):
            raise StorageError(f"storage {self.storage}: {doing} {KEYS_TABLE} failed: {exc}; retrying") from None
        if getattr(exc, "code", None) in _UNKNOWN and doing == "reading":
            return
        if self._told:
            return
        self._told = True
        self.log.warn("storage {storage}: {doing} {table} failed ({error}): the keys moved into extra_fields are "
                      "kept in this process only, so after a restart, or in another gateway writing the same "
                      "tables, a short value of such a key may go into fields again. Grant the user DQL and DML "
                      "on {table} (and DDL on the schema doc to make it)", storage=self.storage, doing=doing,
                      table=KEYS_TABLE, error=str(exc))

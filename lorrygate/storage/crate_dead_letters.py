"""
``lorrygate dead-letters list|replay|purge`` on a CrateDB storage: its
``doc.lorrygate_dead_letter`` read, marked and purged through the writer's
own HTTP client (its nodes, user and TLS).

CrateDB's dead-letter table has no id column: a dead letter is named by its
``_id``, the random text CrateDB gives a row of a table without a primary
key. A search sees the rows of the last refresh only (once a second by
default), so each command refreshes the table first. The payload is read
from ``payload_base64``, which keeps binary payloads as they came; a dead
letter kept without its payload (one too large for a request) cannot be
replayed and is counted as still failing.

CrateDB has no transactions: a replay writes the rows first and marks their
dead letters ``replayed`` afterwards. A replay that stops in between writes
those rows again when it is run again, unless the storage has ``idempotent
= true`` (the row id is the same: CrateDB keeps one).
"""

import datetime
from typing import Any

from lorrygate.model import TableName
from lorrygate.storage.cratedb import DEAD_LETTER_TABLE, CrateError, CrateStorage, cut

NAME = TableName("doc", "lorrygate_dead_letter")
#: the columns a dead letter is read with, in the order of the SQL storages' rows (`dead_letters.COLUMNS`)
COLUMNS = ('"_id", "received", "channel", "topic", "qos", "retain", "payload_base64", "stage", "error", "decoder", '
           '"replayed", "content_type", "headers", "sent"')
#: the columns lorrygate added to the table after it was first made (a table an earlier lorrygate made gets them)
ADDED_COLUMNS = (("replayed", "TIMESTAMP WITH TIME ZONE"), ("content_type", "TEXT"), ("headers", "TEXT"),
                 ("sent", "TIMESTAMP WITH TIME ZONE"))
#: dead letters read, marked or deleted in one request
CHUNK = 1000


def _time(milliseconds):
    """CrateDB's timestamp (epoch milliseconds over HTTP) as a UTC datetime; None stays None."""
    if milliseconds is None:
        return None
    return datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.UTC)


def _payload(text):
    import base64

    return None if text is None else base64.b64decode(text)


class CrateTable:
    """The dead-letter table of one CrateDB storage, for the admin commands: the methods of
    `lorrygate.storage.dead_letters.Table`, each a coroutine."""

    kind = "crate"
    mark = "?"

    def __init__(self, settings, reactor, crate: Any = None):
        self.crate = crate if crate is not None else CrateStorage.from_settings(settings, reactor, {})

    @staticmethod
    def iso(seconds: float) -> int:
        """A filter's time as CrateDB takes it: epoch milliseconds."""
        return round(seconds * 1000)

    async def exists(self) -> bool:
        return bool(await self.crate.columns(NAME))

    async def prepare(self) -> None:
        """The columns of `ADDED_COLUMNS`, and a refresh so that the dead letters written up to now are found."""
        for column, kind in ADDED_COLUMNS:
            if column not in await self.crate.columns(NAME):
                try:
                    await self.crate.query(f'ALTER TABLE {DEAD_LETTER_TABLE} ADD COLUMN "{column}" {kind}')
                except CrateError:
                    if column not in await self.crate.columns(NAME):  # (else: another command added it meanwhile)
                        raise
        await self.refresh()

    async def refresh(self) -> None:
        await self.crate.query(f"REFRESH TABLE {DEAD_LETTER_TABLE}")

    async def pages(self, filters, replayed: bool | None = None):
        """The matching dead letters, oldest first, `CHUNK` a page, as the SQL storages' rows: ``(id, received,
        channel, topic, qos, retain, payload, stage, error, decoder, replayed, content_type, headers, sent)``;
        the payload is None when it was not kept. Their ids are read first (CrateDB's are no order to page
        by), the rows a page at a time."""
        if filters.ids is not None:
            raise ValueError("a range of ids is for the integer ids of SQLite and PostgreSQL")
        clauses, params = filters.where(self.mark, self.iso)
        if replayed is not None:
            clauses.append('"replayed" IS NOT NULL' if replayed else '"replayed" IS NULL')
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        answer = await self.crate.query(f'SELECT "_id", "topic" FROM {DEAD_LETTER_TABLE}{where} '
                                        'ORDER BY "received"', params)
        ids = [row[0] for row in answer.get("rows") or () if filters.matches(row[1] or "")]
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            answer = await self.crate.query(f'SELECT {COLUMNS} FROM {DEAD_LETTER_TABLE} WHERE "_id" = ANY(?)', [part])
            found = {row[0]: row for row in answer.get("rows") or ()}
            rows = []
            for key in part:
                row = found.get(key)
                if row is not None:  # (else purged meanwhile)
                    rows.append((row[0], _time(row[1]), *row[2:6], _payload(row[6]), *row[7:10], _time(row[10]),
                                 row[11], row[12], _time(row[13])))
            if rows:
                yield rows

    async def mark_replayed(self, ids: list, now: float) -> None:
        for start in range(0, len(ids), CHUNK):
            await self.crate.query(f'UPDATE {DEAD_LETTER_TABLE} SET "replayed" = ? WHERE "_id" = ANY(?)',
                                   [self.iso(now), ids[start:start + CHUNK]])
        await self.refresh()

    async def fail_again(self, refused: list) -> None:
        """Replayed dead letters whose rows CrateDB refused again: ``(id, DeadLetter)``, the new stage and
        reason (not marked replayed)."""
        for start in range(0, len(refused), CHUNK):
            await self.crate.query_many(f'UPDATE {DEAD_LETTER_TABLE} SET "stage" = ?, "error" = ? WHERE "_id" = ?',
                                        [[dead.stage, cut(dead.error), _id] for _id, dead in refused[start:start + CHUNK]])

    async def delete(self, ids: list) -> None:
        for start in range(0, len(ids), CHUNK):
            await self.crate.query(f'DELETE FROM {DEAD_LETTER_TABLE} WHERE "_id" = ANY(?)', [ids[start:start + CHUNK]])
        await self.refresh()

    def close(self) -> None:
        pass

"""
What a storage commits at once: rows for tables and dead letters, each tied to
the message it came from.
"""

from typing import Any

import attrs

from lorrygate.model import Message, TableName


@attrs.frozen(slots=True)
class DeadLetter:
    """A message that could not be routed or decoded, kept with the reason."""

    channel: str
    message: Message
    #: where it failed: ``topology``, ``decode``, ``transform`` or ``store``
    stage: str
    error: str
    #: the decoder (or chain) that failed, if any
    decoder: str = ""
    #: what is kept of the message's payload when not all of it: the bad lines of a payload of lines whose
    #: good lines were stored (`lorrygate.decoding.lines`)
    part: bytes | None = None

    @property
    def payload(self) -> bytes:
        """The payload to keep: the part that failed, else the message's."""
        return self.message.payload if self.part is None else self.part


@attrs.define(slots=True)  # not frozen: one per message on the hot path (see `lorrygate.model.Message`)
class Entry:
    """The rows of one message for one table (None: a message acknowledged without rows)."""

    table: TableName | None
    records: list
    channel: str
    message: Message
    decoder: str = ""
    address: Any = None


@attrs.define
class Batch:
    """Entries and dead letters to commit in one go."""

    entries: list = attrs.Factory(list)
    dead_letters: list = attrs.Factory(list)
    rows: int = 0
    #: what a storage already committed of this batch, for a retry after a
    #: partial failure (keys are the storage's own)
    progress: set = attrs.Factory(set)
    #: rows the storage refused and sent to the dead-letter table
    extra_dead: list = attrs.Factory(list)
    #: for a batch read back from the spool: when it was spooled
    spooled_at: float | None = None
    #: how many rows the storage refused (their messages are in extra_dead)
    refused_rows: int = 0
    #: Deferreds that fire once the batch is committed or spooled (`Batcher.barrier`)
    waiters: list = attrs.Factory(list)
    #: whether a message of the batch has a ``position`` (a files source's)
    positioned: bool = False
    #: a replay's (`lorrygate.storage.dead_letters`): id() of each message of the batch -> the id of the dead
    #: letter it came from. Its dead letter is marked replayed in the transaction that writes its rows; a
    #: message whose rows the storage refuses again keeps its dead letter, with the new stage and reason, and
    #: is not a new one
    replaying: dict = attrs.Factory(dict)
    #: tables the storage put this batch's rows into, set by a storage that knows (0: not said); the
    #: batcher tells a wide write by it (`lorrygate.storage.batcher`)
    tables: int = 0

    def add(self, entry: Entry) -> None:
        # (`Batcher.add` writes this out for the hot path: a change here goes there too)
        self.entries.append(entry)
        self.rows += len(entry.records)
        if entry.message.position is not None:
            self.positioned = True

    def add_dead_letter(self, dead_letter: DeadLetter) -> None:
        self.dead_letters.append(dead_letter)
        self.rows += 1
        if dead_letter.message.position is not None:
            self.positioned = True

    def refuse(self, entry: Entry, position: int, error: str) -> DeadLetter:
        """The record at ``position`` of ``entry`` is one the storage cannot take (a sink's JSON cannot hold it):
        its message is a dead letter, once, also when the batch is written again."""
        key = ("refused", id(entry), position)
        if key not in self.progress:
            self.progress.add(key)
            self.refused_rows += 1
        for dead in self.extra_dead:
            if dead.message is entry.message:
                return dead
        dead = DeadLetter(entry.channel, entry.message, "store", error, entry.decoder)
        self.extra_dead.append(dead)
        return dead

    def refused_again(self) -> list:
        """The storage's refusals of a replay's messages: ``(dead letter id, DeadLetter)``, one a message."""
        seen: dict = {}
        for dead in self.extra_dead:
            key = self.replaying.get(id(dead.message))
            if key is not None:
                seen.setdefault(key, dead)
        return list(seen.items())

    def __len__(self) -> int:
        return self.rows

    @property
    def empty(self) -> bool:
        """Nothing to write and nothing to acknowledge (a message without rows,
        such as an ignored one, still waits in a non-empty batch)."""
        return not self.entries and not self.dead_letters

    def messages(self):
        """Every message of the batch, for acknowledging them once committed."""
        for entry in self.entries:
            yield entry.message
        for dead_letter in self.dead_letters:
            yield dead_letter.message


class Collector:
    """Stands in for a batcher where a router runs offline (replays, backfills): what it made."""

    def __init__(self):
        self.entries: list = []
        self.dead: list = []

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def add_dead_letter(self, dead_letter: DeadLetter) -> None:
        self.dead.append(dead_letter)

    def add_together(self, entries: list, dead_letter: DeadLetter) -> None:
        self.entries.extend(entries)
        self.dead.append(dead_letter)

    def batch(self) -> Batch:
        """Everything collected as one batch."""
        batch = Batch()
        for entry in self.entries:
            batch.add(entry)
        for dead in self.dead:
            batch.add_dead_letter(dead)
        return batch

"""
An in-memory storage: for tests and for library users who want the rows as
Python objects. Each write completes when the test (or caller) says so, so
commit timing can be driven step by step.
"""

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage


@implementer(IStorage)
@attrs.define(eq=False)
class MemoryStorage:
    name: str = "memory"
    #: when true, write() returns a Deferred that `complete()` or `fail()` fires
    manual: bool = False
    tables: dict = attrs.Factory(dict)
    dead_letters: list = attrs.Factory(list)
    writes: list = attrs.Factory(list)
    _pending: list = attrs.Factory(list)

    def start(self) -> Deferred:
        return succeed(None)

    def stop(self) -> Deferred:
        return succeed(None)

    def write(self, batch) -> Deferred:
        self.writes.append(batch)
        if not self.manual:
            self._store(batch)
            return succeed(None)
        d = Deferred()
        self._pending.append((batch, d))
        return d

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def complete(self) -> None:
        """Commit the oldest pending write."""
        batch, d = self._pending.pop(0)
        self._store(batch)
        d.callback(None)

    def fail(self, reason: str = "database unavailable") -> None:
        """Fail the oldest pending write; nothing of it is stored."""
        _, d = self._pending.pop(0)
        d.errback(StorageError(reason))

    def _store(self, batch) -> None:
        tables = set()
        for entry in batch.entries:
            if entry.records:
                self.tables.setdefault(entry.table, []).extend(entry.records)
                tables.add(entry.table)
        batch.tables = len(tables)
        self.dead_letters.extend(batch.dead_letters)

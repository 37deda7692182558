"""
A storage's ``retention`` (SQLite): rows whose time is older are deleted,
five minutes after the start (an edge box powered a while at a time gets its
runs too) and every hour after, so that its database stops growing at what
the retention holds.

A run lists the database's tables (every table with a ``time`` column but
lorrygate's own: the dead letters have ``lorrygate dead-letters purge``) on
the writer thread, then deletes their old rows `CHUNK` rows a transaction,
one transaction a job of the writer: the writes queued meanwhile run between
the chunks, so that a first run over a year of rows holds none of them back
for long. A run that fails (the database away, locked) is logged and tried
again at the next hour; what it deleted stays deleted.
"""

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from lorrygate.clock import time_of_day
from lorrygate.decoding.timestamps import seconds_to_ns, to_iso

#: rows one transaction deletes at most
CHUNK = 5000
#: seconds between runs, and from the start to the first
INTERVAL = 3600.0
FIRST = 300.0


@attrs.define(eq=False)
class Retention:
    #: the `lorrygate.storage.sqlstorage.SqlStorage`
    storage: Any
    #: rows older than this many seconds are deleted
    seconds: float
    interval: float = INTERVAL
    first: float = FIRST
    #: rows deleted since the start
    expired: int = 0
    #: the time of day of the last run that completed, and the error of the last that failed ("": none)
    last_run: float | None = None
    last_error: str = ""
    _call: Any = None
    _stopped: bool = False

    log = Logger()

    def start(self) -> None:
        self._stopped = False
        if self.seconds and self._call is None:
            self._call = self.storage.reactor.callLater(self.first, self._run)

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def details(self) -> dict:
        return {"retention": self.seconds, "expired": self.expired, "expired_at": self.last_run,
                "expiry_error": self.last_error}

    def _run(self) -> None:
        self._call = None
        d = Deferred.fromCoroutine(self.run())
        d.addErrback(self._failed)
        d.addBoth(self._again)

    def _again(self, _) -> None:
        if not self._stopped and self._call is None:
            self._call = self.storage.reactor.callLater(self.interval, self._run)

    def _failed(self, failure) -> None:
        self.last_error = failure.getErrorMessage()
        self.log.warn("storage {storage}: deleting the rows older than the retention ({days:g} days) failed: "
                      "{error}; tried again in {minutes:g} min", storage=self.storage.name,
                      days=self.seconds / 86400, error=self.last_error, minutes=self.interval / 60)

    async def run(self) -> int:
        """One run; returns the rows it deleted."""
        storage = self.storage
        now = time_of_day(storage.reactor)()
        cutoff = to_iso(seconds_to_ns(now - self.seconds))
        tables = await storage.call_writer(storage.dialect.expiry_tables)
        deleted = touched = 0
        for table in tables:
            count = CHUNK
            before = deleted
            while count == CHUNK and not self._stopped:
                count = await storage.call_writer(storage.expire_rows, table, cutoff, CHUNK)
                deleted += count
            touched += deleted > before
            if self._stopped:
                break
        self.expired += deleted
        self.last_run, self.last_error = now, ""
        if deleted:
            self.log.info("storage {storage}: deleted {rows} rows older than {cutoff} (retention {days:g} days) "
                          "from {tables} tables", storage=storage.name, rows=deleted, cutoff=cutoff,
                          days=self.seconds / 86400, tables=touched)
        return deleted

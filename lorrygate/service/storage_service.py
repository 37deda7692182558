"""
One storage as a Twisted service: the backend (its connection and writer
thread), the batcher in front of it (every timer) and its disk spool (its
thread). Stopping it cancels every timer, waits for the write in flight and
closes the backend; nothing of it runs afterwards.
"""

import os
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from lorrygate.errors import StorageError
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.spool import Spool

if TYPE_CHECKING:
    from lorrygate.config.settings import StorageSettings



def channel_merges(storage) -> dict:
    """The channels' own ``merge`` of a storage, nanoseconds by channel name."""
    return {channel: round(seconds * 1e9) for channel, seconds in storage.channel_merge}


def make_backend(storage, reactor, ddl: dict):
    """The backend of a storage's settings."""
    if storage.kind == "sqlite":
        from lorrygate.storage.sqlite import SQLiteStorage

        backend = SQLiteStorage(storage.name, storage.path, reactor, storage.synchronous, storage.idempotent, ddl,
                                storage.merge)
        backend.flatten_depth, backend.max_columns = storage.flatten_depth, storage.max_columns
        backend.max_tables = storage.max_tables
        backend.layout = storage.layout
        backend.merges = channel_merges(storage)
        backend.time_index = storage.time_index
        backend.retention = storage.retention
        return backend
    if storage.kind == "postgresql":
        from lorrygate.storage.postgresql import PostgresStorage

        backend = PostgresStorage(storage.name, storage.url.raw, reactor, storage.idempotent, ddl, storage.merge)
        backend.flatten_depth, backend.max_columns = storage.flatten_depth, storage.max_columns
        backend.max_tables = storage.max_tables
        backend.layout = storage.layout
        backend.merges = channel_merges(storage)
        return backend
    if storage.kind == "file":
        from lorrygate.storage.sinks import TextSink

        return TextSink(storage.name, storage.path, reactor, storage.text_format)
    if storage.kind == "app":
        from lorrygate.storage.sinks import AppSink

        return AppSink(storage.name, storage.callback)
    if storage.kind == "prometheus":
        from lorrygate.storage.prometheus_sink import PrometheusSink

        return PrometheusSink(storage.name, storage.url.raw, reactor, storage.max_series)
    if storage.kind == "websocket":
        from lorrygate.storage.websocket_sink import WebSocketSink

        return WebSocketSink(storage.name, storage.url.raw, reactor)
    if storage.kind == "tributary":
        from lorrygate.storage.tributary_sink import TributarySink

        return TributarySink(storage.name, storage.callback, reactor)
    if storage.kind == "kafka":
        from lorrygate.storage.kafka_sink import KafkaSink

        return KafkaSink(storage.name, storage.broker, reactor, storage.topic, storage.payload, storage.dead_letter_topic)
    if storage.kind == "mqtt":
        from lorrygate.storage.mqtt_sink import MqttSink

        return MqttSink(storage.name, storage.broker, reactor, storage.topic, storage.payload, storage.dead_letter_topic)
    from lorrygate.storage.cratedb import CrateStorage

    return CrateStorage.from_settings(storage, reactor, ddl)


def storage_ddl(settings, name: str) -> dict:
    """The DDL templates of a storage, by channel name ("" for every channel)."""
    storage = settings.storages[name]
    ddl = {"": storage.ddl} if storage.ddl is not None else {}
    ddl.update((c.name, c.ddl) for c in settings.channels if name in c.storages and c.ddl is not None)
    return ddl


@attrs.define(eq=False)
class StorageService(Service):
    settings: "StorageSettings"
    backend: Any
    batcher: Batcher
    reactor: Any
    #: spool file I/O on the spool's own thread (False: in the caller's, for tests on a Clock)
    threaded: bool = True
    #: how long a stop waits for the write in flight before it interrupts it (`_stop`)
    timeout: float = 15.0
    _interrupting: Any = None

    log = Logger()

    @classmethod
    def from_settings(cls, settings, name: str, reactor) -> "StorageService":
        storage = settings.storages[name]
        backend = make_backend(storage, reactor, storage_ddl(settings, name))
        spool = None
        if storage.spool:
            spool = Spool(os.path.join(settings.gateway.data_dir, "spool", name), reactor, storage.spool_max,
                          storage.kind, storage.url.target)
        batcher = Batcher(backend, reactor, max_rows=storage.batch_size, linger=storage.linger,
                          max_pending=storage.max_pending, spool=spool)
        service = cls(storage, backend, batcher, reactor)
        service.setName(name)
        return service

    @property
    def spool(self):
        return self.batcher.spool

    def startService(self) -> None:
        raise TypeError("start a StorageService with `await service.start()`")

    async def start(self) -> None:
        """Open the spool and the backend; raise StorageError when it cannot be used.

        A database server that is down at start is an outage like any
        other: the storage starts, and its batches wait in the spool; so
        does an SQLite database whose disk is full or whose file another
        program holds locked (a state that passes), not a damaged file.
        """
        Service.startService(self)
        name = self.settings.name
        spool = self.spool
        try:
            if spool is not None:
                found = await spool.start(self.threaded)
                if found:
                    self.log.info("storage {storage}: {count} spooled batch(es) from before; draining them",
                                  storage=name, count=found)
            await self.backend.start()
        except StorageError as exc:
            if (self.settings.kind in ("postgresql", "crate") or exc.passing) and not _spool_refused(exc):
                self.log.error("{error}; starting anyway: batches wait (spool, backpressure) until it answers",
                               error=str(exc))
                self.batcher.storage_failed(exc)
                return
            await self.stopService()
            raise
        except BaseException:
            await self.stopService()
            raise
        self.batcher._drain_spool()

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        stopped = self.batcher.stop()
        interrupt = getattr(self.backend, "interrupt", None)
        self._interrupting = None
        if interrupt is not None:
            self._interrupting = self.reactor.callLater(self.timeout, self._interrupt, interrupt, True)
        try:
            await stopped
        finally:
            if self._interrupting is not None and self._interrupting.active():
                self._interrupting.cancel()
            self._interrupting = None
        try:
            await self.backend.stop()
        finally:
            if self.spool is not None:
                self.spool.stop()


    def _interrupt(self, interrupt, first: bool) -> None:
        """A write still in flight ``timeout`` seconds into the stop: a stop waited for it however long it took
        (a write that created thousands of SQLite tables took minutes before their columns went in at once),
        and a write that committed after the channels had disconnected was delivered again. Interrupted, it
        rolls back, and its messages, never acknowledged, come again from the broker."""
        if first:
            self.log.warn(
                "storage {storage}: the write in flight did not end within {timeout} s of the stop; interrupting it "
                "(rolled back, its messages stay unacknowledged and come again)", storage=self.name,
                timeout=self.timeout)
        interrupt()
        # an interrupt reaches only the statement running at that moment (none, while the writer runs Python
        # between two): once a second until the write ends
        self._interrupting = self.reactor.callLater(1.0, self._interrupt, interrupt, False)


def _spool_refused(exc) -> bool:
    from lorrygate.storage.spool import SpoolMismatch

    return isinstance(exc, SpoolMismatch)

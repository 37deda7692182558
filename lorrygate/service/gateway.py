"""
The gateway: storages, batchers, sources and channel routers, wired from
validated settings, started and stopped in the order that loses nothing.

Start: open every storage (a storage that cannot open stops start-up), then
connect the sources. Stop: pause every source, commit everything buffered
(acknowledging it), send DISCONNECT, close the storages.
"""

import attrs
from twisted.internet.defer import DeferredList, TimeoutError as DeferredTimeout
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

import os
from zoneinfo import ZoneInfo

from lorrygate.decoding import DecoderChain
from lorrygate.errors import StorageError
from lorrygate.service.channel import ChannelRouter
from lorrygate.sources.mqtt import MQTTSource
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.spool import Spool
from lorrygate.storage.postgresql import PostgresStorage
from lorrygate.storage.sqlite import SQLiteStorage


def make_storage(storage, reactor, ddl: dict):
    """The backend of a storage's settings."""
    if storage.kind == "sqlite":
        return SQLiteStorage(storage.name, storage.path, reactor, storage.synchronous, storage.idempotent, ddl)
    if storage.kind == "postgresql":
        return PostgresStorage(storage.name, storage.url.raw, reactor, storage.idempotent, ddl)
    if storage.kind == "file":
        from lorrygate.storage.sinks import TextSink

        return TextSink(storage.name, storage.path, reactor, storage.text_format)
    if storage.kind == "app":
        from lorrygate.storage.sinks import AppSink

        return AppSink(storage.name, storage.callback)
    from lorrygate.storage.cratedb import CrateStorage

    return CrateStorage.from_settings(storage, reactor, ddl)


@attrs.define(eq=False)
class Gateway:
    settings: object
    reactor: object
    storages: dict = attrs.Factory(dict)
    batchers: dict = attrs.Factory(dict)
    sources: list = attrs.Factory(list)
    routers: list = attrs.Factory(list)
    decoders: list = attrs.Factory(list)
    _control: object = None
    shutdown_timeout: float = 15.0
    _stats_loop: LoopingCall | None = None

    log = Logger()

    @classmethod
    def from_settings(cls, settings, reactor) -> "Gateway":
        gateway = cls(settings, reactor)
        for name, storage in settings.storages.items():
            ddl = {"": storage.ddl} if storage.ddl is not None else {}
            ddl.update((c.name, c.ddl) for c in settings.channels if name in c.storages and c.ddl is not None)
            backend = make_storage(storage, reactor, ddl)
            gateway.storages[name] = backend
            spool = None
            if storage.spool:
                directory = os.path.join(settings.gateway.data_dir, "spool", name)
                spool = Spool(directory, reactor, storage.spool_max)
            gateway.batchers[name] = Batcher(
                backend,
                reactor,
                max_rows=storage.batch_size,
                linger=storage.linger,
                max_pending=storage.max_pending,
                spool=spool,
            )
        for channel in settings.channels:
            batcher = gateway.batchers[channel.storage]
            timezone = ZoneInfo(channel.timezone)
            decoders = tuple(settings.decoders[name](timezone, reactor) for name in channel.decoders)
            gateway.decoders.extend(decoders)
            router = ChannelRouter(
                channel,
                settings.strategies[channel.strategy](),
                DecoderChain(decoders),
                batcher,
                reactor,
            )
            source = MQTTSource(
                channel.name,
                settings.brokers[channel.source],
                channel.topics,
                channel.qos,
                router,
                reactor,
                reactor,
                retained=channel.retained,
            )
            router.tee = tuple(gateway.batchers[name] for name in channel.tee)
            for each in (batcher,) + router.tee:
                each.attach(source)
            router.publish = source.publish
            gateway.routers.append(router)
            gateway.sources.append(source)
        return gateway

    async def start(self) -> None:
        for decoder in self.decoders:
            if hasattr(decoder, "start"):
                decoder.start()
        for name, storage in self.storages.items():
            spool = self.batchers[name].spool
            if spool is not None:
                found = await spool.start()
                if found:
                    self.log.info("storage {storage}: {count} spooled batch(es) from before; draining them",
                                  storage=name, count=found)
            try:
                await storage.start()
            except StorageError as exc:
                if self.settings.storages[name].kind == "sqlite":
                    raise
                # A database server that is down at start is an outage like any other.
                self.log.error("{error}; starting anyway: batches wait (spool, backpressure) until it answers",
                               error=str(exc))
                self.batchers[name].storage_failed(exc)
                continue
            self.batchers[name]._drain_spool()
        for source in self.sources:
            source.startService()
        await self._listen_control()
        self._stats_loop = LoopingCall(self.log_stats)
        self._stats_loop.clock = self.reactor
        self._stats_loop.start(self.settings.gateway.stats_interval, now=False)
        self.log.info(
            "lorrygate is running: {channels} channel(s) from {source}",
            channels=len(self.routers),
            source=self.settings.source,
        )

    async def _listen_control(self) -> None:
        description = self.settings.gateway.control_endpoint
        if description is None:
            return
        from twisted.internet.endpoints import serverFromString

        from lorrygate.service.control import control_site

        if description.startswith("unix:"):
            path = description[5:]
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            description = f"unix:{path}:lockfile=1:mode=600"
        try:
            self._control = await serverFromString(self.reactor, description).listen(control_site(self))
        except Exception as exc:
            self.log.error(
                "control endpoint {endpoint} unavailable ({error}); lorrygate status and flush will not reach "
                "this gateway",
                endpoint=description,
                error=str(exc),
            )

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.stopListening()
            self._control = None
        if self._stats_loop is not None and self._stats_loop.running:
            self._stats_loop.stop()
        for source in self.sources:
            source.pauseReading()
        settled = [router.settle() for router in self.routers]
        for d in settled:
            d.addTimeout(self.shutdown_timeout, self.reactor)
        await DeferredList(settled, consumeErrors=True)
        drains = [batcher.drain() for batcher in self.batchers.values()]
        for d in drains:
            d.addTimeout(self.shutdown_timeout, self.reactor)
        for success, result in await DeferredList(drains, consumeErrors=True):
            if not success and result.check(DeferredTimeout):
                self.log.error(
                    "stopping: storage did not commit within {timeout} s; the messages not "
                    "committed stay unacknowledged and the broker delivers them again",
                    timeout=self.shutdown_timeout,
                )
        await DeferredList([source.stopService() for source in self.sources], consumeErrors=True)
        await DeferredList([storage.stop() for storage in self.storages.values()], consumeErrors=True)
        for decoder in self.decoders:
            if hasattr(decoder, "stop"):
                decoder.stop()
        for batcher in self.batchers.values():
            if batcher.spool is not None:
                batcher.spool.stop()
        self.log_stats(final=True)

    def log_stats(self, final: bool = False) -> None:
        for router in self.routers:
            batcher = self.batchers[router.channel.storage]
            self.log.info(
                "channel {channel}: {received} received, {routed} routed, {unmatched} unmatched topics, "
                "{undecodable} undecodable payloads, {collisions} table name collisions, {error_reports} "
                "error reports; storage {storage}: {stored} rows and {dead} dead "
                "letters committed, {pending} pending, {failures} failed writes, {spooled} batches in the spool",
                event="stats",
                final=final,
                channel=router.channel.name,
                storage=router.channel.storage,
                stored=batcher.stats.rows,
                dead=batcher.stats.dead_letters,
                pending=batcher.pending,
                failures=batcher.stats.failures,
                spooled=batcher.spool.batches if batcher.spool is not None else 0,
                **router.stats.asdict(),
            )

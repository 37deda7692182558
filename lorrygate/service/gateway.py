"""
The gateway: a Twisted service tree built from validated settings.

    Gateway (MultiService)
      StorageService per storage: backend, batcher (every timer), spool
      ChannelService per channel: MQTT source and router

Start: lock the data directory, open every storage (a storage that cannot be
used stops start-up; a database server that is down is an outage), lock the
channels' client ids, then connect. The gateway is *ready* once every channel
has subscribed (`Gateway.when_ready`); only then does it say "running" (and
``READY=1`` to systemd).

Stop: every channel stops reading, commits what it delivered, sends its acks
and then DISCONNECT; then every storage cancels its timers, waits for its
write in flight and closes. Nothing of the gateway runs afterwards.

Reload (`Gateway.reconfigure`) changes only what changed, the way buildbot
reconfigures: a channel whose settings, broker, storages, strategy and
decoders are the same keeps its connection and session; a changed one is
stopped (commit, ack, disconnect) and started again; a storage whose
settings changed is replaced with the channels that use it. A new part
that fails to start is stopped again, the old parts are started again, and
the error is raised: the running configuration stays.
"""

import os
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lorrygate import time_limit
from lorrygate.errors import LorrygateError
from lorrygate.service import systemd
from lorrygate.service.channel_service import ChannelService
from lorrygate.service.locks import InstanceLock
from lorrygate.service.storage_service import StorageService, make_backend, storage_ddl

__all__ = ["Gateway", "make_backend"]


class ReloadRefused(LorrygateError):
    """A new configuration that cannot replace the running one."""


def storage_spec(settings, name: str):
    """What makes a storage the same across a reload (None: not configured)."""
    storage = settings.storages.get(name)
    if storage is None:
        return None
    ddl = storage_ddl(settings, name)
    return (storage, tuple(sorted((key, template.text) for key, template in ddl.items())), settings.gateway.data_dir,
            tuple(settings.hooks.get(hook) for hook in storage.hooks),  # (with a python hook's code)
            settings.fingerprints.get(f"tls:storage:{name}"))  # (its TLS files' content: renewed, read again)


def channel_spec(settings, channel):
    """What makes a channel the same across a reload, its storages aside."""
    if channel is None:
        return None
    fingerprints = settings.fingerprints
    transform = channel.transform
    if transform is not None:
        hook = transform.hook
        transform = (transform.rename, transform.drop, tuple(c[:2] for c in transform.convert), transform.tags,
                     hook and (getattr(hook, "__module__", ""), getattr(hook, "__qualname__", repr(hook))),
                     transform.metadata, transform.source)
    return (
        attrs.evolve(channel, transform=None),
        transform,
        settings.brokers.get(channel.source) or settings.sources.get(channel.source),
        fingerprints.get(f"strategy:{channel.strategy}"),
        tuple(fingerprints.get(f"decoder:{name}") for name in channel.decoders),
        fingerprints.get(f"code:{channel.name}"),
        # the content of its broker's or source's TLS files: a certificate renewed on disk is read again
        fingerprints.get(f"tls:broker:{channel.source}") or fingerprints.get(f"tls:source:{channel.source}"),
    )


@attrs.define(eq=False)
class Gateway(MultiService):
    settings: Any
    reactor: Any
    shutdown_timeout: float = 15.0
    #: ``f(settings, name, reactor) -> StorageService`` (tests inject other backends)
    storage_factory: Any = StorageService.from_settings
    storage_services: dict = attrs.Factory(dict)
    channel_services: dict = attrs.Factory(dict)
    _lock: InstanceLock | None = None
    _control: Any = None
    _stats_loop: LoopingCall | None = None
    _watchdog: LoopingCall | None = None
    _ready: Deferred | None = None
    #: why the last reload could not start ("" after one that did), for status
    reload_error: str = ""
    #: reloads applied and refused (counted by the supervisor)
    reloads: int = 0
    failed_reloads: int = 0
    #: a `lorrygate.service.metrics.Metrics` while ``metrics`` is configured
    metrics: Any = None
    _metrics_port: Any = None
    #: hook name -> `lorrygate.hooks.runner.HookRunner`
    hook_runners: dict = attrs.Factory(dict)
    _hook_state: Any = None

    log = Logger()

    def __attrs_post_init__(self):
        MultiService.__init__(self)

    @classmethod
    def from_settings(cls, settings, reactor) -> "Gateway":
        return cls(settings, reactor)

    # -- what status, stats and tests look at --------------------------------------

    @property
    def storages(self) -> dict:
        return {name: service.backend for name, service in self.storage_services.items()}

    @property
    def batchers(self) -> dict:
        return {name: service.batcher for name, service in self.storage_services.items()}

    @property
    def sources(self) -> list:
        return [service.source for service in self.channel_services.values()]

    @property
    def routers(self) -> list:
        return [service.router for service in self.channel_services.values()]

    # -- start -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storages and connect the channels; raise when something cannot start.

        Returns once the sources are connecting; `when_ready` fires once they
        have subscribed.
        """
        Service.startService(self)
        time_limit.configure(self.settings.gateway.code_time_limit)
        for warning in self.settings.warnings:
            self.log.warn("{warning}", warning=warning, event="config_warning")
        self._lock = InstanceLock(self.settings.gateway.data_dir, self.settings.source)
        try:
            self._lock.acquire_data_dir()
            await self._start_parts(self.settings, list(self.settings.storages), [c.name for c in self.settings.channels])
        except BaseException:
            await self.stop()
            raise
        await self._listen_control()
        await self._start_metrics()
        self._start_loops()
        self._ready = self.when_ready()
        self._ready.addCallback(self._running)

    def startService(self) -> None:
        raise TypeError("start a Gateway with `await gateway.start()`")

    async def _start_parts(self, settings, storages, channels) -> list:
        """Start the named storages, then the named channels; return the channel services."""
        started_hooks = self._sync_hooks(settings)
        for name in storages:
            service = self.storage_factory(settings, name, self.reactor)
            service.timeout = self.shutdown_timeout
            await service.start()
            self._adopt(self.storage_services, name, service)
            if self.metrics is not None:
                self.metrics.watch(name, service.batcher)
            self._track_samples(settings.storages[name], service.batcher)
        for runner in started_hooks:
            runner.start([name for name, storage in settings.storages.items() if runner.name in storage.hooks])
        batchers = {name: service.batcher for name, service in self.storage_services.items()}
        by_name = {channel.name: channel for channel in settings.channels}
        built = [ChannelService.from_settings(settings, by_name[name], batchers, self.reactor, self.shutdown_timeout)
                 for name in channels]
        others = [s.source for n, s in self.channel_services.items() if n not in channels]
        assert self._lock is not None, "parts start after the data directory is locked"
        self._lock.acquire_clients(others + [service.source for service in built])
        for service in built:
            self._adopt(self.channel_services, service.channel.name, service)
            service.startService()
        return built

    def _adopt(self, registry: dict, name: str, service) -> None:
        registry[name] = service
        service.parent = self
        self.services.append(service)

    def _drop(self, registry: dict, name: str):
        service = registry.pop(name)
        service.parent = None
        self.services.remove(service)
        return service

    def when_ready(self, channels=None) -> Deferred:
        """Fires once every channel (or those named) has subscribed."""
        names = list(self.channel_services) if channels is None else channels
        return gatherResults([self.channel_services[name].when_subscribed() for name in names], consumeErrors=True)

    def _running(self, _) -> None:
        self.log.info(
            "lorrygate is running: {channels} channel(s) from {source}, every subscription acknowledged",
            channels=len(self.channel_services),
            source=self.settings.source,
        )
        systemd.notify("READY=1\nSTATUS=running")

    def _start_loops(self) -> None:
        self._stats_loop = LoopingCall(self.log_stats)
        self._stats_loop.clock = self.reactor
        self._stats_loop.start(self.settings.gateway.stats_interval, now=False)
        self._watchdog = systemd.start_watchdog(self.reactor)

    def _stop_loops(self) -> None:
        for loop in (self._stats_loop, self._watchdog):
            if loop is not None and loop.running:
                loop.stop()
        self._stats_loop = self._watchdog = None

    async def _listen_control(self) -> None:
        description = self.settings.gateway.control_endpoint
        if description is None:
            return
        from twisted.internet.endpoints import serverFromString

        from lorrygate.service.control import control_site

        if description.startswith("unix:"):
            path = description[5:]
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
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

    def _sync_hooks(self, settings) -> list:
        """Make the hook runners match the settings; return the new ones."""
        from lorrygate.hooks.runner import make_runner

        started = []
        for name in list(self.hook_runners):
            if settings.hooks.get(name) != self.hook_runners[name].settings:
                self.hook_runners.pop(name).stop()
        for runner in self.hook_runners.values():
            if hasattr(runner.hook, "storages"):
                runner.hook.storages = settings.storages  # a grafana hook describes the storages as they are now
        for name, hook in settings.hooks.items():
            if name not in self.hook_runners and any(name in s.hooks for s in settings.storages.values()):
                if self._hook_state is None:
                    from lorrygate.hooks.samples import HookState

                    self._hook_state = HookState(os.path.join(settings.gateway.data_dir, "hooks.sqlite"))
                self.hook_runners[name] = runner = make_runner(hook, settings, self.reactor, self._hook_state)
                started.append(runner)
        return started

    def _track_samples(self, storage, batcher) -> None:
        if not storage.hooks:
            return
        from lorrygate.hooks.samples import SampleTracker

        tracker = SampleTracker(storage.name, storage.kind, self._hook_state,
                                [self.hook_runners[name] for name in storage.hooks], depth=storage.flatten_depth)
        batcher.observers.append(tracker.observe)

    def _stop_hooks(self) -> None:
        for runner in self.hook_runners.values():
            runner.stop()
        self.hook_runners.clear()
        if self._hook_state is not None:
            self._hook_state.close()
            self._hook_state = None

    async def _start_metrics(self) -> None:
        address = self.settings.gateway.metrics
        if address is None:
            return
        from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

        from lorrygate.service.metrics import Metrics, metrics_site

        self.metrics = Metrics(self)
        for name, batcher in self.batchers.items():
            self.metrics.watch(name, batcher)
        host, port = address
        endpoint = (TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint)(self.reactor, port, interface=host)
        try:
            self._metrics_port = await endpoint.listen(metrics_site(self, self.metrics))
        except Exception as exc:
            self.log.error("metrics endpoint {host}:{port} unavailable ({error}); Prometheus cannot scrape this "
                           "gateway", host=host, port=port, error=str(exc))
            return
        self.log.info("metrics on http://{host}:{port}/metrics", host=host if ":" not in host else f"[{host}]",
                      port=self._metrics_port.getHost().port)

    async def _stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.unwatch_all()
            self.metrics = None
        if self._metrics_port is not None:
            port, self._metrics_port = self._metrics_port, None
            await port.stopListening()

    async def _stop_control(self) -> None:
        if self._control is not None:
            control, self._control = self._control, None
            await control.stopListening()

    # -- stop --------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every channel (commit, ack, disconnect), then every storage."""
        systemd.notify("STOPPING=1")
        await self._stop_control()
        await self._stop_metrics()
        self._stop_loops()
        if self._ready is not None:
            ready, self._ready = self._ready, None
            ready.addErrback(lambda _: None)  # (stopped before every channel subscribed: not running, no error)
            ready.cancel()
        channels = list(self.channel_services.values())
        await self._stop_parts(list(self.channel_services), list(self.storage_services))
        self._stop_hooks()
        Service.stopService(self)
        if self._lock is not None:
            self._lock.release()
        self.log_stats(final=True, channels=channels)

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self.stop())

    async def _stop_parts(self, channels, storages) -> None:
        services = [self._drop(self.channel_services, name) for name in channels]
        await DeferredList([service.stopService() for service in services], consumeErrors=True)
        services = [self._drop(self.storage_services, name) for name in storages]
        if self.metrics is not None:
            for name in storages:
                self.metrics.unwatch(name)
        for success, result in await DeferredList([service.stopService() for service in services], consumeErrors=True):
            if not success:
                self.log.error("stopping a storage failed: {error}", error=result.getErrorMessage())

    # -- reload ------------------------------------------------------------------

    async def reconfigure(self, settings) -> list:
        """Switch to new settings, changing only what changed; return the names
        of the channels (re)started. On failure the old configuration runs
        again and the error is raised."""
        old = self.settings
        if os.path.abspath(settings.gateway.data_dir) != os.path.abspath(old.gateway.data_dir):
            raise ReloadRefused(
                f"data_dir changed from {old.gateway.data_dir} to {settings.gateway.data_dir}: its spool and lock "
                "move with it, so restart the gateway for that")
        names = set(old.storages) | set(settings.storages)
        changed = {name for name in names if storage_spec(old, name) != storage_spec(settings, name)}
        new_channels = {channel.name: channel for channel in settings.channels}
        stop_channels = [
            channel.name for channel in old.channels
            if channel_spec(old, channel) != channel_spec(settings, new_channels.get(channel.name))
            or any(name in changed for name in channel.storages)
            or (channel.name in new_channels and any(n in changed for n in new_channels[channel.name].storages))
        ]
        stop_storages = [name for name in old.storages if name in changed]
        start_storages = [name for name in settings.storages if name in changed]
        start_channels = [channel.name for channel in settings.channels
                          if channel.name not in self.channel_services or channel.name in stop_channels]
        await self._stop_parts(stop_channels, stop_storages)
        try:
            await self._start_parts(settings, start_storages, start_channels)
        except BaseException as exc:
            self.log.error("reload: the new configuration failed to start ({error}); going back to the running one",
                           error=str(exc))
            await self._stop_parts([n for n in start_channels if n in self.channel_services],
                                   [n for n in start_storages if n in self.storage_services])
            await self._start_parts(old, stop_storages, [n for n in stop_channels])
            self.reload_error = str(exc)
            raise
        self.settings = settings
        self.reload_error = ""
        time_limit.configure(settings.gateway.code_time_limit)
        if settings.gateway != old.gateway:
            await self._stop_control()
            self._stop_loops()
            await self._listen_control()
            self._start_loops()
        if settings.gateway.metrics != old.gateway.metrics or settings.gateway.metrics_token != old.gateway.metrics_token:
            await self._stop_metrics()
            await self._start_metrics()
        self.log.info(
            "reload: {changed} channel(s) and {storages} storage(s) restarted, {kept} channel(s) kept their session",
            changed=len(start_channels), storages=len(start_storages),
            kept=len(self.channel_services) - len(start_channels),
        )
        return start_channels

    # -- stats -------------------------------------------------------------------

    def log_stats(self, final: bool = False, channels=None) -> None:
        """One line per channel (its own counters) and one per storage (its own totals)."""
        channels = list(self.channel_services.values()) if channels is None else channels
        for service in channels:
            router = service.router
            router.summarize()
            counts = router.stats.asdict()
            dead = counts.pop("dead_letters")
            self.log.info(
                "channel {channel}: {received} received, {routed} routed{but_for}, {ignored} ignored, "
                "{empty} empty, {unmatched} unmatched topics, {undecodable} undecodable payloads, {collisions} table "
                "name collisions, {error_reports} error reports",
                event="stats", final=final, channel=router.channel.name, storage=router.channel.storage,
                dead_letters_by_stage=dead, but_for=f" ({counts['partly']} but for bad lines)" if counts["partly"] else "",
                **counts,
            )
        storages = {name: service.batcher for name, service in self.storage_services.items()}
        for service in channels:  # the storages of stopped channels, for the final lines
            for batcher in service.batchers:
                storages.setdefault(batcher.storage.name, batcher)
        for name, batcher in storages.items():
            stats = batcher.stats
            held = batcher.storage.details().get("held_already", 0) if hasattr(batcher.storage, "details") else 0
            self.log.info(
                "storage {storage}: {stored} rows and {dead} dead letters committed, {pending} pending, "
                "{failures} failed writes, {spooled} batches in the spool{paused}{again}{failing}",
                event="storage_stats", final=final, storage=name, stored=stats.rows, dead=stats.dead_letters,
                pending=batcher.pending, failures=stats.failures,
                spooled=batcher.spool.batches if batcher.spool is not None else 0, held_already=held,
                pauses=stats.pauses,
                # (a storage that cannot keep up pauses without end: its backlog's summary never comes, this does)
                paused=f", reading paused {stats.pauses} times since the start" if stats.pauses else "",
                again=f", {held} messages read again and left out (held already)" if held else "",
                failing=f"; FAILING: every row refused: {stats.failing}" if stats.failing else "",
            )

"""
One hook's queue: samples wait here, off the data path, and run one at a
time. A run that fails (or takes longer than the hook's ``timeout``) is
logged, counted and tried again after a backoff of its own (1 s doubling up
to ``retry_max``), behind the samples that waited meanwhile, so one table
that always fails holds no other back. Once several tables have failed in a
row (the server is down), the whole queue pauses with the same backoff, so
that a fleet of new tables does not hammer a server that is away. A sample that arrives for a
table already waiting is merged into it. Nothing here can delay a commit:
the tracker only hands samples over.
"""

from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger


@attrs.define
class HookStats:
    runs: int = 0
    failures: int = 0
    last_error: str = ""
    #: consecutive failures (0 after a run that worked)
    failing: int = 0


@attrs.define(eq=False)
class HookRunner:
    name: str
    #: has ``run(sample) -> Deferred | None``
    hook: Any
    clock: Any
    state: Any
    timeout: float = 30.0
    retry_initial: float = 1.0
    retry_max: float = 300.0
    stats: HookStats = attrs.Factory(HookStats)
    #: the `HookSettings` it was made from (a reload compares them)
    settings: Any = None
    _queue: OrderedDict = attrs.Factory(OrderedDict)
    _running: Any = None
    _timer: Any = None
    #: (storage, table) -> (failed attempts, clock time before which it does not run again)
    _backoff: dict = attrs.Factory(dict)
    #: the whole queue waits until then after several tables failed in a row
    _paused_until: float = 0.0
    #: the tables that failed since the last run that worked
    _failed_keys: set = attrs.Factory(set)
    _stopped: bool = False

    log = Logger()

    @property
    def pending(self) -> int:
        return len(self._queue) + (1 if self._running is not None else 0)

    def start(self, storages) -> None:
        """Queue what the hook has not seen of these storages' tables (from before a restart)."""
        for sample in self.state.pending(self.name, list(storages)):
            self.submit(sample)

    def submit(self, sample) -> None:
        key = (sample.storage, sample.table)
        waiting = self._queue.get(key)
        if waiting is not None:
            sample = attrs.evolve(sample, new=waiting.new + tuple(n for n in sample.new if n not in waiting.new),
                                  first=waiting.first or sample.first)
        self._queue[key] = sample
        self._next()

    def _delay(self, attempts: int) -> float:
        return min(self.retry_initial * 2 ** (attempts - 1), self.retry_max)

    def _next(self) -> None:
        if self._stopped or self._running is not None or not self._queue:
            return
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        now = self.clock.seconds()
        wake = self._paused_until
        if wake <= now:
            for key in self._queue:
                not_before = self._backoff.get(key, (0, 0.0))[1]
                if not_before <= now:
                    break
                wake = not_before if wake <= now else min(wake, not_before)
            else:
                self._timer = self.clock.callLater(wake - now, self._retry)
                return
        else:
            self._timer = self.clock.callLater(wake - now, self._retry)
            return
        sample = self._queue.pop(key)
        d = maybeDeferred(self.hook.run, sample)
        d.addTimeout(self.timeout, self.clock)
        self._running = d
        d.addCallbacks(self._ran, self._failed, callbackArgs=(sample,), errbackArgs=(sample,))

    def _ran(self, _, sample) -> None:
        self._running = None
        self.state.done(self.name, sample)
        self.stats.runs += 1
        self.stats.failing = 0
        self._paused_until = 0.0
        self._failed_keys.clear()
        self._backoff.pop((sample.storage, sample.table), None)
        self.log.info("hook {hook}: ran for {table} of storage {storage} ({what})", hook=self.name,
                      table=str(sample.table), storage=sample.storage,
                      what="first sample" if sample.first else f"new fields {', '.join(sample.new)}")
        self._next()

    def _failed(self, failure, sample) -> None:
        self._running = None
        if self._stopped:
            return  # cancelled by stop: it runs again after the restart
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        error = (f"no answer within timeout = {self.timeout} s" if failure.check(DeferredTimeout)
                 else failure.getErrorMessage() or failure.type.__name__)
        self.stats.failures += 1
        self.stats.failing += 1
        self.stats.last_error = error
        key = (sample.storage, sample.table)
        now = self.clock.seconds()
        attempts = self._backoff.get(key, (0, 0.0))[0] + 1
        delay = self._delay(attempts)
        self._backoff[key] = (attempts, now + delay)
        self._failed_keys.add(key)
        if len(self._failed_keys) > 1:
            self._paused_until = now + self._delay(len(self._failed_keys) - 1)
        if key in self._queue:
            newer = self._queue.pop(key)
            sample = attrs.evolve(newer, new=sample.new + tuple(n for n in newer.new if n not in sample.new),
                                  first=sample.first or newer.first)
        self._queue[key] = sample  # behind the others: one table that always fails holds no other back
        self.log.error("hook {hook}: failed for {table} of storage {storage}: {error}; next try in {delay:.0f} s "
                       "({pending} waiting)", hook=self.name, table=str(sample.table), storage=sample.storage,
                       error=error, delay=delay, pending=len(self._queue))
        self._next()

    def _retry(self) -> None:
        self._timer = None
        self._next()

    def stop(self) -> None:
        """Stop running: what waits (and a run cut short) stays in the state file for the next start."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._running is not None:
            self._running.cancel()
        self._queue.clear()

    def status(self) -> dict:
        return {"name": self.name, "runs": self.stats.runs, "failures": self.stats.failures,
                "pending": self.pending, "failing": self.stats.failing, "last_error": self.stats.last_error}


def make_runner(hook, settings, reactor, state) -> HookRunner:
    """The runner of a ``[hook:NAME]`` section."""
    kind: Any
    if hook.type == "python":
        from lorrygate.hooks.kinds import PythonHook

        kind = PythonHook(hook.function, reactor)
    elif hook.type == "command":
        from lorrygate.hooks.kinds import CommandHook

        kind = CommandHook(hook.command, reactor)
    else:
        from lorrygate.hooks.grafana import GrafanaHook

        kind = GrafanaHook(hook.url, settings.storages, reactor, token=hook.token.reveal() if hook.token else None,
                           folder=hook.folder, datasource_url=hook.datasource_url, timeout=hook.timeout)
    return HookRunner(hook.name, kind, reactor, state, timeout=hook.timeout, retry_max=hook.retry_max, settings=hook)

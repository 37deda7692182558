"""
Who holds a source paused.

Several consumers may each want a source to stop reading for their own
reason: every storage batcher at its ``max_pending`` bound, a full spool,
the gateway while it stops. Each holds its own pause; the source reads again
only when nobody holds one, so one consumer can never resume a source that
another still needs paused (a fast storage of a tee resuming a source the
slow one holds).
"""

import time
from typing import Any

import attrs


@attrs.define(eq=False)
class Pauses:
    """The set of holders of a source's pause.

    :param on_pause: called when the first holder takes a pause.
    :param on_resume: called when the last holder lets go.
    """

    on_pause: Any
    on_resume: Any
    _holders: dict = attrs.Factory(dict)

    @property
    def paused(self) -> bool:
        return bool(self._holders)

    @property
    def holders(self) -> tuple:
        """Names of the holders, for status."""
        return tuple(self._holders.values())

    def hold(self, holder) -> None:
        if id(holder) in self._holders:
            return
        first = not self._holders
        self._holders[id(holder)] = getattr(holder, "pause_name", None) or str(holder)
        if first:
            self.on_pause()

    def release(self, holder) -> None:
        if self._holders.pop(id(holder), None) is not None and not self._holders:
            self.on_resume()


@attrs.define(eq=False)
class SourcePlumbing:
    """What every source does alike: pauses by holder, and ``when_subscribed``; the fields every source has.

    A source class sets ``self._pauses`` (a `Pauses`) in ``__attrs_post_init__``; `_subscribed` marks it
    ready. The fields are keyword-only: each source's own fields come in its order before them.
    """

    #: the client id it gives its broker (or its consumer name), where it has one
    client_id: str = attrs.field(default="", kw_only=True)
    #: who holds it paused (`Pauses`), made by the source
    _pauses: Any = attrs.field(default=None, init=False)
    #: whether it subscribed (or listens, or reads) since it started
    subscribed: bool = attrs.field(default=False, init=False)
    _subscribe_waiters: list = attrs.field(factory=list, init=False)
    #: why it last failed to connect or read, for the status (`last_error`)
    _last_error: str = attrs.field(default="", init=False)
    #: when ``last_error`` was set (``time.monotonic``): the status says how long ago, so that the error of a
    #: connection lost hours ago is not read as the state of one that is up
    last_error_at: float | None = attrs.field(default=None, init=False)
    #: retained messages it left out (``retained = new``)
    retained_skipped: int = attrs.field(default=0, init=False)

    @property
    def last_error(self) -> str:
        """Why it last failed to connect or read, for the status; setting it times it (a property, not attrs'
        ``on_setattr``, which would give the class a ``__setattr__`` of Python that every attribute set pays)."""
        return self._last_error

    @last_error.setter
    def last_error(self, error: str) -> None:
        self._last_error = error
        if error:
            self.last_error_at = time.monotonic()

    @property
    def paused(self) -> bool:
        return self._pauses.paused

    @property
    def paused_by(self) -> tuple:
        return self._pauses.holders

    def pause(self, holder) -> None:
        self._pauses.hold(holder)

    def unread(self) -> int | None:
        """Bytes the peer sent that wait unread, or None when the source cannot tell (the default)."""
        return None

    def resume(self, holder) -> None:
        self._pauses.release(holder)

    def when_subscribed(self):
        """Fires once the source is ready: subscribed, bound, or reading."""
        from twisted.internet.defer import Deferred, succeed

        if self.subscribed:
            return succeed(None)
        d = Deferred(lambda d: self._subscribe_waiters.remove(d) if d in self._subscribe_waiters else None)
        self._subscribe_waiters.append(d)
        return d

    def _subscribed(self) -> None:
        self.subscribed = True
        waiters, self._subscribe_waiters = self._subscribe_waiters, []
        for waiter in waiters:
            waiter.callback(None)


class SourceHolder:
    """What holds its sources paused for a reason of its own: a storage's batcher at its
    ``max_pending``, a channel's dataflow with too much waiting.

    The class has ``_sources`` (list) and ``_paused`` (bool) fields and a ``pause_name``.
    """

    _sources: list
    _paused: bool

    def attach(self, source) -> None:
        """Pause and resume ``source`` with this holder's backpressure."""
        self._sources.append(source)
        if self._paused:
            source.pause(self)

    def detach(self, source) -> None:
        """Forget a source (its channel stopped); let go of its pause."""
        if source in self._sources:
            self._sources.remove(source)
            source.resume(self)

    def _hold_sources(self, paused: bool) -> bool:
        """Pause (or resume) every attached source; False if that was so already."""
        if paused == self._paused:
            return False
        self._paused = paused
        for source in self._sources:
            if paused:
                source.pause(self)
            else:
                source.resume(self)
        return True


#: seconds without a pause after which a backlog's pauses are over (`PauseLog`)
QUIET = 10.0


@attrs.define(eq=False)
class PauseLog:
    """The log lines of one holder's pauses. Draining a backlog pauses and resumes reading many times a second
    (a drain of 200,000 queued messages into SQLite: ~13 pauses a second, each at the ``max_pending`` bound),
    and an info line each made the log of every catch-up a flood. So the first pause of a backlog and its
    resume are info lines; the pauses after them, debug lines; and once reading has not paused for `QUIET`
    seconds (or the holder stops), one info line says how many pauses the backlog took, over how long, and
    the most that waited."""

    #: who pauses, as the lines name it ("storage db")
    what: str
    clock: Any
    log: Any
    quiet: float = QUIET
    _since: float | None = None
    #: when reading last resumed (None: paused now)
    _resumed: float | None = None
    _pauses: int = 0
    _most: int = 0
    _ended: Any = None

    def changed(self, paused: bool, pending: int) -> Any:
        """Note a pause (or resume) with ``pending`` waiting; returns the log method for its line."""
        if paused:
            self._cancel()
            self._resumed = None
            if self._since is None:
                self._since, self._pauses, self._most = self.clock.seconds(), 1, pending
                return self.log.info
            self._pauses += 1
            self._most = max(self._most, pending)
            return self.log.debug
        if self._since is None:
            return self.log.info  # (no pause of this holder began it: a resume of its own, said as it is)
        self._cancel()
        self._resumed = self.clock.seconds()
        self._ended = self.clock.callLater(self.quiet, self.end)
        return self.log.info if self._pauses == 1 else self.log.debug

    def end(self) -> None:
        """The backlog is over (reading went on for `quiet` seconds, or the holder stops): its summary, when it
        paused more than once."""
        self._cancel()
        if self._since is None:
            return
        if self._pauses > 1:
            until = self.clock.seconds() if self._resumed is None else self._resumed
            self.log.info(
                "{what}: a backlog paused reading {pauses} times in {seconds:.1f} s (at most {most} waiting); the "
                "pauses after the first were logged at debug level", what=self.what, pauses=self._pauses,
                seconds=until - self._since, most=self._most, event="backlog_paused")
        self._since = None

    def _cancel(self) -> None:
        ended, self._ended = self._ended, None
        if ended is not None and ended.active():
            ended.cancel()

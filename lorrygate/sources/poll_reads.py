"""
What a poll reads, bounded in size: an HTTP answer's body and a command's
standard output.

A body or an output larger than the source's ``max_line`` is hashed as it
passes and never held: the poll yields ``Answer(b"", (size, sha256, limit))``,
a dead letter by reference, as an MQTT payload over the broker's
``max_payload`` is. Neither has a time limit of its own: the poll's Deferred
has one (``timeout``), and cancelling it stops what is read, an HTTP body by
aborting its connection (`IBodyProducer.stopProducing`), a command by
``SIGTERM`` and `KILL_AFTER` seconds later ``SIGKILL``, to its process
group: what it started is stopped with it. A command that ended while
something it started holds its output is taken as it ended
(`lorrygate.processes.LINGER`).
"""

import hashlib
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from lorrygate import processes

#: seconds between a timed-out command's SIGTERM and its SIGKILL
KILL_AFTER = processes.KILL_AFTER
#: the end of a failed command's standard error kept for its message
ERROR_TAIL = 4096


@attrs.frozen
class Answer:
    """A poll's payload, or (``payload`` empty) ``oversize``: ``(size, sha256 hex, the limit's name)``."""

    payload: bytes
    oversize: tuple | None = None


@attrs.define
class _Bounded:
    """Bytes kept up to ``limit``; beyond it, only counted and hashed."""

    limit: int
    size: int = 0
    _chunks: list | None = attrs.Factory(list)
    _digest: Any = None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self._chunks is not None and self.size <= self.limit:
            self._chunks.append(data)
            return
        if self._digest is None:
            self._digest = hashlib.sha256(b"".join(self._chunks or ()))
            self._chunks = None
        self._digest.update(data)

    def answer(self) -> Answer:
        if self._chunks is not None:
            return Answer(b"".join(self._chunks))
        return Answer(b"", (self.size, self._digest.hexdigest(), "max_line"))


class _Body(Protocol):
    """Collects an HTTP body into ``done`` (an `Answer`); the Deferred's cancel aborts the connection."""

    def __init__(self, limit: int):
        self.kept = _Bounded(limit)
        self.done: Deferred = Deferred(self._abort)

    def _abort(self, _) -> None:
        # (an IBodyProtocol's transport is an IPushProducer: stopProducing aborts the connection)
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.kept.add(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:  # cancelled
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.kept.answer())
        else:
            self.done.errback(reason)


def read_body(response, limit: int) -> Deferred:
    """The body of a treq/Agent ``response`` as an `Answer`."""
    body = _Body(limit)
    response.deliverBody(body)
    return body.done


class CommandFailed(Exception):
    """A command that exited with a status other than 0, or was ended by a signal."""


class _Output(processes.Command):
    def __init__(self, reactor, name: str, limit: int):
        self.reactor = reactor
        self.name = name
        self.kept = _Bounded(limit)
        self.error = b""
        self.done: Deferred = Deferred(self._stop)

    def outReceived(self, data: bytes) -> None:
        self.kept.add(data)

    def errReceived(self, data: bytes) -> None:
        self.error = (self.error + data)[-ERROR_TAIL:]

    def ended(self, reason) -> None:
        if self.done.called:  # cancelled (timed out, or the gateway stops)
            return
        code, signal = reason.value.exitCode, reason.value.signal
        if code == 0:
            self.done.callback(self.kept.answer())
            return
        lines = self.error.decode("utf-8", "replace").strip().splitlines()
        why = f"exited with {code}" if signal is None else f"was ended by signal {signal}"
        self.done.errback(CommandFailed(f"{self.name} {why}" + (f": {lines[-1]}" if lines else "")))

    def _stop(self, _) -> None:
        """The poll was cancelled: the command and what it started are told to stop, then made to (what it
        started may ignore SIGTERM, and outlive the command); its pipes are closed."""
        processes.stop(self, "TERM")
        self.reactor.callLater(KILL_AFTER, processes.stop, self, "KILL")
        if self.transport is not None:
            self.transport.loseConnection()


def run_command(reactor, words: list, env: dict, limit: int) -> Deferred:
    """Run ``words`` (``words[0]`` looked up in PATH) in a process group of its own (`lorrygate.processes`); its
    standard output as an `Answer`, or `CommandFailed`."""
    output = _Output(reactor, words[0], limit)
    processes.spawn(reactor, output, words, env)
    return output.done

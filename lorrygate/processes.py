"""
The commands lorrygate runs (a poll's ``command``, a ``command`` hook), each in a process group of its own
(util-linux's ``setsid``), so that a stop reaches what a command started as well: ``sh -c 'curl ... | jq'``
timed out had its shell ended and its ``curl`` left running, one more with each poll while an endpoint hangs;
``sh -c 'helper & echo ...'`` left ``helper`` holding the output pipe, and the poll waited for it until its
timeout every time. Such a helper still held the poll until its timeout, and the poll failed although its
output was whole: a command that ended is now taken as it ended once its pipes have stayed open `LINGER`
seconds after, and what holds them is stopped with its group (Go's ``exec.Cmd.WaitDelay`` does the same).

A group's id is its leader's pid: once the leader is reaped and the group has no member left, the id may be
a new process's some day. `stop` signals a group within seconds of its command's end (the SIGKILL that
follows a SIGTERM), long before the kernel's pids come round again.
"""

import os
import shutil
import signal
from typing import Any

from twisted.internet.protocol import ProcessProtocol

#: util-linux's ``setsid``, which runs a program as the leader of a session and a process group of its own (in
#: the same process: its pid is the group's id); None on a system without it (the command alone is signalled)
SETSID = shutil.which("setsid")
#: seconds between a SIGTERM to a command's group and the SIGKILL that follows it
KILL_AFTER = 5.0
#: seconds a command's pipes may stay open after it ended (something it started in the background holds them)
#: before its end is taken as it was and its group stopped
LINGER = 2.0


class Command(ProcessProtocol):
    """The protocol of a command `spawn` runs: it keeps the command's pid from the start. The reactor may reap a
    command that ended at once before ``spawnProcess`` returns (under load, ``sh -c 'helper & echo'`` does), and
    its transport's pid is None then; what it started still needs stopping."""

    pid: int | None = None
    #: whether the command leads a process group of its own (`SETSID`)
    grouped: bool = False
    #: the reactor that runs it (`spawn` sets it), for the wait after its end (`LINGER`)
    clock: Any = None
    _lingering = None
    _told: bool = False

    def makeConnection(self, transport) -> None:
        self.pid = transport.pid
        super().makeConnection(transport)

    def ended(self, reason) -> None:
        """The command's end (a subclass's answer to it), once: when it ended and its pipes closed, or `LINGER`
        seconds after it ended where something it started holds them."""

    def processExited(self, reason) -> None:
        if self.clock is not None and not self._told:
            self._lingering = self.clock.callLater(LINGER, self._outlived, reason)

    def processEnded(self, reason) -> None:
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        self._tell(reason)

    def _outlived(self, reason) -> None:
        """Its pipes are still open: the end is told, and what holds them is stopped with the group."""
        stop(self, "TERM")
        self.clock.callLater(KILL_AFTER, stop, self, "KILL")
        if self.transport is not None:
            self.transport.loseConnection()
        self._tell(reason)

    def _tell(self, reason) -> None:
        if not self._told:
            self._told = True
            self.ended(reason)


def spawn(reactor, protocol: Command, words: list, env: dict) -> None:
    """``reactor.spawnProcess`` of ``words`` (``words[0]`` looked up in ``env``'s PATH) in a process group of its
    own. A program that is not found is spawned as it is, for the error that says why."""
    protocol.clock = reactor if hasattr(reactor, "callLater") else None
    program = shutil.which(words[0], path=env.get("PATH", os.defpath))
    if SETSID is None or program is None:
        reactor.spawnProcess(protocol, words[0], words, env=env)
        return
    protocol.grouped = True
    reactor.spawnProcess(protocol, SETSID, [SETSID, program, *words[1:]], env=env)


def stop(protocol: Command, name: str) -> None:
    """Send the signal ``name`` (``TERM``, ``KILL``) to the process group of a command `spawn` started, and so to
    what it started that is still there, though the command itself ended; to the command alone where it has no
    group of its own. Nothing for a group that is gone, or a command without a group that ended."""
    from twisted.internet.error import ProcessExitedAlready

    if protocol.grouped and protocol.pid is not None:
        try:
            os.killpg(protocol.pid, getattr(signal, f"SIG{name}"))
            return
        except ProcessLookupError:
            pass  # (gone; or setsid had not made the group yet: the command alone)
        except PermissionError:
            return
    if protocol.transport is None:
        return
    try:
        protocol.transport.signalProcess(name)
    except (ProcessExitedAlready, OSError):
        pass

"""
The commands lorrygate runs (a poll's ``command``, a ``command`` hook), each in a process group of its own
(util-linux's ``setsid``), so that a stop reaches what a command started as well: ``sh -c 'curl ... | jq'``
timed out had its shell ended and its ``curl`` left running, one more with each poll while an endpoint hangs;
``sh -c 'helper & echo ...'`` left ``helper`` holding the output pipe, and the poll waited for it until its
timeout every time.

A group's id is its leader's pid: once the leader is reaped and the group has no member left, the id may be
a new process's some day. `stop` signals a group within seconds of its command's end (the SIGKILL that
follows a SIGTERM), long before the kernel's pids come round again.
"""

import os
import shutil
import signal

from twisted.internet.protocol import ProcessProtocol

#: util-linux's ``setsid``, which runs a program as the leader of a session and a process group of its own (in
#: the same process: its pid is the group's id); None on a system without it (the command alone is signalled)
SETSID = shutil.which("setsid")


class Command(ProcessProtocol):
    """The protocol of a command `spawn` runs: it keeps the command's pid from the start. The reactor may reap a
    command that ended at once before ``spawnProcess`` returns (under load, ``sh -c 'helper & echo'`` does), and
    its transport's pid is None then; what it started still needs stopping."""

    pid: int | None = None
    #: whether the command leads a process group of its own (`SETSID`)
    grouped: bool = False

    def makeConnection(self, transport) -> None:
        self.pid = transport.pid
        super().makeConnection(transport)


def spawn(reactor, protocol: Command, words: list, env: dict) -> None:
    """``reactor.spawnProcess`` of ``words`` (``words[0]`` looked up in ``env``'s PATH) in a process group of its
    own. A program that is not found is spawned as it is, for the error that says why."""
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

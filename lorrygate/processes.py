"""
The commands lorrygate runs (a poll's ``command``, a ``command`` hook), each in a process group of its own
(util-linux's ``setsid``), so that a stop reaches what a command started as well: ``sh -c 'curl ... | jq'``
timed out had its shell ended and its ``curl`` left running, one more with each poll while an endpoint hangs;
``sh -c 'helper & echo ...'`` left ``helper`` holding the output pipe, and the poll waited for it until its
timeout every time.
"""

import os
import shutil
import signal

#: util-linux's ``setsid``, which runs a program as the leader of a session and a process group of its own (in
#: the same process: its pid is the group's id); None on a system without it (the command alone is signalled)
SETSID = shutil.which("setsid")


def spawn(reactor, protocol, words: list, env: dict):
    """``reactor.spawnProcess`` of ``words`` (``words[0]`` looked up in ``env``'s PATH) in a process group of its
    own; its transport. A program that is not found is spawned as it is, for the error that says why."""
    program = shutil.which(words[0], path=env.get("PATH", os.defpath))
    if SETSID is None or program is None:
        return reactor.spawnProcess(protocol, words[0], words, env=env)
    transport = reactor.spawnProcess(protocol, SETSID, [SETSID, program, *words[1:]], env=env)
    transport.group = transport.pid
    return transport


def stop(transport, name: str) -> None:
    """Send the signal ``name`` (``TERM``, ``KILL``) to the process group of a command `spawn` started, and so to
    what it started that is still there, though the command itself ended; to the command alone where it has no
    group of its own. Nothing for a group that is gone."""
    from twisted.internet.error import ProcessExitedAlready

    group = getattr(transport, "group", None)
    if group is not None:
        try:
            os.killpg(group, getattr(signal, f"SIG{name}"))
            return
        except ProcessLookupError:
            pass  # (gone; or setsid had not made the group yet: the command alone)
        except PermissionError:
            return
    try:
        transport.signalProcess(name)
    except (ProcessExitedAlready, OSError):
        pass

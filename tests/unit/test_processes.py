"""Commands run in a process group of their own: a stop reaches what they started (a poll's command timed out,
a command hook cancelled), on the real reactor with real processes."""

import gc
import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher

from lorrygate import processes
from lorrygate.hooks.kinds import CommandHook
from lorrygate.hooks.samples import FirstSample
from lorrygate.model import TableName
from lorrygate.sources.poll_reads import run_command

pytestmark = pytest.mark.skipif(processes.SETSID is None, reason="no setsid on this system")


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"  # (a zombie: gone but for its status)
    except FileNotFoundError:
        return True


async def started(path) -> int:
    """The pid a command wrote to ``path``, once it is there."""
    while not (path.exists() and path.read_text().endswith("\n")):
        await sleep(0.01)
    return int(path.read_text())


def sleep(seconds: float):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest_twisted.ensureDeferred
async def test_a_cancelled_poll_command_stops_what_it_started(tmp_path):
    """``sh -c 'sleep 600 & echo ...; wait'``: the shell waits for its ``sleep``, so the poll waits for its
    timeout; cancelled, the ``sleep`` is stopped too (it was left running, one a poll)."""
    mark = tmp_path / "pid"
    d = run_command(reactor, ["sh", "-c", f"sleep 600 & echo $! > {mark}; echo '{{}}'; wait"], dict(os.environ),
                    1000)
    pid = await started(mark)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
    deadline = time.monotonic() + 30
    while not gone(pid):
        assert time.monotonic() < deadline, "the command's sleep is still running"
        await sleep(0.02)


@pytest_twisted.ensureDeferred
async def test_a_command_that_ended_is_taken_as_it_ended_though_what_it_started_holds_its_output(tmp_path):
    """``sh -c 'sleep 600 & echo {...}'``: the shell ends at once with its output whole, but its ``sleep`` holds
    the pipe: the poll waited for its timeout and failed, every time. Now the output is the answer (LINGER
    seconds after the shell's end) and the ``sleep`` is stopped; so is a command hook's."""
    mark = tmp_path / "pid"
    d = run_command(reactor, ["sh", "-c", f"sleep 600 & echo $! > {mark}; echo '{{\"v\": 1}}'"], dict(os.environ),
                    1000)
    d.addTimeout(60, reactor)  # (without the linger, the answer came when the sleep ended: in 10 minutes)
    answer = await d
    assert answer.payload == b'{"v": 1}\n'
    pid = int(mark.read_text())
    deadline = time.monotonic() + 30
    while not gone(pid):
        assert time.monotonic() < deadline, "the command's sleep is still running"
        await sleep(0.02)
    hook_mark = tmp_path / "hook-pid"
    hook = CommandHook(f"sh -c 'sleep 600 & echo $! > {hook_mark}'", reactor)
    ran = hook.run(FirstSample("db", "sqlite", TableName("main", "t"), {}, {"v": "number"}, ("v",), True))
    ran.addTimeout(60, reactor)
    await ran  # (it failed at the hook's timeout, and was tried again: one more sleep each time)
    pid = int(hook_mark.read_text())
    deadline = time.monotonic() + 30
    while not gone(pid):
        assert time.monotonic() < deadline, "the hook's sleep is still running"
        await sleep(0.02)


@pytest_twisted.ensureDeferred
async def test_a_command_that_fails_while_what_it_started_holds_its_output_fails():
    """The command's end is taken as it was: an exit status of 3 is a failure with its reason."""
    from lorrygate.sources.poll_reads import CommandFailed

    d = run_command(reactor, ["sh", "-c", "sleep 600 & echo broken >&2; exit 3"], dict(os.environ), 1000)
    d.addTimeout(60, reactor)
    with pytest.raises(CommandFailed, match="sh exited with 3: broken"):
        await d


@pytest_twisted.ensureDeferred
async def test_a_cancelled_command_hook_stops_what_it_started(tmp_path):
    """A hook past its time is cancelled (SIGKILL): the shell's ``sleep`` is killed with it."""
    mark = tmp_path / "pid"
    ended = []

    class Spawner:
        """The reactor, telling when the hook's process has ended (its end once fired the cancelled Deferred
        again: AlreadyCalledError, unhandled)."""

        def spawnProcess(self, protocol, *args, **kwargs):
            end = protocol.processEnded

            def processEnded(reason):
                end(reason)
                ended.append(reason)

            protocol.processEnded = processEnded
            return reactor.spawnProcess(protocol, *args, **kwargs)

    errors = []
    globalLogPublisher.addObserver(errors.append)
    try:
        hook = CommandHook(f"sh -c 'sleep 600 & echo $! > {mark}; wait'", Spawner())
        d = hook.run(FirstSample("db", "sqlite", TableName("main", "t"), {}, {"v": "number"}, ("v",), True))
        pid = await started(mark)
        d.cancel()
        with pytest.raises(defer.CancelledError):
            await d
        deadline = time.monotonic() + 30
        while not (gone(pid) and ended):
            assert time.monotonic() < deadline, "the hook's sleep is still running"
            await sleep(0.02)
        del d
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(errors.append)
    assert not [e for e in errors if e.get("isError") or e.get("log_failure")], errors


@pytest_twisted.ensureDeferred
async def test_a_command_that_is_not_there_says_so():
    with pytest.raises(FileNotFoundError, match="no-such-command"):
        await run_command(reactor, ["no-such-command"], dict(os.environ), 1000)


def test_a_command_reaped_before_its_spawn_returned_still_has_its_group_signalled(monkeypatch):
    """Under load a shell that started ``helper &`` and ended at once was reaped inside ``spawnProcess`` (its
    transport's pid None after), and the stop reached nothing: its helper outlived the poll. The protocol keeps
    the pid it was connected with."""
    signalled = []
    monkeypatch.setattr(os, "killpg", lambda group, number: signalled.append((group, number)))

    class Transport:
        pid = 4242

        def signalProcess(self, name):
            raise AssertionError("the command alone was signalled")

    class Reactor:
        def spawnProcess(self, protocol, executable, args, env):
            transport = Transport()
            protocol.makeConnection(transport)
            transport.pid = None  # (reaped: the command had ended)

    protocol = processes.Command()
    processes.spawn(Reactor(), protocol, ["sh", "-c", "helper & echo"], dict(os.environ))
    processes.stop(protocol, "TERM")
    assert signalled == [(4242, signal.SIGTERM)]

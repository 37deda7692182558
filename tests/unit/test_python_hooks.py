"""A Python hook runs on a thread of its own, on the real reactor: one that never returns takes no thread of the
reactor's pool (the resolver of broker names, the Redis source and the Kafka sink use it)."""

import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from lorrygate.hooks.kinds import HookFailed, PythonHook
from lorrygate.hooks.samples import FirstSample
from lorrygate.model import TableName

SAMPLE = FirstSample("db", "sqlite", TableName("main", "t"), {}, {"v": "number"}, ("v",), True)


@pytest_twisted.ensureDeferred
async def test_a_python_hook_that_never_returns_holds_one_thread_of_its_own():
    """An inventory call without a timeout, hung: each run past the hook's timeout took a thread of the reactor's
    pool, and the retries took the rest (10), so that broker names were no longer resolved. It keeps one thread
    of its own; the runs after it fail at once, saying why, until it returns."""
    release = threading.Event()
    ran_on = []

    def register(sample):
        ran_on.append(threading.current_thread().name)
        release.wait(60)
        return "registered"

    hook = PythonHook(register, reactor)
    pool = reactor.getThreadPool()
    try:
        first = hook.run(SAMPLE)
        first.addTimeout(0.1, reactor)
        with pytest.raises(defer.TimeoutError):
            await first
        for _ in range(12):  # the retries: each failed at once, none queued
            with pytest.raises(HookFailed, match="register has not returned from an earlier run yet"):
                await hook.run(SAMPLE)
        assert ran_on == ["lorrygate-hook"] and not pool.working
        assert await threads.deferToThread(lambda: 42) == 42  # (the reactor's pool serves)
    finally:
        release.set()
    while hook._thread.is_alive():
        await threads.deferToThread(hook._thread.join, 1)
    assert await hook.run(SAMPLE) == "registered"  # returned: the next run runs


@pytest_twisted.ensureDeferred
async def test_a_python_hook_that_raises_fails_its_run_with_the_error():
    def broken(sample):
        raise ValueError("no inventory for " + sample.table.table)

    # what and where (the run's error said "no inventory for t"; a KeyError's said "'t'" alone)
    with pytest.raises(HookFailed, match=r"^ValueError: no inventory for t at (tests/unit/)?test_python_hooks.py:\d+ in broken$"):
        await PythonHook(broken, reactor).run(SAMPLE)

    def quitting(sample):
        raise SystemExit(4)

    with pytest.raises(HookFailed, match=r"^sys.exit\(4\) at (tests/unit/)?test_python_hooks.py:\d+ in quitting: raise an exception"):
        await PythonHook(quitting, reactor).run(SAMPLE)

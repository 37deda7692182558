"""
The ``python`` and ``command`` hooks.

``type = python``: ``callable = module:function`` (a module of the strategies
directory or an installed one) is called with the `FirstSample` on a thread
of the hook's own, so it may block; raising fails the run (retried). Not in
the reactor's thread pool: the resolver of broker names, the Redis source
and the Kafka sink use that, and a function that never returns (an HTTP call
without a timeout) took a thread of it at every retry until none was left.
A Python thread cannot be stopped: a run past the ``timeout`` keeps its
thread, and the runs after it fail at once until it returns.

``type = command``: ``command`` is split like a shell would (no shell runs
it); ``{storage}``, ``{schema}``, ``{table}``, ``{realm}``, ``{network}``,
``{gateway}`` and ``{node}`` in its words are replaced, and the sample is
written to its standard input as one JSON object. Exit status 0 is a run
that worked; otherwise the last line it wrote to standard error is the
reason. A command still running after the hook's ``timeout`` is killed.
"""

import json
import shlex
import threading

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from lorrygate import processes
from lorrygate.where_raised import where_raised


class PythonHook:
    def __init__(self, function, reactor):
        self.function = function
        self.reactor = reactor
        #: the thread of the last run, while it has not returned
        self._thread: threading.Thread | None = None

    def run(self, sample) -> Deferred:
        if self._thread is not None and self._thread.is_alive():
            name = getattr(self.function, "__qualname__", repr(self.function))
            return fail(HookFailed(f"{name} has not returned from an earlier run yet (past the hook's timeout: a "
                                   f"Python function cannot be stopped; give its calls a timeout of their own)"))
        done: Deferred = Deferred()

        def answer(outcome) -> None:
            if done.called:  # (cancelled: past the timeout, or the gateway stops)
                return
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

        def call() -> None:
            try:
                outcome = self.function(sample)
            except Exception as exc:  # what, and where in the function's code (a KeyError alone says "'x'")
                outcome = Failure(HookFailed(f"{type(exc).__name__}: {exc}{where_raised(exc, self.function)}"))
            except SystemExit as exc:  # (its run failed, as a raise fails it; said so, not as the bare exit code)
                outcome = Failure(HookFailed(f"sys.exit({exc.code!r}){where_raised(exc, self.function)}: raise an "
                                             "exception for a run that failed"))
            except BaseException:
                outcome = Failure()
            self.reactor.callFromThread(answer, outcome)

        self._thread = threading.Thread(target=call, name="lorrygate-hook", daemon=True)
        self._thread.start()
        return done


class HookFailed(Exception):
    pass


class _Collect(processes.Command):
    def __init__(self, stdin: bytes, done: Deferred):
        self.stdin = stdin
        self.done = done
        self.errors = b""

    def connectionMade(self):
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def errReceived(self, data):
        self.errors = (self.errors + data)[-4096:]

    def ended(self, reason):
        if self.done.called:  # cancelled
            return
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        if code == 0:
            self.done.callback(None)
            return
        lines = self.errors.decode("utf-8", "replace").strip().splitlines()
        why = f"exit status {code}" if code is not None else f"killed by signal {signal}"
        self.done.errback(HookFailed(why + (f": {lines[-1]}" if lines else "")))


class CommandHook:
    def __init__(self, command: str, reactor, environ=None):
        self.words = shlex.split(command)
        self.reactor = reactor
        self.environ = environ

    def argv(self, sample) -> list:
        values = {"storage": sample.storage, "schema": sample.table.schema, "table": sample.table.table}
        values.update((key, sample.address.get(key) or "") for key in ("realm", "network", "gateway", "node"))
        return [word.format_map(values) for word in self.words]

    def run(self, sample) -> Deferred:
        import os

        # Cancelled (the hook's timeout, a stop), the command is killed with what it started; its end after that
        # fires nothing (it fired a second time: AlreadyCalledError, unhandled).
        done = Deferred(lambda _: processes.stop(protocol, "KILL"))
        protocol = _Collect(json.dumps(sample.asdict()).encode("utf-8") + b"\n", done)
        processes.spawn(self.reactor, protocol, self.argv(sample), self.environ or dict(os.environ))
        return done

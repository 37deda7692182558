"""
The ``python`` and ``command`` hooks.

``type = python``: ``callable = module:function`` (a module of the strategies
directory or an installed one) is called with the `FirstSample`, in the
reactor's thread pool, so it may block; raising fails the run (retried).

``type = command``: ``command`` is split like a shell would (no shell runs
it); ``{storage}``, ``{schema}``, ``{table}``, ``{realm}``, ``{network}``,
``{gateway}`` and ``{node}`` in its words are replaced, and the sample is
written to its standard input as one JSON object. Exit status 0 is a run
that worked; otherwise the last line it wrote to standard error is the
reason. A command still running after the hook's ``timeout`` is killed.
"""

import json
import shlex

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from lorrygate import processes


class PythonHook:
    def __init__(self, function, reactor):
        self.function = function
        self.reactor = reactor

    def run(self, sample) -> Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.function, sample)


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

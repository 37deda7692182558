"""
A storage that feeds records into a Tributary streaming graph.

    [storage:live]
    url = tributary://
    graph = livegraph:consume

``graph`` names a function (a module of the strategies directory or an
installed one) that takes the Tributary node of the records and returns the
graph's last node. Each record reaches the graph as a dict (``time``,
``schema``, ``table``, ``topic``, ``fields``, ``tags``; dead letters with
``dead_letter``, ``stage``, ``error`` and the payload), in order. The graph
runs on an asyncio loop in a thread of its own.

A batch is written once the graph has taken its last record through (the
records' node hands out the next record only when the graph has passed the
last one on), so a slow graph slows the writes: the batcher's ``max_pending``
then pauses the channel's source, and nothing is dropped (backpressure).

Delivery: at least once. A message is acknowledged only after the graph took
its records; one whose batch had not gone through when the gateway died is
delivered again by the broker and reaches the graph again. A graph that ended
or failed makes the writes fail: the batches wait in the spool and go to the
graph after a restart.
"""

import asyncio
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.sources.tributary import STOP_TIMEOUT, GraphRunner, make_node
from lorrygate.storage.sinks import rows_of

#: ends the records' node
_END = object()


@implementer(IStorage)
@attrs.define(eq=False)
class TributarySink:
    name: str
    function: Any
    reactor: Any
    _runner: GraphRunner | None = None
    _queue: Any = None
    #: Deferreds of the writes the graph has not taken through yet, in order
    _writes: list = attrs.Factory(list)
    _ended: str = ""
    _stopped: Any = None
    taken: int = 0

    log = Logger()

    def start(self) -> Deferred:
        self._queue = asyncio.Queue()
        queue, reactor = self._queue, self.reactor

        async def records():
            # an async generator: Tributary asks for the next record only once the graph passed the last one on
            while True:
                item = await queue.get()
                if item is _END:
                    return
                row, done = item
                yield row
                if done is not None:
                    reactor.callFromThread(self._taken, done)

        try:
            last = self.function(make_node(records, f"lorrygate[{self.name}]", inputs=0))
        except Exception as exc:
            return fail(StorageError(f"tributary sink {self.name}: building the graph failed: "
                                     f"{type(exc).__name__}: {exc}"))
        self._runner = GraphRunner(last, self.name, self.reactor, self._graph_ended)
        self._runner.start()
        return succeed(None)

    def stop(self) -> Deferred:
        runner = self._runner
        if runner is None or runner.finished.is_set():
            return succeed(None)
        self._stopped = Deferred()
        runner.call(self._queue.put_nowait, _END)
        runner.stop()
        return self._stopped.addTimeout(STOP_TIMEOUT, self.reactor, onTimeoutCancel=lambda *_: None)

    def write(self, batch) -> Deferred:
        if self._ended or self._runner is None:
            return fail(StorageError(f"tributary sink {self.name}: {self._ended or 'not started'}"))
        rows = rows_of(batch)
        if not rows:
            return succeed(None)
        d: Deferred = Deferred()
        self._writes.append(d)
        items = [(row, None) for row in rows[:-1]] + [(rows[-1], d)]
        queue = self._queue

        def put():
            for item in items:
                queue.put_nowait(item)

        self._runner.call(put)
        return d

    def _taken(self, done) -> None:
        if done in self._writes:
            self._writes.remove(done)
            self.taken += 1
            done.callback(None)

    def _graph_ended(self, error) -> None:
        self._ended = (f"the graph failed: {type(error).__name__}: {error}" if error is not None
                       else "the graph ended")
        writes, self._writes = self._writes, []
        for d in writes:  # never left waiting: the batcher retries them (or spools them)
            d.errback(StorageError(f"tributary sink {self.name}: {self._ended}"))
        if self._stopped is not None:
            self._stopped.callback(None)
            return
        self.log.error("tributary sink {storage}: {what}; writes fail (and wait in the spool) until a restart",
                       storage=self.name, what=self._ended)

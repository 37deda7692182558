"""
The start and stop of a source that reads on a thread of its own (Kafka,
ZeroMQ, PostgreSQL CDC): the thread starts with the service; the stop tells
it to end, wakes it where backpressure holds it, and waits for it off the
reactor thread.
"""

import threading
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool


class ReadingThread:
    """For a source with ``_run`` (the thread's work, which ends once ``_stop`` is set), ``_thread``, ``_stop``
    (an Event) and ``_reactor``; its ``_may_read`` (an Event cleared while it is paused), if it has one, is set
    on the stop, so that a paused reader sees it."""

    #: the thread is named lorrygate-<thread_kind>-<source>
    thread_kind = "source"
    #: seconds the stop waits for the thread to end
    join_seconds = 30.0

    name: str
    subscribed: bool
    _thread: threading.Thread | None
    _stop: threading.Event
    _reactor: Any

    def _run(self) -> None:
        raise NotImplementedError

    def _start_thread(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lorrygate-{self.thread_kind}-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _stop_thread(self) -> Deferred:
        self._stop.set()
        may_read = getattr(self, "_may_read", None)
        if may_read is not None:
            may_read.set()
        self.subscribed = False
        thread, self._thread = self._thread, None
        if thread is None:
            return succeed(None)
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), thread.join, self.join_seconds)

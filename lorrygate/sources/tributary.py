"""
Tributary streaming graphs as a source (``[source:NAME] type = tributary``).

    [source:model]
    type = tributary
    graph = livegraph:build
    topic = model/{node}

``graph`` names a function (in a module of the strategies directory or an
installed one) that returns the last node of a Tributary streaming graph
(``tributary.streaming``). lorrygate puts a node of its own behind it and runs
the graph on an asyncio loop in a thread of its own. Every value the graph
produces becomes a message: a dict is a JSON payload, its topic the ``topic``
template filled from its fields (``{node}``; default: the source's name); a
``(topic, payload)`` pair is taken as it is; text or bytes are the payload.

Backpressure: at most ``window`` values are taken and not yet committed; the
graph's loop waits in lorrygate's node until the storage commits, and while a
storage or the spool holds the source paused, so a fast graph never runs
ahead of the database (nothing is dropped). A graph that ends (``StreamEnd``)
leaves the source finished; one that raises is logged with the reason and
shown in the status.

Delivery: at most once. The graph lives in the gateway's memory: values it
produced and the gateway had not committed when it died are gone (a graceful
stop commits what was taken). A graph that reads from something durable
should acknowledge there only what it has seen stored.
"""

import asyncio
import json
import threading
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: seconds a stop waits for a graph's thread
STOP_TIMEOUT = 5.0


class GraphRunner:
    """A Tributary streaming graph on an asyncio loop in a thread of its own.

    ``on_end(error)`` is called in the reactor thread when the graph ended (error None) or failed.
    """

    def __init__(self, node, name: str, reactor, on_end):
        self.node = node
        self.loop = asyncio.new_event_loop()
        self.reactor = reactor
        self.on_end = on_end
        self.graph: Any = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lorrygate-tributary-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        error = None
        try:
            graph = self.graph = self.node.constructGraph()
            self.loop.run_until_complete(graph._run())
        except BaseException as exc:  # the user's graph: whatever it raises is reported, never a crash
            error = exc
        finally:
            self.finished.set()
            try:
                self.reactor.callFromThread(self.on_end, error)
            except RuntimeError:
                pass  # the reactor has stopped

    def call(self, function, *args) -> None:
        """Run ``function(*args)`` on the graph's loop (from any thread)."""
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(function, *args)
            except RuntimeError:
                pass  # the loop has closed

    def stop(self, release=None) -> None:
        """Ask the graph to stop after its current step (``release`` first, on its loop: what lets a waiting
        node of lorrygate's go on); ``on_end`` follows once its thread is done."""

        def stop():
            if release is not None:
                release()
            if self.graph is not None:
                self.graph.stop()

        self.call(stop)


def make_node(function, name: str, inputs: int = 1):
    """A Tributary node around ``function`` (a plain or async function: Tributary refuses bound methods)."""
    from tributary.streaming.node import Node

    return Node(func=function, func_kwargs=None, name=name, inputs=inputs)


def payload_of(value, topic: str) -> tuple | None:
    """(topic, payload bytes) of a value the graph produced, or None for one without content."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        topic, value = value
    if isinstance(value, bytes):
        return topic, value
    if isinstance(value, str):
        return topic, value.encode("utf-8")
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            topic = topic.format_map(_Fields(value))
        except (ValueError, IndexError):
            pass  # a template the value cannot fill keeps its text
    return topic, json.dumps(value, default=str, allow_nan=True).encode("utf-8")


class _Fields(dict):
    def __missing__(self, key):
        return "{" + key + "}"


class _Ack:
    """Frees one place of the window once the message is committed."""

    __slots__ = ("_source",)

    def __init__(self, source):
        self._source = source

    def ack(self) -> None:
        self._source._acked()


@implementer(ISource)
@attrs.define(eq=False)
class TributarySource(SourcePlumbing, Service):
    shared = True
    name: str  # type: ignore[assignment]  # Service.name, always set here
    settings: Any  # lorrygate.config.settings.SourceSettings
    deliver: Any
    _reactor: Any
    broker: Any = None
    _runner: GraphRunner | None = None
    _window: Any = None
    _open: Any = None
    connected: bool = False
    finished: bool = False
    produced: int = 0
    committed: int = 0
    in_flight: int = 0
    _stop_waiters: list = attrs.Factory(list)
    #: non-empty once the gateway stops the graph (a list: the graph's thread reads it)
    _stopping: list = attrs.Factory(list)
    #: the value the graph holds while the source is paused
    _held: list = attrs.Factory(list)

    log = Logger()
    publish = None

    def __attrs_post_init__(self):
        self.client_id = self.client_id or self.settings.graph
        self._pauses = Pauses(self._pause, self._resume)
        self.broker = _Where(self.settings.graph)

    def when_subscribed(self) -> Deferred:
        return succeed(None)

    def status(self) -> dict:
        """For ``lorrygate status``: the graph's values so far, and whether it ended."""
        return {"graph": self.settings.graph, "finished": self.finished, "produced": self.produced,
                "committed": self.committed, "in_flight": self.in_flight, "held_back": self.held_back}

    @property
    def held_back(self) -> int:
        """Values the graph waits to hand over while the source is paused."""
        return len(self._held)

    def startService(self) -> None:
        super().startService()
        self._window = asyncio.Semaphore(self.settings.window)
        self._open = asyncio.Event()
        if not self._pauses.paused:
            self._open.set()
        try:
            last = self.settings.function()
        except Exception as exc:
            self._ended(exc)
            return
        reactor = self._reactor
        window, is_open, stopping, held = self._window, self._open, self._stopping, self._held

        async def take(value):
            from tributary.base import StreamEnd, StreamNone, StreamRepeat

            if isinstance(value, (StreamEnd, StreamNone, StreamRepeat)):
                return value
            if not is_open.is_set():
                held.append(value)  # the graph waits for the source's resume (status: held_back)
                await is_open.wait()
                held.clear()
            await window.acquire()
            if not stopping:
                reactor.callFromThread(self._deliver, value)
            return value

        end = make_node(take, f"lorrygate[{self.name}]")
        last >> end
        self._runner = GraphRunner(end, self.name, reactor, self._ended)
        self.subscribed = self.connected = True
        self._runner.start()

    def stopService(self) -> Deferred:
        """Stop the graph: a value lorrygate's node waits with is dropped (the gateway stops: at most once)."""
        super().stopService()
        runner = self._runner
        if runner is None or runner.finished.is_set():
            return succeed(None)
        stopped: Deferred = Deferred()
        self._stop_waiters.append(stopped)
        window, is_open = self._window, self._open

        def release():
            self._stopping.append(True)
            is_open.set()
            window.release()

        runner.stop(release)
        # a user node that never returns cannot hold the gateway's stop: its thread is a daemon
        stopped.addTimeout(STOP_TIMEOUT, self._reactor, onTimeoutCancel=lambda *_: None)
        return stopped

    def _deliver(self, value) -> None:
        made = payload_of(value, self.settings.topic)
        if made is None:
            self._free()
            return
        self.produced += 1
        self.in_flight += 1
        topic, payload = made
        self.deliver(Message(topic, payload, 0, False, time_of_day(self._reactor)(), self.name, _Ack(self)))

    def _acked(self) -> None:
        self.committed += 1
        self.in_flight -= 1
        self._free()

    def _free(self) -> None:
        if self._runner is not None:
            self._runner.call(self._window.release)

    def _pause(self) -> None:
        if self._runner is not None:
            self._runner.call(self._open.clear)

    def _resume(self) -> None:
        if self._runner is not None:
            self._runner.call(self._open.set)
        elif self._open is not None:
            self._open.set()

    def _ended(self, error) -> None:
        self.connected = False
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)
        if self._stopping:
            return
        if error is None:
            self.finished = True
            self.log.info("source {source}: the Tributary graph ended after {count} values", source=self.name,
                          count=self.produced)
            return
        self.last_error = f"{type(error).__name__}: {error}"
        self.log.error("source {source}: the Tributary graph of {graph} failed: {error}; fix the graph and reload",
                       source=self.name, graph=self.settings.graph, error=self.last_error)


@attrs.frozen
class _Where:
    """What status shows as a tributary source's "broker"."""

    host: str
    port: str = ""

"""
A ZeroMQ source: a SUB or a PULL socket (``mode = sub``, the default, or ``pull``).

``host`` names the peer to connect to (``tcp://HOST:PORT``); ``host = *``
binds the port instead, for publishers that connect. A message of two or more
frames is topic and payload (the first two frames); a single frame is split
at its first space (``"sensors/a/b {...}"``). A SUB socket subscribes to the
literal prefixes of the channel's topic filters (``sensors/#`` ->
``sensors/``); the filters themselves then decide.

A message larger than the broker's ``max_payload`` (8 MB) is refused by
ZeroMQ itself (``ZMQ_MAXMSGSIZE``): its peer is disconnected, and connects
again; the message is not received.

The broker's ``keepalive`` (60 s) is the interval of ZMTP heartbeats
(`heartbeat_options`): a peer that does not answer within 1.5 times it is
taken for gone, and a connecting socket connects again, so that a publisher
whose host rebooted, or a NAT that forgot the connection, does not leave the
source waiting on a dead connection for good. A connecting socket gives up
a TCP connect after the broker's ``connect_timeout`` and waits up to
``reconnect_max_delay`` between two tries, as the other sources do.

Delivery: at most once, by the nature of ZeroMQ: nothing is acknowledged
to the peer, a SUB socket drops what it receives beyond its high-water mark
or while disconnected, and what the gateway holds when it dies is gone.
Backpressure stops receiving: a PUSH peer then blocks (PULL), a PUB peer
drops (SUB).

pyzmq's socket lives in a thread of the source's own (ZeroMQ sockets belong
to one thread); messages reach the channel in the reactor thread, up to
1,000 at a time.
"""

import threading
import time
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.interfaces import ISource
from lorrygate.model import NO_ACK, Message
from lorrygate.mqtt.topics import parse_filter
from lorrygate.sources.pauses import Pauses, SourcePlumbing
from lorrygate.sources.threaded import ReadingThread

BATCH, POLL_MS = 1000, 200


def prefix_of(topic_filter: str) -> str:
    """The literal prefix of an MQTT topic filter, as a ZeroMQ subscription."""
    cut = len(topic_filter)
    for wildcard in ("+", "#"):
        at = topic_filter.find(wildcard)
        if at != -1:
            cut = min(cut, at)
    return topic_filter[:cut]


def heartbeat_options(keepalive: int) -> list:
    """The socket options of ZMTP heartbeats every ``keepalive`` seconds (none for 0): a connection on which
    nothing, not even the answer to a PING, comes for 1.5 x ``keepalive`` is closed (and a connecting socket
    connects again). Without them a SUB or PULL socket, which never sends, cannot tell a live peer from one
    whose host lost power or a network path (a NAT, a firewall) that forgot the connection: it waits for good
    on a connection that will never carry a message again."""
    if not keepalive:
        return []
    timeout = int(keepalive * 1500)
    # (the TTL, which asks the peer to close a connection silent for that long, holds at most 6,553.5 s)
    return [("HEARTBEAT_IVL", keepalive * 1000), ("HEARTBEAT_TIMEOUT", timeout),
            ("HEARTBEAT_TTL", min(timeout, 6_553_500))]


def connecting_options(broker) -> list:
    """The socket options of the broker's ``connect_timeout`` (a TCP connect that takes longer is given up and
    tried again) and ``reconnect_max_delay`` (ZeroMQ's wait between two tries, 0.1 s at first, doubles up to
    it; without, it tried every 0.1 s for good)."""
    return [("CONNECT_TIMEOUT", max(1, int(broker.connect_timeout * 1000))),
            ("RECONNECT_IVL_MAX", max(100, int(broker.reconnect_max_delay * 1000)))]


def split(frames: list) -> tuple:
    """(topic, payload) of a multipart message."""
    if len(frames) >= 2:
        return frames[0].decode("utf-8", "replace"), bytes(frames[1])
    head, _, rest = bytes(frames[0]).partition(b" ")
    return head.decode("utf-8", "replace"), rest


@implementer(ISource)
@attrs.define(eq=False)
class ZeroMQSource(ReadingThread, SourcePlumbing, Service):
    name: str  # type: ignore[assignment]  # Service.name, always set here
    broker: Any  # lorrygate.config.settings.BrokerSettings, type zmq
    topics: tuple
    deliver: Any
    _reactor: Any
    mode: str = "sub"
    _filters: tuple = ()
    _thread: threading.Thread | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    _may_read: threading.Event = attrs.Factory(threading.Event)
    connected: bool = False
    #: messages whose topic no filter matched (a SUB prefix is wider than its filter)
    unmatched: int = 0
    #: whether the peer of a connecting socket is there (None: not known yet)
    _peer_up: bool | None = None

    log = Logger()

    def __attrs_post_init__(self):
        self._filters = tuple(parse_filter(topic) for topic in self.topics)
        self.client_id = self.client_id or self.endpoint
        self._pauses = Pauses(self._may_read.clear, self._may_read.set)
        self._may_read.set()

    @property
    def claim(self) -> tuple[str, str]:
        """What this source holds alone (`lorrygate.service.locks.claim_of`)."""
        if self.broker.host == "*":
            return f"the port of the ZeroMQ {self.mode.upper()} socket {self.endpoint}", "port"
        return f"the ZeroMQ {self.mode.upper()} socket connected to {self.endpoint}", ""  # (no key to tell apart)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.broker.host}:{self.broker.port}"

    # -- ISource ----------------------------------------------------------------



    publish = None  # error reports have nowhere to go on a SUB or PULL socket

    # -- service ----------------------------------------------------------------

    thread_kind = "zmq"
    join_seconds = POLL_MS / 1000 + 5

    def startService(self) -> None:
        super().startService()
        self._start_thread()

    def stopService(self) -> Deferred:
        super().stopService()
        return self._stop_thread()

    def _run(self) -> None:
        import zmq

        context = zmq.Context.instance()
        socket = context.socket(zmq.SUB if self.mode == "sub" else zmq.PULL)
        socket.setsockopt(zmq.LINGER, 0)
        # A peer's message over max_payload disconnects the peer rather than filling memory: a bound socket is open
        # to whatever reaches its port, and up to its high-water mark (1,000) of messages wait in it
        socket.setsockopt(zmq.MAXMSGSIZE, self.broker.max_payload)
        for option, value in heartbeat_options(self.broker.keepalive) + connecting_options(self.broker):
            socket.setsockopt(getattr(zmq, option), value)
        try:
            if self.broker.host == "*":
                socket.bind(self.endpoint)
            else:
                socket.connect(self.endpoint)
            if self.mode == "sub":
                for prefix in sorted({prefix_of(f.text) for f in self._filters}):
                    socket.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        except zmq.ZMQError as exc:
            socket.close()
            self._reactor.callFromThread(self._failed, f"ZeroMQ {self.mode} socket on {self.endpoint}: {exc}")
            return
        self._reactor.callFromThread(self._ready)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        monitor = None
        if self.broker.host != "*":
            # ZeroMQ connects and reconnects by itself, silently: its monitor tells whether the peer is there
            monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED
                                                | zmq.EVENT_DISCONNECTED)
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                self._may_read.wait()
                if self._stop.is_set():
                    continue
                ready = dict(poller.poll(POLL_MS))
                if monitor is not None and monitor in ready:
                    self._watch(monitor)
                if socket not in ready:
                    continue
                batch = []
                while len(batch) < BATCH:
                    try:
                        batch.append(split(socket.recv_multipart(zmq.NOBLOCK, copy=True)))
                    except zmq.Again:
                        break
                if batch:
                    self._reactor.callFromThread(self._deliver, batch, time.time())
        finally:
            if monitor is not None:
                socket.disable_monitor()
                monitor.close()
            socket.close()

    def _watch(self, monitor) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            up = event == zmq.EVENT_CONNECTED
            self._reactor.callFromThread(self._peer, up, event == zmq.EVENT_DISCONNECTED)

    def _peer(self, up: bool, lost: bool = False) -> None:
        """The peer of a connecting socket is there (``up``), or not: ``lost`` when a connection to it ended,
        else when a try to connect failed."""
        if up == self._peer_up:
            return  # ZeroMQ retries every 100 ms or so: one line per change, not per try
        self._peer_up = self.connected = up
        if up:
            self.last_error = ""
            self.log.info("ZeroMQ source {source}: the peer at {endpoint} is there", source=self.name,
                          endpoint=self.endpoint)
            return
        if lost:
            hint = ("; a peer that comes back each time and goes again every "
                    f"{self.broker.keepalive * 1.5:g} s answers no heartbeat: one older than ZMTP 3.1 (libzmq "
                    "4.2) needs keepalive = 0" if self.broker.keepalive else "")
            self.last_error = (f"lost the peer at {self.endpoint} (it closed the connection, or answered nothing "
                               f"for 1.5 x keepalive{hint}); ZeroMQ connects again")
        else:
            self.last_error = f"cannot reach {self.endpoint} (no peer listens there; ZeroMQ keeps trying)"
        self.log.error("ZeroMQ source {source}: {error}", source=self.name, error=self.last_error)

    def _failed(self, why: str) -> None:
        self.last_error = why
        self.log.error("ZeroMQ source {source}: {error}; check host and port (host = * binds)", source=self.name,
                       error=why)

    def _ready(self) -> None:
        self.connected = self.broker.host == "*"  # a connecting socket is connected once its monitor says so
        how = "bound to" if self.broker.host == "*" else "connected to"
        self.log.info("ZeroMQ source {source}: {mode} socket {how} {endpoint} (at most once)", source=self.name,
                      mode=self.mode.upper(), how=how, endpoint=self.endpoint)
        self._subscribed()

    def _deliver(self, batch, received: float) -> None:
        filters = self._filters
        for topic, payload in batch:
            for candidate in filters:
                if candidate.matches(topic):
                    self.deliver(Message(topic, payload, 0, False, received, candidate.text, NO_ACK))
                    break
            else:
                self.unmatched += 1

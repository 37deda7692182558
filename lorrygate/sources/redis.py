"""
A Redis source: Streams with consumer groups (at least once), or pub/sub (at most once).

Streams (``mode = streams``, the default): a channel's ``topics`` are stream
keys; it reads them as consumer ``consumer`` (by default ``<host>-<channel>``)
of the group ``group`` (created with ``MKSTREAM`` from the start of the
stream when missing), ``XREADGROUP ... COUNT 1000 BLOCK 1000``, and ``XACK``-s
an entry only after its rows, or its dead letter, are committed or spooled.
On start it first reads its own pending entries (those it had read and not
acknowledged before a crash), then claims the entries other consumers left
pending for longer than ``claim_idle`` (``XAUTOCLAIM``, again every
``claim_idle`` while it runs), then reads new ones.
An entry's topic is its ``topic`` field (``topic_field``), or the stream's
key; its payload the ``payload`` field (``payload_field``), or, without one,
its fields as a JSON object.

Pub/sub (``mode = pubsub``): ``PSUBSCRIBE`` to the topics as patterns; the
channel name is the topic and the message the payload. Redis delivers a
message once to whoever is subscribed and keeps nothing: what arrives while
the gateway is away or reconnecting is lost. At most once, said so.

redis-py's blocking client runs in a thread of the source's own (reads) and
in the reactor's thread pool (acks); messages reach the channel in the
reactor thread, a read's worth at a time. Backpressure stops reading.
"""

import json
import socket
import threading
import time
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.mqtt.topics import parse_filter
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: entries one XREADGROUP takes at most, and how long it blocks (ms)
READ_COUNT, READ_BLOCK_MS = 1000, 1000


def explain_redis_failure(exc: Exception, broker) -> str:
    import redis

    if isinstance(exc, redis.AuthenticationError):
        return f"Redis refused the credentials ({exc}): check username and password"
    if isinstance(exc, redis.ConnectionError):
        return f"cannot reach Redis at {broker.host}:{broker.port} ({exc})"
    if isinstance(exc, redis.ResponseError):
        return f"Redis answered an error: {exc}"
    return f"{type(exc).__name__}: {exc}"


@attrs.define(eq=False)
class RedisAck:
    source: Any
    stream: str
    entry: str

    def ack(self) -> None:
        self.source._ack(self.stream, self.entry)


@implementer(ISource)
@attrs.define(eq=False)
class RedisSource(SourcePlumbing, Service):
    name: str  # type: ignore[assignment]  # Service.name, always set here
    broker: Any  # lorrygate.config.settings.BrokerSettings, type redis
    topics: tuple
    deliver: Any
    _reactor: Any
    mode: str = "streams"
    group: str = "lorrygate"
    consumer: str = ""
    topic_field: str = "topic"
    payload_field: str = "payload"
    claim_idle: float = 60.0
    client_id: str = ""
    _filters: tuple = ()
    _pauses: Any = None
    _client: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    _may_read: threading.Event = attrs.Factory(threading.Event)
    _subscribe_waiters: list = attrs.Factory(list)
    subscribed: bool = False
    connected: bool = False
    last_error: str = ""
    retained_skipped: int = 0
    _acks: dict = attrs.Factory(dict)
    _ack_call: Any = None
    _pubsub: Any = None

    log = Logger()

    def __attrs_post_init__(self):
        self._filters = tuple(parse_filter(topic) for topic in self.topics)
        self.consumer = self.consumer or f"{socket.gethostname()}-{self.name}"
        self.client_id = self.client_id or f"{self.group}/{self.consumer}"
        self._pauses = Pauses(self._may_read.clear, self._may_read.set)
        self._may_read.set()

    # -- ISource ----------------------------------------------------------------



    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Error reports: added to a stream named after the report's topic (streams), or published (pub/sub)."""
        client = self._client
        if client is None:
            return
        if self.mode == "pubsub":
            call = lambda: client.publish(topic, payload)  # noqa: E731
        else:
            call = lambda: client.xadd(topic, {self.topic_field: topic, self.payload_field: payload},  # noqa: E731
                                       maxlen=10_000, approximate=True)
        self._in_pool(call).addErrback(lambda failure: None)

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        import redis

        broker = self.broker
        self._client = redis.Redis(
            host=broker.host, port=broker.port, username=broker.username or None,
            password=broker.password.reveal() if broker.password else None, ssl=broker.tls,
            ssl_ca_certs=broker.tls_ca or None, ssl_certfile=broker.tls_cert or None,
            ssl_keyfile=broker.tls_key or None, socket_connect_timeout=broker.connect_timeout,
            socket_timeout=READ_BLOCK_MS / 1000 + broker.connect_timeout, client_name=f"lorrygate-{self.name}",
            health_check_interval=30)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lorrygate-redis-{self.name}", daemon=True)
        self._thread.start()

    def stopService(self) -> Deferred:
        """Stop reading; send the acks released so far; close."""
        super().stopService()
        self._stop.set()
        self._may_read.set()
        self.subscribed = False
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        d = self._flush_acks()
        thread, client = self._thread, self._client
        self._thread = None

        def close(_):
            if thread is not None:
                thread.join(READ_BLOCK_MS / 1000 + 5)
            if self._pubsub is not None:
                self._pubsub.close()
            if client is not None:
                client.close()

        return d.addBoth(lambda _: deferToThreadPool(self._reactor, self._reactor.getThreadPool(), close, None))

    def _in_pool(self, function, *args) -> Deferred:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)

    # -- the reading thread -----------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.mode == "pubsub":
                    self._subscribe_and_listen()
                else:
                    self._read_streams()
                failures = 0
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), self.broker.reconnect_max_delay)
                why = explain_redis_failure(exc, self.broker)
                self._reactor.callFromThread(self._failed, why, delay)
                self._stop.wait(delay)

    def _failed(self, why: str, delay: float) -> None:
        self.connected = False
        self.last_error = why
        if self.running:
            self.log.error("Redis source {source}: {error}; next try in {delay:.1f} s", source=self.name, error=why,
                           delay=delay)

    def _ready(self, what: str) -> None:
        self.connected = True
        self.last_error = ""
        self.log.info("Redis source {source}: connected to {host}:{port}, {what}", source=self.name,
                      host=self.broker.host, port=self.broker.port, what=what)
        self._subscribed()

    def _read_streams(self) -> None:
        import redis

        client = self._client
        streams = [f.text for f in self._filters]
        for stream in streams:
            try:
                client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._reactor.callFromThread(
            self._ready, f"consumer {self.consumer} of group {self.group} on {', '.join(streams)}")
        # First what this consumer read and never acknowledged (a crash), then what others left behind.
        for stream in streams:
            self._drain_own(stream)
            self._claim(stream)
        claimed = time.monotonic()
        while not self._stop.is_set():
            self._may_read.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - claimed >= self.claim_idle:
                # a consumer that died while this one runs leaves entries behind too
                for stream in streams:
                    self._claim(stream)
                claimed = time.monotonic()
            answer = client.xreadgroup(self.group, self.consumer, {s: ">" for s in streams}, count=READ_COUNT,
                                       block=READ_BLOCK_MS)
            self._hand_over(answer)

    def _drain_own(self, stream: str) -> None:
        last = "0"
        while not self._stop.is_set():
            self._may_read.wait()
            answer = self._client.xreadgroup(self.group, self.consumer, {stream: last}, count=READ_COUNT)
            entries = answer[0][1] if answer else []
            if not entries:
                return
            self._hand_over(answer)
            last = _text(entries[-1][0])

    def _claim(self, stream: str) -> None:
        start = "0-0"
        idle = int(self.claim_idle * 1000)
        while not self._stop.is_set():
            self._may_read.wait()
            reply = self._client.xautoclaim(stream, self.group, self.consumer, idle, start_id=start, count=READ_COUNT)
            start, entries = _text(reply[0]), reply[1]
            entries = [entry for entry in entries if entry is not None and entry[1] is not None]
            if entries:
                self._reactor.callFromThread(self.log.info, "Redis source {source}: claimed {count} entries of "
                                             "{stream} another consumer left pending", source=self.name,
                                             count=len(entries), stream=stream)
                self._hand_over([(stream, entries)])
            if start == "0-0":
                return

    def _hand_over(self, answer) -> None:
        if answer:
            received = time.time()
            self._reactor.callFromThread(self._deliver_streams, answer, received)

    def _subscribe_and_listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        patterns = [f.text.replace("+", "*").replace("#", "*") for f in self._filters]
        pubsub.psubscribe(*patterns)
        self._reactor.callFromThread(self._ready, f"subscribed to {', '.join(patterns)} (pub/sub: at most once)")
        while not self._stop.is_set():
            self._may_read.wait()
            batch = []
            message = pubsub.get_message(timeout=READ_BLOCK_MS / 1000)
            while message is not None and len(batch) < READ_COUNT:
                if message["type"] in ("pmessage", "message"):
                    batch.append((_text(message["channel"]), message["data"]))
                message = pubsub.get_message(timeout=0)
            if batch:
                self._reactor.callFromThread(self._deliver_pubsub, batch, time.time())

    # -- in the reactor thread ---------------------------------------------------------

    def _subscription(self, topic: str) -> str:
        for candidate in self._filters:
            if candidate.matches(topic):
                return candidate.text
        return self._filters[0].text

    def _deliver_streams(self, answer, received: float) -> None:
        for stream, entries in answer:
            stream = _text(stream)
            for entry_id, fields in entries:
                entry_id = _text(entry_id)
                fields = {_text(key): value for key, value in (fields or {}).items()}
                topic = _text(fields.pop(self.topic_field, None) or stream)
                payload = fields.get(self.payload_field)
                if payload is None:
                    payload = json.dumps({key: _text(value) for key, value in fields.items()}).encode("utf-8")
                elif isinstance(payload, str):
                    payload = payload.encode("utf-8")
                self.deliver(Message(topic, payload, 1, False, received, stream, RedisAck(self, stream, entry_id)))

    def _deliver_pubsub(self, batch, received: float) -> None:
        from lorrygate.model import NO_ACK

        for topic, payload in batch:
            self.deliver(Message(topic, payload if isinstance(payload, bytes) else str(payload).encode(), 0, False,
                                 received, self._subscription(topic), NO_ACK))

    def _ack(self, stream: str, entry: str) -> None:
        self._acks.setdefault(stream, []).append(entry)
        if self._ack_call is None:
            self._ack_call = self._reactor.callLater(0, self._flush_acks)

    def _flush_acks(self) -> Deferred:
        """One XACK per stream for every entry released since the last (in the thread pool)."""
        self._ack_call = None
        acks, self._acks = self._acks, {}
        client = self._client
        if not acks or client is None:
            return succeed(None)

        def send():
            for stream, entries in acks.items():
                client.xack(stream, self.group, *entries)

        def failed(failure):
            # Not acknowledged: the entries stay pending and are read again (this consumer's own first).
            self.log.warn("Redis source {source}: XACK failed ({error}); the entries come again",
                          source=self.name, error=failure.getErrorMessage())

        return self._in_pool(send).addErrback(failed)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)

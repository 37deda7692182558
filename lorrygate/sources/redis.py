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

An entry handed to the channel is *in flight* until its ``XACK`` succeeds.
Pending in Redis all that time, it is never handed over again by this source:
not by the reading of its own pending entries after a reconnection, nor by a
claim. And it stays this consumer's: every ``claim_idle / 4`` an ``XCLAIM
... JUSTID`` of the entries in flight longer than that resets their idle time
(their delivery count unchanged), which so stays under ``claim_idle / 2``: a
storage slower than ``claim_idle`` (a pause, a database away) does not let
another consumer of the group take them and store them a second time. An
``XACK`` that fails on a lost connection is sent again; the entries stay in
flight until it goes through.

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

The status and ``lorrygate_source_lag`` tell the group's lag every `COUNT_S`
seconds (streams): over its streams, the entries not yet delivered to the
group and those delivered and not yet acknowledged (``XINFO GROUPS``: its
``lag``, Redis 7 or newer, and its ``pending``).
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

from lorrygate.decoding.timestamps import sent_time
from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.mqtt.topics import parse_filter
from lorrygate.sources import headers
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: entries one XREADGROUP takes at most, and how long it blocks (ms)
READ_COUNT, READ_BLOCK_MS = 1000, 1000
#: seconds between two counts of the group's lag
COUNT_S = 5.0

#: TCP keepalives and user timeout of the connections to Redis (socket options; as PostgreSQL's
#: `lorrygate.storage.postgresql.LIVENESS`): idle 10 s, probes 5 s apart, 3 probes, and data unanswered for 30 s.
#: Behind a black hole (its host died, a NAT or firewall forgot the connection) a pub/sub connection, on
#: which nothing but the health check's PING is sent and whose answer nobody waits for, said connected and
#: took nothing for about 15 minutes, until the kernel gave up on the PING
LIVENESS = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 30_000}


def liveness_options() -> dict:
    """`LIVENESS` as redis-py's ``socket_keepalive_options``, those this platform has."""
    return {getattr(socket, name): value for name, value in LIVENESS.items() if hasattr(socket, name)}


def client_options(broker, name: str) -> dict:
    """The keyword arguments of the source's ``redis.Redis``. With TLS the server's certificate and host name are
    verified, whatever redis-py's defaults: before 6.0 it checked no host name (``ssl_check_hostname=False``),
    so that any certificate of the CA, a man in the middle's too, was taken."""
    options = dict(
        host=broker.host, port=broker.port, username=broker.username or None,
        password=broker.password.reveal() if broker.password else None, ssl=broker.tls,
        socket_connect_timeout=broker.connect_timeout, socket_timeout=READ_BLOCK_MS / 1000 + broker.connect_timeout,
        client_name=f"lorrygate-{name}", socket_keepalive=True, socket_keepalive_options=liveness_options(),
        health_check_interval=broker.keepalive)
    if broker.tls:
        options.update(ssl_ca_certs=broker.tls_ca or None, ssl_certfile=broker.tls_cert or None,
                       ssl_keyfile=broker.tls_key or None, ssl_cert_reqs="required", ssl_check_hostname=True)
    return options


def _field(info: dict, name: str):
    """A field of ``XINFO GROUPS``' answer, whether redis-py gave its keys as text or as bytes."""
    return info.get(name, info.get(name.encode()))


def group_lag(groups: list, group: str) -> int | None:
    """The entries of one stream that ``group`` has not acknowledged: those not delivered to it yet (``lag``;
    None where Redis cannot tell, or is older than 7) and those pending."""
    for info in groups:
        name = _field(info, "name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = _field(info, "lag")
            return None if lag is None else int(lag) + int(_field(info, "pending") or 0)
    return None


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
    _filters: tuple = ()
    _client: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    _may_read: threading.Event = attrs.Factory(threading.Event)
    connected: bool = False
    _acks: dict = attrs.Factory(dict)
    _ack_call: Any = None
    #: (stream, entry id) -> when it was handed over (monotonic), until its XACK succeeded; read by the
    #: reading thread, changed under `_inflight_lock`
    _inflight: dict = attrs.Factory(dict)
    _inflight_lock: threading.Lock = attrs.Factory(threading.Lock)
    _keep_call: Any = None
    _pubsub: Any = None
    #: the group's lag over its streams (`group_lag`), counted every `COUNT_S` seconds; None: not known
    lag: int | None = None
    _count_call: Any = None
    _counting: bool = False

    log = Logger()

    def __attrs_post_init__(self):
        self._filters = tuple(parse_filter(topic) for topic in self.topics)
        self.consumer = self.consumer or f"{socket.gethostname()}-{self.name}"
        if self.mode == "pubsub":  # no consumer group: the status shows none
            self.group = ""
        self.client_id = self.client_id or (f"{self.group}/{self.consumer}" if self.group else self.consumer)
        self._pauses = Pauses(self._may_read.clear, self._may_read.set)
        self._may_read.set()

    @property
    def claim(self) -> tuple[str, str]:
        """What this source holds alone (`lorrygate.service.locks.claim_of`)."""
        if not self.group:
            return f"the Redis subscriber {self.consumer!r} at {self.broker.host}:{self.broker.port}", "consumer"
        return (f"the Redis consumer {self.consumer!r} of group {self.group!r} at {self.broker.host}:"
                f"{self.broker.port}", "consumer")

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

    def status(self) -> dict:
        return {"in_flight": len(self._inflight), "lag": self.lag} if self.mode == "streams" else {}

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        import redis

        self._client = redis.Redis(**client_options(self.broker, self.name))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lorrygate-redis-{self.name}", daemon=True)
        self._thread.start()
        if self.mode == "streams":
            from twisted.internet.task import LoopingCall

            self._keep_call = LoopingCall(self._keep_claims)
            self._keep_call.clock = self._reactor
            self._keep_call.start(self.claim_idle / 4, now=False)
            self._count_call = LoopingCall(self._count)
            self._count_call.clock = self._reactor
            self._count_call.start(COUNT_S, now=False)

    def stopService(self) -> Deferred:
        """Stop reading; send the acks released so far; close."""
        super().stopService()
        self._stop.set()
        self._may_read.set()
        self.subscribed = False
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        for call in (self._keep_call, self._count_call):
            if call is not None and call.running:
                call.stop()
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

    def _count(self) -> None:
        """Count the group's lag in the thread pool (one count at a time; a reader paused by backpressure,
        when the lag matters most, does not hold it)."""
        client = self._client
        if client is None or not self.connected:
            self.lag = None  # (a count from before the connection went is no longer what Redis holds)
            return
        if self._counting:
            return
        self._counting = True
        streams = [f.text for f in self._filters]

        def count():
            lags = [group_lag(client.xinfo_groups(stream), self.group) for stream in streams]
            return None if None in lags else sum(lags)

        def counted(lag):
            self.lag = lag

        def failed(failure):
            self.lag = None
            self.log.debug("Redis source {source}: counting the group's lag: {error}", source=self.name,
                           error=failure.getErrorMessage())

        d = self._in_pool(count).addCallbacks(counted, failed)
        d.addBoth(lambda _: setattr(self, "_counting", False))

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
            if answer:
                with self._inflight_lock:
                    answer = [(stream, self._take(stream, entries)) for stream, entries in answer]
                self._hand_over(answer)

    def _drain_own(self, stream: str) -> None:
        last = "0"
        while not self._stop.is_set():
            self._may_read.wait()
            # Under the lock, so that an XACK that lands between this read and the check below is not taken
            # for an entry no longer in flight (it would be handed over a second time).
            with self._inflight_lock:
                answer = self._client.xreadgroup(self.group, self.consumer, {stream: last}, count=READ_COUNT)
                entries = answer[0][1] if answer else []
                fresh = self._take(stream, entries)
            if not entries:
                return
            self._hand_over([(stream, fresh)])
            last = _text(entries[-1][0])

    def _claim(self, stream: str) -> None:
        start = "0-0"
        idle = int(self.claim_idle * 1000)
        while not self._stop.is_set():
            self._may_read.wait()
            with self._inflight_lock:
                reply = self._client.xautoclaim(stream, self.group, self.consumer, idle, start_id=start,
                                                count=READ_COUNT)
                start = _text(reply[0])
                entries = self._take(stream, [entry for entry in reply[1] if entry is not None and entry[1] is not None])
            if entries:
                self._reactor.callFromThread(self.log.info, "Redis source {source}: claimed {count} entries of "
                                             "{stream} another consumer left pending", source=self.name,
                                             count=len(entries), stream=stream)
                self._hand_over([(stream, entries)])
            if start == "0-0":
                return

    def _take(self, stream, entries) -> list:
        """Of ``entries`` of ``stream``, those not in flight, now marked in flight (with `_inflight_lock` held)."""
        stream, now, inflight = _text(stream), time.monotonic(), self._inflight
        fresh = []
        for entry in entries:
            key = (stream, _text(entry[0]))
            if key not in inflight:
                inflight[key] = now
                fresh.append(entry)
        return fresh

    def _hand_over(self, answer) -> None:
        answer = [(stream, entries) for stream, entries in answer or () if entries]
        if answer:
            self._reactor.callFromThread(self._deliver_streams, answer, time.time())

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
                payload = fields.pop(self.payload_field, None)
                others: tuple = ()
                if payload is None:
                    payload = json.dumps({key: _text(value) for key, value in fields.items()}).encode("utf-8")
                else:
                    if isinstance(payload, str):
                        payload = payload.encode("utf-8")
                    others = headers.pairs(fields.items())  # the entry's other fields
                millis = entry_id.partition("-")[0]
                self.deliver(Message(topic, payload, 1, False, received, stream, RedisAck(self, stream, entry_id),
                                     headers=others, sent=sent_time(int(millis)) if millis.isdigit() else None))

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
            import redis

            gone = []
            for stream, entries in list(acks.items()):
                try:
                    client.xack(stream, self.group, *entries)
                except redis.ResponseError as exc:
                    # the stream or the group is gone (a Redis that lost its data): nothing left to acknowledge
                    gone.append(f"{stream}: {exc}")
                with self._inflight_lock:
                    for entry in entries:
                        self._inflight.pop((stream, entry), None)
                del acks[stream]
            return gone

        def sent(gone):
            for what in gone:
                self.log.warn("Redis source {source}: XACK refused ({error}); the entries are no longer pending",
                              source=self.name, error=what)

        def failed(failure):
            # Still pending and still in flight: sent again in a second, or, once stopped, read again at the
            # next start (this consumer's own pending entries first).
            for stream, entries in acks.items():
                self._acks.setdefault(stream, [])[:0] = entries
            if self.running:
                self.log.warn("Redis source {source}: XACK failed ({error}); sent again in 1 s",
                              source=self.name, error=failure.getErrorMessage())
                if self._ack_call is None:
                    self._ack_call = self._reactor.callLater(1.0, self._flush_acks)
            else:
                self.log.warn("Redis source {source}: XACK failed ({error}); the entries come again at the next "
                              "start", source=self.name, error=failure.getErrorMessage())

        return self._in_pool(send).addCallbacks(sent, failed)

    def _keep_claims(self) -> Deferred:
        """Reset the idle time of the entries in flight longer than a quarter of ``claim_idle`` (``XCLAIM ...
        JUSTID`` to this consumer), so that no other consumer of the group claims what this one still holds."""
        client = self._client
        if client is None or not self._inflight:
            return succeed(None)

        def send():
            due = time.monotonic() - self.claim_idle / 4
            with self._inflight_lock:  # in the pool: the reading thread holds it across a read
                old = [key for key, since in self._inflight.items() if since <= due]
            streams: dict = {}
            for stream, entry in old:
                streams.setdefault(stream, []).append(entry)
            for stream, entries in streams.items():
                for start in range(0, len(entries), READ_COUNT):
                    chunk = entries[start:start + READ_COUNT]
                    client.xclaim(stream, self.group, self.consumer, 0, chunk, justid=True)
                    now = time.monotonic()
                    with self._inflight_lock:
                        for entry in chunk:
                            if (stream, entry) in self._inflight:
                                self._inflight[(stream, entry)] = now

        def failed(failure):
            self.log.warn("Redis source {source}: keeping the entries in flight claimed failed ({error}); tried "
                          "again in {delay:.0f} s", source=self.name, error=failure.getErrorMessage(),
                          delay=self.claim_idle / 4)

        return self._in_pool(send).addErrback(failed)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)

"""
A Kafka source (confluent-kafka, librdkafka): a consumer group reading the
channel's ``topics`` (Kafka topic names).

A message's topic is its key (the MQTT-style topic a producer put there, as
the Kafka sink and most MQTT bridges do), or, without a key, the Kafka
topic's name with ``.`` read as ``/``; the channel's filters, strategy and
ignore rules work on it as on MQTT topics.

Delivery: at least once. Auto-commit is off; each partition is an in-flight
window of its own, and a partition's offset is committed (after the last
message of a gap-free run that is committed or spooled) only then. A group
without a committed offset starts at the earliest message (nothing lost),
unless ``start = latest``. A gateway that dies leaves the group after 10 s
(the session timeout); its partitions then go to the members that remain,
from the last committed offsets (commits go out within 0.2 s of the rows'
commit).

A rebalance (a gateway joining or leaving the group) first waits, up to
``REVOKE_WAIT_S``, for the messages in flight of the partitions it takes
away to be committed or spooled, and commits their offsets: the new owner
starts after them instead of reading them again (each message in flight was
stored twice at every rebalance). What is still in flight after that wait is
read again by the new owner, and a warning says how much.

The consumer runs in a thread of the source's own (``consume`` of up to
1,000 messages, 0.2 s at most); the reactor hands it the offsets to commit.
Backpressure pauses the assigned partitions.

The status and ``lorrygate_source_lag`` tell the group's lag: of the
partitions assigned to this gateway, the messages the brokers hold beyond the
group's committed offsets (not yet stored or spooled), from librdkafka's
statistics every `STATS_S` seconds.
"""

import json
import re
import threading
import time
from collections import deque
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.decoding.timestamps import sent_time
from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.sources import headers
from lorrygate.sources.pauses import Pauses, SourcePlumbing
from lorrygate.sources.threaded import ReadingThread

BATCH, POLL_S = 1000, 0.2
#: how long a rebalance waits for the messages in flight of the partitions it takes away
REVOKE_WAIT_S = 10.0
#: seconds between librdkafka's statistics (the lag)
STATS_S = 5


def lag_of(statistics: str) -> dict:
    """From librdkafka's statistics (JSON), the lag of each assigned partition, ``{"topic[partition]": n}``:
    the high watermark less the group's committed offset (less the start of the log where the group has
    committed nothing yet). Partitions it does not know yet are left out."""
    try:
        document = json.loads(statistics)
    except ValueError:
        return {}
    lags = {}
    for topic, info in (document.get("topics") or {}).items():
        for number, partition in (info.get("partitions") or {}).items():
            if number == "-1" or partition.get("fetch_state") in (None, "none", "stopped"):
                continue  # (librdkafka's internal partition, and those not assigned to this consumer)
            high = partition.get("hi_offset", -1)
            committed = partition.get("committed_offset", -1)
            if committed < 0:
                committed = partition.get("lo_offset", -1)
            if high >= 0 and committed >= 0:
                lags[f"{topic}[{number}]"] = max(high - committed, 0)
    return lags


def client_config(broker) -> dict:
    """librdkafka settings of a broker section: bootstrap, TLS, SASL PLAIN credentials."""
    config = {"bootstrap.servers": ",".join(f"{host.strip()}:{broker.port}" if ":" not in host else host.strip()
                                            for host in broker.host.split(",")),
              "socket.connection.setup.timeout.ms": int(broker.connect_timeout * 1000),
              "reconnect.backoff.max.ms": int(broker.reconnect_max_delay * 1000)}
    if broker.username:
        config.update({"security.protocol": "SASL_SSL" if broker.tls else "SASL_PLAINTEXT",
                       "sasl.mechanisms": "PLAIN", "sasl.username": broker.username,
                       "sasl.password": broker.password.reveal() if broker.password else ""})
    elif broker.tls:
        config["security.protocol"] = "SSL"
    if broker.tls and broker.tls_ca:
        config["ssl.ca.location"] = broker.tls_ca
    if broker.tls and broker.tls_cert:
        config.update({"ssl.certificate.location": broker.tls_cert, "ssl.key.location": broker.tls_key})
    return config


#: librdkafka's timing suffix, "(after 12ms in state AUTH_REQ)", which differs on every retry
_TIMING = re.compile(r"\s*\(after \d+ms in state [A-Z_]+(?:, \d+ identical error\(s\) suppressed)?\)")


def explain(error, broker) -> str:
    """One stable sentence for a librdkafka error: a refused login says which user and where to fix it."""
    text = _TIMING.sub("", error.str() if hasattr(error, "str") else str(error))
    try:
        from confluent_kafka import KafkaError

        refused = error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
    except (ImportError, AttributeError):
        refused = False
    if refused:
        return (f"the broker refused the credentials of user {broker.username!r} (SASL PLAIN): {text}; fix "
                f"the username and password of broker {broker.name}")
    return text


@attrs.define(eq=False)
class KafkaAck:
    source: Any
    generation: int
    partition: tuple
    offset: int

    def ack(self) -> None:
        self.source._ack(self.generation, self.partition, self.offset)


@implementer(ISource)
@attrs.define(eq=False)
class KafkaSource(ReadingThread, SourcePlumbing, Service):
    #: other gateways may read the same (competing consumers): no client-id lock
    shared = True
    name: str  # type: ignore[assignment]  # Service.name, always set here
    broker: Any
    topics: tuple
    deliver: Any
    _reactor: Any
    group: str = "lorrygate"
    start: str = "earliest"
    _thread: threading.Thread | None = None
    _stop: threading.Event = attrs.Factory(threading.Event)
    connected: bool = False
    #: bumped on every rebalance: acks of an older assignment are void
    _generation: int = 0
    #: (topic, partition) -> offsets delivered, in order; and those done
    _outstanding: dict = attrs.Factory(dict)
    _done: dict = attrs.Factory(dict)
    #: offsets to commit, handed to the consumer thread: (topic, partition) -> next offset
    _to_commit: dict = attrs.Factory(dict)
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    #: notified on `_lock` when a partition's in-flight window empties while a rebalance waits for it
    _emptied: threading.Condition = attrs.field(init=False)
    _revoking: frozenset = frozenset()
    _paused_flag: bool = False
    #: rebalances that took partitions away, and the messages that were still in flight after the wait
    revocations: int = 0
    redelivered_after_rebalance: int = 0
    #: the group's lag over the partitions assigned here (`lag_of`); None until librdkafka's first statistics
    lag: int | None = None
    lag_by_partition: dict = attrs.Factory(dict)

    log = Logger()

    def __attrs_post_init__(self):
        self._emptied = threading.Condition(self._lock)
        self.client_id = self.client_id or f"{self.group}@{self.broker.host}"
        self._pauses = Pauses(lambda: self._set_paused(True), lambda: self._set_paused(False))

    # -- ISource ----------------------------------------------------------------


    def status(self) -> dict:
        return {"rebalances": self.revocations, "redelivered_after_rebalance": self.redelivered_after_rebalance,
                "lag": self.lag, "lag_by_partition": dict(self.lag_by_partition)}

    def _set_paused(self, paused: bool) -> None:
        self._paused_flag = paused  # the consumer thread pauses or resumes its partitions


    publish = None  # error reports are not produced to Kafka

    # -- service ----------------------------------------------------------------

    thread_kind = "kafka"

    def startService(self) -> None:
        super().startService()
        self._start_thread()

    def stopService(self) -> Deferred:
        """Stop reading; commit what is done; leave the group."""
        super().stopService()
        return self._stop_thread()

    # -- the consumer thread ----------------------------------------------------------

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException

        config = dict(client_config(self.broker), **{
            "group.id": self.group, "enable.auto.commit": False, "auto.offset.reset": self.start,
            "client.id": f"lorrygate-{self.name}", "enable.partition.eof": False,
            # a gateway that died leaves the group within 10 s, so that its partitions move on (the default: 45 s)
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000,
            "statistics.interval.ms": STATS_S * 1000,
            "stats_cb": lambda statistics: self._reactor.callFromThread(self._lagged, lag_of(statistics)),
            "error_cb": lambda error: self._reactor.callFromThread(self._error, error)})
        try:
            consumer = Consumer(config)
        except KafkaException as exc:
            self._reactor.callFromThread(self._error, exc.args[0] if exc.args else exc)
            return
        paused = False
        try:
            consumer.subscribe(list(self.topics), on_assign=self._assigned, on_revoke=self._revoked)
            while not self._stop.is_set():
                self._commit(consumer)
                if self._paused_flag != paused:
                    assignment = consumer.assignment()
                    (consumer.pause if self._paused_flag else consumer.resume)(assignment)
                    paused = self._paused_flag
                messages = consumer.consume(BATCH, POLL_S)
                batch = []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        self._reactor.callFromThread(self._error, error)
                        continue
                    batch.append((message.topic(), message.partition(), message.offset(), message.key(),
                                  message.value(), message.headers(), message.timestamp()))
                if batch:
                    self._reactor.callFromThread(self._deliver, batch, self._generation, time.time())
        finally:
            self._commit(consumer)
            consumer.close()

    def _assigned(self, consumer, partitions) -> None:
        self._reactor.callFromThread(self._ready, [f"{p.topic}[{p.partition}]" for p in partitions])

    def _revoked(self, consumer, partitions) -> None:
        """Wait (up to `REVOKE_WAIT_S`) for the messages in flight of the partitions taken away, commit, and
        void the acks still to come: their partitions' new owner reads those messages again."""
        revoked = frozenset((p.topic, p.partition) for p in partitions)
        deadline = time.monotonic() + REVOKE_WAIT_S
        with self._emptied:
            self._revoking = revoked
            while not self._stop.is_set() and any(self._outstanding.get(key) for key in revoked):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._emptied.wait(min(left, POLL_S))
            self._revoking = frozenset()
            # at a stop the channel has waited for its storages already; what is left comes again at the next start
            still = 0 if self._stop.is_set() else sum(len(self._outstanding.get(key) or ()) for key in revoked)
        self._commit(consumer)
        with self._lock:
            self._generation += 1
            self._outstanding.clear()
            self._done.clear()
            self._to_commit.clear()
        self._reactor.callFromThread(self._rebalanced, len(revoked), still)

    def _rebalanced(self, partitions: int, still: int) -> None:
        self.revocations += 1
        self.redelivered_after_rebalance += still
        if still:
            self.log.warn("Kafka source {source}: a rebalance took {partitions} partition(s) while {count} messages "
                          "were still in flight after {wait:.0f} s; their new owner reads them again",
                          source=self.name, partitions=partitions, count=still, wait=REVOKE_WAIT_S)

    def _commit(self, consumer) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        with self._lock:
            offsets, self._to_commit = self._to_commit, {}
        if not offsets:
            return
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            # Not committed: those messages come again after a restart or a rebalance.
            self._reactor.callFromThread(self._error, exc.args[0] if exc.args else exc)

    # -- in the reactor thread ---------------------------------------------------------

    def _ready(self, partitions) -> None:
        self.connected = True
        self.last_error = ""
        self.log.info("Kafka source {source}: connected to {servers}, group {group}, assigned {partitions}",
                      source=self.name, servers=client_config(self.broker)["bootstrap.servers"], group=self.group,
                      partitions=", ".join(partitions) or "no partition yet")
        if not self.subscribed:
            self._subscribed()

    def _lagged(self, lags: dict) -> None:
        self.lag_by_partition = lags
        self.lag = sum(lags.values()) if lags else (0 if self.connected else None)

    def _error(self, error) -> None:
        text = explain(error, self.broker)
        if text == self.last_error:
            return  # librdkafka repeats itself while a broker is away
        self.last_error = text
        self.connected = False
        self.log.error("Kafka source {source}: {error} (librdkafka retries by itself)", source=self.name, error=text)

    def _deliver(self, batch, generation: int, received: float) -> None:
        if generation != self._generation:
            return  # read before a rebalance took the partition away
        filters_topics = self.topics
        for topic, partition, offset, key, value, raw_headers, stamp in batch:
            key_text = key.decode("utf-8", "replace") if key else ""
            message_topic = key_text or topic.replace(".", "/")
            with self._lock:
                self._outstanding.setdefault((topic, partition), deque()).append(offset)
            pairs = headers.pairs(raw_headers)
            self.deliver(Message(message_topic, value or b"", 1, False, received,
                                 topic if topic in filters_topics else filters_topics[0],
                                 KafkaAck(self, generation, (topic, partition), offset),
                                 content_type=headers.content_type(pairs) if pairs else None, headers=pairs,
                                 sent=sent_time(stamp[1]) if stamp and stamp[0] else None))

    def _ack(self, generation: int, partition: tuple, offset: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # that partition was revoked; its new owner reads the message again
            done = self._done.setdefault(partition, set())
            done.add(offset)
            outstanding = self._outstanding.get(partition)
            released = None
            while outstanding and outstanding[0] in done:
                released = outstanding.popleft()
                done.discard(released)
            if released is not None:
                self._to_commit[partition] = released + 1
                if not outstanding and partition in self._revoking:
                    self._emptied.notify_all()


"""
An AMQP 0-9-1 source (RabbitMQ), on pika's Twisted adapter.

A channel reads a durable queue of its own (``queue``, by default
``lorrygate.<channel>``) bound to a topic exchange (``exchange``, by default
``amq.topic``) with one binding per topic filter. Topics and routing keys map
as RabbitMQ's MQTT plugin maps them: MQTT levels are AMQP words, ``/`` and
``.`` swap places (the routing key ``mqttkit-1.testdrive.area-42.node-1.data/json``
is the topic ``mqttkit-1/testdrive/area-42/node-1/data.json``), ``+`` is
``*``. So a channel's ``topics``, its strategy and its ``ignore`` filters read
the same whether the messages come over MQTT or AMQP.

Delivery: at least once. ``prefetch`` is the in-flight window; a message is
acknowledged (``basic.ack``, several at once with ``multiple``, in delivery
order) only after its rows, or its dead letter, are committed or spooled.
Nothing is ever ``nack``-ed: a message that cannot be decoded is kept in the
dead-letter table and acknowledged like any other; what is not committed when
the gateway stops or dies stays unacknowledged, and RabbitMQ delivers it again
(with ``redelivered`` set) once the connection is gone. Backpressure cancels
the consumer (messages already sent wait in the gateway, unacknowledged) and
consumes again on resume, one consumer at a time; the end of a consumer the
source cancelled is not a lost channel, even when a resume came before
RabbitMQ confirmed the cancel. A consumer RabbitMQ cancels itself (its queue
deleted) is: the source connects again and declares its queue anew.

A lost connection voids the acks of the messages still in flight, and
RabbitMQ delivers them again under new delivery tags, as it does the latest
ones acknowledged whose ``basic.ack`` it had not read. A message whose
publisher gave it a ``message_id`` is recognised when it comes back: a
delivery with ``redelivered`` set and the same ``message_id``, routing key
and body as one in flight on the lost connection, or one of its last
``2 * prefetch`` acknowledged, is not handed over a second time; it is
acknowledged once the first delivery is committed (`_Away`).
Without a ``message_id`` nothing identifies a message across deliveries, and
those come back as new (stored twice unless the storage is ``idempotent``).

The status and ``lorrygate_source_lag`` tell the queue's lag every
`COUNT_S` seconds: the messages ready in it (a passive ``queue.declare`` on
a channel opened for that, so that an error there cannot close the
consumer's) and those delivered here and not yet acknowledged.
"""

import hashlib
from collections import deque
from typing import Any

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.decoding.charsets import UTF8, codec_name, transcoded
from lorrygate.decoding.timestamps import sent_time
from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.mqtt.topics import parse_filter
from lorrygate.sources import headers
from lorrygate.sources.encodings import COMPRESSED, inflated
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: the header in which RabbitMQ's message timestamp plugin (rabbitmq_message_timestamp) puts the time it received
#: a message, in epoch milliseconds: the bus's time of it (`Message.sent`). The ``timestamp`` property holds
#: whole seconds, too coarse for a row's time, and is left alone
STAMP = "timestamp_in_ms"


def _stamped(value) -> float | None:
    return sent_time(value) if isinstance(value, int) and not isinstance(value, bool) else None


def topic_of(routing_key: str) -> str:
    """The MQTT-style topic of a routing key (``.`` and ``/`` swap, as in RabbitMQ's MQTT plugin)."""
    return routing_key.translate(_SWAP)


def binding_of(topic_filter: str) -> str:
    """The AMQP binding key of an MQTT topic filter."""
    words = topic_filter.translate(_SWAP).split(".")
    return ".".join("*" if word == "+" else word for word in words)


_SWAP = str.maketrans("./", "/.")


#: ``content_encoding`` values that say the body is as it is: kombu (Celery) sends ``binary`` with bytes
_AS_IS = ("", "identity", "binary", "8bit", "7bit")


def unencoded(body: bytes, encoding: str | None, limit: int, content_type: str | None = None) -> tuple:
    """``(body, why)``: the body of a message with the ``content_encoding`` its publisher gave, as the decoders
    read it, and None; or the body as it came and why it cannot be read. ``gzip`` (Telegraf's amqp output) and
    ``deflate`` are inflated up to ``limit`` bytes (the broker's ``max_payload``); a charset (kombu and
    many pika publishers put ``utf-8`` there, as their JSON's charset) is read as such into UTF-8, unless the
    ``content_type`` names one: the channel reads the body in that (once, not twice)."""
    name = encoding.strip().lower() if encoding else ""
    if name in _AS_IS:
        return body, None
    if name in COMPRESSED:
        try:
            return inflated(body, name, limit, "the broker's max_payload", "content_encoding"), None
        except ValueError as exc:
            return body, str(exc)
    charset = codec_name(name)
    if charset is not None:
        if charset in UTF8 or (content_type and "charset" in content_type.lower()):
            return body, None
        return transcoded(body, charset), None
    return body, (f"content_encoding {encoding!r} is no encoding lorrygate reads: gzip, deflate, identity or a "
                  "charset (utf-8); have the publisher send one of them")


def explain_amqp_failure(exc: Exception, broker) -> str:
    """Say in words why connecting to a RabbitMQ failed, and what may fix it."""
    from pika import exceptions
    from twisted.internet.error import ConnectionDone, ConnectionLost

    from lorrygate.sources.mqtt import explain_failure

    if isinstance(exc, (exceptions.ProbableAuthenticationError, exceptions.AuthenticationError)):
        return (f"RabbitMQ refused the credentials of user {broker.username or 'guest'!r} ({exc}): check username "
                "and password")
    if isinstance(exc, exceptions.IncompatibleProtocolError):
        return f"{broker.host}:{broker.port} does not speak AMQP 0-9-1 (an MQTT port? a TLS-only listener?)"
    if isinstance(exc, exceptions.ProbableAccessDeniedError):
        return f"RabbitMQ denied access to virtual host {broker.vhost!r} ({exc}): check the user's permissions"
    if isinstance(exc, exceptions.ChannelClosedByBroker):
        return f"RabbitMQ closed the channel: {exc.reply_text} (code {exc.reply_code})"
    if isinstance(exc, exceptions.ConnectionClosedByBroker):
        return f"RabbitMQ closed the connection: {exc.reply_text} (code {exc.reply_code})"
    if isinstance(exc, exceptions.AMQPConnectionError) and not str(exc).strip("()0123456789, "):
        return "RabbitMQ closed the connection during the handshake (wrong port, a TLS-only listener, or refused)"
    if isinstance(exc, (ConnectionDone, ConnectionLost)):
        return f"the connection closed ({exc.__class__.__name__})"
    return explain_failure(exc, broker)


@attrs.define(eq=False)
class AmqpAck:
    """Acknowledges one delivery of one channel (connection) generation."""

    source: Any
    generation: int
    tag: int

    def ack(self) -> None:
        self.source._ack(self.generation, self.tag)


@attrs.define(eq=False)
class _Away:
    """A delivery with a ``message_id`` that a lost connection left in flight: whether its commit came,
    and the delivery of the same message on a later connection that waits for it (generation, tag)."""

    identity: tuple
    #: (generation, tag) of the first delivery
    key: tuple
    committed: bool = False
    forward: tuple | None = None


#: the most such deliveries remembered (the oldest are forgotten first: at worst stored twice, as without)
AWAY_LIMIT = 100_000
#: seconds between two counts of the queue's messages (the lag)
COUNT_S = 5.0


@implementer(ISource)
@attrs.define(eq=False)
class AMQPSource(SourcePlumbing, Service):
    """Consumes a channel's queue from one RabbitMQ."""
    #: other gateways may read the same (competing consumers): no client-id lock
    shared = True

    name: str  # type: ignore[assignment]  # Service.name, always set here
    broker: Any  # lorrygate.config.settings.BrokerSettings, type amqp
    topics: tuple
    deliver: Any
    _clock: Any
    _reactor: Any = None
    exchange: str = "amq.topic"
    queue: str = ""
    prefetch: int = 2000
    _filters: tuple = ()
    _service: ClientService | None = None
    _protocol: Any = None
    _channel: Any = None
    _consumer_tag: str = ""
    _connect_error: str = ""
    _failures: int = 0
    #: the connection (and channel) generation: acks of an older one are void
    _generation: int = 0
    #: delivery tags of this generation in delivery order, and those done
    _outstanding: deque = attrs.Factory(deque)
    _done: set = attrs.Factory(set)
    _ack_call: Any = None
    _acked_up_to: int = 0
    #: deliveries that arrived while paused (sent before the cancel took effect)
    _held: list = attrs.Factory(list)
    _consuming: Deferred | None = None
    #: delivery tag -> (message_id, routing key, body) of this generation's deliveries in flight that have one
    _identities: dict = attrs.Factory(dict)
    #: identities of this generation's latest deliveries acknowledged (their ``basic.ack`` may not have reached
    #: RabbitMQ when the connection is lost)
    _recent: deque = attrs.Factory(deque)
    #: delivery tag -> `_Away`, of this generation's deliveries that are copies of one in flight before
    _copies: dict = attrs.Factory(dict)
    #: identity -> [`_Away`, ...] of deliveries lost connections left in flight, oldest first
    _away: dict = attrs.Factory(dict)
    #: (generation, tag) of such a delivery -> its `_Away`, for its late ack (oldest first)
    _away_acks: dict = attrs.Factory(dict)
    #: deliveries not handed over again: RabbitMQ sent them again while the first was in flight
    redelivered_in_flight: int = 0
    #: the queue's messages ready and those in flight here, counted every `COUNT_S` seconds (None: not known)
    lag: int | None = None
    _counter: Any = None
    _counting: bool = False

    log = Logger()

    def __attrs_post_init__(self):
        self._filters = tuple(parse_filter(topic) for topic in self.topics)
        self.queue = self.queue or f"lorrygate.{self.name}"
        self._recent = deque(maxlen=max(2 * self.prefetch, 1000))
        self.client_id = self.client_id or f"{self.queue}@{self.broker.host}"
        if self._reactor is None:
            self._reactor = self._clock
        self._pauses = Pauses(self._pause_consumer, self._resume_consumer)

    # -- ISource ----------------------------------------------------------------


    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.is_open

    def status(self) -> dict:
        return {"redelivered_in_flight": self.redelivered_in_flight, "in_flight": len(self._outstanding),
                "lag": self.lag}


    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish to the exchange, best effort (error reports)."""
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        d = channel.basic_publish(self.exchange, topic.translate(_SWAP), payload)
        d.addErrback(lambda failure: self.log.debug("AMQP source {source}: report to {topic} not sent: {error}",
                                                    source=self.name, topic=topic, error=failure.getErrorMessage()))

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        broker = self.broker
        endpoint: Any = HostnameEndpoint(self._reactor, broker.host, broker.port, timeout=broker.connect_timeout)
        if broker.tls:
            from lorrygate.sources.mqtt import FreshTLS

            endpoint = FreshTLS(broker, endpoint)
        from lorrygate.sources.mqtt import _Reporting

        self._service = ClientService(_Reporting(endpoint, self), _AmqpFactory(self), retryPolicy=self._retry_delay,
                                      clock=self._clock, prepareConnection=self._handshake)
        self._service.startService()
        from twisted.internet.task import LoopingCall

        self._counter = LoopingCall(self._count)
        self._counter.clock = self._clock
        self._counter.start(COUNT_S, now=False)

    def stopService(self) -> Deferred:
        """Send the acks released so far, close the channel and the connection, stop reconnecting."""
        super().stopService()
        self.subscribed = False
        counter, self._counter = self._counter, None
        if counter is not None and counter.running:
            counter.stop()
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        self._flush_acks()
        protocol, self._protocol = self._protocol, None
        self._channel = None
        service, self._service = self._service, None
        d = succeed(None)
        if protocol is not None:
            d = Deferred.fromCoroutine(self._close(protocol))
        if service is not None:
            d.addCallback(lambda _: service.stopService())
        return d

    async def _close(self, protocol) -> None:
        try:
            if protocol.is_open:
                await protocol.close()
        except Exception as exc:  # closing a dead connection
            self.log.debug("AMQP source {source}: closing: {error}", source=self.name, error=str(exc))

    def _retry_delay(self, attempts: int) -> float:
        delay = backoffPolicy(initialDelay=0.5, maxDelay=self.broker.reconnect_max_delay)(max(attempts, self._failures))
        failed, self._connect_error = self._connect_error, ""
        if failed and self.running:
            self.log.error("AMQP source {source}: connecting to {host}:{port} failed: {error}; next try in "
                           "{delay:.1f} s", source=self.name, host=self.broker.host, port=self.broker.port,
                           error=failed, delay=delay)
        return delay

    def _connect_failed(self, failure):
        self._connect_error = self.last_error = explain_amqp_failure(failure.value, self.broker)
        return failure

    def _handshake(self, protocol) -> Deferred:
        return Deferred.fromCoroutine(self._establish(protocol))

    async def _establish(self, protocol) -> None:
        try:
            await protocol.ready
            channel = await protocol.channel()
            await channel.basic_qos(prefetch_count=self.prefetch)
            if self.exchange and not self.exchange.startswith("amq."):
                await channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            await channel.queue_declare(self.queue, durable=True)
            for topic_filter in self._filters:
                await channel.queue_bind(self.queue, self.exchange, routing_key=binding_of(topic_filter.text))
        except Exception as exc:
            self._failures += 1
            self.last_error = explain_amqp_failure(exc, self.broker)
            if self.running:
                self.log.error("AMQP source {source}: connecting to {host}:{port} failed: {error}; retrying",
                               source=self.name, host=self.broker.host, port=self.broker.port, error=self.last_error)
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            return
        if not self.running:
            await self._close(protocol)
            return
        self._failures = 0
        self._keep_away()
        self._generation += 1
        self._outstanding.clear()
        self._done.clear()
        self._acked_up_to = 0
        self._held.clear()
        self._protocol, self._channel = protocol, channel
        if protocol.closed is not None:
            protocol.closed.addBoth(lambda reason: self._lost(channel, reason))
        if not self._pauses.paused:
            await self._consume()
        self.log.info("AMQP source {source}: connected to {host}:{port} vhost {vhost}, consuming queue {queue} bound "
                      "to {exchange} with {bindings}", source=self.name, host=self.broker.host, port=self.broker.port,
                      vhost=self.broker.vhost, queue=self.queue, exchange=self.exchange,
                      bindings=",".join(binding_of(f.text) for f in self._filters))
        self._subscribed()

    async def _consume(self) -> None:
        """Consume, unless a consumer is there or on its way (``basic.consume`` sent, no answer yet)."""
        channel = self._channel
        if channel is None or self._consumer_tag or self._consuming is not None:
            return
        self._consuming = consuming = channel.basic_consume(self.queue, auto_ack=False)
        try:
            queue, tag = await consuming
        finally:
            if self._consuming is consuming:
                self._consuming = None
        if channel is not self._channel:
            return  # the channel was lost meanwhile: its consumer went with it
        self._consumer_tag = tag
        self._read(queue, self._generation, tag)
        if self._pauses.paused:  # paused while the consumer was on its way
            self._pause_consumer()

    def _read(self, queue, generation: int, tag: str) -> None:
        """Take every delivery waiting in the adapter's queue (a DeferredQueue: its ``pending`` list),
        then wait for the next one: one Deferred per wake-up, not per message."""

        def got(item):
            if generation == self._generation:
                self._received(item, generation)
                self._read(queue, generation, tag)

        def ended(failure):
            from pika.exceptions import ConsumerCancelled

            if generation != self._generation:
                return None
            if failure.check(ConsumerCancelled) and tag != self._consumer_tag:
                return None  # a consumer we cancelled (a pause), whether or not it was resumed since
            self._lost(self._channel, failure.value)  # the channel closed, or RabbitMQ cancelled the consumer
            return None

        waiting = queue.pending
        while waiting and generation == self._generation:
            items = waiting[:]
            del waiting[:]
            for item in items:
                self._received(item, generation)
        if generation == self._generation:
            queue.get().addCallbacks(got, ended)

    def _pause_consumer(self) -> None:
        channel, tag = self._channel, self._consumer_tag
        if channel is not None and tag:
            self._consumer_tag = ""
            channel.basic_cancel(tag).addErrback(lambda failure: None)

    def _resume_consumer(self) -> None:
        held, self._held = self._held, []
        for item, generation in held:
            if generation == self._generation:
                self._deliver(item, generation)
        if self._channel is not None and not self._pauses.paused:
            Deferred.fromCoroutine(self._consume()).addErrback(
                lambda failure: self.log.error("AMQP source {source}: consuming again failed: {error}",
                                               source=self.name, error=failure.getErrorMessage()))

    def _count(self) -> None:
        """Count the queue's messages (one count at a time)."""
        if self._counting:
            return
        self._counting = True
        d = Deferred.fromCoroutine(self._count_queue())
        d.addBoth(lambda _: setattr(self, "_counting", False))

    async def _count_queue(self) -> None:
        protocol = self._protocol
        if protocol is None or not self.connected:
            self.lag = None
            return
        try:
            counting = await protocol.channel()
            try:
                answer = await counting.queue_declare(self.queue, passive=True)
            finally:
                if counting.is_open:
                    counting.close()  # (pika's close is not awaited: the count is in)
        except Exception as exc:  # (the connection going away, the queue deleted: its channel closed, not ours)
            self.lag = None
            self.log.debug("AMQP source {source}: counting queue {queue}: {error}", source=self.name,
                           queue=self.queue, error=str(exc))
            return
        self.lag = answer.method.message_count + len(self._outstanding)

    def _lost(self, channel, reason) -> None:
        if channel is None or channel is not self._channel:
            return None
        self._channel = None
        self._consumer_tag = ""
        self._consuming = None
        self.subscribed = False
        self._keep_away()
        self._generation += 1  # acks of the lost channel are void: RabbitMQ delivers those messages again
        if not self.running:
            return None
        if hasattr(reason, "value"):
            reason = reason.value
        reason = explain_amqp_failure(reason, self.broker) if isinstance(reason, Exception) else str(reason)
        self.last_error = f"connection lost ({reason})"
        self.log.warn("AMQP source {source}: connection to {host}:{port} lost ({reason}); reconnecting",
                      source=self.name, host=self.broker.host, port=self.broker.port, reason=reason)
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()
        return None

    def _received(self, item, generation: int) -> None:
        if self._pauses.paused:
            self._held.append((item, generation))
            return
        self._deliver(item, generation)

    def _deliver(self, item, generation: int) -> None:
        _, method, properties, body = item
        tag = method.delivery_tag
        self._outstanding.append(tag)
        message_id = properties.message_id
        if message_id:
            identity = (message_id, method.routing_key, body)
            if method.redelivered and identity in self._away and self._copy(identity, generation, tag):
                return
            self._identities[tag] = identity
        topic = topic_of(method.routing_key)
        subscription = self._filters[0].text
        if len(self._filters) > 1:
            for candidate in self._filters:
                if candidate.matches(topic):
                    subscription = candidate.text
                    break
        table = properties.headers
        oversize = refused = None
        limit = self.broker.max_payload
        if len(body) > limit:
            oversize, body = (len(body), hashlib.sha256(body).hexdigest()), b""
        elif properties.content_encoding:
            body, refused = unencoded(body, properties.content_encoding, limit, properties.content_type)
        self.deliver(Message(topic, body, 1, False, time_of_day(self._clock)(), subscription,
                             AmqpAck(self, generation, tag), oversize, content_type=properties.content_type or None,
                             headers=headers.pairs(table.items()) if table else (),
                             sent=_stamped(table.get(STAMP)) if table else None, refused=refused))

    # -- acknowledgements ---------------------------------------------------------

    def _ack(self, generation: int, tag: int) -> None:
        if generation != self._generation:
            # that channel is gone; RabbitMQ delivers the message again, and a copy may wait for this commit
            away = self._away_acks.get((generation, tag))
            if away is not None:
                away.committed = True
                if away.forward is not None:
                    self._settle(away)
            return
        self._done.add(tag)
        outstanding, done = self._outstanding, self._done
        identities = self._identities
        released = 0
        while outstanding and outstanding[0] in done:
            released = outstanding.popleft()
            done.discard(released)
            if identities:
                identity = identities.pop(released, None)
                if identity is not None:
                    self._recent.append(identity)
        if released:
            self._acked_up_to = released
            if self._ack_call is None:
                self._ack_call = self._clock.callLater(0, self._flush_acks)

    # -- deliveries a lost connection left in flight --------------------------------

    def _keep_away(self) -> None:
        """The channel of this generation is gone: remember its deliveries in flight that have a
        ``message_id``, so that their copies on the next channel are recognised (`_copy`)."""
        done, identities, copies = self._done, self._identities, self._copies
        away, acks, generation = self._away, self._away_acks, self._generation
        for number, identity in enumerate(self._recent):  # committed: a copy is acknowledged at once
            acks[(generation, -1 - number)] = record = _Away(identity, (generation, -1 - number), committed=True)
            away.setdefault(identity, []).append(record)
        self._recent.clear()
        for tag in self._outstanding:
            if tag in done:
                continue
            copied = copies.get(tag)
            if copied is not None:
                copied.forward = None  # the copy is lost as well; the first delivery's commit is still to come
                continue
            identity = identities.get(tag)
            if identity is not None:
                acks[(generation, tag)] = record = _Away(identity, (generation, tag))
                away.setdefault(identity, []).append(record)
        identities.clear()
        copies.clear()
        self._outstanding.clear()
        done.clear()
        if len(acks) > AWAY_LIMIT:  # the oldest whose copy never came (another consumer's, say)
            for record in [r for r in acks.values() if r.forward is None][:len(acks) - AWAY_LIMIT]:
                self._forget(record)

    def _forget(self, record: _Away) -> None:
        self._away_acks.pop(record.key, None)
        records = self._away.get(record.identity)
        if records is not None and record in records:
            records.remove(record)
            if not records:
                del self._away[record.identity]

    def _copy(self, identity, generation: int, tag: int) -> bool:
        """Whether a redelivery is a copy of a delivery in flight on a lost channel; if so, it is acknowledged
        once that delivery commits (at once if it has), and not handed over."""
        record = next((r for r in self._away[identity] if r.forward is None), None)
        if record is None:
            return False
        self.redelivered_in_flight += 1
        record.forward = (generation, tag)
        self._identities[tag] = identity  # once acknowledged, among the latest (a third delivery is a copy too)
        if record.committed:
            self._settle(record)
        else:
            self._copies[tag] = record
        return True

    def _settle(self, record: _Away) -> None:
        """The first delivery is committed and its copy is here: acknowledge the copy, forget both."""
        assert record.forward is not None
        generation, tag = record.forward
        self._forget(record)
        if self._copies.get(tag) is record:
            del self._copies[tag]
        self._ack(generation, tag)

    def _flush_acks(self) -> None:
        """One ``basic.ack`` with ``multiple`` for every delivery released since the last."""
        self._ack_call = None
        tag, self._acked_up_to = self._acked_up_to, 0
        channel = self._channel
        if tag and channel is not None and channel.is_open:
            channel.basic_ack(delivery_tag=tag, multiple=True)


class _AmqpFactory(Factory):
    noisy = False

    def __init__(self, source: AMQPSource):
        self.source = source

    def buildProtocol(self, addr):
        import pika
        from pika.adapters.twisted_connection import TwistedProtocolConnection

        broker = self.source.broker
        credentials = pika.PlainCredentials(broker.username or "guest",
                                            broker.password.reveal() if broker.password else "guest")
        parameters = pika.ConnectionParameters(
            virtual_host=broker.vhost, credentials=credentials, heartbeat=broker.keepalive,
            client_properties={"connection_name": f"lorrygate {self.source.name}"})
        protocol = _connection_class(TwistedProtocolConnection)(parameters, custom_reactor=self.source._reactor)
        protocol.factory = self
        return protocol


def _connection_class(base):
    """pika's Twisted connection, keeping why opening it failed (pika reports only "AMQPConnectionError(1)")."""

    class Connection(base):
        #: the handshake state when the connection was lost (pika reports a bare ConnectionDone)
        lost_in_state = None

        def connectionLost(self, reason=None):
            self.lost_in_state = self._impl.connection_state
            return super().connectionLost(reason)

        def _on_connection_failed(self, _connection, error=None):
            d, self.ready = self.ready, None
            if not d:
                return
            from pika import exceptions
            from pika.connection import Connection as State

            # As pika itself reads a close during the handshake (pika.connection._on_stream_terminated):
            # while authenticating, the credentials; while tuning, the virtual host.
            state = self.lost_in_state
            if state == State.CONNECTION_START:
                error = exceptions.ProbableAuthenticationError("the connection closed while authenticating")
            elif state == State.CONNECTION_TUNE:
                error = exceptions.ProbableAccessDeniedError("the connection closed while opening the virtual host")
            elif state == State.CONNECTION_PROTOCOL:
                error = exceptions.IncompatibleProtocolError("the server does not speak AMQP 0-9-1")
            d.errback(error if isinstance(error, Exception) else exceptions.AMQPConnectionError(error))

    return Connection

"""
The MQTT source: one persistent session per channel, reconnecting for ever.

Reconnects are a Twisted `ClientService` with a jittered exponential backoff;
each new connection sends CONNECT (clean session off, so that messages queued
while the gateway was away arrive when it returns) and subscribes again.

A connection that closes (a broker restart, a network cut) while messages are
in flight leaves them unacknowledged in the session, and the broker sends them
again on the next connection, with their packet ids and the DUP flag
(MQTT-4.4.0-1). The source keeps the deliveries of the closed connection by
packet id: a copy that comes again while its first delivery is still on its
way to the storage is not handed over a second time; its PUBACK (or PUBREC)
goes out when the first one is committed, or at once if that already was.
Without a session on the new connection (CONNACK's session present unset)
nothing comes again and they are forgotten.
"""

import socket
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.interfaces import ISource
from lorrygate.model import NO_ACK, Message
from lorrygate.mqtt import codec
from lorrygate.mqtt.protocol import (
    DISCONNECT_REASONS,
    MQTTClientProtocol,
    PacketTooLarge,
    Receipts,
    SubscriptionRefused,
)
from lorrygate.mqtt.topics import parse_filter
from lorrygate.sources.broker_drops import DROPPED_TOPIC, DropWatch, count_of
from lorrygate.sources.mqtt_sessions import SessionRecord
from lorrygate.sources.pauses import Pauses, SourcePlumbing
from lorrygate.sources.unread import unread_bytes

if TYPE_CHECKING:
    from lorrygate.config.settings import BrokerSettings



def default_client_id(channel: str) -> str:
    """A client id that stays the same across restarts of this host's gateway."""
    return f"lorrygate-{socket.gethostname()}-{channel}"


def tls_options(settings):
    """Build Twisted client TLS options from broker settings (verification on)."""
    from twisted.internet import ssl

    trust = None
    if settings.tls_ca:
        with open(settings.tls_ca, "rb") as handle:
            bundle = handle.read()
        # Every certificate of a bundle (a CA and its intermediates), not only the first.
        end = b"-----END CERTIFICATE-----"
        pems = [part + end for part in bundle.split(end) if b"-----BEGIN CERTIFICATE-----" in part]
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem) for pem in pems])
    client_cert = None
    if settings.tls_cert:
        with open(settings.tls_cert, "rb") as handle:
            cert_pem = handle.read()
        key_pem = cert_pem
        if settings.tls_key:
            with open(settings.tls_key, "rb") as handle:
                key_pem = handle.read()
        client_cert = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    return ssl.optionsForClientTLS(settings.host, trustRoot=trust, clientCertificate=client_cert)


#: a time of day before this (2025-01-01) is a clock not set yet: no certificate of a broker is valid by it
CLOCK_SET_AFTER = 1_735_689_600


def explain_failure(exc: Exception, broker, now: float | None = None) -> str:
    """Say in words why a connection attempt failed, and what may fix it. ``now``: the time of day (the
    system clock's)."""
    from OpenSSL.SSL import Error as TLSError
    from twisted.internet.error import ConnectionDone, ConnectionLost

    if isinstance(exc, TLSError):
        reasons = "; ".join(part[2] for part in exc.args[0] if len(part) > 2 and part[2]) if exc.args else ""
        now = time.time() if now is None else now
        if now < CLOCK_SET_AFTER:
            # an edge box without a real-time clock, before its NTP client set the clock: every certificate is
            # "not yet valid"; the attempts go on, and the one after the clock is set connects
            shown = datetime.fromtimestamp(max(now, 0), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return (f"TLS handshake failed: {reasons or exc}; this machine's clock says {shown}, before any "
                    "certificate of the broker is valid: set the clock (NTP); the gateway connects at its next try")
        return (
            f"TLS handshake failed: {reasons or exc}; check that tls_ca holds the CA that signed the "
            f"broker's certificate and that host {broker.host!r} is a name in that certificate"
        )
    from service_identity import VerificationError

    if isinstance(exc, VerificationError):
        return (
            f"TLS handshake failed: the broker's certificate is not for host {broker.host!r} ({exc}); "
            f"check that host {broker.host!r} is a name in that certificate"
        )
    if isinstance(exc, (ConnectionDone, ConnectionLost)):
        hints = []
        if broker.protocol == "5":
            hints.append("a broker without MQTT 5? then set protocol = 3.1.1")
        if not broker.tls:
            hints.append("a TLS-only listener? then set tls = true")
        hint = f" ({'; '.join(hints)})" if hints else ""
        return f"the broker closed the connection before answering CONNECT{hint}"
    return str(exc) or type(exc).__name__


class _ProtocolFactory(Factory):
    noisy = False

    def __init__(self, source):
        self._source = source

    def buildProtocol(self, addr):
        return MQTTClientProtocol(self._source._received, self._source._clock, self._source.version,
                                  self._source.broker.max_payload, self._source._receipts)


@implementer(IStreamClientEndpoint)
class FreshTLS:
    """An endpoint that reads the broker's TLS files (``tls_ca``, ``tls_cert``, ``tls_key``) again for each
    connection attempt. They were read once, at the start: a client certificate renewed on disk before the old
    one expired was not used, and every reconnection after the expiry failed until the gateway restarted. A
    file that cannot be read now (half written by the renewal) fails this attempt, and the next one reads it
    again."""

    def __init__(self, broker, endpoint):
        self._broker = broker
        self._endpoint = endpoint

    def connect(self, factory):
        from twisted.internet.defer import fail

        try:
            options = tls_options(self._broker)
        except Exception as exc:
            return fail(TLSFilesUnreadable(f"the TLS files (tls_ca, tls_cert, tls_key) cannot be read: "
                                           f"{type(exc).__name__}: {exc}"))
        return wrapClientTLS(options, self._endpoint).connect(factory)


class TLSFilesUnreadable(Exception):
    """A connection attempt's TLS files could not be read or parsed."""


@implementer(IStreamClientEndpoint)
class _Reporting:
    """An endpoint that tells its source why a connection attempt failed (refused, DNS, TLS)."""

    def __init__(self, endpoint, source):
        self._endpoint = endpoint
        self._source = source

    def connect(self, factory):
        return self._endpoint.connect(factory).addErrback(self._source._connect_failed)


@implementer(ISource)
@attrs.define(eq=False)
class MQTTSource(SourcePlumbing, Service):
    """Receives the messages of a channel's subscriptions from one broker.

    :param deliver: called with every `Message`; the message's ``ack`` handle
        sends its acknowledgement.
    """

    name: str  # type: ignore[assignment]  # Service.name, always set here
    broker: "BrokerSettings"
    topics: tuple
    qos: int
    deliver: Any
    _clock: Any
    _reactor: Any = None
    version: int = codec.MQTT_3_1_1
    _filters: tuple = ()
    _service: ClientService | None = None
    _protocol: MQTTClientProtocol | None = None
    _connect_error: str = ""
    _failures: int = 0
    #: retained messages on (re)subscribe: "new" (only for a new
    #: subscription), "always" or "never"
    retained: str = "new"
    #: error reports larger than the broker's Maximum Packet Size, not sent
    reports_too_large: int = 0
    #: a gateway group: subscribe through shared subscriptions, ``$share/<group>/<filter>``
    group: str = ""
    _session_present: bool = False
    _recent_losses: list = attrs.Factory(list)
    #: packet id -> the delivery of a closed connection not acknowledged on it (the broker sends it again)
    _away: dict = attrs.Factory(dict)
    #: messages the broker sent again while their first delivery was still held, not handed over twice
    redelivered_in_flight: int = 0
    #: the session's QoS 2 messages whose PUBREC went out, their PUBREL not yet come (`Receipts`)
    _receipts: Receipts = attrs.Factory(Receipts)
    #: connections made (CONNACK received): a decoder that asks devices for their values tells a new one by it
    connections: int = 0
    #: tells the time of day a message is received at (`lorrygate.clock.time_of_day`)
    _time_of_day: Any = None
    #: the broker's count of the messages it dropped (`lorrygate.sources.broker_drops`); None: not watched
    drops: DropWatch | None = None
    #: where the filters its session is subscribed to are recorded (`lorrygate.sources.mqtt_sessions`); None:
    #: not recorded, and a filter an earlier config subscribed is not unsubscribed
    data_dir: str | None = None

    log = Logger()

    def __attrs_post_init__(self):
        self._filters = tuple(parse_filter(topic) for topic in self.topics)
        self.version = codec.VERSIONS[self.broker.protocol]
        if not self.client_id:
            base = self.broker.client_id
            # One session per channel: the channel name keeps the ids apart.
            self.client_id = f"{base}-{self.name}" if base else default_client_id(self.name)
        if self._reactor is None:
            self._reactor = self._clock
        self._time_of_day = time_of_day(self._clock)
        self._pauses = Pauses(self._pause_protocol, self._resume_protocol)
        if self._filters and getattr(self.broker, "watch_drops", False):
            self.drops = DropWatch(self.name, self.log, count_of(self.broker.host, self.broker.port))

    # -- ISource --------------------------------------------------------------


    def unread(self) -> int | None:
        """Bytes the broker sent that wait unread in the connection's socket (0 without a connection)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return 0
        return unread_bytes(protocol.transport)

    def _pause_protocol(self) -> None:
        if self._protocol is not None:
            self._protocol.pauseReading()

    def _resume_protocol(self) -> None:
        if self._protocol is not None:
            self._protocol.resumeReading()


    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish on this source's connection, best effort (error reports)."""
        protocol = self._protocol
        if protocol is None or not protocol.connected:
            self.log.debug("MQTT source {source}: not connected, report to {topic} not sent", source=self.name, topic=topic)
            return
        try:
            d = protocol.publish(topic, payload, qos)
        except PacketTooLarge as exc:
            self.reports_too_large += 1
            self.log.debug("MQTT source {source}: report to {topic!r:.200} not sent: {error}", source=self.name,
                           topic=topic, error=str(exc))
            return
        except Exception as exc:  # a packet that cannot be encoded is not worth a connection
            self.log.warn("MQTT source {source}: report to {topic!r:.200} not sent: {error}", source=self.name,
                          topic=topic, error=str(exc))
            return
        d.addErrback(
            lambda failure: self.log.debug(
                "MQTT source {source}: report to {topic} not acknowledged: {error}",
                source=self.name,
                topic=topic,
                error=failure.getErrorMessage(),
            )
        )

    @property
    def connected(self) -> bool:
        return self._protocol is not None and bool(self._protocol.connected)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        broker = self.broker
        endpoint: Any = HostnameEndpoint(self._reactor, broker.host, broker.port, timeout=broker.connect_timeout)
        if broker.tls:
            endpoint = FreshTLS(broker, endpoint)
        self._service = ClientService(
            _Reporting(endpoint, self),
            _ProtocolFactory(self),
            retryPolicy=self._retry_delay,
            clock=self._clock,
            prepareConnection=cast(Any, self._handshake),
        )
        self._service.startService()

    def status(self) -> dict:
        return {"redelivered_in_flight": self.redelivered_in_flight, "qos2_copies": self._receipts.copies,
                **(self.drops.status() if self.drops is not None else {})}

    def stopService(self) -> Deferred:
        """Send the acks already released, then DISCONNECT, and stop reconnecting."""
        super().stopService()
        self.subscribed = False
        self._away.clear()
        protocol, self._protocol = self._protocol, None
        service, self._service = self._service, None
        d = protocol.disconnect() if protocol is not None and protocol.connected else succeed(None)
        if service is not None:
            d.addCallback(lambda _: service.stopService())
        return d

    def _retry_delay(self, attempts: int) -> float:
        # A broker that accepts TCP but refuses the MQTT handshake counts as a
        # failed attempt too, so that the backoff grows for it as well.
        policy = backoffPolicy(initialDelay=0.5, maxDelay=self.broker.reconnect_max_delay)
        delay = policy(max(attempts, self._failures))
        failed, self._connect_error = self._connect_error, ""
        if failed and self.running:
            self.log.error("MQTT source {source}: connecting to {host}:{port} failed: {error}; next try in {delay:.1f} s",
                           source=self.name, host=self.broker.host, port=self.broker.port, error=failed, delay=delay)
        return delay

    def _connect_failed(self, failure):
        """A TCP or TLS connection attempt failed: keep why, for the log line of the retry and the status."""
        self._connect_error = self.last_error = explain_failure(failure.value, self.broker, self._time_of_day())
        return failure

    def _handshake(self, protocol: MQTTClientProtocol) -> Deferred:
        broker = self.broker
        props = {}
        if self.version == codec.MQTT_5:
            props["receive_maximum"] = broker.receive_maximum
            if not broker.clean_session:
                props["session_expiry_interval"] = broker.session_expiry
        connect = codec.Connect(
            client_id=self.client_id,
            version=self.version,
            clean_start=broker.clean_session,
            keepalive=broker.keepalive,
            username=broker.username or None,
            password=broker.password.reveal().encode("utf-8") if broker.password else None,
            properties=props,
        )
        return Deferred.fromCoroutine(self._establish(protocol, connect))

    async def _establish(self, protocol: MQTTClientProtocol, connect) -> None:
        try:
            connack = await protocol.connect(connect)
            self._session_present = connack.session_present
            if not connack.session_present:
                self._away.clear()  # a new session: nothing comes again, and its packet ids start afresh
                self._receipts.ids.clear()
            assigned = connack.properties.get("assigned_client_identifier")
            if assigned and assigned != self.client_id:
                self.log.warn("MQTT source {source}: the broker assigned the client id {assigned!r} instead of "
                              "{client_id!r}", source=self.name, assigned=assigned, client_id=self.client_id)
                self.client_id = assigned
            # A persistent session delivers its queue right after the CONNACK,
            # before the SUBACK: from here on this connection is the one that
            # a pause and a stop (acks, then DISCONNECT) must reach.
            if not self.running:
                protocol.disconnect()
                return
            self._protocol = protocol
            self.connections += 1
            protocol.when_lost().addCallback(lambda _: self._orphaned(protocol))
            if self._pauses.paused:
                protocol.pauseReading()
            if self._filters:  # a client that only publishes (an MQTT sink) subscribes to nothing
                await protocol.subscribe([(self._shared(f.text), self._options()) for f in self._filters])
            await self._forget_stale(protocol, connack.session_present)
        except Exception as exc:
            if self._protocol is protocol:
                self._protocol = None
            if not self.running:
                return
            self._failures += 1
            self.last_error = explain_failure(exc, self.broker)
            self.log.error(
                "MQTT source {source}: connecting to {host}:{port} failed: {error}; retrying",
                source=self.name,
                host=self.broker.host,
                port=self.broker.port,
                error=explain_failure(exc, self.broker),
            )
            # Closing the connection makes ClientService wait and retry (a
            # failing prepareConnection would leave the connection open).
            protocol.transport.abortConnection()
            return
        self._failures = 0
        if not self.running or self._protocol is not protocol:
            return  # stopped while subscribing: stopService disconnected it
        if self.drops is not None:
            # (not waited for: the channel's own subscription is what makes the source subscribed)
            protocol.subscribe([(DROPPED_TOPIC, 0)]).addErrback(self._drops_refused, protocol)
        protocol.when_lost().addCallback(lambda _: self._lost(protocol))
        self.log.info(
            "MQTT source {source}: connected to {host}:{port} as {client_id} "
            "(MQTT {version}, session present: {session_present}), subscribed to {topics}"
            if self._filters else "MQTT {source}: connected to {host}:{port} as {client_id} (MQTT {version}), publishing",
            source=self.name,
            host=self.broker.host,
            port=self.broker.port,
            client_id=self.client_id,
            version=self.broker.protocol,
            session_present=connack.session_present,
            topics=",".join(self._shared(topic) for topic in self.topics),
        )
        self._subscribed()

    async def _forget_stale(self, protocol: MQTTClientProtocol, session_present: bool) -> None:
        """Unsubscribe the filters an earlier config subscribed the session to and this one does not (the
        session keeps them: a channel's narrowed ``topics`` went on receiving what the old ones matched); record
        this config's (`lorrygate.sources.mqtt_sessions`)."""
        if self.data_dir is None:
            return
        record = SessionRecord(self.data_dir, f"{self.broker.host}:{self.broker.port}", self.client_id)
        wanted = [self._shared(f.text) for f in self._filters] + ([DROPPED_TOPIC] if self.drops is not None else [])
        stale = [topic for topic in record.read() if topic not in wanted] if session_present else []
        if stale:
            await protocol.unsubscribe(stale)
            self.log.info("MQTT source {source}: unsubscribed from {stale}, which its persistent session kept from "
                          "an earlier config", source=self.name, stale=", ".join(stale))
        record.write(wanted)

    def _drops_refused(self, failure, protocol) -> None:
        """The subscription to the broker's count of dropped messages failed: a broker that refuses it (its
        access control) is asked again on the next connection; one that closed the connection at it (as some
        cloud brokers do at a topic a client may not read) is not asked again."""
        if failure.check(SubscriptionRefused):
            self.log.debug("MQTT source {source}: {error}; the broker's count of dropped messages is not watched",
                           source=self.name, error=failure.getErrorMessage())
            return
        if self.running and self.drops is not None and protocol.lost_reason is not None:
            self.drops = None
            self.log.info("MQTT source {source}: the connection closed at the subscription to {topic}; the "
                          "broker's count of dropped messages is not watched from now on (watch_drops = false "
                          "leaves it from the start)", source=self.name, topic=DROPPED_TOPIC)

    def _lost(self, protocol) -> None:
        if not self.running:
            return
        reason = protocol.lost_reason
        code = protocol.disconnect_reason
        if code is not None:
            why = f"the broker sent DISCONNECT: {DISCONNECT_REASONS.get(code, 'unknown reason')} (code 0x{code:02x})"
        else:
            why = reason.getErrorMessage() if reason is not None else "closed"
        flapping = self._flapping()
        hint = ""
        if code == 0x8E or flapping:
            hint = f"; is another client using the client id {self.client_id!r}?"
        self.last_error = f"connection lost ({why})"
        self.log.warn(
            "MQTT source {source}: connection to {host}:{port} lost ({why}){hint}; reconnecting",
            source=self.name,
            host=self.broker.host,
            port=self.broker.port,
            why=why,
            hint=hint,
        )

    def _orphaned(self, protocol) -> None:
        """Keep the deliveries a closed connection left unacknowledged, for the copies the broker sends again."""
        if self.running:
            for delivery in protocol.orphaned:
                self._away[delivery.packet_id] = delivery
        protocol.orphaned = []

    def _flapping(self) -> bool:
        """Record a loss; whether connections keep dropping (typical of a client id clash)."""
        now = self._clock.seconds()
        self._recent_losses = [t for t in self._recent_losses if now - t < 60] + [now]
        return len(self._recent_losses) >= 5

    def _shared(self, text: str) -> str:
        """A filter as this source subscribes to it: through ``$share/<group>/`` in a gateway group."""
        return f"$share/{self.group}/{text}" if self.group else text

    def _options(self) -> int:
        """SUBSCRIBE options: the QoS, and under MQTT 5 the retain handling."""
        if self.version != codec.MQTT_5:
            return self.qos
        return self.qos | {"always": 0, "new": 1, "never": 2}[self.retained] << 4

    def _skip_retained(self) -> bool:
        # MQTT 5 brokers apply the retain handling themselves; under 3.1.1 a
        # broker sends retained messages on every SUBSCRIBE, also when the
        # session (and so the subscription) already existed.
        return self.retained == "never" or (self.retained == "new" and self._session_present)

    def _received(self, publish: codec.Publish, handle) -> None:
        if self._away and handle is not None:
            # A packet id of the session's messages in flight is not reused before their ack: a DUP copy with
            # one is that message again; a new message with one means the broker gave the old one up.
            held = self._away.pop(publish.packet_id, None)
            if held is not None and publish.dup:
                self.redelivered_in_flight += 1
                held.forward(handle)
                return
        if publish.topic == DROPPED_TOPIC and self.drops is not None:
            self.drops.report(publish.payload)  # (QoS 0: nothing to acknowledge; no channel's message)
            return
        if publish.retain and self._skip_retained():
            self.retained_skipped += 1
            if handle is not None:
                handle.ack()
            return
        topic = publish.topic
        filters = self._filters
        subscription = filters[0].text
        if len(filters) > 1:
            for candidate in filters:
                if candidate.matches(topic):
                    subscription = candidate.text
                    break
        properties = publish.properties
        self.deliver(
            Message(
                topic,
                publish.payload,
                publish.qos,
                publish.retain,
                self._time_of_day(),
                subscription,
                handle if handle is not None else NO_ACK,
                publish.oversize,
                None,
                properties.get("content_type") if properties else None,
                properties.get("user_property", ()) if properties else (),
            )
        )

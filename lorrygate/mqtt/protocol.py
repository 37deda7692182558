"""
An MQTT 3.1.1 / 5.0 client as a Twisted `Protocol`.

It parses frames straight out of ``dataReceived`` and hands every PUBLISH to
an application callback together with an ack handle. The PUBACK (QoS 1) or
PUBREC (QoS 2) for a message goes out only when the application calls
``handle.ack()``, and acknowledgements leave in the order the messages
arrived, as MQTT requires, however the application completes them.

Everything timed (keep-alive) runs on the clock passed in; nothing blocks.
"""

import hashlib
import struct
from collections import deque
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from lorrygate.errors import ProtocolError
from lorrygate.mqtt import codec
from lorrygate.mqtt.codec import (
    MQTT_3_1_1,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    Connack,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)

#: every MQTT 5 reason code (MQTT 5.0, 2.4), named in logs
REASON_CODES = {
    0x00: "success", 0x01: "granted QoS 1", 0x02: "granted QoS 2", 0x04: "disconnect with will message",
    0x10: "no matching subscribers", 0x11: "no subscription existed", 0x18: "continue authentication",
    0x19: "re-authenticate", 0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version", 0x85: "client identifier not valid",
    0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy",
    0x8A: "banned", 0x8B: "server shutting down", 0x8C: "bad authentication method", 0x8D: "keep alive timeout",
    0x8E: "session taken over by another client with the same client id", 0x8F: "topic filter invalid",
    0x90: "topic name invalid", 0x91: "packet identifier in use", 0x92: "packet identifier not found",
    0x93: "receive maximum exceeded", 0x94: "topic alias invalid", 0x95: "packet too large",
    0x96: "message rate too high", 0x97: "quota exceeded", 0x98: "administrative action",
    0x99: "payload format invalid", 0x9A: "retain not supported", 0x9B: "QoS not supported",
    0x9C: "use another server", 0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA0: "maximum connect time", 0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}

#: CONNACK return codes of MQTT 3.1.1 (3.2.2.3), and MQTT 5's reason codes
CONNACK_REASONS = {
    **REASON_CODES,
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

#: DISCONNECT reason codes a broker sends under MQTT 5
DISCONNECT_REASONS = REASON_CODES

#: CONNACK codes that refuse the protocol version (3.1.1: 1; 5: 0x84)
VERSION_REFUSED = (1, 0x84)


#: own publishes that may wait for the broker's Receive Maximum
MAX_QUEUED = 1000

#: a success PUBACK or PUBREC (MQTT 3.1.1, and 5 with reason 0 and no properties) as one big-endian 32-bit word:
#: type and flags, remaining length 2, and the packet id in the low 16 bits
_ACK_WORDS = {PUBACK: (PUBACK << 28) | (2 << 16), PUBREC: (PUBREC << 28) | (2 << 16)}




class ConnectionRefused(ProtocolError):
    """The broker answered CONNECT with a failure code."""

    def __init__(self, reason: int, version: int = MQTT_3_1_1):
        self.reason = reason
        text = CONNACK_REASONS.get(reason, "unknown reason")
        hint = ""
        if reason in VERSION_REFUSED:
            hint = ("; the broker does not speak MQTT 5: set protocol = 3.1.1" if version == codec.MQTT_5
                    else "; the broker does not speak MQTT 3.1.1: set protocol = 5")
        super().__init__(f"broker refused the connection: {text} (code 0x{reason:02x}){hint}")


class PacketTooLarge(ProtocolError):
    """A packet larger than the broker's Maximum Packet Size (MQTT 5), not sent."""


class SubscriptionRefused(ProtocolError):
    """The broker answered SUBSCRIBE with a failure code for a filter."""


class _Delivery:
    """The ack handle of one received QoS 1 or 2 message."""

    __slots__ = ("_protocol", "packet_id", "kind", "done")

    def __init__(self, protocol, packet_id: int, kind: int):
        self._protocol = protocol
        self.packet_id = packet_id
        self.kind = kind
        self.done = False

    def ack(self) -> None:
        if not self.done:
            self.done = True
            protocol = self._protocol
            # (the acks of a batch after its first find the release scheduled: no call for them)
            if protocol._release_call is None:
                protocol._schedule_release()

    def forward(self, to: "_Delivery") -> None:
        """This delivery's connection closed before its ack, and the broker sent the message again as ``to``:
        acknowledge that copy once this one is (now, if it already is)."""
        if self.done:
            to.ack()
        else:
            self._protocol = Forward(to)

    def __repr__(self) -> str:
        return f"<Delivery {self.packet_id} done={self.done}>"


class Forward:
    """Stands in for the closed connection of a delivery whose message the broker sent again on a new one
    (`lorrygate.sources.mqtt`): the delivery's ack acknowledges the new copy instead."""

    __slots__ = ("_to",)
    #: never scheduled: a delivery's ack reaches `_schedule_release` (`_Delivery.ack`)
    _release_call = None

    def __init__(self, to: _Delivery):
        self._to = to

    def _schedule_release(self) -> None:
        self._to.ack()


class Receipts:
    """A session's QoS 2 messages whose PUBREC went out and whose PUBREL has not come (MQTT 3.1.1 and 5.0,
    4.3.3): until it comes, a PUBLISH with such a packet id is the same message again (its PUBREC was written
    but never read when a connection closed, and the broker sent it anew) and MUST NOT be handed over twice.

    The session's, not a connection's: a source keeps one across its connections, and forgets it where the
    broker starts a new session (CONNACK without session present)."""

    __slots__ = ("ids", "copies")

    def __init__(self):
        #: packet ids of QoS 2 messages received, acknowledged with PUBREC, their PUBREL not yet come
        self.ids: set = set()
        #: copies of such messages that were acknowledged again and not handed over
        self.copies = 0


class MQTTClientProtocol(Protocol):
    """One connection to a broker, from CONNECT to DISCONNECT.

    :param on_publish: called as ``on_publish(publish, handle)`` for every
        PUBLISH; ``handle.ack()`` releases its acknowledgement.
    :param clock: an ``IReactorTime`` for the keep-alive timer.
    """

    #: a TCP or TLS transport (ITransport, IProducer and abortConnection)
    transport: Any

    log = Logger()

    def __init__(self, on_publish, clock, version: int = MQTT_3_1_1, max_payload: int | None = None,
                 receipts: Receipts | None = None):
        self._on_publish = on_publish
        #: the session's QoS 2 messages waiting for their PUBREL (`Receipts`)
        self.receipts = receipts if receipts is not None else Receipts()
        #: a QoS 2 message came on this connection: its PUBRECs are noted in ``receipts``
        self._qos2 = False
        self._clock = clock
        self.version = version
        #: PUBLISH packets larger than this arrive hashed, without their payload
        self.max_payload = max_payload
        self._oversized = False
        #: an oversized PUBLISH being skipped: (head, sha256, bytes remaining, size)
        self._skip: tuple | None = None
        self._buffer = b""
        #: the chunks of a packet larger than one read, and how many bytes it needs
        self._chunks = []
        self._have = 0
        self._need = 0
        self._unacked = deque()
        #: our QoS 1 publishes in flight, and those waiting for a slot
        self._outgoing = 0
        self._queued = deque()
        self._waiting = {}
        self._next_id = 0
        self._connack: Deferred | None = None
        self._keepalive = 0
        self._ping_call = None
        self._ping_outstanding = False
        #: reading was paused since the outstanding PINGREQ went out: its PINGRESP may wait unread
        self._ping_unreadable = False
        self._paused = False
        self._release_call = None
        self.connected = False
        #: DISCONNECT sent: nothing more goes out, publishes are not delivered
        self._closing = False
        self.disconnect_reason = None
        self.session_present = False
        self.connack_properties = {}
        self._lost: Deferred | None = Deferred()
        self.lost_reason: Failure | None = None
        #: the deliveries not acknowledged when the connection closed (their messages come again in the session)
        self.orphaned: list = []

    # -- outgoing -----------------------------------------------------------

    def connect(self, packet: codec.Connect) -> Deferred:
        """Send CONNECT; the Deferred fires with the CONNACK or fails with
        `ConnectionRefused`."""
        self.version = packet.version
        self._keepalive = packet.keepalive
        self._connack = Deferred()
        self._send(packet)
        return self._connack

    def subscribe(self, subscriptions) -> Deferred:
        """Subscribe to ``(filter, options)`` pairs; fires with the SUBACK or
        fails with `SubscriptionRefused` naming each refused filter."""
        packet_id = self._allocate_id()
        d = Deferred()
        self._waiting[packet_id] = d
        self._send(Subscribe(packet_id, tuple(subscriptions)))

        def check(suback: Suback):
            refused = [
                f"{topic!r} ({self._refusal(reason)})"
                for (topic, _), reason in zip(subscriptions, suback.reasons)
                if reason >= 0x80
            ]
            if refused:
                raise SubscriptionRefused("broker refused the subscription to " + ", ".join(refused))
            return suback

        return d.addCallback(check)

    def unsubscribe(self, topics) -> Deferred:
        """Unsubscribe from ``topics`` (filters); fires with the UNSUBACK. (A filter the session has no
        subscription to is answered all the same: MQTT 5's reason 0x11, none in 3.1.1.)"""
        packet_id = self._allocate_id()
        d = Deferred()
        self._waiting[packet_id] = d
        self._send(Unsubscribe(packet_id, tuple(topics)))
        return d

    def _refusal(self, reason: int) -> str:
        """A SUBACK's failure code, named, with what most often causes it."""
        if self.version != codec.MQTT_5 or reason == 0x80:
            # (MQTT 3.1.1 has one failure code and no reason; MQTT 5's "unspecified error" is the same)
            return (f"code 0x{reason:02x}, no reason given: most often the broker's access control list does not "
                    "let this user read it; check the user's read access to the filter")
        hint = {0x87: ": check the user's read access to the filter in the broker's access control list",
                0x9E: ": leave the channel's group unset (it subscribes through $share/<group>/)",
                0xA2: ": subscribe to topics without + and #",
                0x8F: ": the broker does not take this filter"}.get(reason, "")
        return f"code 0x{reason:02x}, {REASON_CODES.get(reason, 'unknown reason')}{hint}"

    @property
    def limits(self) -> dict:
        """What the broker's CONNACK allows this client (MQTT 5; 3.1.1: the protocol's limits)."""
        props = self.connack_properties
        return {
            "maximum_packet_size": props.get("maximum_packet_size", 268_435_460),
            "receive_maximum": props.get("receive_maximum", 65535),
            "maximum_qos": props.get("maximum_qos", 2),
            "retain_available": bool(props.get("retain_available", 1)),
            "topic_alias_maximum": props.get("topic_alias_maximum", 0),
        }

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: dict | None = None) -> Deferred:
        """Publish a message within the broker's limits; for QoS 1 the Deferred
        fires on its PUBACK. A QoS above the broker's Maximum QoS is lowered,
        retain is dropped where the broker has none, a packet over its
        Maximum Packet Size raises `PacketTooLarge`, and QoS 1 publishes beyond
        its Receive Maximum wait for a free slot (at most ``MAX_QUEUED``).
        ``properties`` (MQTT 5's, such as ``content_type`` and ``user_property``)
        go out under MQTT 5 only."""
        if qos not in (0, 1):
            raise ValueError("publishing supports QoS 0 and 1")
        limits = self.limits
        qos = min(qos, limits["maximum_qos"])
        retain = retain and limits["retain_available"]
        properties = properties or {}
        data = codec.encode(Publish(topic, payload, qos, retain, False, 1 if qos else None, properties), self.version)
        if len(data) > limits["maximum_packet_size"]:
            raise PacketTooLarge(f"a {len(data)}-byte PUBLISH is larger than the broker's Maximum Packet Size "
                                 f"({limits['maximum_packet_size']} bytes)")
        if qos == 0:
            self.transport.write(data)
            return succeed(None)
        d = Deferred()
        if self._outgoing >= limits["receive_maximum"]:
            if len(self._queued) >= MAX_QUEUED:
                raise ProtocolError(f"{len(self._queued)} publishes already wait for the broker's Receive Maximum")
            self._queued.append((topic, payload, retain, properties, d))
            return d
        self._send_qos1(topic, payload, retain, properties, d)
        return d

    def _send_qos1(self, topic: str, payload: bytes, retain: bool, properties: dict, d: Deferred) -> None:
        packet_id = self._allocate_id()
        self._waiting[packet_id] = d
        self._outgoing += 1
        self.transport.write(codec.encode(Publish(topic, payload, 1, retain, False, packet_id, properties),
                                          self.version))

    def _outgoing_done(self) -> None:
        self._outgoing -= 1
        if self._queued and self.connected:
            topic, payload, retain, properties, d = self._queued.popleft()
            self._send_qos1(topic, payload, retain, properties, d)

    def disconnect(self, timeout: float = 5.0) -> Deferred:
        """Send the completed acks and DISCONNECT; fires once the connection is closed.

        The broker closes the connection once it has read the DISCONNECT, and
        so every ack before it. Only then may a new connection take over the
        session: a broker that reads the new CONNECT first (Mosquitto reads
        one packet per socket and turn) drops the old connection's unread acks
        and delivers those messages again, duplicates after every reload.
        Publishes that arrive meanwhile are neither delivered nor acknowledged;
        the broker keeps them for the session. A broker that has not closed
        within ``timeout`` seconds is cut off.
        """
        if self.connected and self.transport is not None:
            # Acks already completed leave first, in the same write as the
            # DISCONNECT: a broker ignores acks that come after it.
            self.flush_acks()
            self._send(Disconnect())
            self.connected = False
            self._closing = True
            if self._ping_call is not None and self._ping_call.active():
                self._ping_call.cancel()
            self._ping_call = None
            # Read on (even while paused), to see the broker close.
            self.transport.resumeProducing()
            transport = self.transport
            close = self._clock.callLater(timeout, transport.loseConnection)
            abort = self._clock.callLater(timeout + 1.0, transport.abortConnection)
            def cancel(result):
                for call in (close, abort):
                    if call.active():
                        call.cancel()
                return result

            if self._lost is not None:
                self._lost.addBoth(cancel)
        return self.when_lost()

    def when_lost(self) -> Deferred:
        """A Deferred that fires (with None) once this connection has closed;
        ``lost_reason`` then holds why."""
        d = Deferred()
        if self._lost is None:
            d.callback(None)
        else:
            def fire(result):
                d.callback(None)
                return result

            self._lost.addBoth(fire)
        return d

    def pauseReading(self) -> None:
        self._paused = True
        self._ping_unreadable = True
        if self.transport is not None and not self._closing:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closing:
            self.transport.resumeProducing()

    @property
    def unacked(self) -> int:
        """How many received QoS 1/2 messages wait for their acknowledgement."""
        return len(self._unacked)

    def _send(self, packet) -> None:
        if self._closing:
            return
        self.transport.write(codec.encode(packet, self.version))

    def _allocate_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._waiting:
                return self._next_id
        raise ProtocolError("all 65535 packet identifiers are in use")

    def _schedule_release(self) -> None:
        # Acks completed in one go (a committed batch) leave in one write.
        if self._release_call is None and self.connected:
            self._release_call = self._clock.callLater(0, self._release_acks)

    def flush_acks(self) -> None:
        """Send every completed acknowledgement now, instead of in the next turn."""
        call, self._release_call = self._release_call, None
        if call is not None and call.active():
            call.cancel()
        self._release_acks()

    def _release_acks(self) -> None:
        self._release_call = None
        unacked = self._unacked
        words = []
        while unacked and unacked[0].done:
            delivery = unacked.popleft()
            words.append(_ACK_WORDS[delivery.kind] | delivery.packet_id)
        if self._qos2:  # (the PUBRECs' messages are the broker's to release now; QoS 1 streams skip the look)
            self.receipts.ids.update(word & 0xFFFF for word in words if word >> 28 == PUBREC)
        if words and self.connected:
            # one struct call for all of them (a byte string a packet cost 0.7 us a message)
            self.transport.write(struct.pack(f"!{len(words)}I", *words))

    # -- incoming -----------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True

    def dataReceived(self, data: bytes) -> None:
        while data:
            data = self._receive(data)

    def _receive(self, data: bytes) -> bytes:
        """Take one read; return what is left of it for another round (the
        bytes after a payload that was hashed instead of kept)."""
        # Linear in the bytes received, whatever the packet size: the chunks
        # of a large packet are collected and joined once, when it is whole;
        # a PUBLISH over max_payload is hashed as it passes, never held.
        if self._skip is not None:
            return self._skip_payload(data)
        if self._need:
            self._chunks.append(data)
            self._have += len(data)
            if self._oversized:
                return self._begin_skip(b"".join(self._chunks))
            if self._have < self._need:
                return b""
            buffer = b"".join(self._chunks)
            self._chunks, self._have, self._need = [], 0, 0
        else:
            buffer = self._buffer + data if self._buffer else data
        try:
            packets, used = codec.parse(buffer, self.version)
            rest = buffer[used:] if used < len(buffer) else b""
            need = codec.frame_size(rest) if rest else None
        except ProtocolError as exc:
            self._malformed(buffer, exc)
            return b""
        left = b""
        self._buffer = b""
        if need is not None and need > len(rest):
            self._chunks, self._have, self._need = [rest], len(rest), need
            if self.max_payload is not None and rest[0] >> 4 == codec.PUBLISH and need > self.max_payload:
                self._oversized = True
        else:
            self._buffer = rest
        limit = self.max_payload
        for packet in packets:
            if type(packet) is Publish:
                if limit is not None and len(packet.payload) > limit:
                    # (one that came whole in a read was stored as any: the limit held only across reads)
                    payload = packet.payload
                    packet = attrs.evolve(packet, payload=b"",
                                          oversize=(len(payload), hashlib.sha256(payload).hexdigest()))
                self._deliver(packet)
            else:
                self._handle(packet)
        if self._oversized:
            left = self._begin_skip(b"".join(self._chunks))
        return left

    def _malformed(self, buffer, exc) -> None:
        if buffer[:2] == b"\x15\x03":
            exc = ProtocolError("the peer answered with a TLS alert: it is a TLS listener, set tls = true")
        self.log.error("malformed MQTT from the broker, closing: {error}", error=str(exc))
        self._buffer = b""
        self._chunks, self._have, self._need, self._oversized, self._skip = [], 0, 0, False, None
        self.transport.abortConnection()

    def _deliver(self, packet) -> None:
        if self._closing:
            return  # after our DISCONNECT: the broker delivers it again to the session
        qos = packet.qos
        if qos == 0:
            self._on_publish(packet, None)
            return
        if qos == 1:
            delivery = _Delivery(self, packet.packet_id, PUBACK)
            self._unacked.append(delivery)
        else:
            self._qos2 = True
            delivery = _Delivery(self, packet.packet_id, PUBREC)
            self._unacked.append(delivery)
            if packet.packet_id in self.receipts.ids:
                # its PUBREC went out before, its PUBREL has not come: the same message again, acknowledged again
                # (in order with the rest) and not handed over twice
                self.receipts.copies += 1
                delivery.ack()
                return
        self._on_publish(packet, delivery)

    def _begin_skip(self, buffer: bytes) -> bytes:
        """An oversized PUBLISH starts in ``buffer``: once its head is there, hash its payload instead of keeping it."""
        try:
            found = codec.publish_head(buffer, self.version)
        except ProtocolError as exc:
            self._malformed(buffer, exc)
            return b""
        if found is None:
            self._chunks, self._have = [buffer], len(buffer)  # the head is not complete yet
            return b""
        head, offset = found
        end = self._need
        self._oversized = False
        self._chunks, self._have, self._need = [], 0, 0
        digest = hashlib.sha256(buffer[offset:end])
        self._skip = (head, digest, end - min(end, len(buffer)), end - offset)
        return self._skip_payload(buffer[end:]) if len(buffer) >= end else b""

    def _skip_payload(self, data: bytes) -> bytes:
        assert self._skip is not None
        head, digest, remaining, size = self._skip
        taken = data[:remaining]
        digest.update(taken)
        remaining -= len(taken)
        if remaining:
            self._skip = (head, digest, remaining, size)
            return b""
        self._skip = None
        self._deliver(attrs.evolve(head, oversize=(size, digest.hexdigest())))
        return data[len(taken):]

    def _handle(self, packet) -> None:
        kind = type(packet)
        if kind is PubAck:
            if packet.kind == PUBREL:
                self.receipts.ids.discard(packet.packet_id)  # (the broker may give the id to a new message now)
                self._send(PubAck(PUBCOMP, packet.packet_id))
            elif packet.kind == PUBACK:
                d = self._waiting.pop(packet.packet_id, None)
                if d is not None:
                    self._outgoing_done()
                    d.callback(packet)
        elif kind is PingResp:
            self._ping_outstanding = False
        elif kind is Connack:
            self._on_connack(packet)
        elif kind in (Suback, Unsuback):
            d = self._waiting.pop(packet.packet_id, None)
            if d is not None:
                d.callback(packet)
        elif kind is Disconnect:
            self.disconnect_reason = packet.reason
            self.transport.loseConnection()
        else:
            self.log.warn("unexpected MQTT packet from the broker: {packet!r}", packet=packet)

    def _on_connack(self, packet: Connack) -> None:
        d, self._connack = self._connack, None
        if d is None:
            return
        if packet.reason != 0:
            d.errback(ConnectionRefused(packet.reason, self.version))
            return
        self.session_present = packet.session_present
        self.connack_properties = packet.properties
        keepalive = packet.properties.get("server_keep_alive", self._keepalive)
        if keepalive:
            self._ping_call = self._clock.callLater(keepalive, self._ping, keepalive)
        d.callback(packet)

    def _ping(self, interval: float) -> None:
        # While reading is paused (backpressure) the PINGRESP cannot be read:
        # keep pinging, so the broker knows we are alive, but do not count it;
        # nor once reading resumed, until a ping sent while reading is due (the
        # timer may fire before the reactor read the PINGRESP waiting since).
        if self._ping_outstanding and not self._ping_unreadable:
            self.log.warn("no PINGRESP within {interval} s: dropping the connection", interval=interval)
            self.transport.abortConnection()
            return
        self._ping_outstanding = True
        self._ping_unreadable = self._paused
        self._send(PingReq())
        self._ping_call = self._clock.callLater(interval, self._ping, interval)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        for call in (self._ping_call, self._release_call):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._release_call = None
        # Acks of this connection can no longer be sent; the broker redelivers.
        self.orphaned = list(self._unacked)
        self._unacked.clear()
        pending = list(self._waiting.values()) + [item[-1] for item in self._queued]
        self._waiting.clear()
        self._queued.clear()
        self._outgoing = 0
        if self._connack is not None:
            pending.append(self._connack)
            self._connack = None
        for d in pending:
            d.errback(reason)
        self.lost_reason = reason
        lost, self._lost = self._lost, None
        if lost is not None:
            lost.callback(None)

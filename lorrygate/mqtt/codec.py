"""
MQTT 3.1.1 and 5.0 packets and their wire format.

The packets a client sends and receives, as frozen values, with ``encode`` to
turn one into bytes and ``parse`` to take complete packets off the front of a
byte buffer. The client (`lorrygate.mqtt.protocol`) uses both; a test broker
double can use the same functions the other way round.

Why lorrygate carries its own codec: the Twisted-native MQTT clients on PyPI
either acknowledge a PUBLISH before the application has stored it
(``twisted-mqtt``) or run their own socket loop with three ``recv`` calls per
packet (paho-mqtt), which caps the receive rate well below the drain target
of the benchmark issue. Parsing frames straight out of ``dataReceived``
removes that ceiling; the tests round-trip every packet (hypothesis) and talk
to a real Mosquitto.

References: MQTT Version 3.1.1 (OASIS Standard, 2014) and MQTT Version 5.0
(OASIS Standard, 2019), sections 2 (packet format) and 3 (control packets).
"""

import struct
from typing import Any

import attrs

from lorrygate.errors import ProtocolError

MQTT_3_1_1 = 4
MQTT_5 = 5
VERSIONS = {"3.1.1": MQTT_3_1_1, "5": MQTT_5}

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

MAX_REMAINING_LENGTH = 268_435_455

_u16 = struct.Struct("!H")
_u32 = struct.Struct("!I")


# -- v5 properties --------------------------------------------------------

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)

PROPERTIES = {
    0x01: ("payload_format_indicator", _BYTE),
    0x02: ("message_expiry_interval", _U32),
    0x03: ("content_type", _STR),
    0x08: ("response_topic", _STR),
    0x09: ("correlation_data", _BIN),
    0x0B: ("subscription_identifier", _VARINT),
    0x11: ("session_expiry_interval", _U32),
    0x12: ("assigned_client_identifier", _STR),
    0x13: ("server_keep_alive", _U16),
    0x15: ("authentication_method", _STR),
    0x16: ("authentication_data", _BIN),
    0x17: ("request_problem_information", _BYTE),
    0x18: ("will_delay_interval", _U32),
    0x19: ("request_response_information", _BYTE),
    0x1A: ("response_information", _STR),
    0x1C: ("server_reference", _STR),
    0x1F: ("reason_string", _STR),
    0x21: ("receive_maximum", _U16),
    0x22: ("topic_alias_maximum", _U16),
    0x23: ("topic_alias", _U16),
    0x24: ("maximum_qos", _BYTE),
    0x25: ("retain_available", _BYTE),
    0x26: ("user_property", _PAIR),
    0x27: ("maximum_packet_size", _U32),
    0x28: ("wildcard_subscription_available", _BYTE),
    0x29: ("subscription_identifier_available", _BYTE),
    0x2A: ("shared_subscription_available", _BYTE),
}
_PROPERTY_IDS = {name: (ident, kind) for ident, (name, kind) in PROPERTIES.items()}
#: properties that may occur more than once; their value is a tuple
REPEATABLE = frozenset({"user_property", "subscription_identifier"})


def encode_varint(value: int) -> bytes:
    """Encode a Variable Byte Integer (MQTT 5, 1.5.5)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf, pos: int):
    """Return (value, new position), or (None, pos) if the buffer ends first."""
    value = 0
    shift = 0
    end = len(buf)
    for index in range(pos, min(pos + 4, end)):
        byte = buf[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if end - pos >= 4:
        raise ProtocolError("malformed variable byte integer: more than 4 bytes")
    return None, pos


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"string longer than 65535 bytes: {len(raw)} bytes")
    return _u16.pack(len(raw)) + raw


def _binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"binary data longer than 65535 bytes: {len(data)} bytes")
    return _u16.pack(len(data)) + bytes(data)


class _Reader:
    """Reads fields off the variable header and payload of one packet."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int, end: int):
        self.buf = buf
        self.pos = pos
        self.end = end

    def _take(self, count: int):
        start = self.pos
        stop = start + count
        if stop > self.end:
            raise ProtocolError("packet shorter than its fields: truncated or malformed")
        self.pos = stop
        return self.buf[start:stop]

    def byte(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return _u16.unpack(self._take(2))[0]

    def u32(self) -> int:
        return _u32.unpack(self._take(4))[0]

    def varint(self) -> int:
        value, pos = decode_varint(self.buf, self.pos)
        if value is None or pos > self.end:
            raise ProtocolError("packet shorter than its fields: truncated variable integer")
        self.pos = pos
        return value

    def binary(self) -> bytes:
        return bytes(self._take(self.u16()))

    def string(self) -> str:
        raw = self._take(self.u16())
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"malformed UTF-8 string in packet: {exc}") from None

    def rest(self) -> bytes:
        data = bytes(self.buf[self.pos : self.end])
        self.pos = self.end
        return data

    def remaining(self) -> int:
        return self.end - self.pos

    def properties(self) -> dict:
        length = self.varint()
        stop = self.pos + length
        if stop > self.end:
            raise ProtocolError("property length runs past the end of the packet")
        props: dict = {}
        while self.pos < stop:
            ident = self.varint()
            try:
                name, kind = PROPERTIES[ident]
            except KeyError:
                raise ProtocolError(f"unknown MQTT 5 property identifier 0x{ident:02x}") from None
            value: Any
            if kind == _BYTE:
                value = self.byte()
            elif kind == _U16:
                value = self.u16()
            elif kind == _U32:
                value = self.u32()
            elif kind == _VARINT:
                value = self.varint()
            elif kind == _STR:
                value = self.string()
            elif kind == _BIN:
                value = self.binary()
            else:
                value = (self.string(), self.string())
            if name in REPEATABLE:
                props[name] = props.get(name, ()) + (value,)
            elif name in props:
                raise ProtocolError(f"MQTT 5 property {name} given more than once")
            else:
                props[name] = value
        if self.pos != stop:
            raise ProtocolError("property list overruns its declared length")
        return props


def encode_properties(props) -> bytes:
    """Encode a property dict (names as in `PROPERTIES`) with its length prefix."""
    out = bytearray()
    for name, value in (props or {}).items():
        try:
            ident, kind = _PROPERTY_IDS[name]
        except KeyError:
            raise ValueError(f"unknown MQTT 5 property {name!r}") from None
        values = value if name in REPEATABLE else (value,)
        for item in values:
            out += encode_varint(ident)
            if kind == _BYTE:
                out.append(item)
            elif kind == _U16:
                out += _u16.pack(item)
            elif kind == _U32:
                out += _u32.pack(item)
            elif kind == _VARINT:
                out += encode_varint(item)
            elif kind == _STR:
                out += _string(item)
            elif kind == _BIN:
                out += _binary(item)
            else:
                out += _string(item[0]) + _string(item[1])
    return encode_varint(len(out)) + bytes(out)


# -- packets ----------------------------------------------------------------

_props = attrs.field(factory=dict, converter=dict)


@attrs.frozen(slots=True)
class Connect:
    client_id: str
    version: int = MQTT_3_1_1
    clean_start: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will_topic: str | None = None
    will_payload: bytes = b""
    will_qos: int = 0
    will_retain: bool = False
    properties: dict = _props
    will_properties: dict = _props


@attrs.frozen(slots=True)
class Connack:
    session_present: bool
    #: the return code (3.1.1) or reason code (5); 0 is success
    reason: int
    properties: dict = _props


#: not frozen, and its properties taken as given (a dict): one is made for every message received, and a
#: frozen attrs class costs 0.45 us more to make (measured); treat it as immutable all the same
@attrs.define(slots=True, unsafe_hash=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: dict = attrs.field(factory=dict, hash=False)
    #: for a received payload over the client's limit: ``(size, sha256 hex)``
    #: instead of the payload, which was never held in memory
    oversize: tuple | None = None


@attrs.frozen(slots=True)
class PubAck:
    """PUBACK, PUBREC, PUBREL or PUBCOMP: the QoS 1 and 2 handshake packets."""

    kind: int
    packet_id: int
    reason: int = 0
    properties: dict = _props


@attrs.frozen(slots=True)
class Subscribe:
    packet_id: int
    #: (topic filter, subscription options) pairs; the options byte carries
    #: the QoS in its low two bits (3.1.1 allows nothing else)
    subscriptions: tuple
    properties: dict = _props


@attrs.frozen(slots=True)
class Suback:
    packet_id: int
    reasons: tuple
    properties: dict = _props


@attrs.frozen(slots=True)
class Unsubscribe:
    packet_id: int
    topics: tuple
    properties: dict = _props


@attrs.frozen(slots=True)
class Unsuback:
    packet_id: int
    reasons: tuple = ()
    properties: dict = _props


@attrs.frozen(slots=True)
class PingReq:
    pass


@attrs.frozen(slots=True)
class PingResp:
    pass


@attrs.frozen(slots=True)
class Disconnect:
    reason: int = 0
    properties: dict = _props


def _frame(header: int, body: bytes) -> bytes:
    return bytes((header,)) + encode_varint(len(body)) + body


def encode(packet, version: int = MQTT_3_1_1) -> bytes:
    """Return the wire bytes of a packet for the given protocol version."""
    v5 = version == MQTT_5
    kind = type(packet)
    if kind is Publish:
        body = _string(packet.topic)
        if packet.qos:
            body += _u16.pack(packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        flags = (packet.dup << 3) | (packet.qos << 1) | packet.retain
        return _frame((PUBLISH << 4) | flags, body + packet.payload)
    if kind is PubAck:
        body = _u16.pack(packet.packet_id)
        if v5 and (packet.reason or packet.properties):
            body += bytes((packet.reason,))
            if packet.properties:
                body += encode_properties(packet.properties)
        flags = 0b0010 if packet.kind == PUBREL else 0
        return _frame((packet.kind << 4) | flags, body)
    if kind is Connect:
        v5 = packet.version == MQTT_5
        flags = (
            (packet.username is not None) << 7
            | (packet.password is not None) << 6
            | packet.will_retain << 5
            | packet.will_qos << 3
            | (packet.will_topic is not None) << 2
            | packet.clean_start << 1
        )
        body = _string("MQTT") + bytes((packet.version, flags)) + _u16.pack(packet.keepalive)
        if v5:
            body += encode_properties(packet.properties)
        body += _string(packet.client_id)
        if packet.will_topic is not None:
            if v5:
                body += encode_properties(packet.will_properties)
            body += _string(packet.will_topic) + _binary(packet.will_payload)
        if packet.username is not None:
            body += _string(packet.username)
        if packet.password is not None:
            body += _binary(packet.password)
        return _frame(CONNECT << 4, body)
    if kind is Connack:
        body = bytes((int(packet.session_present), packet.reason))
        if v5:
            body += encode_properties(packet.properties)
        return _frame(CONNACK << 4, body)
    if kind is Subscribe:
        body = _u16.pack(packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        for topic, options in packet.subscriptions:
            body += _string(topic) + bytes((options,))
        return _frame((SUBSCRIBE << 4) | 0b0010, body)
    if kind is Suback:
        body = _u16.pack(packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        return _frame(SUBACK << 4, body + bytes(packet.reasons))
    if kind is Unsubscribe:
        body = _u16.pack(packet.packet_id)
        if v5:
            body += encode_properties(packet.properties)
        for topic in packet.topics:
            body += _string(topic)
        return _frame((UNSUBSCRIBE << 4) | 0b0010, body)
    if kind is Unsuback:
        body = _u16.pack(packet.packet_id)
        if v5:
            body += encode_properties(packet.properties) + bytes(packet.reasons)
        return _frame(UNSUBACK << 4, body)
    if kind is PingReq:
        return bytes((PINGREQ << 4, 0))
    if kind is PingResp:
        return bytes((PINGRESP << 4, 0))
    if kind is Disconnect:
        body = b""
        if v5 and (packet.reason or packet.properties):
            body = bytes((packet.reason,))
            if packet.properties:
                body += encode_properties(packet.properties)
        return _frame(DISCONNECT << 4, body)
    raise TypeError(f"not an MQTT packet: {packet!r}")


def _parse_publish(flags: int, buf, pos: int, end: int, v5: bool) -> Publish:
    qos = (flags >> 1) & 0b11
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3 (both QoS bits set)")
    if not v5:
        # The hot path (MQTT 3.1.1): slice the fields out directly.
        length = (buf[pos] << 8 | buf[pos + 1]) if end - pos >= 2 else -1
        body = pos + 2 + length + (2 if qos else 0)
        if length >= 0 and body <= end:
            # (``buf`` is bytes, `parse` sees to it: its slices are bytes, no bytes() call a field)
            try:
                topic = buf[pos + 2 : pos + 2 + length].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"malformed UTF-8 string in packet: {exc}") from None
            packet_id = (buf[body - 2] << 8 | buf[body - 1]) if qos else None
            return Publish(topic, buf[body:end], qos, bool(flags & 1), bool(flags & 0b1000), packet_id, {})
    reader = _Reader(buf, pos, end)
    topic = reader.string()
    packet_id = reader.u16() if qos else None
    props = reader.properties() if v5 else {}
    return Publish(
        topic,
        reader.rest(),
        qos,
        bool(flags & 1),
        bool(flags & 0b1000),
        packet_id,
        props,
    )


def _parse_other(kind: int, flags: int, buf, pos: int, end: int, v5: bool):
    reader = _Reader(buf, pos, end)
    packet: Any
    reasons: tuple
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        packet_id = reader.u16()
        reason, props = 0, {}
        if v5 and reader.remaining():
            reason = reader.byte()
            if reader.remaining():
                props = reader.properties()
        packet = PubAck(kind, packet_id, reason, props)
    elif kind == CONNACK:
        ack_flags = reader.byte()
        reason = reader.byte()
        # A broker that only speaks 3.1.1 answers an MQTT 5 CONNECT with a
        # 3.1.1 CONNACK (no properties), typically code 1: read it as such.
        props = reader.properties() if v5 and reader.remaining() else {}
        packet = Connack(bool(ack_flags & 1), reason, props)
    elif kind == SUBACK:
        packet_id = reader.u16()
        props = reader.properties() if v5 else {}
        packet = Suback(packet_id, tuple(reader.rest()), props)
    elif kind == UNSUBACK:
        packet_id = reader.u16()
        reasons, props = (), {}
        if v5:
            props = reader.properties()
            reasons = tuple(reader.rest())
        packet = Unsuback(packet_id, reasons, props)
    elif kind == PINGREQ:
        packet = PingReq()
    elif kind == PINGRESP:
        packet = PingResp()
    elif kind == DISCONNECT:
        reason, props = 0, {}
        if v5 and reader.remaining():
            reason = reader.byte()
            if reader.remaining():
                props = reader.properties()
        packet = Disconnect(reason, props)
    elif kind == SUBSCRIBE:
        packet_id = reader.u16()
        props = reader.properties() if v5 else {}
        subscriptions = []
        while reader.remaining():
            subscriptions.append((reader.string(), reader.byte()))
        packet = Subscribe(packet_id, tuple(subscriptions), props)
    elif kind == UNSUBSCRIBE:
        packet_id = reader.u16()
        props = reader.properties() if v5 else {}
        topics = []
        while reader.remaining():
            topics.append(reader.string())
        packet = Unsubscribe(packet_id, tuple(topics), props)
    elif kind == CONNECT:
        packet = _parse_connect(reader)
    else:
        raise ProtocolError(f"unsupported MQTT packet type {kind}")
    if reader.remaining():
        raise ProtocolError(f"packet type {kind} has {reader.remaining()} bytes past its fields")
    return packet


def _parse_connect(reader: _Reader) -> Connect:
    name = reader.string()
    version = reader.byte()
    if name != "MQTT" or version not in (MQTT_3_1_1, MQTT_5):
        raise ProtocolError(f"CONNECT for protocol {name!r} level {version}: expected MQTT level 4 or 5")
    flags = reader.byte()
    keepalive = reader.u16()
    v5 = version == MQTT_5
    props = reader.properties() if v5 else {}
    client_id = reader.string()
    will_topic, will_payload, will_props = None, b"", {}
    if flags & 0b100:
        if v5:
            will_props = reader.properties()
        will_topic = reader.string()
        will_payload = reader.binary()
    username = reader.string() if flags & 0x80 else None
    password = reader.binary() if flags & 0x40 else None
    return Connect(
        client_id,
        version,
        bool(flags & 0b10),
        keepalive,
        username,
        password,
        will_topic,
        will_payload,
        (flags >> 3) & 0b11,
        bool(flags & 0x20),
        props,
        will_props,
    )


def frame_size(buf) -> int | None:
    """The size of the packet at the front of ``buf`` (fixed header included),
    or None while its fixed header is incomplete; ProtocolError if malformed."""
    if len(buf) < 2:
        return None
    length, start = decode_varint(buf, 1)
    if length is None:
        return None
    return start + length


def publish_head(buf, version: int = MQTT_3_1_1):
    """The PUBLISH at the front of ``buf`` without its payload: ``(Publish with
    an empty payload, offset of the payload)``, or None while ``buf`` does not
    yet hold its variable header."""
    header = buf[0]
    length, pos = decode_varint(buf, 1)
    if length is None or len(buf) < pos + 2:
        return None
    qos = (header >> 1) & 3
    size = _u16.unpack_from(buf, pos)[0]
    pos += 2
    if len(buf) < pos + size + (2 if qos else 0):
        return None
    try:
        topic = bytes(buf[pos : pos + size]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("a PUBLISH topic that is not UTF-8") from None
    pos += size
    packet_id = None
    if qos:
        packet_id = _u16.unpack_from(buf, pos)[0]
        pos += 2
    if version == MQTT_5:
        props_length, after = decode_varint(buf, pos)
        if props_length is None or len(buf) < after + props_length:
            return None
        pos = after + props_length
    return Publish(topic, b"", qos, bool(header & 1), bool(header & 8), packet_id), pos


def parse(buf, version: int = MQTT_3_1_1):
    """Take the complete packets off the front of ``buf``.

    Return ``(packets, consumed)``: the packets in order and how many bytes of
    ``buf`` they used; an incomplete packet at the end stays for the next call.
    Raise `ProtocolError` for bytes that are not MQTT.
    """
    if type(buf) is not bytes:
        buf = bytes(buf)  # a bytearray or memoryview: the fields are sliced as bytes (`_parse_publish`)
    v5 = version == MQTT_5
    packets = []
    append = packets.append
    pos = 0
    size = len(buf)
    while size - pos >= 2:
        header = buf[pos]
        length = buf[pos + 1]
        if length < 0x80:
            start = pos + 2
        elif size - pos > 2 and buf[pos + 2] < 0x80:
            # two length bytes: 128 B to 16 KiB, a telemetry message's size
            length = (length & 0x7F) | buf[pos + 2] << 7
            start = pos + 3
        else:
            length, start = decode_varint(buf, pos + 1)
            if length is None:
                break
        end = start + length
        if end > size:
            break
        kind = header >> 4
        if kind == PUBLISH:
            append(_parse_publish(header & 0x0F, buf, start, end, v5))
        else:
            append(_parse_other(kind, header & 0x0F, buf, start, end, v5))
        pos = end
    return packets, pos

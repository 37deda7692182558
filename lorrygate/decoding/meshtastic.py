"""
The packets of Meshtastic gateway nodes on the ``meshtastic`` strategy's topics: a ServiceEnvelope
(``<root>/2/e/...``, read by `lorrygate.decoding.meshtastic_protobuf` into the same names) or the JSON output
(``<root>/2/json/<channel>/<gateway>``). One record a packet, at ``timestamp`` (when the gateway node received it;
the receive time where the node has no clock yet and sends 0), as the firmware's ``MeshPacketSerializer`` writes
it:

- the sender, ``from`` (a node number), becomes the tag ``node`` as Meshtastic writes node ids (``!a1b2c3d4``),
  ``type`` (``telemetry``, ``position``, ``nodeinfo``, ``text``, ``neighborinfo``, ``waypoint``, ...) a tag;
- the payload's values are the fields (``battery_level``, ``voltage``, ``temperature``, ``relative_humidity``,
  ...; a position's ``latitude_i`` and ``longitude_i``, degrees times 10^7, as ``latitude`` and ``longitude`` in
  degrees; its fix's own ``time`` and ``timestamp`` as ``position_time`` and ``position_timestamp``; a text
  message's ``text``, also where the firmware read the text as JSON (an object is its JSON text: anyone on a
  mesh channel may send one, and its keys would be columns);
- of the packet: ``id`` as ``packet_id`` (with ``node`` it names the packet, as it names each gateway's copy of
  it), ``rssi``, ``snr``, ``hops_away``, ``hop_start``, and ``to`` (as a node id) where it is not a broadcast;
  ``sender`` (the gateway, which the ``gateway`` column has) and ``channel`` (the gateway's index of the
  channel the topic names) are left out.

A packet that several gateways heard is stored once, from the gateway that delivered it first (``receptions =
first``; ``each``: a row a gateway, with how well each heard it): the others' copies, the same node and ``id``
within `RECEPTION_WINDOW`, are ignored, as they are in memory (a restart or a reload forgets them).

A packet of an app the firmware does not write as JSON (routing, admin, range test, ...: an empty ``type`` and no
payload) and what a user sends into the mesh (``sendtext``, ``sendposition``) are ignored; a packet without
``from``, an encrypted one (``bytes``, where the node has not the channel's key) and one whose payload the node
could not decode are dead letters that say so.
"""

import json
from typing import Any

import attrs
import orjson
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.meshtastic_protobuf import float32
from lorrygate.decoding.recent import Recent
from lorrygate.decoding.records import received_ns
from lorrygate.decoding.vendors import flatten
from lorrygate.errors import Declined, DecodeError, Ignored
from lorrygate.interfaces import IDecoder
from lorrygate.model import EVENT, Record, unused_name

#: ``to`` of a packet to every node
BROADCAST = 0xFFFFFFFF
#: the packet's values that are kept as fields, under the name given
_PACKET_FIELDS = {"id": "packet_id", "rssi": "rssi", "snr": "snr", "hops_away": "hops_away",
                  "hop_start": "hop_start"}
#: the packet's keys that are read otherwise or left out
_HANDLED = frozenset({"from", "to", "type", "payload", "timestamp", "sender", "channel", *_PACKET_FIELDS})
#: the types of what a user sends to a gateway node to go into the mesh (its JSON downlink)
_DOWNLINK = frozenset({"sendtext", "sendposition"})
#: a position's coordinates: degrees times 10^7
_DEGREES = {"latitude_i": "latitude", "longitude_i": "longitude"}
#: how long a packet is known by its node and id, to tell another gateway's copy of it, seconds (a gateway node
#: that lost its broker sends what it heard since when it is back)
RECEPTION_WINDOW = 3600.0
#: the most packets known at once
MAX_KNOWN = 50_000


def node_id(number: int) -> str:
    """A node number as Meshtastic writes it (``!a1b2c3d4``)."""
    return f"!{number:08x}"


def _node_number(value, what: str) -> int:
    if type(value) is not int or not 0 <= value <= BROADCAST:
        raise DecodeError("meshtastic", f"{what} {value!r} is not a node number (0 to 4294967295)")
    return value


def _json_text(value) -> str:
    """A decoded JSON value as JSON text again (integers beyond 64 bits, which orjson refuses, as Python writes
    them)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _protobuf_topic(topic: str, payload: bytes) -> bool:
    """Whether a message is a ServiceEnvelope: by its topic's format level (``2/e``, ``2/c``, ``2/json``), else
    (a topic of another shape) by its first byte."""
    levels = topic.rsplit("/", 3)
    if len(levels) == 4 and (levels[0].endswith("/2") or levels[0] == "2"):
        return levels[1] != "json"
    return payload[:1] != b"{"


@implementer(IDecoder)
@attrs.frozen
class MeshtasticDecoder:
    """Meshtastic gateway nodes' packets, as protobuf or JSON; see the module's docstring."""

    name: str = "meshtastic"
    timezone: Any = None
    #: channel keys by the channel's name in lower case (a ``[decoder:NAME]``'s ``keys``), for encrypted packets
    keys: dict = attrs.field(factory=dict, repr=False)
    #: first: a row a packet, the other gateways' copies ignored; each: a row a gateway that heard it
    receptions: str = "first"
    _known: Recent = attrs.field(factory=lambda: Recent(RECEPTION_WINDOW, MAX_KNOWN), init=False, repr=False,
                                 eq=False)

    def decode(self, message, address) -> list:
        if address is None or address.kind == EVENT:
            raise Declined("not a Meshtastic gateway's topic (<root>/2/e/<channel>/<gateway>, .../2/json/...)")
        if _protobuf_topic(message.topic, message.payload):
            return [self._row(self._protobuf(message), message, address)]
        try:
            packet = loads(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(self.name, f"not JSON ({exc}): a Meshtastic gateway node writes each packet as a JSON "
                                         "object") from None
        if type(packet) is not dict:
            raise DecodeError(self.name, f"a JSON {type(packet).__name__}, not the object of a Meshtastic packet")
        if "from" not in packet:
            raise DecodeError(self.name, "no 'from' (the sending node's number): not a Meshtastic packet")
        _node_number(packet["from"], "from")
        kind = packet.get("type")
        if kind is None and "bytes" in packet:
            raise DecodeError(self.name, "an encrypted packet: the gateway node has not the channel's key; give it "
                                         "the channel (or turn the MQTT module's encryption off) to store its values")
        if type(kind) is not str:
            raise DecodeError(self.name, f"type {kind!r} is not the text a Meshtastic packet's type is")
        if kind in _DOWNLINK:
            raise Ignored(self.name, message.topic, f"a {kind} sent into the mesh: a command, not a measurement")
        if "payload" not in packet:
            if not kind:
                raise Ignored(self.name, message.topic, "a packet of an app the firmware does not write as JSON "
                                                        "(routing, admin, range test, ...): no values")
            raise DecodeError(self.name, f"a {kind} packet without its payload: the gateway node could not decode it")
        return [self._row(packet, message, address)]

    def _row(self, packet: dict, message, address) -> Record:
        """The record of a packet as the JSON output writes it (the protobuf one made so by `_protobuf`); Ignored
        where another gateway's copy of it was stored."""
        sender, kind = packet["from"], packet["type"]
        node = node_id(sender)
        fields = self._payload(packet["payload"], kind)
        if kind == "nodeinfo" and fields.get("id") == node:
            del fields["id"]
        for key, name in _PACKET_FIELDS.items():
            if key in packet:
                fields[unused_name(fields, name)] = packet[key]
        to = packet.get("to")
        if to is not None and _node_number(to, "to") != BROADCAST:
            fields[unused_name(fields, "to")] = node_id(to)
        gateway = packet.get("sender")
        if gateway and address.gateway and gateway != address.gateway:  # (a map report's topic names none)
            fields[unused_name(fields, "sender")] = gateway
        for key, value in packet.items():
            if key not in _HANDLED:
                fields[unused_name(fields, key)] = value
        record = Record(self._time(packet.get("timestamp"), message), fields, {"node": node, "type": kind})
        self._first_copy(message, sender, packet.get("id"))
        return record

    def _first_copy(self, message, sender: int, packet_id) -> None:
        """Ignored if another copy of the packet was stored (``receptions = first``)."""
        if self.receptions == "first" and type(packet_id) is int and packet_id:
            if self._known.again((sender, packet_id), message.received):
                raise Ignored(self.name, message.topic, f"a copy of packet {packet_id} of {node_id(sender)} that "
                                                        "another gateway delivered first (receptions = first)")

    def _protobuf(self, message) -> dict:
        """A ServiceEnvelope as the firmware's JSON output writes its packet (``MeshPacketSerializer``)."""
        from lorrygate.decoding.meshtastic_protobuf import read_envelope

        packet, gateway, kind, values = read_envelope(message.payload, self.keys, message.topic)
        written = {"from": getattr(packet, "from"), "to": packet.to, "id": packet.id, "type": kind, "payload": values,
                   "timestamp": packet.rx_time, "sender": gateway}
        if packet.rx_rssi:
            written["rssi"] = packet.rx_rssi
        if packet.rx_snr:
            written["snr"] = float32(packet.rx_snr)
        if packet.hop_start and packet.hop_limit <= packet.hop_start:
            written["hops_away"] = packet.hop_start - packet.hop_limit
            written["hop_start"] = packet.hop_start
        return written

    def _payload(self, payload, kind: str) -> dict:
        if kind == "text" or type(payload) is not dict:
            # A text message: its text, or what the firmware read as JSON in it (an object, a number) as JSON
            # text: anyone on a mesh channel may send one, and its keys must not make columns.
            if type(payload) is dict and list(payload) == ["text"] and type(payload["text"]) is str:
                payload = payload["text"]
            text = payload if type(payload) is str else _json_text(payload)
            return {"text" if kind == "text" else "payload": text}
        fields: dict = {}
        for key, value in payload.items():
            if key in _DEGREES and type(value) is int:
                fields[unused_name(fields, _DEGREES[key])] = value / 10_000_000
            elif key in ("time", "timestamp"):
                fields[unused_name(fields, f"{kind or 'payload'}_{key}")] = value
            else:
                fields[unused_name(fields, key)] = value
        return flatten(fields)

    def _time(self, timestamp, message) -> int:
        """``timestamp``, the gateway node's receive time in epoch seconds (0 where it has no clock)."""
        if timestamp is None or (type(timestamp) is int and timestamp == 0):
            return received_ns(message)
        if type(timestamp) is not int or not 0 < timestamp <= BROADCAST:
            raise DecodeError(self.name, f"timestamp {timestamp!r} is not the epoch seconds a Meshtastic node sends")
        return timestamp * 1_000_000_000

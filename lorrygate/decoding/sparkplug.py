"""
Sparkplug B (Eclipse Sparkplug 3.0 and 2.2), the payload of industrial MQTT:
Protocol Buffers on ``spBv1.0/<group>/<type>/<edge node>[/<device>]``
(the ``sparkplug`` strategy reads the topic).

- ``NBIRTH``, ``DBIRTH``, ``NDATA``, ``DDATA``: the metrics as fields, one
  record a timestamp (a metric's own, else the payload's, else the receive
  time; milliseconds). A metric's name is its Sparkplug name (``Inputs/A``).
- A birth declares each metric's name, alias and datatype; later messages
  name their metrics by alias only, and may leave out the datatype. The
  decoder keeps the births' declarations a channel (per group and edge node;
  an ``NBIRTH`` starts them afresh). A message whose alias no birth declared
  (the edge node was born before the gateway subscribed) is a dead letter
  that says so: it decodes once the edge node is born again (restart it, or
  send it ``Node Control/Rebirth``). With ``rebirth = yes`` (a
  ``[decoder:NAME]`` of ``type = sparkplug``) the gateway sends that command
  itself, as a Sparkplug host application does: an ``NCMD`` to the edge node
  on the channel's own connection, at most once in ``REBIRTH_INTERVAL``
  seconds an edge node.
- Values by datatype: Int8 to Int64 signed (as two's complement on the
  wire), UInt8 to UInt64, Float (as the device meant it: 21.1, not
  21.100000381469727), Double, Boolean, String, Text, UUID, DateTime (ISO
  text), Bytes and File (base64 text), the arrays of Sparkplug 3.0 (lists),
  a DataSet (a list of row objects), a Template instance (its members as
  fields ``<metric>/<member>``). A null metric (``is_null``) is null.
- Left out: ``Node Control/...`` metrics (commands an edge node takes, not
  readings), ``bdSeq`` in births (session bookkeeping), transient metrics
  (``is_transient``: "not to be stored in a historian"), template
  definitions.
- ``NDEATH`` and ``DDEATH`` (event topics): one record, ``event`` = the
  message type and ``bdSeq`` of an ``NDEATH``.

A payload that is no Sparkplug B protobuf on such a topic is a dead letter;
other topics (``STATE``) are declined.
"""

import base64
import struct
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.decoding.records import received_ns
from lorrygate.decoding.timestamps import MAX_NS
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record

#: an edge node is asked for a rebirth at most once in this many seconds (its births take a moment to come)
REBIRTH_INTERVAL = 10.0
#: the message types of edge nodes and devices that the decoder reads
BIRTHS = ("NBIRTH", "DBIRTH")
DATA = ("NDATA", "DDATA")
DEATHS = ("NDEATH", "DDEATH")

# Sparkplug datatypes (the specification's numbers)
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID, DATASET, BYTES, FILE, TEMPLATE = range(9, 20)
#: the bits of the signed integer types
_SIGNED = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
#: the numeric arrays of Sparkplug 3.0: datatype -> struct code (little endian)
_ARRAYS = {22: "b", 23: "h", 24: "i", 25: "q", 26: "B", 27: "H", 28: "I", 29: "Q", 30: "f", 31: "d"}
BOOLEAN_ARRAY, STRING_ARRAY, DATETIME_ARRAY = 32, 33, 34
#: datatypes by the value field a metric without one (declared nowhere) fills
_BY_FIELD = {"int_value": UINT32, "long_value": UINT64, "float_value": FLOAT, "double_value": DOUBLE,
             "boolean_value": BOOLEAN, "string_value": STRING, "bytes_value": BYTES, "dataset_value": DATASET,
             "template_value": TEMPLATE}


def _float32(value: float) -> float:
    """The shortest decimal that is the same 32-bit float: what the device's 21.1 was before it became
    21.100000381469727."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        shorter = float(f"{value:.{digits}g}")
        if struct.pack("<f", shorter) == packed:
            return shorter
    return value


def _iso(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat().replace("+00:00", "Z")


def _signed(value: int, bits: int) -> int:
    """Int8 to Int32 travel in a uint32 and Int64 in a uint64 as two's complement; encoders differ in the width
    (Tahu's Java fills 32 bits, others 8), so the low ``bits`` are read."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _text(value) -> str:
    """A protobuf string: one that is not UTF-8 comes as its bytes (upb, proto2), read as text with ``\\xNN`` for
    the bytes UTF-8 cannot read (a metric's name of bytes broke the decoder, its message a dead letter of a
    TypeError; a String value was stored as bytes)."""
    return value if type(value) is str else value.decode("utf-8", "backslashreplace")


def _scalar(value, datatype: int):
    if datatype in (BYTES, FILE):
        return base64.b64encode(value).decode("ascii") if type(value) is bytes else value
    if type(value) is bytes:  # (a string_value that is not UTF-8)
        return _text(value)
    if datatype in _SIGNED:
        return _signed(value, _SIGNED[datatype])
    if datatype == FLOAT:
        return _float32(value)
    if datatype == DATETIME:
        return _iso(value)
    return value


def _array(raw: bytes, datatype: int, name: str) -> list:
    code = _ARRAYS.get(datatype)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) % size:
            raise ValueError(f"{len(raw)} bytes are no whole number of {size}-byte items")
        values = list(struct.unpack(f"<{len(raw) // size}{code}", raw))
        return [_float32(value) for value in values] if code == "f" else values
    if datatype == BOOLEAN_ARRAY:
        if len(raw) < 4:
            raise ValueError("a Boolean array without its 4-byte count")
        count = int.from_bytes(raw[:4], "little")
        bits = raw[4:]
        if count > len(bits) * 8:
            raise ValueError(f"a Boolean array of {count} values in {len(bits)} bytes")
        return [bool(bits[index >> 3] & (0x80 >> (index & 7))) for index in range(count)]
    if datatype == STRING_ARRAY:
        if raw and not raw.endswith(b"\0"):
            raise ValueError("a String array whose last string has no NUL")
        return [text.decode("utf-8") for text in raw.split(b"\0")[:-1]]
    if datatype == DATETIME_ARRAY:
        return [_iso(value) for value in _array(raw, 25, name)]
    raise ValueError(f"datatype {datatype} is no array type")


@attrs.define
class _Births:
    """What the births of one edge node (and its devices) declared: alias -> (name, datatype), name -> datatype."""

    aliases: dict = attrs.field(factory=dict)
    types: dict = attrs.field(factory=dict)
    #: the sequence number (``seq``, 0-255) of the edge node's last message, None before one had it
    seq: int | None = None


@implementer(IDecoder)
@attrs.define(eq=False)
class SparkplugDecoder:
    name: str = "sparkplug"
    timezone: Any = None
    #: ask an edge node whose aliases no birth declared for a rebirth (an NCMD through ``publish``)
    rebirth: bool = False
    #: the clock of the rebirth requests' interval (the reactor)
    clock: Any = None
    #: ``publish(topic, payload, qos)`` on the channel's connection, set by the channel; None: no requests
    publish: Any = None
    #: (group, edge node) -> _Births, as the channel's messages declared them
    births: dict = attrs.field(factory=dict, repr=False)
    #: (group, edge node) -> when it was last asked for a rebirth
    asked: dict = attrs.field(factory=dict, repr=False)
    #: messages of an edge node whose ``seq`` said that messages before them never came (lost upstream)
    seq_gaps: int = 0
    #: the channel's counters (`ChannelStats`), which count the gaps too (status, /metrics); set by the channel
    stats: Any = None
    #: (group, edge node) -> when a gap of its ``seq`` was last logged
    _gap_said: dict = attrs.field(factory=dict, repr=False)

    log = Logger()

    def decode(self, message, address) -> list:
        kind = address.rest if address is not None else None
        if kind not in BIRTHS and kind not in DATA and kind not in DEATHS:
            raise Declined("not a Sparkplug B topic of an edge node or device (spBv1.0/<group>/<type>/...)")
        from google.protobuf.message import DecodeError as ProtobufError

        from lorrygate.decoding.sparkplug_schema import Payload

        if not message.payload:
            raise Declined("an empty payload")
        try:
            payload = Payload.FromString(bytes(message.payload))
        except ProtobufError as exc:
            raise DecodeError(self.name, f"the {kind} payload is no Sparkplug B protobuf ({exc})") from None
        if not payload.metrics and not payload.HasField("timestamp") and kind not in DEATHS:
            # bytes that happen to parse as fields of no meaning here (a JSON or text payload can): not a payload
            # of this topic, whose births and data always have a timestamp
            raise DecodeError(self.name, f"the {kind} payload is no Sparkplug B protobuf (no timestamp, no metrics)")
        stamp = self._ns(payload.timestamp, kind) if payload.timestamp else received_ns(message)
        edge = (address.network, address.gateway)
        if kind in DEATHS:
            if kind == "DDEATH":  # (an NDEATH, the will set at connect, has no seq)
                self._sequence(payload, kind, address, self.births.get(edge))
            death: dict = {"event": kind}
            for metric in payload.metrics:
                if metric.name == "bdSeq" and metric.WhichOneof("value") in ("long_value", "int_value"):
                    death["bdSeq"] = metric.long_value or metric.int_value
            return [Record(stamp, death)]
        births = self.births.get(edge)
        if kind == "NBIRTH" or births is None:
            births = self.births[edge] = _Births()
        self._sequence(payload, kind, address, births)
        by_time: dict = {}
        for metric in payload.metrics:
            name, datatype = self._declared(metric, births, kind, address)
            if metric.is_transient or name.startswith("Node Control/") or (name == "bdSeq" and kind == "NBIRTH"):
                continue
            when = self._ns(metric.timestamp, f"metric {name!r}") if metric.timestamp else stamp
            fields = by_time.get(when)
            if fields is None:
                fields = by_time[when] = {}
            if metric.is_null:
                fields[name] = None
                continue
            self._value(metric, datatype, name, fields)
        return [Record(when, fields) for when, fields in by_time.items() if fields]

    def _sequence(self, payload, kind: str, address, births: _Births | None) -> None:
        """Follow the edge node's ``seq`` (0-255, one more a message, from its NBIRTH on): a number skipped says
        that messages never came (Sparkplug's data goes at QoS 0: a broker drops them under load), a device's
        birth among them perhaps, whose aliases would then name later metrics wrongly. The message is still
        read; the gap is counted (`seq_gaps`) and logged, at most once in REBIRTH_INTERVAL an edge node. No
        rebirth is asked for on a gap: a channel that subscribes to some of an edge node's devices sees gaps
        that are none, and an edge node asked every few seconds would do little else."""
        if births is None or not payload.HasField("seq"):
            return
        seq, last = payload.seq % 256, births.seq
        births.seq = seq
        if kind == "NBIRTH" or last is None or seq == (last + 1) % 256:
            return
        edge = (address.network, address.gateway)
        self.seq_gaps += 1
        if self.stats is not None:
            self.stats.seq_gaps += 1
        now = self.clock.seconds() if self.clock is not None else None
        said = self._gap_said.get(edge)
        if now is None or said is None or now - said >= REBIRTH_INTERVAL:
            if now is not None:
                self._gap_said[edge] = now
            self.log.warn(
                "sparkplug: {kind} of edge node {edge} has seq {seq} after {last}: {lost} message(s) never came "
                "(lost before the gateway; if a device's birth was among them, its aliases name other metrics "
                "now: restart the edge node or send it Node Control/Rebirth)",
                kind=kind, edge="/".join(part for part in edge if part), seq=seq, last=last, lost=(seq - last - 1) % 256,
                event="sparkplug_seq_gap")

    def _ns(self, milliseconds: int, what: str) -> int:
        """A Sparkplug timestamp (milliseconds since the epoch, unsigned) in nanoseconds, if it is a time."""
        ns = milliseconds * 1_000_000
        if ns > MAX_NS:
            raise DecodeError(self.name, f"the timestamp of the {what}, {milliseconds} ms, is past the year 9999")
        return ns

    def _declared(self, metric, births: _Births, kind: str, address) -> tuple:
        """The metric's name and datatype, declaring them if it comes in a birth."""
        datatype = metric.datatype
        if metric.HasField("name"):
            name = _text(metric.name)
            if kind in BIRTHS:
                if metric.HasField("alias"):
                    births.aliases[metric.alias] = (name, datatype)
                births.types[name] = datatype
            elif not datatype:
                datatype = births.types.get(name, 0)
            return name, datatype
        if not metric.HasField("alias"):
            raise DecodeError(self.name, f"a {kind} metric with neither a name nor an alias")
        declared = births.aliases.get(metric.alias)
        if declared is None:
            where = "/".join(part for part in (address.network, address.gateway) if part)
            asked = self._ask_rebirth(address.network, address.gateway)
            raise DecodeError(self.name, f"alias {metric.alias} of edge node {where} was declared by no birth this "
                                         "gateway has seen (the edge node was born before it subscribed); its "
                                         "messages decode once it is born again: " + (
                                             f"the gateway asked it to ({asked})" if asked else
                                             "restart it, send it the command Node Control/Rebirth, or set rebirth "
                                             "= yes in a [decoder:NAME] of type = sparkplug"))
        name, birth_type = declared
        return name, datatype or birth_type

    def _ask_rebirth(self, group: str, edge: str) -> str:
        """Send the edge node ``Node Control/Rebirth`` (at most once in REBIRTH_INTERVAL); what was done, or ""."""
        if not self.rebirth or self.publish is None or self.clock is None:
            return ""
        topic = f"spBv1.0/{group}/NCMD/{edge}"
        now = self.clock.seconds()
        last = self.asked.get((group, edge))
        if last is not None and now - last < REBIRTH_INTERVAL:
            return f"Node Control/Rebirth on {topic}, {now - last:.0f} s ago"
        from lorrygate.decoding.sparkplug_schema import Payload

        command = Payload(timestamp=int(time_of_day(self.clock)() * 1000))
        command.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=True)
        self.asked[(group, edge)] = now
        self.publish(topic, command.SerializeToString(), 0)  # commands go at QoS 0, as the specification says
        return f"Node Control/Rebirth on {topic}"

    def _value(self, metric, datatype: int, name: str, fields: dict) -> None:
        field = metric.WhichOneof("value")
        if field is None:
            fields[name] = None
            return
        datatype = datatype or _BY_FIELD.get(field, 0)
        try:
            if field == "template_value":
                template = metric.template_value
                if not template.is_definition:
                    for member in template.metrics:
                        if not member.HasField("name"):
                            raise ValueError("a template member without a name")
                        member_name = f"{name}/{_text(member.name)}"
                        if member.is_null:
                            fields[member_name] = None
                        else:
                            self._value(member, member.datatype, member_name, fields)
                return
            if field == "dataset_value":
                fields[name] = self._dataset(metric.dataset_value)
                return
            value = getattr(metric, field)
            if field == "bytes_value" and datatype not in (BYTES, FILE):
                fields[name] = _array(value, datatype, name)
                return
            fields[name] = _scalar(value, datatype)
        except (ValueError, UnicodeDecodeError, OverflowError, OSError) as exc:  # OSError: a DateTime past the years
            raise DecodeError(self.name, f"metric {name!r} (datatype {datatype}): {exc}") from None

    def _dataset(self, dataset) -> list:
        columns, types = [_text(column) for column in dataset.columns], list(dataset.types)
        if len(types) != len(columns):
            raise ValueError(f"a DataSet of {len(columns)} columns and {len(types)} types")
        rows = []
        for row in dataset.rows:
            if len(row.elements) != len(columns):
                raise ValueError(f"a DataSet row of {len(row.elements)} values for {len(columns)} columns")
            values = {}
            for column, datatype, element in zip(columns, types, row.elements):
                field = element.WhichOneof("value")
                values[column] = None if field is None else _scalar(getattr(element, field), datatype)
            rows.append(values)
        return rows

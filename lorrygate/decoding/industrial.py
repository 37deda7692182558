"""
The JSON of industrial connectivity servers, which read PLCs and machines (OPC UA, Modbus, S7, ...) and publish
their tags to MQTT. Each is declined for anything else, for ``json``.

Kepware's IoT Gateway (KEPServerEX, Kepware Edge; its MQTT agent's standard message template)::

    {"timestamp": 1717243200000, "values": [{"id": "Line1.Press7.Pressure", "v": 4.2, "q": true,
                                              "t": 1717243199875}, ...]}

is a record a distinct ``t`` (each value's own time, milliseconds; the message's ``timestamp`` where a value has
none), the values under their ids (``Line1.Press7.Pressure``). A value of bad quality (``q`` false, or an OPC
quality code without the good bits 0xC0) is stored as read, with the field ``<id>.q`` beside it holding the
quality; a good value adds no column.

EMQX Neuron's MQTT plugin, its values format and its tags format (and the ``node_name``/``group_name`` of its 2.0
release)::

    {"timestamp": 1717243200000, "node": "modbus", "group": "grp", "values": {"tag0": 123},
     "errors": {"tag1": 2014}, "metas": {}}
    {"timestamp": 1717243200000, "node": "modbus", "group": "grp", "tags": [{"name": "tag0", "value": 123},
                                                                            {"name": "tag1", "error": 2014}]}

is one record at ``timestamp``, ``node`` and ``group`` its tags, the values its fields, a tag that could not be
read its error code as ``<tag>.error``, driver metadata (``metas``, a tag's ``meta``) as dotted fields.

ThingsBoard's device telemetry, which devices and its IoT Gateway (Modbus, OPC UA, BACnet connectors) publish,
a reading with its time or a list of them, and its gateway API's readings by device::

    {"ts": 1451649600512, "values": {"temperature": 22.5, "humidity": 61}}
    [{"ts": 1451649600000, "values": {...}}, {"ts": 1451649601000, "values": {...}}]
    {"Device A": [{"ts": 1483228800000, "values": {...}}], "Device B": [...]}

is a record a reading at its ``ts`` (milliseconds), the values its fields (an object's as dotted fields), the
device of the gateway API the tag ``device``.
"""

from typing import Any

import attrs
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.timestamps import from_epoch
from lorrygate.decoding.vendors import flatten
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record, unused_name


def _document(payload: bytes) -> Any:
    try:
        return loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Declined(f"not JSON: {exc}") from None


def _time(value, decoder: str, what: str) -> int:
    if type(value) not in (int, float) or isinstance(value, bool):
        raise DecodeError(decoder, f"{what} {value!r} is not the epoch milliseconds it sends")
    try:
        return from_epoch(value)
    except ValueError as exc:
        raise DecodeError(decoder, f"{what} {value!r}: {exc}") from None


def _good(quality) -> bool:
    """Kepware's quality: a boolean, or an OPC DA code (192: good)."""
    if type(quality) is bool:
        return quality
    return type(quality) is int and quality & 0xC0 == 0xC0


def _add(fields: dict, name: str, value) -> None:
    fields[unused_name(fields, name)] = value


@implementer(IDecoder)
@attrs.frozen
class KepwareDecoder:
    """Kepware's IoT Gateway, its standard template; see the module's docstring."""

    name: str = "kepware"
    timezone: Any = None
    #: every message of the template has it (the chain skips a payload without it, unparsed)
    requires = b'"values"'

    def decode(self, message, address) -> list:
        document = _document(message.payload)
        values = document.get("values") if type(document) is dict else None
        if type(values) is not list or not values or not all(
                type(item) is dict and "id" in item and "v" in item for item in values):
            raise Declined("not Kepware's IoT Gateway template ({\"timestamp\": ..., \"values\": [{\"id\", \"v\", "
                           "\"q\", \"t\"}, ...]})")
        default = document.get("timestamp")
        by_time: dict[int, dict] = {}
        for number, item in enumerate(values, 1):
            stamp = item.get("t", default)
            if stamp is None:
                raise DecodeError(self.name, f"value {number} ({item['id']!r}) has no t, and the message no "
                                             "timestamp")
            fields = by_time.setdefault(_time(stamp, self.name, f"value {number}'s t"), {})
            name = str(item["id"])
            _add(fields, name, item["v"])
            if "q" in item and not _good(item["q"]):
                _add(fields, f"{name}.q", item["q"])
        return [Record(time, fields) for time, fields in by_time.items()]


def _reading(item) -> bool:
    """A ThingsBoard reading: ``{"ts": ..., "values": {...}}``, nothing else."""
    return type(item) is dict and len(item) == 2 and type(item.get("values")) is dict and "ts" in item


@implementer(IDecoder)
@attrs.frozen
class ThingsBoardDecoder:
    """ThingsBoard's device telemetry with times, and its gateway API's; see the module's docstring."""

    name: str = "thingsboard"
    timezone: Any = None
    #: every reading with a time has it (the chain skips a payload without it, unparsed)
    requires = b'"values"'

    def decode(self, message, address) -> list:
        document = _document(message.payload)
        readings: list[tuple[str | None, dict]]
        if _reading(document):
            readings = [(None, document)]
        elif type(document) is list and document and all(_reading(item) for item in document):
            readings = [(None, item) for item in document]
        elif type(document) is dict and document and all(
                type(items) is list and items and all(_reading(item) for item in items) for items in document.values()):
            readings = [(str(device), item) for device, items in document.items() for item in items]
        else:
            raise Declined("not ThingsBoard's telemetry with times ({\"ts\": ..., \"values\": {...}}, a list of "
                           "them, or the gateway API's by device)")
        records = []
        for number, (device, item) in enumerate(readings, 1):
            fields = flatten(item["values"])
            tags = {"device": device} if device is not None else {}
            records.append(Record(_time(item["ts"], self.name, f"reading {number}'s ts"), fields, tags))
        return records


@implementer(IDecoder)
@attrs.frozen
class NeuronDecoder:
    """EMQX Neuron's MQTT plugin, its values and tags formats; see the module's docstring."""

    name: str = "neuron"
    timezone: Any = None
    #: ``"node"`` and ``"node_name"`` (its 2.0 release)
    requires = b'"node'

    def decode(self, message, address) -> list:
        document = _document(message.payload)
        if type(document) is not dict or "timestamp" not in document or not (
                type(document.get("values")) is dict or type(document.get("tags")) is list):
            raise Declined("not Neuron's values or tags format ({\"timestamp\", \"node\", \"group\", \"values\" or "
                           "\"tags\"})")
        node = document.get("node", document.get("node_name"))
        group = document.get("group", document.get("group_name"))
        tags = {key: str(value) for key, value in (("node", node), ("group", group)) if value is not None}
        fields: dict = {}
        if type(document.get("tags")) is list:  # (a "tags" of another kind beside "values" broke the decoder)
            for number, item in enumerate(document["tags"], 1):
                if type(item) is not dict or "name" not in item:
                    raise DecodeError(self.name, f"tag {number} of the tags format is no object with a name: "
                                                 f"{str(item)[:80]!r}")
                name = str(item["name"])
                if "value" in item:
                    _add(fields, name, item["value"])
                if "error" in item:
                    _add(fields, f"{name}.error", item["error"])
                self._metas(fields, item.get("meta"), f"{name}.meta.")
        else:
            for name, value in document["values"].items():
                _add(fields, str(name), value)
            errors = document.get("errors")
            for name, code in (errors.items() if type(errors) is dict else ()):
                _add(fields, f"{name}.error", code)
        self._metas(fields, document.get("metas"), "metas.")
        return [Record(_time(document["timestamp"], self.name, "timestamp"), fields, tags)]

    @staticmethod
    def _metas(fields: dict, metas, prefix: str) -> None:
        if type(metas) is dict:
            for key, value in metas.items():
                _add(fields, f"{prefix}{key}", value)

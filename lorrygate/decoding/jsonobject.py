"""
The JSON decoder: an object becomes one record, an array of objects one each.

The record's time comes from a time field (see `lorrygate.decoding.timestamps`),
else from the receive time. On a per-field topic (``.../data/temperature``) a
plain JSON value becomes that one field, and so does the ``value`` of an
object (`lorrygate.decoding.records.named_value`).
"""

import json
from typing import Any

import attrs
import orjson
from zope.interface import implementer

from lorrygate.decoding.lines import BadLines
from lorrygate.decoding.records import (
    VALUE,
    local_time,
    named_value,
    named_values,
    object_record,
    objects_records,
    received_ns,
    unfold,
)
from lorrygate.decoding.senml import is_pack
from lorrygate.decoding.senml import records as senml_records
from lorrygate.decoding.timestamps import TIME_FIELDS, from_epoch
from lorrygate.errors import Declined, DecodeError, Ignored
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record

_orjson_loads = orjson.loads
_NO_TIME = object()
_OTHER_TIME_FIELDS = TIME_FIELDS[1:]
#: what JSON calls the values the parser returns, for errors
_JSON_NAMES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array"}


def loads(payload):
    """orjson (7x faster on telemetry-sized objects, measured), with the
    standard library for what orjson refuses but JSON writers send: NaN,
    Infinity, a byte order mark, nesting past 1,024 levels. orjson reads an
    integer below -2**63 or from 2**64 on as the nearest float, without an
    error (so the standard library never sees it); docs/decoding.rst says so.

    Strings with a lone UTF-16 surrogate (``"\\ud800"``), which no database
    and no UTF-8 encoder takes, are refused with ValueError, whichever
    decoder parses the JSON: every JSON path of lorrygate goes through here.
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            document = json.loads(payload)
        except RecursionError:
            raise ValueError("JSON nested too deeply (over 1,000 levels)") from None
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    if "\\u" in text.lower() and lone_surrogate(document):
        raise ValueError("a string with a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), which is not text")
    return document


def lone_surrogate(value) -> bool:
    """Whether ``value`` (text, or dicts and lists of it, their keys too) holds a lone UTF-16 surrogate, at any
    depth (no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


@implementer(IDecoder)
@attrs.frozen
class JsonDecoder:
    name: str = "json"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = _orjson_loads(message.payload)
        except orjson.JSONDecodeError:
            try:
                document = loads(message.payload)
            except (ValueError, UnicodeDecodeError) as exc:
                hint = ""
                if str(exc).startswith("Extra data: line ") and not str(exc).startswith("Extra data: line 1 "):
                    hint = " (a JSON document a line? the ndjson decoder reads them: decoders = ndjson)"
                raise Declined(f"not JSON: {exc}{hint}") from None
        if type(document) is dict:
            if VALUE in document and address is not None and address.field is not None and address.field != VALUE:
                document = named_value(document, address.field)
            # the common case in one step: an object with its time as epoch seconds, or without a time
            value = document.get("time", _NO_TIME)
            if type(value) is float:
                del document["time"]
                try:
                    return [Record(from_epoch(value), document, {})]
                except ValueError as exc:
                    raise DecodeError(self.name, f"field 'time': {exc}") from None
            if value is _NO_TIME and document.keys().isdisjoint(_OTHER_TIME_FIELDS):
                return [Record(received_ns(message), document, {})]
        if type(document) is list:
            if not document:
                # a device's batch with nothing in it (a logger whose buffer is empty): no measurement, as an
                # empty payload is none (it was a dead letter, or the text "[]" of a per-field topic's value)
                raise Ignored(self.name, message.topic, "an empty JSON array: no records")
            if is_pack(document):
                return senml_records(document, message, self.name)
            document = named_values(document, address)
        try:
            records = objects_records(document, message, self.name, self.timezone)
        except DecodeError:
            if type(document) is not list:
                raise
            return self._each(message, address)  # (once an object of the array failed: the objects one by one)
        if records is not None:
            return records
        if type(document) is list:
            raise Declined("a JSON array that is not a non-empty list of objects")
        if address is not None and address.field is not None:
            if document is None:
                raise DecodeError(self.name, f"null is no value for field {address.field!r}")
            return [Record(received_ns(message), {address.field: document})]
        raise Declined(f"a JSON {_JSON_NAMES.get(type(document), 'value')}, not an object")

    def _each(self, message, address) -> list:
        """The records of an array of objects of which some fail (a logger's day with a time that is no time):
        those of the good objects, and the bad ones as an array of their own to keep (`BadLines`)."""
        sent = loads(message.payload)  # (again: a failed object lost its time field to the attempt)
        bad = BadLines(self.name, noun="objects", array=True)
        records: list = []
        for number, (item, named) in enumerate(zip(sent, named_values(loads(message.payload), address)), 1):
            try:
                local = self.timezone is not None and local_time(named)
                record = object_record(named, message, self.name, self.timezone)
            except DecodeError as exc:
                bad.add(json.dumps(item, ensure_ascii=False), f"object {number}: {exc.reason}")
                continue
            records.append(record)
            if local and len(records) > 1:
                unfold(records[-1], records[-2].time, self.timezone)
        return bad.finish(records, len(sent))

"""
Value policies: what a channel does with the values its decoders return.

``as-sent`` (the default of the vendor strategies) stores values as the
decoder returned them.

``kotori`` (the default of the ``wan`` and ``lan`` strategies) does what
Kotori does, for a fleet that migrates from it:

- a string that is a decimal number becomes a number (``"21.5"`` is 21.5,
  ``"42"`` is 42, also ``"007"``, which is 7): WeeWX sends every value of a
  loop packet as a string;
- null, NaN and the infinities (numbers or strings such as ``"NaN"``) are
  no values: dropped and counted (``values_dropped`` in the channel's stats),
  as Kotori's InfluxDB client leaves a null field out;
- a record without values (``{}``, or only nulls and NaN) is refused: the
  message is a dead letter saying so;
- a time of 0 means "no time": the receive time is used (a null time, or an
  empty text, is no time under every policy);
- an integer beyond 64 bits (an ICCID of 20 digits sent as a number), which
  the JSON parser reads as the nearest float, is the integer the payload
  wrote, exact (stored as text: no numeric column type holds it).
"""

import math
import re

import attrs

from lorrygate.decoding.records import received_ns
from lorrygate.errors import DecodeError

POLICIES = ("kotori", "as-sent")
#: (ASCII digits only: Python's \d and int() take "١" for 1)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE | re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DROP = object()
#: the characters a number (or NaN, inf) may start with, surrounding white space included: text that
#: starts otherwise ("bme280", "ON") is no number, without trying the pattern
_MAYBE_NUMBER = frozenset("+-.0123456789nNiI \t\r\n")
_isfinite = math.isfinite
#: floats at least this large (or NaN, or infinite) are looked at again (`_exact`): 2**63, past which a JSON
#: integer may have come as the nearest float
_LARGE = 9.223372036854775808e18
_SMALL = -_LARGE
#: an integer literal of 19 to 310 digits (more is past what a float holds, and past 4,300 int() refuses), not part
#: of a decimal fraction, an exponent or a longer run of digits
_LONG_INTEGER = re.compile(rb"(?<![\d.eE+-])-?\d{19,310}(?![\d.eE])")


def _number(text: str):
    if text[:1] not in _MAYBE_NUMBER:
        return text
    stripped = text.strip()
    if not _NUMBER.fullmatch(stripped):
        return text
    if _INTEGER.fullmatch(stripped):
        try:
            return int(stripped)
        except ValueError:  # past the 4,300 digits int() converts: no number a column holds, the text it is
            return text
    number = float(stripped)
    return number if math.isfinite(number) else _DROP


#: objects nested deeper than this are left as they came (a payload nested 1,000 levels deep made the
#: conversion's recursion fail)
_DEPTH = 32


def _value(value, depth: int = 0):
    kind = type(value)
    if value is None:
        return _DROP
    if kind is str:
        return _number(value)
    if kind is float:
        return value if math.isfinite(value) else _DROP
    if kind is dict and depth < _DEPTH:
        return {key: item for key, item in ((k, _value(v, depth + 1)) for k, v in value.items())
                if item is not _DROP}
    return value


def _exact(value: float, payload) -> float | int:
    """The integer literal of ``payload`` that ``value`` is the nearest float of (orjson reads an integer below
    -2**63 or from 2**64 on so, the standard library from 2**53 on is exact), else ``value``."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return value
    for match in _LONG_INTEGER.finditer(payload):
        exact = int(match.group())
        if float(exact) == value:
            return exact
    return value


@attrs.define
class KotoriValues:
    """The ``kotori`` policy; ``dropped`` counts the nulls, NaN and infinities left out."""

    dropped: int = 0

    def apply(self, records: list, message) -> list:
        # Most records need nothing: numbers and text that is no number, a time, some values.
        small, large = _SMALL, _LARGE  # (locals: a float's test costs ~12 ns more than isfinite's, not ~18)
        for record in records:
            fields = record.fields
            if not fields or not record.time:
                return self._convert(records, message)
            for value in fields.values():
                kind = type(value)
                if kind is float:
                    if not small < value < large:  # NaN, an infinity, or perhaps an integer past 64 bits
                        return self._convert(records, message)
                elif kind is str:
                    if value[:1] in _MAYBE_NUMBER:
                        return self._convert(records, message)
                elif kind is dict or value is None:
                    return self._convert(records, message)
        return records

    def _convert(self, records: list, message) -> list:
        out = []
        for record in records:
            fields = {}
            changed = False
            for name, value in record.fields.items():
                converted = _value(value)
                if converted is _DROP:
                    self.dropped += 1
                    changed = True
                    continue
                if type(converted) is float and not -_LARGE < converted < _LARGE and converted.is_integer():
                    converted = _exact(converted, message.payload)
                # (not ``fields == record.fields``: 2**70 == 1.1805916207174113e+21, and the exact integer was lost)
                changed = changed or converted is not value
                fields[name] = converted
            if not fields:
                continue
            time = record.time if record.time else received_ns(message)
            out.append(record if time == record.time and not changed
                       else attrs.evolve(record, time=time, fields=fields))
        if not out and records:
            raise DecodeError("values", "no values to store (an empty object, or only nulls, NaN and infinities): "
                                        "Kotori refuses such a payload, and so does values = kotori")
        return out

"""
The JSON decoder: an object becomes one record, an array of objects one each.

The record's time comes from a ``time`` or ``timestamp`` field (see
`lorrygate.decoding.timestamps`), else from the receive time. On a per-field
topic (``.../data/temperature``) a plain JSON value becomes that one field.
"""

import json

import attrs
from zope.interface import implementer

from lorrygate.decoding.timestamps import TIME_FIELDS, parse_time, seconds_to_ns
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record

_loads = json.loads


@implementer(IDecoder)
@attrs.frozen
class JsonDecoder:
    name: str = "json"

    def decode(self, message, address) -> list:
        try:
            document = _loads(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Declined(f"not JSON: {exc}") from None
        if type(document) is dict:
            return [self._record(document, message)]
        if type(document) is list:
            if not document or not all(type(item) is dict for item in document):
                raise Declined("a JSON array that is not a non-empty list of objects")
            return [self._record(item, message) for item in document]
        if address is not None and address.field is not None:
            if document is None:
                raise DecodeError(self.name, f"null is no value for field {address.field!r}")
            return [Record(seconds_to_ns(message.received), {address.field: document})]
        raise Declined(f"a JSON {type(document).__name__}, not an object")

    def _record(self, document: dict, message) -> Record:
        for key in TIME_FIELDS:
            if key in document:
                value = document.pop(key)
                try:
                    stamp = parse_time(value)
                except ValueError as exc:
                    raise DecodeError(self.name, f"field {key!r}: {exc}") from None
                return Record(stamp, document)
        return Record(seconds_to_ns(message.received), document)

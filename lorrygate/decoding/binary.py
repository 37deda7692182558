"""
Binary decoders: MessagePack, CBOR and Muon.

Each accepts a document that is an object (one record) or a list of objects
(one record each); time fields and date-time values are read as in
`lorrygate.decoding.timestamps`. A MessagePack or CBOR array of which some
objects fail (a time that is no time) stores the others; the bad ones are
kept as an array of their own, their bytes as they came (`_each`).
"""

import email.message
import io
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import attrs
import cbor2
import msgpack
from zope.interface import implementer

from lorrygate.decoding import muon
from lorrygate.decoding.lines import BadLines
from lorrygate.decoding.records import as_list, named_values, object_record, plain, storable, text_keys
from lorrygate.decoding.senml import cbor_pack
from lorrygate.decoding.senml import records as senml_records
from lorrygate.decoding.vendors import object_or_decline
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder


@implementer(IDecoder)
@attrs.frozen
class MessagePackDecoder:
    name: str = "msgpack"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = msgpack.unpackb(message.payload, raw=False, strict_map_key=False, timestamp=3)
        except Exception as exc:  # msgpack raises many types for bad input
            raise Declined(f"not MessagePack: {type(exc).__name__}: {exc}") from None
        try:
            return object_or_decline(plain(document), message, self.name, self.timezone, address)
        except DecodeError:
            if type(document) is not list:
                raise
            items = _msgpack_items(message.payload)
            return _each(self.name, self.timezone, message, address, items, _msgpack_array, _msgpack_item)


@implementer(IDecoder)
@attrs.frozen
class CborDecoder:
    name: str = "cbor"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = cbor2.loads(message.payload)
        except Exception as exc:  # cbor2 raises CBORDecodeError and friends
            raise Declined(f"not CBOR: {type(exc).__name__}: {exc}") from None
        pack = cbor_pack(document)
        if pack is not None:  # SenML (application/senml+cbor)
            return senml_records(pack, message, self.name, cbor=True)
        try:
            return object_or_decline(_cbor_plain(document), message, self.name, self.timezone, address)
        except DecodeError:
            items = _cbor_items(message.payload) if type(document) is list else None
            if items is None:
                raise
            return _each(self.name, self.timezone, message, address, items, _cbor_array, _cbor_item)


def _each(decoder: str, tz, message, address, items: list, array, load) -> list:
    """The records of an array's objects of which some failed: those of the good ones, and the bad ones' bytes,
    as they came, in an array of their own (``array(n)``: the format's header of an array of n) to keep
    (`BadLines`), which a replay decodes alone. ``items``: each object's bytes; ``load``: one object's bytes
    decoded as the array's were."""
    bad = BadLines(decoder, noun="objects", pack=lambda found: array(len(found)) + b"".join(found))
    records: list = []
    for number, raw in enumerate(items, 1):
        try:
            item = load(raw)
        except Exception as exc:  # (an object that reads only in its array: a CBOR string reference)
            bad.add(raw, f"object {number}: {type(exc).__name__}: {exc}")
            continue
        try:
            records.append(object_record(named_values(item, address), message, decoder, tz))
        except DecodeError as exc:
            bad.add(raw, f"object {number}: {exc.reason}")
    return bad.finish(records, len(items))


def _msgpack_item(raw: bytes):
    return plain(msgpack.unpackb(raw, raw=False, strict_map_key=False, timestamp=3))


def _msgpack_items(payload: bytes) -> list:
    """The bytes of each object of a MessagePack array, as they came."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, timestamp=3)
    unpacker.feed(payload)
    items = []
    for _ in range(unpacker.read_array_header()):
        start = unpacker.tell()
        unpacker.skip()
        items.append(payload[start:unpacker.tell()])
    return items


def _msgpack_array(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    if length < 2**16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _cbor_item(raw: bytes):
    return _cbor_plain(cbor2.loads(raw))


def _cbor_items(payload: bytes) -> list | None:
    """The bytes of each object of a CBOR array (of a definite or an indefinite length), as they came; None for
    an array under a tag (a self-described CBOR), which stays whole."""
    info = payload[0] & 31
    if payload[0] >> 5 != 4 or info in (28, 29, 30):
        return None
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info, 0)
    length = None if info == 31 else int.from_bytes(payload[1:1 + width], "big") if width else info
    stream = io.BytesIO(payload)
    stream.seek(1 + width)
    decoder = cbor2.CBORDecoder(stream)
    items = []
    while length is None or len(items) < length:
        start = stream.tell()
        if length is None and payload[start:start + 1] == b"\xff":
            break
        decoder.decode()
        items.append(payload[start:stream.tell()])
    return items


def _cbor_array(length: int) -> bytes:
    if length < 24:
        return bytes((0x80 | length,))
    if length < 2**8:
        return b"\x98" + bytes((length,))
    if length < 2**16:
        return b"\x99" + length.to_bytes(2, "big")
    return b"\x9a" + length.to_bytes(4, "big")


def _cbor_plain(value):
    """A CBOR document's values as values a column takes: its typed values (the tags cbor2 reads into Python's
    types) as the user's code's are (`storable`): a decimal fraction (tag 4) or a rational (tag 30) a number, a
    date-time (tags 0 and 1) or a date (100, 1004) its ISO 8601 text, a UUID (37), an IP address or network (52,
    54, 260, 261) their text, a regular expression (35) its pattern, a MIME message (36) its text; they were JSON
    text of Python's own (``"1.1"``, quotes and all; ``"re.compile('a+')"``), a date-time ``2024-06-01
    12:00:00+00:00``. A tag cbor2 does not know stays its text, ``CBORTag(99, 5)``."""
    if isinstance(value, Mapping):  # (a map cbor2 read as immutable, a frozendict: one in a self-described CBOR)
        return text_keys(value, _cbor_plain)
    if isinstance(value, (list, tuple)):
        return [_cbor_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):  # (tag 258: was stored as Python's text of it, "{1, 2}")
        return [_cbor_plain(item) for item in as_list(value)]
    if isinstance(value, (cbor2.CBORTag, cbor2.CBORSimpleValue)) or type(value).__name__ == "undefined_type":
        return repr(value)
    if isinstance(value, _AS_TEXT):
        return str(value)
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, email.message.Message):
        return value.as_string()
    return storable(value)


#: the values of CBOR's tags that are their text
_AS_TEXT = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,
            ipaddress.IPv4Interface, ipaddress.IPv6Interface)


def _same(value):
    return value


@implementer(IDecoder)
@attrs.frozen
class MuonDecoder:
    name: str = "muon"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = muon.loads(message.payload)
        except muon.MuonError as exc:
            raise Declined(f"not Muon: {exc}") from None
        if isinstance(document, dict):
            document = text_keys(document, _same)
        return object_or_decline(document, message, self.name, self.timezone, address)

"""
A reader for µON (Muon), the compact binary object notation of
github.com/vshymanskyy/muon (media type ``application/muon``).

No PyPI package implements it; this follows the format's documentation
(``docs/README.md`` and the annotated ``samples/sample.decoded.js`` there).

==================  =========================================================
bytes               value
==================  =========================================================
``00``-``7F``,      a UTF-8 string ending in ``00`` (the first byte is the
``C2``-``F4``       string's first byte)
``81`` n            string number n of the LRU string list, counting from
                    the most recent (n is ULEB128)
``82`` n bytes      a string of n bytes (may contain ``00``)
``84`` t n values   a typed array of n values of type t (``B0``-``BB``)
``85`` t (n vals)+  a chunked typed array, chunks until n = 0
``8A`` n            tag: count of the following list or dict (skipped)
``8B`` n            tag: size in bytes of the following value (skipped)
``8C``              tag: add the following string (or every string of the
                    following list, which is then skipped) to the LRU list
``8F B5 30 31``     magic tag, skipped
``90`` ... ``91``   a list
``92`` ... ``93``   a dict: key, value, key, value ... (string or integer keys)
``A0``-``A9``       the integers 0 to 9
``AA`` ``AB``       false, true
``AC``              null
``AD`` ``AE`` ``AF``  NaN, -Infinity, +Infinity
``B0``-``B3``       int8, int16, int32, int64 (little-endian)
``B4``-``B7``       uint8, uint16, uint32, uint64
``B8`` ``B9`` ``BA``  float16, float32, float64
``BB``              a signed LEB128 integer
``FF``              padding, skipped
==================  =========================================================

Dicts with integer keys give only the first key its type byte; the following
keys use the same type without it.
"""

import struct
from typing import NoReturn

from lorrygate.errors import LorrygateError

MAGIC = b"\x8f\xb5\x30\x31"

_TYPED = {
    0xB0: struct.Struct("<b"),
    0xB1: struct.Struct("<h"),
    0xB2: struct.Struct("<i"),
    0xB3: struct.Struct("<q"),
    0xB4: struct.Struct("<B"),
    0xB5: struct.Struct("<H"),
    0xB6: struct.Struct("<I"),
    0xB7: struct.Struct("<Q"),
    0xB8: struct.Struct("<e"),
    0xB9: struct.Struct("<f"),
    0xBA: struct.Struct("<d"),
}
_INTEGER_TYPES = frozenset(range(0xB0, 0xB8)) | {0xBB}
_SPECIAL = {0xAA: False, 0xAB: True, 0xAC: None, 0xAD: float("nan"), 0xAE: float("-inf"), 0xAF: float("inf")}
#: LRU list bound: strings beyond it fall off the front (as the format says)
LRU_SIZE = 512
#: nesting bound, so that hostile input cannot exhaust the stack
MAX_DEPTH = 64


class MuonError(LorrygateError):
    """Bytes that are not well-formed Muon."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.lru = []
        self.depth = 0

    def fail(self, what: str) -> NoReturn:
        raise MuonError(f"{what} at byte {self.pos}")

    def peek(self) -> int:
        if self.pos >= len(self.data):
            self.fail("unexpected end of data")
        return self.data[self.pos]

    def byte(self) -> int:
        value = self.peek()
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            self.fail(f"{count} bytes announced, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 70:
                self.fail("LEB128 number longer than 10 bytes")

    def sleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte & 0x40:
                    result -= 1 << shift
                return result
            if shift > 70 * 2:
                self.fail("LEB128 number too long")

    def utf8(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"invalid UTF-8 in a string ({exc.reason})")

    def string(self) -> str:
        first = self.peek()
        if first == 0x81:
            self.pos += 1
            index = self.uleb()
            if index >= len(self.lru):
                self.fail(f"string reference {index} beyond the {len(self.lru)} strings in the LRU list")
            return self.lru[-1 - index]
        if first == 0x82:
            self.pos += 1
            return self.utf8(self.take(self.uleb()))
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            self.fail("a string without its terminating 00 byte")
        text = self.utf8(self.data[self.pos : end])
        self.pos = end + 1
        return text

    def typed(self, kind: int):
        if kind == 0xBB:
            return self.sleb()
        try:
            codec = _TYPED[kind]
        except KeyError:
            self.fail(f"unknown type 0x{kind:02x}")
        return codec.unpack(self.take(codec.size))[0]

    def typed_array(self, chunked: bool) -> list:
        kind = self.byte()
        if kind not in _TYPED and kind != 0xBB:
            self.fail(f"typed array of unknown type 0x{kind:02x}")
        values = []
        while True:
            count = self.uleb()
            if count > len(self.data):
                self.fail(f"typed array of {count} values in a {len(self.data)}-byte document")
            values.extend(self.typed(kind) for _ in range(count))
            if not chunked or count == 0:
                return values

    def value(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH}")
        try:
            return self._value()
        finally:
            self.depth -= 1

    def _value(self):
        while True:
            tag = self.peek()
            if tag == 0xFF:
                self.pos += 1
            elif tag == 0x8F:
                if self.take(4) != MAGIC:
                    self.fail("a Muon magic tag that is not 8F B5 30 31")
            elif tag in (0x8A, 0x8B):
                self.pos += 1
                self.uleb()
            elif tag == 0x8C:
                self.pos += 1
                return self._remember()
            else:
                break
        tag = self.peek()
        if tag < 0x80 or 0xC2 <= tag <= 0xF4 or tag in (0x81, 0x82):
            return self.string()
        self.pos += 1
        if 0xA0 <= tag <= 0xA9:
            return tag - 0xA0
        if tag in _SPECIAL:
            return _SPECIAL[tag]
        if 0xB0 <= tag <= 0xBB:
            return self.typed(tag)
        if tag in (0x84, 0x85):
            return self.typed_array(tag == 0x85)
        if tag == 0x90:
            items = []
            while self.peek() != 0x91:
                items.append(self.value())
            self.pos += 1
            return items
        if tag == 0x92:
            return self.dict()
        self.pos -= 1
        self.fail(f"unexpected byte 0x{tag:02x}")

    def _remember(self):
        start = self.peek()
        if start == 0x90:
            self.pos += 1
            while self.peek() != 0x91:
                self._push(self.string())
            self.pos += 1
            return self.value()
        text = self.string()
        self._push(text)
        return text

    def _push(self, text: str) -> None:
        self.lru.append(text)
        if len(self.lru) > LRU_SIZE:
            del self.lru[0]

    def dict(self) -> dict:
        result = {}
        key_type = None
        while True:
            while self.peek() == 0xFF:
                self.pos += 1
            if self.peek() == 0x93:
                self.pos += 1
                return result
            if key_type is not None:
                key = self.typed(key_type)
            elif self.peek() in _INTEGER_TYPES:
                key_type = self.byte()
                key = self.typed(key_type)
            else:
                key = self.value()
                if not isinstance(key, str):
                    self.fail(f"a dict key that is not a string or typed integer: {key!r}")
            if key in result:
                self.fail(f"duplicate dict key {key!r}")
            result[key] = self.value()


def loads(data: bytes):
    """Decode one Muon document; raise `MuonError` for malformed input."""
    reader = _Reader(bytes(data))
    value = reader.value()
    while reader.pos < len(reader.data) and reader.data[reader.pos] == 0xFF:
        reader.pos += 1
    if reader.pos != len(reader.data):
        reader.fail(f"{len(reader.data) - reader.pos} bytes after the document")
    return value

"""The Muon reader, on the values of the format's annotated sample (samples/sample.decoded.js)."""

import math
import struct

import pytest

from lorrygate.decoding.muon import MuonError, loads
from tests.unit.test_decoder_samples import sleb


def s(text):
    return text.encode() + b"\x00"


def d(*items):
    return b"\x92" + b"".join(items) + b"\x93"


def uleb(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            return bytes(out + bytes([byte]))


SAMPLE_VALUES = [
    # strings: plain, fixed-length with zeros, LRU references
    (s("string value 1"), "string value 1"),
    (b"\x82" + uleb(24) + b"string\x00containing\x00\x00zeros", "string\x00containing\x00\x00zeros"),
    (b"\x8c\x90" + s("string value 1") + s("string value 2") + b"\x91" + d(s("key1"), b"\x81\x01", s("key2"), b"\x81\x00"),
     {"key1": "string value 1", "key2": "string value 2"}),
    (d(s("key3"), b"\x8c" + s("string value 3"), s("key4"), b"\x8c" + s("string value 4"),
       s("key3-ref"), b"\x81\x01", s("key4-ref"), b"\x81\x00"),
     {"key3": "string value 3", "key4": "string value 4", "key3-ref": "string value 3", "key4-ref": "string value 4"}),
    # special values
    *[(bytes([0xA0 + n]), n) for n in range(10)],
    (b"\xaa", False), (b"\xab", True), (b"\xac", None), (b"\xae", float("-inf")), (b"\xaf", float("inf")),
    # typed values
    (b"\xb0" + struct.pack("<b", -123), -123),
    (b"\xb1" + struct.pack("<h", -1234), -1234),
    (b"\xb2" + struct.pack("<i", -12356789), -12356789),
    (b"\xb3" + struct.pack("<q", -1234567891234567), -1234567891234567),
    (b"\xb4" + struct.pack("<B", 123), 123),
    (b"\xb5" + struct.pack("<H", 1234), 1234),
    (b"\xb6" + struct.pack("<I", 12356789), 12356789),
    (b"\xb7" + struct.pack("<Q", 1234567891234567), 1234567891234567),
    (b"\xb8" + struct.pack("<e", 1.0), 1.0),
    (b"\xb9" + struct.pack("<f", 123123.125), 123123.125),
    (b"\xba" + struct.pack("<d", 123.123123123123), 123.123123123123),
    (b"\xbb" + sleb(-123456789123456789123456789), -123456789123456789123456789),
    (b"\xbb" + sleb(123456789123456789123456789), 123456789123456789123456789),
    # typed arrays
    (b"\x84\xb0" + uleb(3) + struct.pack("<3b", -1, 0, 1), [-1, 0, 1]),
    (b"\x84\xb5" + uleb(2) + struct.pack("<2H", 1, 65535), [1, 65535]),
    (b"\x84\xba" + uleb(2) + struct.pack("<2d", 0.5, -2.25), [0.5, -2.25]),
    (b"\x84\xbb" + uleb(2) + sleb(-300) + sleb(300), [-300, 300]),
    (b"\x85\xb4" + uleb(2) + b"\x01\x02" + uleb(1) + b"\x03" + uleb(0), [1, 2, 3]),
    # lists
    (b"\x90" + s("a") + s("simple") + s("list") + b"\x91", ["a", "simple", "list"]),
    (b"\x90\x90\x91\x90\x91\x91", [[], []]),
    (b"\x90\x92\x93\x92\x93\x91", [{}, {}]),
    # tags: magic, padding, count, size
    (b"\x8f\xb5\x30\x31" + s("should be skipped"), "should be skipped"),
    (b"\x90\xff\xff\xff\xff" + s("padded") + b"\xff\xff\xff\xff" + s("items") + b"\x91", ["padded", "items"]),
    (b"\x8a" + uleb(2) + b"\x90\xa1\xa2\x91", [1, 2]),
    (b"\x8b" + uleb(4) + b"\x90\xa1\xa2\x91", [1, 2]),
    # integer keys: the type byte only on the first key
    (b"\x92\xb4\x01" + s("one") + b"\x02" + s("two") + b"\x93", {1: "one", 2: "two"}),
]


@pytest.mark.parametrize("data, value", SAMPLE_VALUES, ids=[f"{i:02d}" for i in range(len(SAMPLE_VALUES))])
def test_documented_values(data, value):
    """Each value of the documented sample decodes as documented."""
    assert loads(data) == value


def test_nan():
    """0xAD is NaN."""
    assert math.isnan(loads(b"\xad"))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "unexpected end of data at byte 0"),
        (b"abc", "without its terminating 00 byte"),
        (b"\x92" + s("k") + b"\xa1" + s("k") + b"\xa2\x93", "duplicate dict key 'k'"),
        (b"\x81\x00", "string reference 0 beyond the 0 strings"),
        (b"\x82\x10abc", "16 bytes announced, 3 left"),
        (b"\xa1\xa2", "1 bytes after the document"),
        (b"\x84\xc0\x01\x00", "typed array of unknown type 0xc0"),
        (b"\x90" * 100, "nesting deeper than 64"),
        (b"\xc3\x28\x00", "invalid UTF-8"),
        (b"\x8f\xb5\x30\x32\xa1", "magic tag"),
    ],
    ids=["empty", "unterminated", "duplicate-key", "bad-reference", "short-fixed", "trailing", "bad-array-type",
         "deep", "bad-utf8", "bad-magic"],
)
def test_malformed_input(data, message):
    """Malformed Muon raises MuonError saying what and where."""
    with pytest.raises(MuonError, match=message):
        loads(data)

"""
SenML (RFC 8428, Sensor Measurement Lists), in JSON and in CBOR: what LwM2M
devices, Zephyr's and Mainflux's (Magistrala's) clients publish.

A pack is an array of records. Base fields (``bn``, ``bt``, ``bu``, ``bv``,
``bs``) hold for the records after them until given again; a record's name
is ``bn`` + ``n``, its time ``bt`` + ``t`` (seconds; below 2**28 relative to
the receive time, so that 0 or no time is "now"), its value ``bv`` + ``v``,
or ``vs`` (text), ``vb`` (boolean), ``vd`` (data, base64url text), its sum
``bs`` + ``s``.

Rows: the records of one time and base name are one row, each name a field
(``voltage``), the base name the tag ``base_name`` (a device's URN, an LwM2M
object instance's ``/3303/0/``), so that a fleet's devices share their
columns; a unit is ``<name>.unit``, a sum ``<name>.sum``, an update time
``<name>.update_time``. A name given twice at one time makes a second row.
"""

import base64
import json
import math
from typing import Any

import attrs
import cbor2
from zope.interface import implementer

from lorrygate.decoding.lines import BadLines
from lorrygate.decoding.records import received_ns
from lorrygate.decoding.timestamps import MAX_NS, MIN_NS, from_epoch
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record

#: the labels of RFC 8428 (table 4), with their CBOR keys (table 6)
LABELS = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4,
          "s": 5, "t": 6, "ut": 7, "vd": 8}
_CBOR_LABELS = {key: name for name, key in LABELS.items()}
_VALUES = ("v", "vs", "vb", "vd")
_BASE = ("bn", "bt", "bu", "bv", "bs", "bver")
#: RFC 8428 4.5.3: a time below 2**28 seconds is relative to now
_RELATIVE = 2**28
#: the tag of a record's base name
BASE_NAME_TAG = "base_name"


def is_pack(document) -> bool:
    """A JSON document that is a SenML pack: a non-empty array of objects with SenML's labels only (and
    must-understand extensions, ending in ``_``, which `records` refuses), a name (``n`` or ``bn``) and a value
    (or a sum) among them. A list of other objects is no pack (``json`` takes it)."""
    if type(document) is not list or not document:
        return False
    named = valued = False
    for item in document:
        if type(item) is not dict or not all(key in LABELS or (type(key) is str and key.endswith("_"))
                                             for key in item):
            return False
        named = named or "n" in item or "bn" in item
        valued = valued or "s" in item or not item.keys().isdisjoint(_VALUES)
    return named and valued


def cbor_pack(document):
    """A CBOR document that is a SenML pack (integer labels, RFC 8428 section 6) as JSON's labels; None if none."""
    if type(document) is not list or not document:
        return None
    pack = []
    for item in document:
        if type(item) is not dict or not all(type(key) is int and key in _CBOR_LABELS for key in item):
            return None
        pack.append({_CBOR_LABELS[key]: value for key, value in item.items()})
    return pack if is_pack(pack) else None


def records(pack: list, message, decoder: str, cbor: bool = False) -> list:
    """The rows of a SenML pack (see the module's documentation). A record that breaks the RFC costs the others
    nothing where it is a pack of its own with the base fields it was read with (a value that is no number, a
    time out of range): the others' rows are stored and it is kept (`PartlyDecoded`, in JSON or, ``cbor``, in
    CBOR), which a replay reads alone as it was read here. A record without a name or a value (which alone is
    no pack: a replay would read it as plain JSON), a bad ``bver`` and a field that must be understood keep the
    pack whole."""
    now = received_ns(message)
    base: dict = {}
    rows: list = []
    open_rows: dict[tuple, dict] = {}
    bad = BadLines(decoder, noun="records", pack=_packer(cbor))
    for number, item in enumerate(pack, 1):
        where = f"record {number} of the SenML pack"
        for key in item:
            if key.endswith("_"):
                raise DecodeError(decoder, f"{where}: the field {key!r} must be understood (RFC 8428 4.4), and is "
                                           f"not: the pack is kept whole")
        for key in _BASE:
            if key in item:
                base[key] = item[key]
        if "bver" in item and (type(item["bver"]) is not int or item["bver"] < 1):
            raise DecodeError(decoder, f"{where}: bver {item['bver']!r} is no version (a positive integer)")
        try:
            _record(item, base, now, where, decoder, rows, open_rows)
        except DecodeError as exc:
            alone = [{**base, **item}]
            if not is_pack(alone):
                raise
            bad.add(alone[0], exc.reason)
    if not rows and not bad.found:
        raise DecodeError(decoder, "a SenML pack of base fields only: no record with a value")
    return bad.finish(rows, len(pack))


def _packer(cbor: bool):
    """The bytes of a pack of the records kept (`BadLines.pack`), in the format they came in."""
    if cbor:
        return lambda found: cbor2.dumps([{LABELS[key]: value for key, value in item.items()} for item in found])
    return lambda found: json.dumps(found, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _record(item: dict, base: dict, now: int, where: str, decoder: str, rows: list, open_rows: dict) -> None:
    """The fields of one record, into the row of its time and base name (``open_rows``; a new one in ``rows``)."""
    values = [key for key in _VALUES if key in item]
    if len(values) > 1:
        raise DecodeError(decoder, f"{where}: more than one value ({', '.join(values)}); a record has one")
    if not values and "s" not in item:
        if item.keys() <= set(_BASE):
            return  # base fields alone, for the records after them
        raise DecodeError(decoder, f"{where}: no value (v, vs, vb or vd) and no sum (s)")
    base_name = _text(base.get("bn", ""), "bn", where, decoder)
    name = _text(item.get("n", ""), "n", where, decoder)
    if not name and not base_name:
        raise DecodeError(decoder, f"{where}: no name (n, or a bn before it)")
    tags = {BASE_NAME_TAG: base_name} if name and base_name else {}
    name = name or base_name
    fields: dict[str, Any] = {}
    if values:
        fields[name] = _value(values[0], item[values[0]], base.get("bv"), where, decoder)
    if "s" in item:
        fields[f"{name}.sum"] = _number(item["s"], "s", where, decoder) + _number(base.get("bs", 0), "bs", where,
                                                                                   decoder)
    unit = item.get("u", base.get("bu"))
    if unit is not None:
        fields[f"{name}.unit"] = _text(unit, "u" if "u" in item else "bu", where, decoder)
    if "ut" in item:
        fields[f"{name}.update_time"] = _number(item["ut"], "ut", where, decoder)
    time = _time(_number(base.get("bt", 0), "bt", where, decoder) + _number(item.get("t", 0), "t", where,
                                                                               decoder), now, where, decoder)
    key = (time, base_name if tags else None)
    row_fields = open_rows.get(key)
    if row_fields is None or not row_fields.keys().isdisjoint(fields):
        row_fields = open_rows[key] = {}
        rows.append(Record(time, row_fields, tags))
    row_fields.update(fields)


def _text(value, label: str, where: str, decoder: str) -> str:
    if type(value) is not str:
        raise DecodeError(decoder, f"{where}: {label} {value!r} is no text")
    return value


def _number(value, label: str, where: str, decoder: str):
    if type(value) not in (int, float) or not math.isfinite(value):
        raise DecodeError(decoder, f"{where}: {label} {value!r} is no number")
    return value


def _value(label: str, value, base_value, where: str, decoder: str):
    if label == "v":
        value = _number(value, "v", where, decoder)
        return value + _number(base_value, "bv", where, decoder) if base_value is not None else value
    if label == "vb":
        if type(value) is not bool:
            raise DecodeError(decoder, f"{where}: vb {value!r} is no boolean")
        return value
    if label == "vd" and type(value) is bytes:  # (CBOR's data value is bytes; JSON's is base64url text, as stored)
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")
    return _text(value, label, where, decoder)


def _time(seconds, now: int, where: str, decoder: str) -> int:
    try:
        if seconds < _RELATIVE:
            ns = now + int(round(seconds * 1_000_000)) * 1000
        elif seconds < 1e11:
            ns = from_epoch(seconds)  # (seconds with decimals read as written: 1276020076.001 is .001 s, not .000999)
        else:
            ns = int(round(seconds * 1_000_000)) * 1000
    except OverflowError:  # (bt + t beyond a float's range in microseconds: 1e308)
        ns = MAX_NS + 1
    if not MIN_NS <= ns <= MAX_NS:
        raise DecodeError(decoder, f"{where}: the time bt + t = {seconds!r} is outside the years 1 to 9999 (SenML's "
                                   f"times are seconds since 1970, and below 2**28 seconds relative to now)")
    return ns


@implementer(IDecoder)
@attrs.frozen
class SenmlDecoder:
    """A SenML pack in JSON (``application/senml+json``) or CBOR (``application/senml+cbor``). ``json`` and
    ``cbor`` read a pack alike (`is_pack`); this decoder declines anything else."""

    name: str = "senml"
    timezone: Any = None

    def decode(self, message, address) -> list:
        from lorrygate.decoding.jsonobject import loads

        payload = message.payload
        if payload.lstrip()[:1] == b"[":
            try:
                document = loads(payload)
            except (ValueError, UnicodeDecodeError) as exc:
                raise Declined(f"not JSON: {exc}") from None
            if not is_pack(document):
                raise Declined("a JSON array that is no SenML pack (objects of SenML's labels, with a name and a "
                               "value)")
            return records(document, message, self.name)
        try:
            pack = cbor_pack(cbor2.loads(payload))
        except Exception as exc:  # cbor2 raises CBORDecodeError and friends
            raise Declined(f"neither a JSON array nor CBOR: {type(exc).__name__}: {exc}") from None
        if pack is None:
            raise Declined("CBOR that is no SenML pack (maps of SenML's integer labels)")
        return records(pack, message, self.name, cbor=True)

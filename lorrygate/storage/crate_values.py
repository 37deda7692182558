"""
What lorrygate sends to CrateDB for a row's tags and fields.

``OBJECT(DYNAMIC)`` gives a new sub-column the type of its first value and
casts later values to it silently: a sensor whose first reading is ``20``
gets a BIGINT column, and 21.5 is stored as 21. So every number is sent as a
float (DOUBLE), as Kotori does; an integer beyond 2**53 loses its last digits.
Booleans stay booleans, text stays text.

Every value a decoder can produce becomes JSON CrateDB takes: NaN and
Infinity (which CrateDB's JSON parser refuses, failing the whole request)
become null and are counted; datetimes become epoch milliseconds (UTC when
naive), dates their midnight UTC; decimals become floats, UUIDs text, bytes
base64 text, tuples and sets arrays; anything else its ``str()``.

Object keys CrateDB refuses (``.``, ``[``, ``]``, tab, CR, LF) are replaced
by ``_`` (``pm2.5`` is stored as ``pm2_5``); a key that then equals another
of the same object gets ``_2``, ``_3``, as the SQL storages' column names do.
"""

import base64
import datetime
import decimal
import math
import re
import uuid

import attrs

from lorrygate.storage.layout import column_names

FORBIDDEN = re.compile(r"[.\[\]\t\r\n]")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@attrs.define
class Conversions:
    """What the conversion changed, for the storage's counters."""

    nonfinite: int = 0
    renamed: int = 0


def crate_key(name) -> str:
    name = str(name)
    return FORBIDDEN.sub("_", name) if FORBIDDEN.search(name) else name


#: lists and objects nested deeper than this are refused (ValueError): the row's message becomes a dead letter
#: (a payload nested 1,000 levels deep failed every write of the storage, for good)
MAX_DEPTH = 100


def crate_object(obj: dict, counts: Conversions, depth: int = 0) -> dict:
    if depth >= MAX_DEPTH:
        raise ValueError(f"an object nested more than {MAX_DEPTH} levels deep")
    keys = [str(key) for key in obj]
    safe = [crate_key(key) for key in keys]
    if safe != keys or len(set(safe)) != len(safe):
        counts.renamed += sum(1 for a, b in zip(keys, safe) if a != b)
        safe = list(column_names(tuple(safe), lambda s: s, ()))
    return {key: crate_value(value, counts, depth + 1) for key, value in zip(safe, obj.values())}


def crate_value(value, counts: Conversions, depth: int = 0):
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value
        counts.nonfinite += 1
        return None
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return float(value)
    if isinstance(value, dict):
        return crate_object(value, counts, depth)
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth >= MAX_DEPTH:
            raise ValueError(f"a list nested more than {MAX_DEPTH} levels deep")
        return [crate_value(item, counts, depth + 1) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return crate_value(float(value), counts)
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return (moment - _EPOCH) / datetime.timedelta(milliseconds=1)
    if isinstance(value, datetime.date):
        return crate_value(datetime.datetime(value.year, value.month, value.day), counts)
    if isinstance(value, decimal.Decimal):
        return crate_value(float(value), counts)
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)

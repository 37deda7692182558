"""
Turning decoded objects into records: the time field, the receive time, and
plain values.
"""

import math
import re
from datetime import date, datetime
from datetime import time as clock_time
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from uuid import UUID

from lorrygate.decoding.timestamps import TIME_FIELDS, parse_time, seconds_to_ns
from lorrygate.errors import DecodeError
from lorrygate.model import Events, Record, unused_name


def received_ns(message) -> int:
    """The time of a row whose payload has none: the bus's time of the message (`Message.sent`), else the time
    it was received."""
    sent = message.sent
    return seconds_to_ns(message.received if sent is None else sent)


def object_record(document: dict, message, decoder: str, tz=None, tags=None) -> Record:
    """A record of a decoded object; its time field (see TIME_FIELDS) becomes the time. ``Time`` (Tasmota's,
    which Kotori takes too) only when it reads as a time: a field of that name that is none stays a field."""
    for key in TIME_FIELDS:
        if key in document:
            value = document.pop(key)
            if value is None or (type(value) is str and not value.strip()):
                break  # null, or empty text, is no time (a device whose clock is not set yet): the receive time
            try:
                stamp = parse_time(value, tz)
            except ValueError as exc:
                dated = _dated(document, value, tz)
                if dated is not None:
                    return Record(dated, document, tags or {})
                if key == "Time":
                    document[key] = value
                    break
                raise DecodeError(decoder, f"field {key!r}: {exc}") from None
            return Record(stamp, document, tags or {})
    return Record(received_ns(message), document, tags or {})


_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2}([.,]\d{1,9})?)?")


def _dated(document: dict, clock, tz) -> int | None:
    """The time of a time of day (``"time": "12:00:00"``) and a ``date`` or ``Date`` field beside it (a GPS
    tracker's, a logger's), read together as a local time of the channel's zone; the date field is taken out.
    None where there is no such pair (the time of day alone is no time)."""
    if type(clock) is not str or not _CLOCK.fullmatch(clock.strip()):
        return None
    for name in ("date", "Date"):
        date = document.get(name)
        if type(date) is str:
            try:
                stamp = parse_time(f"{date.strip()} {clock.strip()}", tz)
            except ValueError:
                return None
            del document[name]
            return stamp
    return None


#: the key of a value object, and the field name of a payload of one value where the topic names none
VALUE = "value"


def named_value(document: dict, field: str) -> dict:
    """A value object on a topic that names its field (``.../data/temperature``, a template's ``{field}``):
    ``{"value": 21.5, "time": ..., "unit": "°C"}`` as Z-Wave JS UI, Node-RED flows and many devices send it.
    ``value`` is the topic's field, a time field stays the time, every other key is ``<field>.<key>``. (Its keys
    as the fields made every per-field topic of a table write into one column ``value``.)"""
    named = {}
    for key, item in document.items():
        if key == VALUE:
            named[field] = item
        elif key in TIME_FIELDS:
            named[key] = item
        else:
            named[f"{field}.{key}"] = item
    return named


def named_values(document, address):
    """`named_value` for an object, or each object of a list, with a ``value`` key on a topic that names a field
    other than ``value``; anything else as it is."""
    field = address.field if address is not None else None
    if field is None or field == VALUE:
        return document
    if type(document) is dict:
        return named_value(document, field) if VALUE in document else document
    if type(document) is list:
        return [named_value(item, field) if type(item) is dict and VALUE in item else item for item in document]
    return document


#: a time text that ends in its zone (``Z``, ``+02:00``)
ZONED = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_EPOCH_TEXT = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")


def local_time(document: dict) -> bool:
    """Whether an object's time is text of a local time (no offset, no epoch number), read in the channel's
    zone."""
    for key in TIME_FIELDS:
        if key in document:
            value = document[key]
            if type(value) is not str:
                return False
            text = value.strip()
            return bool(text) and not ZONED.search(text) and not _EPOCH_TEXT.fullmatch(text)
    return False


def unfold(record: Record, before: int, tz) -> None:
    """A logger's rows in order through the hour that the end of summer time repeats: a local time written
    twice (02:30 in Europe/Berlin on the last Sunday of October) is read as its first occurrence, so the
    second hour's rows went back an hour, among the first's. A row whose local time is ambiguous and falls
    before the row ``before`` it is moved to the second occurrence, where that is not before it either."""
    if record.time >= before:
        return
    seconds, nanos = divmod(record.time, 10**9)
    try:
        first = datetime.fromtimestamp(seconds, tz)
    except (OverflowError, OSError, ValueError):
        return
    second = first.replace(fold=1)
    earlier, later = first.utcoffset(), second.utcoffset()
    if earlier is None or later is None or earlier <= later:
        return  # not ambiguous (or a zone whose repeated hour is the other way round, which none has)
    moved = record.time + int((earlier - later).total_seconds()) * 10**9
    if moved >= before:
        record.time = moved


def objects_records(document, message, decoder: str, tz=None) -> list | None:
    """An object -> one record; a non-empty list of objects -> one record each."""
    if type(document) is dict:
        return [object_record(document, message, decoder, tz)]
    if type(document) is list and document and all(type(item) is dict for item in document):
        if tz is None:
            return [object_record(item, message, decoder, tz) for item in document]
        records: list = []
        for item in document:  # (in order, through the hour the end of summer time repeats: `unfold`)
            local = local_time(item)
            records.append(object_record(item, message, decoder, tz))
            if local and len(records) > 1:
                unfold(records[-1], records[-2].time, tz)
        return records
    return None


#: how devices write a reading that is no number (C's printf, JavaScript): ESPHome publishes ``nan`` for a
#: sensor that has no reading yet, at every boot. It is no value (null): as text it made a TEXT column, and
#: every reading after it was stored as text; as a float NaN, PostgreSQL stores it and every avg() over it is
#: NaN. Other spellings that Python's float() takes (``Nan``, ``iNf``) are words, and stay text.
NOT_A_NUMBER = frozenset({"nan", "-nan", "+nan", "NaN", "-NaN", "NAN", "-NAN", "inf", "-inf", "+inf", "INF", "-INF",
                          "+INF", "Infinity", "-Infinity", "+Infinity"})


def scalar(text: str):
    """Text of a single value -> int, float, bool or the text itself; None (no value) for a reading written as
    ``nan`` or ``inf`` (`NOT_A_NUMBER`)."""
    stripped = text.strip()
    if stripped in NOT_A_NUMBER:
        return None
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if "_" in stripped or not stripped.isascii():
        return stripped  # Python reads "1_000" as 1000 and "٣" as 3: no number a device writes so
    try:
        return int(stripped, 10)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        return stripped
    return number if math.isfinite(number) else stripped


def plain(value):
    """Values of binary formats as storable values (date-times as ISO text)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return text_keys(value, plain)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def text_keys(mapping, convert) -> dict:
    """A binary format's map with text keys (`map_key`) and its values ``convert``-ed; a key whose text another
    key has (``b"temp"`` beside ``"temp"``) gets ``_2``, as a second value of one name does."""
    out: dict = {}
    for key, item in mapping.items():
        name = map_key(key)
        out[unused_name(out, name)] = convert(item)
    return out


def map_key(key) -> str:
    """A key of a binary format's map (or of the user's code) as a field's name: a byte string (MessagePack's
    bin, CBOR's bytes) as its text, the bytes UTF-8 cannot read as ``\\xNN`` (it was the name ``b'temp'``,
    Python's repr); another key (a number) as its text."""
    if type(key) is str:
        return key
    if type(key) is bytes:
        return key.decode("utf-8", "backslashreplace")
    return str(key)


def as_list(value) -> list:
    """A set's items (CBOR's tag 258, a decoder of one's own) as a list in an order that is the same on each run
    (a set's order of text is not: a message delivered twice were two rows to ``idempotent``)."""
    try:
        return sorted(value)
    except TypeError:  # (items that do not compare, 1 and "a")
        return sorted(value, key=repr)


def storable(value):
    """Values of the user's code (a decoder, a hook) as values a column takes. A Decimal (what a database driver
    reads from a NUMERIC column: a calibration factor a decoder multiplies by) or a Fraction was stored as JSON
    text (``"21.5"``, quoted), and made its column TEXT: a Decimal written without a fraction (``42``) is an
    integer, any other a float. A date-time, date or time is its ISO 8601 text (as a MessagePack or CBOR
    payload's are), a UUID its text, an enum member its value, and a set a list; each was stored as JSON text of
    Python's own (``"2024-06-01 12:00:00+00:00"``, ``"Color.RED"``, ``"{1, 2}"``), quotes and all."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return text_keys(value, storable)  # (a key of bytes, b"temp", was the column "b'temp'")
    if kind is list or kind is tuple:
        return [storable(item) for item in value]
    if kind is Decimal:
        exponent = value.as_tuple().exponent
        return int(value) if type(exponent) is int and exponent >= 0 else float(value)
    if kind is Fraction:
        return float(value)
    if isinstance(value, (datetime, date, clock_time)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return storable(value.value)
    if isinstance(value, (set, frozenset)):
        return as_list([storable(item) for item in value])
    return value


def storable_records(records):
    """Records of the user's code with their fields' values as values a column takes (`storable`); an `Events`
    result stays events, and what is no list of Records is left as it is (the caller says what is wrong)."""
    if not isinstance(records, list) or not all(isinstance(record, Record) for record in records):
        return records
    made = [storable_record(record) for record in records]
    return Events(made) if isinstance(records, Events) else made


def storable_record(record: Record) -> Record:
    """A Record of the user's code with values a column takes (`storable`) and names that are text (`map_key`),
    also its tags': a tag named by bytes was a dead letter that said only "TypeError: a bytes-like object is
    required, not 'str'", and a tag's value of bytes a BLOB beside the text of the other rows."""
    tags = record.tags
    if tags and not all(type(name) is str and type(value) is not bytes for name, value in tags.items()):
        tags = text_keys(tags, _tag_value)
    return Record(record.time, storable(dict(record.fields)), tags)


def _tag_value(value):
    return value.decode("utf-8", "backslashreplace") if type(value) is bytes else value

"""
Times in payloads, to integer nanoseconds since the epoch (UTC), losslessly.

The record's time comes from the first of the fields ``time``,
``timestamp``, ``datetime``, ``dateTime``, ``ts`` and ``Time`` (Tasmota's,
taken by Kotori too; only when it reads as a time) that a payload has (the
field is then not stored as a column); without one, from the receive time.

=====================================  =========================================
value                                  read as
=====================================  =========================================
number below 1e11                      epoch seconds (the fraction kept exactly
                                       as written, down to the nanosecond)
number below 1e14                      epoch milliseconds
number below 1e17                      epoch microseconds
larger number                          epoch nanoseconds
text of digits (``"1717243200123"``)   a number, as above
ISO 8601 text with ``Z`` or an offset  that instant (up to 9 fractional digits)
ISO 8601 text without an offset        local time in the channel's
                                       ``timezone`` (default UTC)
ISO 8601's basic format                as ISO 8601 (``20240601T120000Z``)
a logger's date, ``2016/08/14``,       as ISO 8601 text; ``05/09/21`` (May
``14.08.2016`` or ``21/09/21``         or September?) is refused
RFC 2822 and JavaScript dates          that instant (``Sat, 01 Jun 2024
                                       12:00:00 GMT``, ``Sat Jun 01 2024
                                       12:00:00 GMT+0200 (...)``); without a
                                       zone, in the channel's ``timezone``
a date-time (CBOR, MessagePack)        that instant; naive ones as above
=====================================  =========================================
"""

import calendar
import re
import time as _time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

#: field names a decoder takes the record's time from, in this order
TIME_FIELDS = ("time", "timestamp", "datetime", "dateTime", "ts", "Time")

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9})\d*)?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


#: the times a record may have, in nanoseconds: the years 1 to 9999 (ISO 8601's four digits, so that the
#: text of a time sorts as the time does; what Python's datetime and the storages' time types hold). A
#: number past them (a broken clock's 1e29 read as nanoseconds, -1e20 as year -1199) is refused, not stored
#: as a time no one sent
MIN_NS = -62_135_596_800 * 10**9
MAX_NS = 253_402_300_800 * 10**9 - 1


#: a number of this magnitude or more is past `MAX_NS` in any unit (nanoseconds are the smallest): refused
#: before it is scaled or made an integer (``"1e999999999"`` overflows the decimal context, and an integer of
#: 100,000 digits takes a quarter of a second to print)
_TOO_LARGE = Decimal(10) ** 21


def out_of_range(ns: int | None, value) -> ValueError:
    """The error for a time past `MIN_NS` .. `MAX_NS`, saying what ``value`` was read as (``ns`` None: a
    magnitude of `_TOO_LARGE` or more)."""
    if type(value) is int and abs(value) >= 10**30:  # (repr() of 4,300 digits and more raises)
        shown = f"an integer of ~{int(value.bit_length() * 0.30103) + 1} digits"
    else:
        shown = f"'{value}'" if isinstance(value, Decimal) else repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if ns is not None and -(10**21) < ns < 10**21:
        read = f"{ns // 10**9} seconds since 1970"
    else:
        read = "more than 10**12 seconds from 1970"
    return ValueError(f"{shown} is outside the years 1 to 9999 (read as {read}); send "
                      f"epoch seconds, milliseconds, microseconds or nanoseconds, or ISO 8601 text")


def _ranged(ns: int, value) -> int:
    """``ns`` if within the years 1 to 9999, else the error that says what ``value`` was read as."""
    if MIN_NS <= ns <= MAX_NS:
        return ns
    raise out_of_range(ns, value)


def check_time(ns) -> int:
    """``ns`` if it is a record's time (integer nanoseconds within the years 1 to 9999); ValueError if not."""
    if type(ns) is not int:
        raise ValueError(f"a record's time must be integer nanoseconds since 1970, got {type(ns).__name__} {ns!r}")
    return _ranged(ns, ns)


def _scale(magnitude) -> int:
    if magnitude < 10**11:
        return 10**9
    if magnitude < 10**14:
        return 10**6
    if magnitude < 10**17:
        return 10**3
    return 1


def from_epoch(number) -> int:
    """Epoch seconds, ms, us or ns (told apart by magnitude) -> nanoseconds."""
    kind = type(number)
    if kind is int:
        ns = number * _scale(abs(number))
        if MIN_NS <= ns <= MAX_NS:
            return ns
        raise out_of_range(ns, number)
    if kind is float and 0 < number < 1e17:
        if 1e5 <= number < 1e11:
            # Seconds written with at most 3 (or 6) decimals, told by arithmetic (0.96 -> 0.31 us): the
            # candidate decimal reads back as this float, and within this range no other decimal of as
            # many places does (a float's spacing is below 1 ms here, below 1 us under 2**32 s).
            seconds = int(number)
            part = number - seconds
            ms = round(part * 1000)
            if seconds + ms / 1000 == number:
                return seconds * 1_000_000_000 + ms * 1_000_000
            if number < 4294967296.0:
                us = round(part * 1_000_000)
                if seconds + us / 1_000_000 == number:
                    return seconds * 1_000_000_000 + us * 1_000
        # The exact decimal the sender wrote, without Decimal: repr() gives the
        # shortest text that reads back as this float (measured 3x faster).
        text = repr(number)
        if number >= 1e5 and number < 1e11:
            # seconds, the common case, in one step (1.16 -> 0.45 us): repr()
            # writes no exponent between 1e-4 and 1e16
            whole, _, fraction = text.partition(".")
            return int(whole) * 1_000_000_000 + int((fraction + "00000000")[:9])
        if "e" not in text:
            whole, _, fraction = text.partition(".")
            scale = _scale(number)
            digits = len(str(scale)) - 1
            fraction = fraction[:digits].ljust(digits, "0") if digits else ""
            return int(whole) * scale + (int(fraction) if fraction else 0)
    if isinstance(number, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(number, float):
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite time: {number!r}")
        exact = Decimal(repr(number))
    elif isinstance(number, int):
        exact = Decimal(number)
    else:
        exact = number
    magnitude = exact.copy_abs() if isinstance(exact, Decimal) else abs(exact)  # (abs() rounds: may overflow)
    if magnitude >= _TOO_LARGE:
        raise out_of_range(None, number)
    if magnitude < Decimal(10) ** 11:
        scale = 10**9
    elif magnitude < Decimal(10) ** 14:
        scale = 10**6
    elif magnitude < Decimal(10) ** 17:
        scale = 10**3
    else:
        scale = 1
    return _ranged(int(exact * scale), number)


#: the other ways devices write a time, each read as the ISO 8601 text it stands for (`_other_form`): ISO
#: 8601's basic format (``20240601T120000Z``), RFC 2822's and HTTP's (``Sat, 01 Jun 2024 12:00:00 GMT``, what
#: JavaScript's ``toUTCString()`` writes) and JavaScript's ``Date.toString()`` (``Sat Jun 01 2024 12:00:00
#: GMT+0200 (Central European Summer Time)``)
_BASIC = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(?:(\d{2})(?:[.,](\d{1,9})\d*)?)?(Z|z|[+-]\d{2}(?:\d{2})?)?$")
_RFC_2822 = re.compile(r"^(?:[A-Za-z]{3},?\s+)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{2}):(\d{2})(?::(\d{2}))?"
                       r"(?:\s+(GMT|UTC|UT|Z|[+-]\d{4}))?$")
_JAVASCRIPT = re.compile(r"^[A-Za-z]{3}\s+([A-Za-z]{3})\s+(\d{1,2})\s+(\d{4})\s+(\d{2}):(\d{2}):(\d{2})\s+GMT([+-]\d{4})"
                         r"(?:\s+\(.*\))?$")
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
#: dates as loggers' CSV files write them (Open Hive's ``2016/08/14 21:02:06``, a German ``14.08.2016``), and
#: ``21/09/21``, day first, only where the day says so (past 12): ``05/09/21`` could be May or September
_CLOCK = r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(Z|[+-]\d{2}:?\d{2})?)?$"
_SLASHED = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})" + _CLOCK)
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})" + _CLOCK)
_DAY_FIRST = re.compile(r"^(1[3-9]|2\d|3[01])/(\d{1,2})/(\d{2})" + _CLOCK)


def _dated(year: str, month: str, day: str, hour, minute, second, zone) -> str:
    return (f"{year}-{int(month):02d}-{int(day):02d}"
            + (f"T{int(hour):02d}:{minute}:{second or '00'}{zone or ''}" if hour is not None else ""))


#: the offsets of the zone names devices print after a time (``2024-06-01 12:00:00 CEST``; Kotori takes CET
#: and CEST)
_ZONE_OFFSETS = {"UTC": "Z", "GMT": "Z", "UT": "Z", "CET": "+01:00", "MEZ": "+01:00", "CEST": "+02:00",
                 "MESZ": "+02:00"}


def _other_form(text: str) -> str | None:
    """The ISO 8601 text of a time written in one of the other forms devices use, or None."""
    head, space, zone = text.rpartition(" ")
    head = head.rstrip()
    if space and head[-1:].isdigit() and zone.upper() in _ZONE_OFFSETS:
        inner = head if _ISO.match(head) else _other_form(head)
        found = _ISO.match(inner) if inner is not None else None
        if inner is None or found is None or found.group(8) is not None:
            return None  # (no time before the name, or one with an offset of its own as well)
        return inner + _ZONE_OFFSETS[zone.upper()]
    for pattern, order in ((_SLASHED, (0, 1, 2)), (_DOTTED, (2, 1, 0)), (_DAY_FIRST, (2, 1, 0))):
        match = pattern.match(text)
        if match:
            parts = match.groups()
            year, month, day = (parts[index] for index in order)
            return _dated(year if len(year) == 4 else f"20{year}", month, day, *parts[3:])
    match = _BASIC.match(text)
    if match:
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        zone = zone if not zone or zone in "Zz" or len(zone) == 3 else f"{zone[:3]}:{zone[3:]}"
        return (f"{year}-{month}-{day}T{hour}:{minute}" + (f":{second}" if second else "")
                + (f".{fraction}" if fraction else "") + (zone or ""))
    match = _RFC_2822.match(text)
    if match:
        day, month, year, hour, minute, second, zone = match.groups()
        zone = "Z" if zone in ("GMT", "UTC", "UT", "Z", "-0000") else zone
    else:
        match = _JAVASCRIPT.match(text)
        if match is None:
            return None
        month, day, year, hour, minute, second, zone = match.groups()
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    return f"{year}-{number:02d}-{int(day):02d}T{hour}:{minute}:{second or '00'}{zone or ''}"


def from_iso(text: str, tz=None) -> int:
    """ISO 8601 date-time text -> nanoseconds; no offset means ``tz`` (UTC). ISO 8601's basic format, RFC
    2822's and JavaScript's ``Date.toString()`` are read too (`_other_form`)."""
    match = _ISO.match(text.strip())
    if not match:
        other = _other_form(text.strip())
        match = _ISO.match(other) if other is not None else None
        if not match:
            raise ValueError(f"not an ISO 8601 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    nanos = int((fraction or "").ljust(9, "0"))
    # ISO 8601 and RFC 3339 write a leap second as :60 (GPS-disciplined clocks send it) and the end of a day
    # as 24:00:00; both are read as PostgreSQL reads them, as the second after, so that no such row is refused
    late = 0
    if second == "60":
        second, late = "59", 1
    if hour == "24" and int(minute or 0) == int(second or 0) == nanos == 0:
        hour, late = "23", 1
        minute = second = "59"
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {text!r} ({exc})") from None
    seconds = calendar.timegm(moment.timetuple()) + late
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:  # (RFC 3339's, and Python's: "+25:00" was read as 25 hours)
            raise ValueError(f"not a valid date-time: {text!r} (the offset {zone} is none: its hours go to 23, its "
                             f"minutes to 59)")
        seconds -= sign * (hours * 3600 + minutes * 60)
    elif not zone and tz is not None:
        local = moment.replace(tzinfo=tz).utcoffset()
        seconds -= int(local.total_seconds()) if local is not None else 0
    return _ranged(seconds * 10**9 + nanos, text)  # (an offset can reach past the first or the last day)


def parse_time(value, tz=None) -> int:
    """A time value from a payload -> nanoseconds; ValueError if it is none.

    ``tz`` (a ``tzinfo``) is the zone of times written without an offset.
    """
    if isinstance(value, str):
        stripped = value.strip()
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            return from_iso(stripped, tz)
        if not number.is_finite():
            raise ValueError(f"not a finite time: {value!r}")
        return from_epoch(number)
    if isinstance(value, (int, float)):
        return from_epoch(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz or UTC)
        delta = value - EPOCH
        return check_time((delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000)
    raise ValueError(f"not a time: {value!r}")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seconds_to_ns(seconds: float) -> int:
    """A clock reading (float seconds) -> integer nanoseconds."""
    return int(round(seconds * 1_000_000)) * 1000


class IsoTime:
    """Integer nanoseconds -> fixed-width ISO 8601 UTC text, caching the second.

    ``2024-06-01T17:00:00.123456789Z``: sorts as it reads, and SQLite's date
    functions understand it.
    """

    __slots__ = ("_second", "_prefix")

    def __init__(self):
        self._second = None
        self._prefix = ""

    def __call__(self, nanos: int) -> str:
        second, fraction = divmod(nanos, 1_000_000_000)
        if second != self._second:
            t = _time.gmtime(second)
            # Four-digit years always (strftime writes year 2 as "2"): the text sorts as time does.
            self._prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
            # (remembered only once its text is made: a second gmtime() refused must not take the last one's)
            self._second = second
        # the nine digits of the fraction by str() of a ten-digit number: a format spec (":09d") costs more
        return f"{self._prefix}{str(fraction + 1_000_000_000)[1:]}Z"


def to_iso(nanos: int) -> str:
    return IsoTime()(nanos)


#: the earliest a bus's time of a message counts as a time (2000-01-01): a Redis stream entry id given by its
#: writer as a sequence number (``5-0``) or a producer whose clock is not set would date rows in 1970
EARLIEST_SENT = 946_684_800.0


def sent_time(milliseconds) -> float | None:
    """A bus's time of a message in epoch milliseconds (a Kafka record's timestamp, a Redis stream entry id's
    first part) as `lorrygate.model.Message.sent`; None when there is none, or it is before `EARLIEST_SENT`."""
    if milliseconds is None or milliseconds < EARLIEST_SENT * 1000:
        return None
    return milliseconds / 1000

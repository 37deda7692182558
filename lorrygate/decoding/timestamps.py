"""
Times in payloads, to integer nanoseconds since the epoch (UTC), losslessly.

=====================================  ===================================
value                                  read as
=====================================  ===================================
number below 1e11                      epoch seconds (fraction kept)
number below 1e14                      epoch milliseconds
number below 1e17                      epoch microseconds
larger number                          epoch nanoseconds
ISO 8601 text with ``Z`` or an offset  that instant
ISO 8601 text without an offset        UTC
text of digits                         a number, as above
=====================================  ===================================
"""

import calendar
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

#: field names a decoder takes the record's time from, in this order
TIME_FIELDS = ("time", "timestamp")

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9})\d*)?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def from_epoch(number) -> int:
    """Epoch seconds, ms, us or ns (told apart by magnitude) -> nanoseconds."""
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
    magnitude = abs(exact)
    if magnitude < Decimal(10) ** 11:
        scale = 10**9
    elif magnitude < Decimal(10) ** 14:
        scale = 10**6
    elif magnitude < Decimal(10) ** 17:
        scale = 10**3
    else:
        scale = 1
    return int(exact * scale)


def from_iso(text: str) -> int:
    """ISO 8601 date-time text -> nanoseconds; no offset means UTC."""
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {text!r} ({exc})") from None
    seconds = calendar.timegm(moment.timetuple())
    nanos = int((fraction or "").ljust(9, "0"))
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        seconds -= sign * offset
    return seconds * 10**9 + nanos


def parse_time(value) -> int:
    """A time value from a payload -> nanoseconds; ValueError if it is none."""
    if isinstance(value, str):
        stripped = value.strip()
        try:
            return from_epoch(Decimal(stripped))
        except InvalidOperation:
            return from_iso(stripped)
    if isinstance(value, (int, float)):
        return from_epoch(value)
    raise ValueError(f"not a time: {value!r}")


def seconds_to_ns(seconds: float) -> int:
    """A clock reading (float seconds) -> integer nanoseconds."""
    return int(round(seconds * 1_000_000)) * 1000

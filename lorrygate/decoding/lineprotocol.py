"""
InfluxDB line protocol, Telegraf's own format (its MQTT output publishes it,
its ``mqtt_consumer`` reads it by default)::

    weather,site=roof temperature=21.5,humidity=48i,ok=t 1717243200000000000

One record a line: the fields as fields (``48i`` an integer, ``21.5`` a
float, ``t`` a boolean, ``"a b"`` text), the measurement and the tags as
tags (``measurement``, ``site``). The time is told apart by magnitude, as the
``json`` decoder's epoch numbers are (nanoseconds, as line protocol writes
them by default, and seconds or milliseconds as devices write them); a line
without one gets the receive time. Comment lines (``#``) are skipped.

A payload whose first line is no line protocol is declined, and so is one
whose measurement has a ``=`` in it (``temp=21 hum=48`` is line protocol of
the measurement ``temp=21``, but written as key=value pairs); a line after
that which is no line protocol makes the message a dead letter that names it.
Parsed by line-protocol-parser (C, the InfluxDB 1.x grammar with its escapes;
``pip install 'lorrygate[influx]'``).
"""

from typing import Any

import attrs
from zope.interface import implementer

from lorrygate.decoding.records import received_ns
from lorrygate.decoding.text import payload_text
from lorrygate.decoding.timestamps import from_epoch
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record, unused_name


@implementer(IDecoder)
@attrs.frozen
class InfluxDecoder:
    name: str = "influx"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            from line_protocol_parser import LineFormatError, parse_line
        except ImportError:
            raise DecodeError(self.name, "the influx decoder needs the line-protocol-parser package: "
                                         "pip install 'lorrygate[influx]'") from None
        records: list = []
        for number, line in enumerate(payload_text(message.payload).splitlines(), 1):
            if not line.strip():
                continue
            try:
                point = parse_line(line)
            except (LineFormatError, ValueError) as exc:
                if not records:
                    raise Declined(f"not InfluxDB line protocol ({exc})") from None
                raise DecodeError(self.name, f"line {number}: {exc} {line[:80]!r}") from None
            if point is None:
                continue  # a comment
            measurement = point["measurement"]
            if not records and "=" in measurement:
                raise Declined("key=value pairs, not line protocol (a measurement with '=' in it)")
            tags = {"measurement": measurement}
            for key, value in point["tags"].items():
                tags[unused_name(tags, key)] = value
            stamp = point["time"]
            try:
                time = received_ns(message) if stamp is None else from_epoch(stamp)
            except ValueError as exc:
                raise DecodeError(self.name, f"line {number}: a time {exc}") from None
            records.append(Record(time, point["fields"], tags))
        if not records:
            raise Declined("no line of line protocol")
        return records

"""
Telegraf's formats: InfluxDB line protocol and Telegraf's JSON.

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

Telegraf's JSON serializer (``data_format = "json"``), one metric or a batch
(``{"metrics": [...]}``)::

    {"fields": {"usage_idle": 97.2}, "name": "cpu", "tags": {"host": "h1"}, "timestamp": 1717243200}

One record a metric, as the line protocol's: the fields as fields, the name
and the tags as tags (``measurement``, ``host``), the time from
``timestamp`` (the units of ``json_timestamp_units`` told apart by
magnitude; a text one as the JSON decoder reads times). An object that is
not of that shape is declined (the ``json`` decoder takes it); a batch with
an item that is not is a dead letter that names it. A metric of a batch whose
timestamp is no time is kept alone (a batch of its own), the others stored.
"""

import json
from typing import Any

import attrs
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.lines import BadLines
from lorrygate.decoding.records import received_ns
from lorrygate.decoding.text import nul_line, payload_text
from lorrygate.decoding.timestamps import from_epoch, parse_time
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
        bad = BadLines(self.name)
        lines = 0
        for number, line in enumerate(payload_text(message.payload, lines=True).splitlines(), 1):
            if not line.strip():
                continue
            lines += 1
            nul = nul_line(line, 1 if not records and not bad.found else number)
            if nul is not None:
                bad.add(line, nul)
                continue
            try:
                point = parse_line(line)
            except (LineFormatError, ValueError) as exc:
                if not records and not bad.found:
                    raise Declined(f"not InfluxDB line protocol ({exc})") from None
                bad.add(line, f"line {number}: {exc} {line[:80]!r}")
                continue
            if point is None:
                continue  # a comment
            measurement = point["measurement"]
            if not records and not bad.found and "=" in measurement:
                raise Declined("key=value pairs, not line protocol (a measurement with '=' in it)")
            tags = {"measurement": measurement}
            for key, value in point["tags"].items():
                tags[unused_name(tags, key)] = value
            stamp = point["time"]
            try:
                time = received_ns(message) if stamp is None else from_epoch(stamp)
            except ValueError as exc:
                bad.add(line, f"line {number}: a time {exc}")
                continue
            records.append(Record(time, point["fields"], tags))
        if not records and not bad.found:
            raise Declined("no line of line protocol")
        return bad.finish(records, lines)


def _is_metric(item) -> bool:
    return (type(item) is dict and type(item.get("fields")) is dict and type(item.get("name")) is str
            and "timestamp" in item and type(item.get("tags", {})) is dict)


@implementer(IDecoder)
@attrs.frozen
class TelegrafJsonDecoder:
    name: str = "telegraf"
    timezone: Any = None
    #: every metric of Telegraf's JSON has it (the chain skips a payload without it, unparsed)
    requires = b'"fields"'

    def decode(self, message, address) -> list:
        try:
            document = loads(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Declined(f"not JSON: {exc}") from None
        metrics = document.get("metrics") if type(document) is dict else None
        if type(metrics) is list and metrics and len(document) == 1:
            items = metrics
        elif _is_metric(document):
            items = [document]
        else:
            raise Declined("not Telegraf's JSON (fields, name, tags, timestamp)")
        records = []
        # a metric whose timestamp is no time is kept alone, in a batch of its own that this decoder takes again
        bad = BadLines(self.name, noun="metrics",
                       pack=lambda found: b'{"metrics": [' + b", ".join(found) + b"]}")
        for number, item in enumerate(items, 1):
            if not _is_metric(item):
                if number == 1:
                    raise Declined("not a batch of Telegraf's JSON metrics (fields, name, tags, timestamp)")
                # (kept alone it would be no batch of Telegraf's, and a replay would read it as plain JSON)
                raise DecodeError(self.name, f"metric {number} of the batch is no Telegraf metric (fields, name, "
                                             f"tags, timestamp): {str(item)[:80]!r}")
            tags = {"measurement": item["name"]}
            for key, value in item.get("tags", {}).items():
                tags[unused_name(tags, str(key))] = value if type(value) is str else str(value)
            try:
                time = parse_time(item["timestamp"], self.timezone)
            except ValueError as exc:
                bad.add(json.dumps(item, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                        f"metric {number}: timestamp: {exc}")
                continue
            records.append(Record(time, item["fields"], tags))
        return bad.finish(records, len(items))

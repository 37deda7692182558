"""
Text decoders: NDJSON, CSV, ``key=value`` pairs and single values.

=========  ===================================================  ==================================
decoder    accepts                                              records
=========  ===================================================  ==================================
ndjson     one JSON object per line                             one per line
csv        a header line and data lines, or data lines when     one per data line
           ``columns`` are configured
kv         ``a=1&b=2`` (URL-encoded), ``a=1,b=2``, ``a=1;b=2``  one
           or ``a=1 b=2``: the separator that keeps keys and
           values whole (``loc=52.1,13.4;t=21``)
value      a single number, boolean or text on a per-field      one, with that field
           topic (``.../data/temperature`` with ``21.5``)
=========  ===================================================  ==================================

Numbers become int or float, ``true``/``false`` booleans; the rest stays text.
"""

import csv
import io
import re
import sqlite3
from typing import Any
from urllib.parse import parse_qsl

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.decoding.csvheaders import MAX_COLUMNS, Announced, StoreFull
from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.lines import BadLines
from lorrygate.decoding.records import ZONED, local_time, named_values, object_record, received_ns, scalar, unfold
from lorrygate.decoding.timestamps import TIME_FIELDS, parse_time
from lorrygate.errors import Declined, DecodeError, Ignored
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record, unused_name

_log = Logger()


def payload_text(payload: bytes, lines: bool = False) -> str:
    """A payload as UTF-8 text without NUL characters, or Declined. A byte order mark at its start (Windows'
    editors and spreadsheet exports write one) is left out: it is no part of the first key, name or value.
    ``lines``: a payload of lines, whose decoder makes a line with NUL a bad line (`nul_line`): noise on a
    serial link spoils that line, not the batch."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Declined("not UTF-8 text") from None
    if "\0" in text and not lines:
        raise Declined("text with NUL characters")
    return text.removeprefix("\ufeff")


def nul_line(line: str, number: int) -> str | None:
    """Why a line of a payload of lines is bad for its NUL characters, or None; Declined for the first line
    (a payload that begins so is no text of the decoder's format)."""
    if "\0" not in line:
        return None
    if number == 1:
        raise Declined("text with NUL characters")
    return f"line {number} has NUL characters"


@implementer(IDecoder)
@attrs.frozen
class NdjsonDecoder:
    name: str = "ndjson"
    timezone: Any = None

    def decode(self, message, address) -> list:
        lines = [line for line in payload_text(message.payload, lines=True).splitlines() if line.strip()]
        if not lines:
            raise Declined("empty payload")
        records: list = []
        bad = BadLines(self.name)
        for number, line in enumerate(lines, 1):
            nul = nul_line(line, number)
            if nul is not None:
                bad.add(line, nul)
                continue
            try:
                document = loads(line)
            except ValueError as exc:
                if number == 1:
                    raise Declined(f"line 1 is not JSON: {exc}") from None
                bad.add(line, f"line {number} is not JSON: {exc}")
                continue
            if type(document) is not dict:
                if number == 1:
                    raise Declined("line 1 is not a JSON object")
                bad.add(line, f"line {number} is not a JSON object")
                continue
            try:
                document = named_values(document, address)
                local = self.timezone is not None and local_time(document)
                record = object_record(document, message, self.name, self.timezone)
            except DecodeError as exc:
                bad.add(line, f"line {number}: {exc.reason}")
                continue
            records.append(record)
            if local and len(records) > 1:
                unfold(records[-1], records[-2].time, self.timezone)
        return bad.finish(records, len(lines))


#: a number with a decimal comma: "21,5"
_DECIMAL_COMMA = re.compile(r"\s*[+-]?[0-9]+,[0-9]+\s*")


def _decimal_comma(value: str):
    """A value of a CSV separated by ";": a spreadsheet separates with ";" where the decimal mark is the comma
    (German, French, ...), so "21,5" is 21.5; "1.234,5" (a thousands separator) stays text. (A tab says nothing
    of the locale: "1,234" in a tab-separated file may be a thousand.)"""
    if _DECIMAL_COMMA.fullmatch(value):
        return float(value.replace(",", "."))
    return scalar(value)


@implementer(IDecoder)
@attrs.frozen
class CsvDecoder:
    """CSV: a header line then data lines, or only data lines with ``columns`` or with the header announced for
    the address before (`lorrygate.decoding.csvheaders`). A header line without the ``delimiter`` but with ``;``
    or a tab is split at that; in a CSV separated by ";", "21,5" is 21.5."""

    name: str = "csv"
    timezone: Any = None
    columns: tuple = ()
    delimiter: str = ","
    #: where announced headers are remembered (a `HeaderStore`), or None
    headers: Any = None

    def decode(self, message, address) -> Any:
        """The records of the message; a coroutine where the announced headers are asked (on their thread)."""
        text = payload_text(message.payload, lines=True)
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            nul_line(lines[0], 1)  # (Declined: a text that begins with NUL is no CSV; later lines: `_rows`)
        announced = bool(lines) and lines[0].startswith("##")
        sent = lines[0] if lines else ""  # the header line as sent, for a dead letter of bad lines
        if announced:
            lines[0] = lines[0].lstrip("#").strip()  # Kotori's header line: "## temperature,humidity"
        delimiter = self.delimiter
        if not self.columns and lines and delimiter not in lines[0]:
            # A header without the delimiter: a spreadsheet's export in a locale whose decimal mark is the comma
            # separates with ";", and its values hold commas ("21,5"); or a tab-separated file
            delimiter = next((other for other in ";\t" if other in lines[0]), delimiter)
        single = delimiter not in text
        if single and not self._one_column(lines, announced, address, delimiter):
            raise Declined(f"no {delimiter!r} delimiter")
        rows = _rows(lines, delimiter)
        if self.columns and not announced:
            return self._records(message, list(self.columns), rows, delimiter, 1)
        if not self.columns and not announced and _values(rows[0], delimiter):
            if self.headers is None or address is None:
                raise self._no_header(rows, delimiter)
            try:
                found = self.headers.ask(self.headers.get, address)
            except sqlite3.Error as exc:
                raise self._unreadable(exc) from None
            then = self._one_value_each if single else self._remembered
            if isinstance(found, Deferred):
                return self._remembered_later(found, then, message, lines, rows, delimiter)
            return then(found, message, lines, rows, delimiter)
        if not any(name.strip() for name in rows[0]):
            raise Declined("a header line of column names is needed (or configure columns)")
        if all("=" in name for name in rows[0]):
            raise Declined("key=value pairs, not a header line of column names")
        header: list = []
        for name in rows[0]:
            # a column without a name (a spreadsheet's trailing comma) is "_", a name given twice gets "_2":
            # their values are kept, as the SQL storages' column names do
            header.append(unused_name(header, name.strip() or "_"))
        data = rows[1:]
        if self.columns:
            # an announcement to a decoder of configured columns: the names of this message's lines (not a
            # data row of them), not remembered (the configured columns are the header of lines alone)
            if not data:
                raise Ignored(self.name, message.topic, "a CSV header line alone; the decoder has columns "
                                                        "configured, it is not remembered")
        elif (announced or _logger_header(header)) and self.headers is not None and address is not None:
            if len(header) > MAX_COLUMNS:
                self._not_kept(message, data, f"an announced header of {len(header):,} columns; at most "
                                              f"{MAX_COLUMNS:,} are remembered")
            else:
                announcement = Announced(tuple(header), delimiter, message.received, message.topic)
                try:
                    kept = self.headers.ask(self.headers.remember, address, announcement)
                except (StoreFull, sqlite3.Error) as exc:
                    self._not_kept(message, data, exc)
                else:
                    if isinstance(kept, Deferred):
                        return self._announced_later(kept, message, header, data, delimiter, (sent, rows[0]))
                    self._kept(message, header, data)
        elif not data:
            raise Declined("a header line and at least one data line are needed (or configure columns)")
        return self._records(message, header, data, delimiter, 2, (sent, rows[0]))

    def _records(self, message, header: list, data: list, delimiter: str, first: int, head=None) -> list:
        """A record of each data line (``first``: the number of the first), by the header's names; ``head``:
        the header line as sent and its cells, when the payload has one."""
        value_of = _decimal_comma if delimiter == ";" else scalar
        dated = _logger_columns(header)
        records: list = []
        # a bad line is kept with the header line as sent (the replay of it reads the names from it)
        bad = BadLines(self.name, [head[0]] if head is not None else [], "data lines")
        names = [name.strip() for name in head[1]] if head is not None else None
        for number, row in enumerate(data, first):
            if type(row) is _Unread:
                bad.add(row.line, f"line {number} {row.why}")
                continue
            if len(row) != len(header):
                bad.add(_line(row, delimiter), f"line {number} has {len(row)} value{'s' * (len(row) != 1)} for "
                                               f"{len(header)} column{'s' * (len(header) != 1)} ({', '.join(header)})")
                continue
            if names is not None and [cell.strip() for cell in row] == names:
                continue  # the header again: files joined (`cat`), a logger that restarted and wrote it anew
            document = {name: value_of(value) for name, value in zip(header, row) if value.strip() != ""}
            try:
                if dated is not None:
                    _logger_time(document, dated, self.timezone)
                local = self.timezone is not None and local_time(document)
                record = object_record(document, message, self.name, self.timezone)
            except DecodeError as exc:
                bad.add(_line(row, delimiter), f"line {number}: {exc.reason}")
                continue
            records.append(record)
            if local and len(records) > 1:
                unfold(records[-1], records[-2].time, self.timezone)
        return bad.finish(records, len(data))

    def _one_column(self, lines: list, announced: bool, address, delimiter: str) -> bool:
        """Whether a text without the delimiter may be a CSV of one column (Kotori takes ``## weight`` and then
        ``42.3``): an announcement of one name, or a value (a number or a date) for one configured column or for
        an address whose announced header may have one column (asked of the store after this)."""
        if not lines or not lines[0]:
            return False
        if announced:
            return True
        if self.columns:
            return len(self.columns) == 1 and _values([lines[0]], delimiter)
        return self.headers is not None and address is not None and _values([lines[0]], delimiter)

    def _one_value_each(self, remembered, message, lines, rows, delimiter) -> list:
        """Lines of one value each (no delimiter): data of the header announced for the address if it has one
        column."""
        if remembered is not None and len(remembered.columns) != 1:
            # declined, not a count mismatch: the decoders after csv in the chain may take a lone value
            raise Declined(f"no {delimiter!r} delimiter, and the header announced for this address has "
                           f"{len(remembered.columns)} columns")
        if remembered is None:
            raise Declined(f"no {delimiter!r} delimiter")
        return self._remembered(remembered, message, lines, rows, delimiter)

    def _remembered(self, remembered, message, lines, rows, delimiter) -> list:
        """The records of data lines only, by the header announced for their address; Declined for none."""
        if remembered is None:
            raise self._no_header(rows, delimiter)
        if remembered.delimiter != delimiter and remembered.delimiter in lines[0]:
            delimiter = remembered.delimiter
            rows = _rows(lines, delimiter)
        return self._records(message, list(remembered.columns), rows, delimiter, 1)

    async def _remembered_later(self, found, then, message, lines, rows, delimiter) -> list:
        try:
            remembered = await found
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None
        return then(remembered, message, lines, rows, delimiter)

    async def _announced_later(self, kept, message, header: list, data: list, delimiter: str, head) -> list:
        try:
            await kept
        except (StoreFull, sqlite3.Error) as exc:
            self._not_kept(message, data, exc)
        else:
            self._kept(message, header, data)
        return self._records(message, header, data, delimiter, 2, head)

    def _kept(self, message, header: list, data: list) -> None:
        """An announcement is remembered: alone, it is acknowledged without rows (`Ignored`)."""
        if not data:
            raise Ignored(self.name, message.topic, f"CSV header announced: {', '.join(header)[:200]}")

    def _not_kept(self, message, data: list, why) -> None:
        """An announcement that could not be remembered: alone, a dead letter (to replay once it can be); with
        data lines, those are stored, and later data-only messages become dead letters."""
        if not data:
            raise DecodeError(self.name, f"could not remember the announced CSV header: {why}")
        _log.warn("csv: could not remember the header announced on {topic} ({error}); its data lines are "
                  "stored, later data-only messages become dead letters", topic=message.topic, error=str(why))

    def _no_header(self, rows: list, delimiter: str) -> Declined:
        return Declined(
            f"line 1 holds values ({', '.join(rows[0])[:80]}), not column names, and no header was announced for "
            f"this address: send the column names once as '## name{delimiter}name' (or configure columns in "
            f"a [decoder:NAME] section of type csv), then replay the dead letters"
        )

    def _unreadable(self, exc) -> DecodeError:
        return DecodeError(self.name, f"could not read the announced CSV headers ({self.headers.path}): {exc}")


def _line(row: list, delimiter: str) -> str:
    """A row as a line of CSV again (its quotes as needed: a value may hold the delimiter or a line break)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(row)
    return out.getvalue()


class _Unread(list):
    """A data line that the csv module refuses on its own (a quote that never ends, text after a closing quote,
    NUL: a serial link's noise), in the place of its row: a bad line of the message (`BadLines`)."""

    def __init__(self, line: str, why: str):
        super().__init__()
        self.line = line
        self.why = why


def _rows(lines: list, delimiter: str) -> list:
    """The cells of each line (a quoted value may span lines). Where the csv module refuses the text as a whole,
    each line is read on its own, and those it refuses alone are `_Unread`; Declined (as for the whole before)
    when the first line is one of them or has one cell, or no line after it is read: another decoder's text
    (pretty-printed JSON on a CSV topic) goes on to the next decoder of the chain."""
    if not any("\0" in line for line in lines):
        try:
            return list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, strict=True))
        except csv.Error as exc:
            whole = f"not CSV: {exc}"
    else:
        whole = "text with NUL characters"
    rows: list = []
    for number, line in enumerate(lines, 1):
        why = "has NUL characters" if "\0" in line else ""
        if not why:
            try:
                rows.extend(csv.reader([line], delimiter=delimiter, strict=True))
                continue
            except csv.Error as exc:
                why = f"is not CSV: {exc}"
        if number == 1:
            raise Declined(whole)
        rows.append(_Unread(line, why))
    if len(rows[0]) < 2 or all(type(row) is _Unread for row in rows[1:]):
        raise Declined(whole)
    return rows


#: a cell that starts with a date (ISO 8601, a logger's 2016/08/14 or 14.08.2016): a value, never a name
_DATED = re.compile(r"\s*(\d{4}[-/]\d{2}[-/]\d{2}|\d{2}\.\d{2}\.\d{4})")


def _values(row: list, delimiter: str) -> bool:
    """Whether a first line holds values, not column names: a number or a date among them (a column named by
    a number alone is announced with ``##``)."""
    value_of = _decimal_comma if delimiter == ";" else scalar
    for cell in row:
        value = value_of(cell)
        if type(value) is int or type(value) is float or _DATED.match(cell):
            return True
    return False


def _logger_header(header: list) -> bool:
    """A data logger's header line, which Kotori remembers as an announcement: Open Hive's (``Date/Time``,
    ``Datum/Zeit``), a Beelogger's (``Datum,Uhrzeit``), a Variometer's (``Date;Time``), luftdaten's archive
    (``sensor_id``)."""
    first = header[0]
    if first in ("Date/Time", "Datum/Zeit", "sensor_id") or header[:2] == ["Datum", "Uhrzeit"]:
        return True
    return ("Date", "Time") in zip(header, header[1:])


#: the date columns of the loggers whose CSV Kotori takes (Open Hive's ``Date/Time`` or ``Datum/Zeit``, and
#: ``Date``), read as the time
_DATE_COLUMNS = ("Date/Time", "Datum/Zeit", "Date")
#: a date column and a time-of-day column beside it (a Variometer's ``Date;Time``, a Beelogger's
#: ``Datum,Uhrzeit``): together, the time
_DATE_AND_TIME = (("Date", "Time"), ("Datum", "Uhrzeit"))


def _logger_columns(header: list) -> tuple | None:
    """The date column, or the date and time-of-day columns, that are a row's time as Kotori reads a data
    logger's CSV, or None; only where the header has no time column of its own."""
    if any(name in TIME_FIELDS and name != "Time" for name in header):
        return None
    for pair in _DATE_AND_TIME:
        if all(name in header for name in pair):
            return pair
    return next(((name,) for name in _DATE_COLUMNS if name in header), None)


def _logger_time(document: dict, columns: tuple, tz) -> None:
    """The time a logger's row gives in its date column (a local time, in the channel's ``timezone``), or in
    its date and time-of-day columns (in UTC, as Kotori takes them, unless the time of day has a zone), as the
    row's ``time``; a row whose columns do not read as a time keeps them as fields."""
    values = [document.get(name) for name in columns]
    if not all(type(value) is str for value in values):
        return  # (a number is no logger's date: 20240601 would be read as epoch seconds)
    date, *clock = (str(value) for value in values)
    text = date if not clock else f"{date} {clock[0]}{'' if ZONED.search(clock[0]) else 'Z'}"
    try:
        parse_time(text, tz)
    except ValueError:
        return
    for name in columns:
        del document[name]
    document["time"] = text


@implementer(IDecoder)
@attrs.frozen
class KeyValueDecoder:
    """``key=value`` pairs separated by ``&``, ``,``, ``;`` or white space."""

    name: str = "kv"
    timezone: Any = None

    def decode(self, message, address) -> list:
        text = payload_text(message.payload, lines=True).strip()
        if "=" not in text:
            raise Declined("no key=value pair")
        if "&" in text:
            if "\0" in text:
                raise Declined("text with NUL characters")
            try:
                pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
            except ValueError as exc:
                raise Declined(f"not URL-encoded pairs: {exc}") from None
        else:
            lines = _pairs_a_line(text)
            good = [line[2] for line in lines if line[2] is not None]
            if lines[0][2] is not None and _key_on_two_lines(good):
                # a series, a record a line (``t=21.5 h=48`` and ``t=21.6 h=47``); a line whose time is no time,
                # that splits into no pairs or has NUL characters (noise on a serial link) spoils itself alone
                return self._series(lines, message)
            if "\0" in text:
                raise Declined("text with NUL characters")
            pairs = ([pair for line in good for pair in line] if len(good) == len(lines)
                     else _split_pairs(text))
        return [self._record(pairs, message)]

    def _series(self, lines: list, message) -> list:
        records: list = []
        bad = BadLines(self.name)
        for number, text, pairs, why in lines:
            if pairs is None:
                bad.add(text, why)
                continue
            try:
                records.append(self._record(pairs, message))
            except DecodeError as exc:
                bad.add(text, f"line {number}: {exc.reason}")
        return bad.finish(records, len(lines))

    def _record(self, pairs: list, message) -> Record:
        if any(not key for key, _ in pairs):
            raise Declined("a pair with an empty key")
        document: dict = {}
        for key, value in pairs:  # a key given twice (``a=1&a=2``) keeps both values: the second as ``a_2``
            document[unused_name(document, key)] = scalar(value)
        return object_record(document, message, self.name, self.timezone)


def _key_on_two_lines(lines: list) -> bool:
    """Whether a key stands on more than one line (the lines are a series of records, not one)."""
    seen: set = set()
    for line in lines:
        keys = {key for key, _ in line}
        if not seen.isdisjoint(keys):
            return True
        seen |= keys
    return False


def _pairs_a_line(text: str) -> list:
    """``(number, line, pairs, why)`` of each line that is not blank: the pairs of the line split by itself
    (``a=1;b=2`` and ``c=3;d=4``), or None and why the line is no pairs (a line with NUL, or that no separator
    splits whole)."""
    lines: list = []
    for number, line in enumerate((line for line in text.splitlines() if line.strip()), 1):
        if "\0" in line:
            lines.append((number, line, None, f"line {number} has NUL characters"))
            continue
        try:
            lines.append((number, line, _split_pairs(line), None))
        except Declined as exc:
            lines.append((number, line, None, f"line {number} is not key=value pairs: {exc}"))
    return lines


#: for a split at each separator, the others: a key with one in it, or a value with one (or white space, a line
#: break) followed by a key and ``=`` (a pair that the split left inside the value), says that the text was not
#: written so
_OTHERS = {",": (re.compile(";"), re.compile(r"[;\s][^,;\s=]+=")), ";": (re.compile(","), re.compile(r"[,\s][^,;\s=]+=")),
           None: (re.compile("[,;]"), re.compile(r"[,;][^,;\s=]+="))}


def _split_pairs(text: str) -> list:
    """``a=1,b=2``, ``a=1;b=2`` or ``a=1 b=2`` as pairs, by the separator that leaves no pair inside a value and no
    separator in a key: ``loc=52.1,13.4;t=21`` is split at ``;``. A text that no separator splits so
    (``a=1;b=2,c=3``) is declined: the first one in it made a column ``13.4;t``, or put ``b=2`` in ``a``'s value."""
    reason = ""
    spaced = len(text.split()) > 1
    for separator in (",", ";", None):
        if separator is not None and separator not in text:
            continue
        if separator is None and not spaced and ("," in text or ";" in text):
            break  # (one word with a separator in it: not a value of its own)
        pairs = []
        for part in text.split(separator):
            key, equals, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not equals:
                reason = f"{part.strip()!r} is not key=value"
                break
            in_key, in_value = _OTHERS[separator]
            if in_key.search(key) or in_value.search(value):
                reason = "pairs separated by more than one of ',', ';' and white space"
                break
            pairs.append((key, value))
        else:
            return pairs
    raise Declined(reason)


@implementer(IDecoder)
@attrs.frozen
class RawDecoder:
    """Any payload as one record: ``payload`` holds its text (UTF-8), or its base64 when it is not text.
    For relays that pass messages on as they came, and for payloads no other decoder reads."""

    name: str = "raw"
    timezone: Any = None

    def decode(self, message, address) -> list:
        import base64

        payload = message.payload
        try:
            value = payload.decode("utf-8")
        except UnicodeDecodeError:
            return [Record(received_ns(message), {"payload_base64": base64.b64encode(payload).decode("ascii")})]
        return [Record(received_ns(message), {"payload": value})]


@implementer(IDecoder)
@attrs.frozen
class ValueDecoder:
    """One value on a per-field topic."""

    name: str = "value"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if address is None or address.field is None:
            raise Declined("not a per-field topic (such as .../data/<field>)")
        text = payload_text(message.payload).strip()
        if not text:
            raise Declined("an empty payload")
        if "\n" in text:
            raise Declined("more than one line")
        return [Record(received_ns(message), {address.field: scalar(text)})]

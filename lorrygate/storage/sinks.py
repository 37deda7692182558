"""
Sinks that are not databases: files of rows (``textsink``) and Python
callables (``appsink``). Both are storages: they get batches through the same
batcher, so their messages are acknowledged only after they took them.

A row, as both see it::

    {"time": "2024-06-01T12:00:00.000000000Z", "schema": "mqttkit_1_testdrive",
     "table": "area_42_node_1_sensors", "topic": "mqttkit-1/...", "fields": {...}, "tags": {...}}

Dead letters are rows too, with ``"dead_letter": true``, ``stage``, ``error``
and the payload (text, or base64 with ``"payload_base64": true``).
"""

import base64
import csv
import io
import os
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lorrygate.decoding.timestamps import IsoTime, seconds_to_ns
from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.storage.layout import json_text


def rows_of(batch, iso=None, sources: list | None = None) -> list:
    """The rows (and dead-letter rows) of a batch, as dicts; ``sources`` gets the (entry, position) of each data
    row, in order."""
    iso = iso or IsoTime()
    rows = []
    for entry in batch.entries:
        for position, record in enumerate(entry.records):
            rows.append({"time": iso(record.time), "schema": entry.table.schema, "table": entry.table.table,
                         "topic": entry.message.topic, "fields": record.fields, "tags": record.tags})
            if sources is not None:
                sources.append((entry, position))
    for dead in batch.dead_letters:
        rows.append(dead_letter_row(dead, iso))
    return rows


def dead_letter_row(dead, iso) -> dict:
    """A dead letter as a row of a file: its payload as text, or base64."""
    payload = dead.payload
    try:
        text, encoded = payload.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(payload).decode("ascii"), True
    row = {"time": iso(seconds_to_ns(dead.message.received)), "dead_letter": True, "topic": dead.message.topic,
           "stage": dead.stage, "error": dead.error, "payload": text}
    if encoded:
        row["payload_base64"] = True
    if dead.message.content_type is not None:
        row["content_type"] = dead.message.content_type
    if dead.message.headers:
        row["headers"] = [list(pair) for pair in dead.message.headers]
    if dead.message.sent is not None:
        row["sent"] = iso(seconds_to_ns(dead.message.sent))
    return row


#: the first line of a CSV file of rows
CSV_HEADER = b"time,schema,table,topic,fields,tags,error\r\n"


@implementer(IStorage)
@attrs.define(eq=False)
class TextSink:
    """Appends rows to a file, NDJSON or CSV, fsync'd before a batch counts as written; a write that fails
    leaves the file as it was (at least once: a batch is written whole, once or, after a crash, again)."""

    name: str
    path: str
    reactor: Any
    format: str = "ndjson"
    _pool: ThreadPool | None = None
    _iso: IsoTime = attrs.Factory(IsoTime)

    def start(self) -> Deferred:
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"lorrygate-textsink-{self.name}")
        self._pool.start()
        return self._call(os.makedirs, os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def stop(self) -> Deferred:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        return succeed(None)

    def write(self, batch) -> Deferred:
        sources: list = []
        return self._call(self._append, rows_of(batch, self._iso, sources), sources, batch)

    def _call(self, function, *args, **kwargs):
        if self._pool is None:
            return maybeDeferred(function, *args, **kwargs)
        return deferToThreadPool(self.reactor, self._pool, lambda: function(*args, **kwargs))

    def _append(self, rows: list, sources: list, batch) -> None:
        lines = []
        for index, row in enumerate(rows):
            try:
                lines.append(self._line(row))
            except ValueError as exc:  # (nested too deeply): the row's message is a dead letter, in the file too
                entry, position = sources[index]
                dead = batch.refuse(entry, position, f"a record that JSON text cannot hold: {exc}")
                lines.append(self._line(dead_letter_row(dead, IsoTime())))  # (a time text of this thread's own)
        data = "".join(lines).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"textsink {self.name}: cannot append to {self.path!r}: {exc.strerror}") from None
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end == 0 and self.format == "csv":
                data = CSV_HEADER + data
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                # A disk that filled up mid-batch (or a file size limit) left part of it, a line cut short:
                # the retry would append the batch behind that, and a reader would lose the line it joins.
                # The file is cut back to where the batch began.
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    pass
                raise StorageError(f"textsink {self.name}: cannot append to {self.path!r}: {exc.strerror} "
                                   "(the batch is written again)") from None
        finally:
            os.close(fd)

    def _line(self, row: dict) -> str:
        if self.format == "csv":
            text = io.StringIO()
            csv.writer(text).writerow([row["time"], row.get("schema", ""), row.get("table", ""), row["topic"],
                                       json_text(row.get("fields", {})), json_text(row.get("tags", {})),
                                       row.get("error", "")])
            return text.getvalue()
        return json_text(row) + "\n"


@implementer(IStorage)
@attrs.define(eq=False)
class AppSink:
    """Hands rows to a Python callable: ``callback(rows)``; it may return a Deferred."""

    name: str
    callback: Any

    def start(self) -> Deferred:
        return succeed(None)

    def stop(self) -> Deferred:
        return succeed(None)

    def write(self, batch) -> Deferred:
        rows = rows_of(batch)

        def failed(failure):
            raise StorageError(f"appsink {self.name}: the callback raised {failure.getErrorMessage()}")

        return maybeDeferred(self.callback, rows).addErrback(failed)

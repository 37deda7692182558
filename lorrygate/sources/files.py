"""
A files source (``[source:NAME] type = files``): the lines of files on this
machine, followed as they grow and across rotation, each stored once.

``path`` is a file or a glob (``/var/log/sensors/*.ndjson``; ``**`` reaches
into subdirectories); ``exclude`` is a glob of file names to leave out. Each
line is a message for the decoder chain (NDJSON, key=value, single values,
...); with ``header = true`` each file's first line (a CSV header) is put
before every other line of it, so the csv decoder names the values; a line
that begins with the first column's name and a delimiter (``time,``) is a
header of other columns written mid-file, for the lines after it.

The topic is ``topic`` with ``{stem}`` (the file name up to its first dot:
``node-1.ndjson``, ``node-1.ndjson.1`` and ``node-1.ndjson.2.gz`` are one
address), ``{name}``, ``{dir}`` (the parent directory's name) and
``{path}`` (the path below the glob's fixed directories) filled in; the
default is ``<source>/{stem}``. A file keeps the topic it was first read
under when it is renamed.

A file is known by its inode and the hash of its first line, so a rename
(``logrotate``'s default) continues it, wherever the new name is: a glob
that matches the rotated names reads them on; one that does not keeps the
renamed file open until it has been read to its end (and, after a restart,
finds it again by its inode in the same directory). A file that shrinks was
truncated (``copytruncate``): it is read again from its start, as a new
stream. ``.gz`` and ``.zst`` files (the latter with the ``zstandard``
package) are archives: read once, to their end, and remembered as done; a
glob that matches both a followed file and logrotate's compressed copy of it
reads those lines twice: leave the copies out with ``exclude``. Files that
exist when the source first starts are read from their start, or with
``start = end`` from their end; files that appear later from their start.

Delivery: exactly once into SQLite and PostgreSQL, at least once into
other storages. Each message carries its byte range (its ``position``);
the read offsets are noted in ``<data_dir>/files/<source>.json`` only
after the rows are committed (or spooled), and a transactional storage
keeps the ranges it holds in the transaction that stores the rows
(`lorrygate.storage.positions`), so what a restart reads again is left out
there. Backpressure stops reading; ``window`` bounds the lines in flight.
A line longer than ``max_line`` is never held in memory: it becomes a dead
letter with its size and SHA-256.
"""

import collections
import fnmatch
import glob
import hashlib
import json
import os
import random
import threading
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.decoding.charsets import UTF8, transcoded
from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: bytes read from one file in one go
CHUNK = 1 << 16
#: bytes read in one reactor turn, over all files
TURN = 1 << 19
#: the longest first line that is hashed to know a file by
FINGERPRINT = 1024
#: how long a file that was renamed away (or deleted) stays open at its end
#: for a writer that has not yet reopened
LINGER = 5.0
ARCHIVES = (".gz", ".zst")
#: files open at once; more wait until archives are done or renamed-away files closed
MAX_OPEN = 512


def fixed_part(pattern: str) -> str:
    """The directories of a glob before its first wildcard."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or os.sep


def topic_for(template: str, path: str, base: str) -> str:
    name = os.path.basename(path)
    relative = os.path.relpath(path, base)
    values = {"stem": name.split(".", 1)[0] or name, "name": name,
              "dir": os.path.basename(os.path.dirname(path)), "path": relative.replace(os.sep, "/")}
    return template.format(**values)


def is_archive(path: str) -> bool:
    return path.endswith(ARCHIVES)


class Reader:
    """Reads a plain file at offsets (pread), or an archive from its start."""

    def __init__(self, path: str):
        self.path = path
        self.archive = is_archive(path)
        self._stream: Any = None
        self._at = 0
        if self.archive:
            raw = open(path, "rb")
            if path.endswith(".gz"):
                import gzip

                self._stream = gzip.GzipFile(fileobj=raw)
            else:
                import zstandard

                self._stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
            self._raw = raw
            self.fd = raw.fileno()
        else:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def read(self, offset: int, size: int) -> bytes:
        if not self.archive:
            return os.pread(self.fd, size, offset)
        if offset < self._at:
            raise OSError(f"cannot read {self.path} backwards")
        while self._at < offset:  # resume: decompress up to the offset
            skipped = self._stream.read(min(CHUNK, offset - self._at))
            if not skipped:
                return b""
            self._at += len(skipped)
        data = self._stream.read(size)
        self._at += len(data)
        return data

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def stat(self):
        return os.fstat(self.fd)

    def close(self) -> None:
        try:
            if self.archive:
                self._stream.close()
                self._raw.close()
            else:
                os.close(self.fd)
        except OSError:
            pass


def first_line(reader: Reader) -> bytes | None:
    """The first line (up to `FINGERPRINT` bytes), or None while it is incomplete."""
    head = reader.read(0, FINGERPRINT) if not reader.archive else None
    if reader.archive:
        probe = Reader(reader.path)
        try:
            head = probe.read(0, FINGERPRINT)
        finally:
            probe.close()
    assert head is not None
    newline = head.find(b"\n")
    if newline >= 0:
        return head[: newline + 1]
    # (an archive grows no more: one line without a line end is its first line, and its last)
    return head if len(head) >= FINGERPRINT or (reader.archive and head) else None


def fingerprint(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=8).hexdigest()


@attrs.define(eq=False)
class _LineAck:
    file: Any
    cell: list

    def ack(self) -> None:
        self.cell[1] = True
        self.file.source._acked(self.file)


@attrs.define(eq=False)
class _File:
    """One stream being read: a file (one generation of it) from ``offset`` on."""

    source: Any
    inode: int
    print: str
    generation: int
    path: str
    topic: str
    reader: Any
    #: the next byte to read (after the last whole line)
    offset: int
    #: every line before this offset is committed
    committed: int
    #: where the next message's range starts (blank lines go with the next line)
    mark: int = 0
    #: the header the lines read now go with (``header = true``)
    header: bytes | None = None
    #: the start of a line that is a header (`_lead`), or None
    lead: tuple | None = None
    #: the headers in effect from a byte on, ``[offset, header]``, oldest first: the first is in effect at
    #: ``committed`` (a header written mid-file, as a logger whose firmware added a column writes it, holds for
    #: the lines after it; a restart takes up the one in effect where the reading resumes)
    headers: list = attrs.Factory(list)
    #: bytes read after ``offset`` that hold no whole line yet
    buffer: bytes = b""
    #: [end, acknowledged] of each message in flight, in order
    inflight: collections.deque = attrs.Factory(collections.deque)
    #: the path names another file now (rotated or deleted): read to the end, then close
    moved: bool = False
    idle_since: float | None = None
    at_end: bool = False
    done: bool = False
    #: an over-long line being passed over: [bytes so far, hash]
    skipping: list | None = None
    #: the buffer may hold whole lines not yet delivered (the window filled, or a pause)
    backlog: bool = False
    #: lines over max_line passed over (the first is logged; the channel's rate-limited warnings tell the rest)
    too_long: int = 0

    @property
    def key(self) -> str:
        return f"{self.inode}-{self.print}-{self.generation}"

    @property
    def stream(self) -> str:
        return f"files:{self.source.name}:{self.key}"

    def state(self) -> dict:
        kept = {"path": self.path, "inode": self.inode, "print": self.print, "generation": self.generation,
                "offset": self.committed, "topic": self.topic, "done": self.done}
        headers = self.headers
        if headers:
            while len(headers) > 1 and headers[1][0] <= self.committed:
                del headers[0]
            if headers[0][0]:  # (a header of the file's own after its first line)
                kept["header"] = headers[0][1].decode("utf-8", "surrogateescape")
        return kept

    def retitle(self, header: bytes, offset: int) -> None:
        """Read the lines from ``offset`` on with ``header``."""
        self.header, self.lead = header, _lead(header)
        self.headers.append([offset, header])


def _lead(header: bytes) -> tuple:
    """The starts a line that is a CSV header begins with: the first column's name (``time``) and a delimiter
    (``time,``; ``;`` and tab too). A data line begins with its time, or a value, not with the name."""
    first = header
    for delimiter in (b",", b";", b"\t"):
        first = first.split(delimiter, 1)[0]
    try:
        float(first)
    except ValueError:
        return tuple(first + delimiter for delimiter in (b",", b";", b"\t")) if first.strip() else ()
    return ()  # (a number is no column's name: a header of numbers starts no other line)


@implementer(ISource)
@attrs.define(eq=False)
class FilesSource(SourcePlumbing, Service):
    name: str  # type: ignore[assignment]  # Service.name, always set here
    settings: Any  # lorrygate.config.settings.SourceSettings, type files
    deliver: Any
    _reactor: Any
    data_dir: str = "var"
    #: change notification through watchdog when installed (tests on a Clock turn it off)
    watch: bool = True
    broker: Any = None
    #: open streams by key
    _files: dict = attrs.Factory(dict)
    #: state read from disk (and kept for streams not open): key -> dict
    _state: dict = attrs.Factory(dict)
    _state_found: bool = False
    _dirty: bool = False
    _new_streams: bool = False
    _waiting: int = 0
    _save_call: Any = None
    _pump_call: Any = None
    _scan_call: Any = None
    _observer: Any = None
    _woken: Any = attrs.Factory(threading.Event)
    _inflight: int = 0
    _running: bool = False
    #: the files' charset where it is not UTF-8 (`SourceSettings.charset`): lines are made UTF-8 as they go out
    _charset: str | None = None
    connected: bool = False
    received: int = 0
    dropped: int = 0
    oversized: int = 0
    rotations: int = 0

    log = Logger()
    publish = None

    def __attrs_post_init__(self):
        from lorrygate.sources.periodic import _Where

        self.client_id = self.client_id or f"files:{os.path.abspath(self.settings.path)}"
        self.broker = _Where(self.settings.path)
        self._pauses = Pauses(self._stop_pumping, self._schedule)
        charset = getattr(self.settings, "charset", "utf-8")
        self._charset = None if charset in UTF8 else charset

    @property
    def claim(self) -> tuple[str, str]:
        """What this source holds alone (`lorrygate.service.locks.claim_of`): two gateways reading one file
        would store each line twice."""
        return f"the files {os.path.abspath(self.settings.path)}", "path"

    @property
    def state_path(self) -> str:
        return os.path.join(self.data_dir, "files", f"{self.name}.json")

    # -- the service ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._running = True
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                document = json.load(handle)
            self._state = dict(document["streams"])
            self._state_found = True
        except FileNotFoundError:
            self._state = {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.last_error = f"cannot read its offsets from {self.state_path}: {exc}"
            self.log.error("source {source}: {error}; fix or remove the file (files are then read from where "
                           "start says, and storages with positions leave out what they hold)",
                           source=self.name, error=self.last_error)
            return
        self._watch()
        self._scan(first=True)
        self.connected = True
        self._subscribed()
        self.log.info("source {source}: following {pattern} ({count} file(s); exactly once into storages with "
                      "positions)", source=self.name, pattern=self.settings.path, count=len(self._files))

    def stopService(self) -> Deferred:
        super().stopService()
        self._running = False
        for call in (self._pump_call, self._scan_call, self._save_call):
            if call is not None and call.active():
                call.cancel()
        self._pump_call = self._scan_call = self._save_call = None
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            observer.join(5)
        if self._dirty:
            self._save()
        for file in self._files.values():
            file.reader.close()
        self._files.clear()
        return succeed(None)

    # -- finding files --------------------------------------------------------

    def _matches(self) -> list:
        settings = self.settings
        paths = sorted(glob.glob(settings.path, recursive=True))
        exclude = settings.exclude
        return [path for path in paths
                if not (exclude and fnmatch.fnmatch(os.path.basename(path), exclude)) and os.path.isfile(path)]

    def _scan(self, first: bool = False) -> None:
        """Find new files, renamed, truncated and vanished ones; then read."""
        self._scan_call = None
        if not self._running:
            return
        seen = set()
        by_inode = {}
        for file in self._files.values():
            by_inode.setdefault(file.inode, []).append(file)
        done = {(entry.get("inode"), entry.get("path")) for entry in self._state.values() if entry.get("done")}
        waiting = 0
        for path in self._matches():
            try:
                stat = os.stat(path)
            except OSError:
                continue
            known = [file for file in by_inode.get(stat.st_ino, ()) if file.reader.stat().st_dev == stat.st_dev]
            if known:
                file = known[0]
                seen.add(file.key)
                if file.path != path:
                    self.rotations += 1
                    self.log.info("source {source}: {old} is now {new}; reading on", source=self.name,
                                  old=file.path, new=path)
                    file.path = path
                    file.moved = False
                    self._dirty = True
                if not file.reader.archive and stat.st_size < file.offset + len(file.buffer):
                    new = self._truncated(file)
                    if new is not None:
                        seen.add(new.key)
                continue
            if (stat.st_ino, path) in done:
                continue  # an archive read once
            if len(self._files) >= MAX_OPEN:
                waiting += 1
                continue
            file = self._open(path, stat, first)
            if file is not None:
                seen.add(file.key)
        for file in list(self._files.values()):
            if file.key not in seen and not file.moved:
                file.moved = True
                file.idle_since = None
                self.rotations += 1
                self.log.info("source {source}: {path} was renamed away or deleted; reading it to its end",
                              source=self.name, path=file.path)
        if waiting and self._waiting != waiting:
            self.log.warn("source {source}: {count} more file(s) match {pattern} than the {limit} read at once; "
                          "they are read as others are done (archives) or closed (renamed away)",
                          source=self.name, count=waiting, pattern=self.settings.path, limit=MAX_OPEN)
        self._waiting = waiting
        if first:
            self._recover_moved(seen)
        self._forget_vanished()
        if self._new_streams:
            # A file is noted before its first line is read: should it be
            # renamed out of the glob before a restart, the restart finds
            # it by its inode (its offset may lag; the storage's positions do not).
            self._new_streams = False
            self._save()
        self._schedule()
        self._scan_call = self._reactor.callLater(self._interval(), self._scan)

    def _interval(self) -> float:
        settings = self.settings
        return settings.interval + (random.uniform(0, settings.jitter) if settings.jitter else 0.0)

    def _open(self, path: str, stat, first: bool, moved: bool = False):
        try:
            reader = Reader(path)
        except ImportError:
            self._complain(path, f"{path} is a .zst archive and the zstandard package is not installed "
                                 "(pip install 'lorrygate[files]')")
            return None
        except OSError as exc:
            self._complain(path, f"cannot open {path}: {exc}")
            return None
        try:
            line = first_line(reader)
        except Exception as exc:
            reader.close()
            self._complain(path, f"cannot read {path}: {exc}")
            return None
        if line is None:
            reader.close()
            return None  # no whole first line yet: read once it has one
        mark = fingerprint(line)
        generations = [entry for entry in self._state.values()
                       if entry.get("inode") == stat.st_ino and entry.get("print") == mark]
        entry = max(generations, key=lambda entry: entry.get("generation", 0)) if generations else None
        if entry is not None and entry.get("done"):
            reader.close()
            return None
        if entry is not None and entry.get("truncated"):
            generation, offset, topic = int(entry.get("generation", 0)) + 1, 0, entry.get("topic") or self._topic(path)
        elif entry is not None:
            offset = int(entry["offset"])
            generation = int(entry.get("generation", 0))
            topic = entry.get("topic") or self._topic(path)
            if not reader.archive and stat.st_size < offset:
                generation, offset = generation + 1, 0
                self.log.warn("source {source}: {path} is shorter than where it was read to; it was truncated "
                              "while the gateway was away, reading it from its start", source=self.name, path=path)
        else:
            generation, topic = 0, self._topic(path)
            offset = 0
            if first and not self._state_found and self.settings.start == "end" and not reader.archive:
                offset = self._line_end_before(reader, stat.st_size)
        file = _File(self, stat.st_ino, mark, generation, path, topic, reader, offset, offset, mark=offset,
                     moved=moved)
        if self.settings.header:
            header = line.rstrip(b"\r\n")
            file.header, file.lead = header, _lead(header)
            file.headers.append([0, header])
            kept = entry.get("header") if entry is not None and offset else None
            if isinstance(kept, str):  # a header mid-file, in effect where the reading resumes
                file.retitle(kept.encode("utf-8", "surrogateescape"), offset)
            if offset == 0:
                file.offset = file.committed = len(line)
                file.mark = 0
        self._files[file.key] = file
        self._state[file.key] = file.state()
        self._dirty = self._new_streams = True
        self.log.info("source {source}: reading {path} from byte {offset}{archive}", source=self.name, path=path,
                      offset=file.offset, archive=" (an archive, read once)" if reader.archive else "")
        return file

    def _line_end_before(self, reader, size: int) -> int:
        """Where the last whole line before ``size`` ends (for ``start = end``)."""
        at = size
        while at > 0:
            low = max(0, at - CHUNK)
            data = reader.read(low, at - low)
            newline = data.rfind(b"\n")
            if newline >= 0:
                return low + newline + 1
            at = low
        return 0

    def _topic(self, path: str) -> str:
        template = self.settings.topic or f"{self.settings.name}/{{stem}}"
        return topic_for(template, path, fixed_part(self.settings.path))

    def _complain(self, path: str, why: str) -> None:
        if self.last_error != why:
            self.last_error = why
            self.log.error("source {source}: {error}", source=self.name, error=why)

    def _recover_moved(self, seen: set) -> None:
        """After a restart: files not read to their end that were renamed
        out of the glob are looked for by inode in their directory."""
        for key, entry in list(self._state.items()):
            if key in seen or key in self._files or entry.get("done"):
                continue
            for path, stat in self._by_inode(os.path.dirname(entry.get("path", "")), entry.get("inode")):
                file = self._open(path, stat, False, moved=True)
                if file is not None and file.key == key:
                    self.log.info("source {source}: {old} was renamed to {new} before it was read to its end; "
                                  "reading it on", source=self.name, old=entry.get("path"), new=path)
                    break
                if file is not None:  # the inode now holds another file
                    self._close(file, forget=True)

    @staticmethod
    def _by_inode(directory: str, inode) -> list:
        """(path, stat) of the files in ``directory`` with ``inode``. A writer may rotate on between the
        listing and the stat (a gateway died at start on that, under load): the directory is listed again,
        three times at most."""
        for _ in range(3):
            try:
                paths = [item.path for item in os.scandir(directory) if item.inode() == inode and item.is_file()]
            except OSError:
                return []
            try:
                return [(path, os.stat(path)) for path in paths]
            except OSError:
                continue
        return []

    def _forget_vanished(self) -> None:
        """Drop the state of streams not open whose file is no longer where it was
        (an archive read once, a truncated generation: kept while their file is there)."""
        for key in list(self._state):
            if key in self._files:
                continue
            entry = self._state[key]
            try:
                there = os.stat(entry["path"]).st_ino == entry.get("inode")
            except (OSError, KeyError):
                there = False
            if there:
                continue
            if not entry.get("done") and not entry.get("truncated"):
                self.log.warn("source {source}: {path} is gone before it was read to its end (read to byte "
                              "{offset})", source=self.name, path=entry.get("path"), offset=entry.get("offset"))
            del self._state[key]
            self._dirty = True

    def _truncated(self, file):
        """A file that shrank was truncated (copytruncate): its old generation
        is over; what it holds now is a new stream, read from its start."""
        self.log.warn("source {source}: {path} shrank below byte {offset}: it was truncated (copytruncate); "
                      "reading it from its start", source=self.name, path=file.path, offset=file.offset)
        self.rotations += 1
        file.reader.close()
        self._files.pop(file.key, None)
        self._state[file.key] = dict(file.state(), truncated=True)
        self._dirty = True
        try:
            return self._open(file.path, os.stat(file.path), False)
        except OSError:
            return None  # gone meanwhile: the next scan decides

    def _close(self, file, forget: bool = False) -> None:
        file.reader.close()
        self._files.pop(file.key, None)
        if forget:
            self._state.pop(file.key, None)
        self._dirty = True

    # -- change notification ----------------------------------------------------

    def _watch(self) -> None:
        """inotify wake-ups through watchdog when it is installed; the scan polls on ``interval`` anyway."""
        if not self.watch:
            return
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return
        source = self

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event):
                if not source._woken.is_set():
                    source._woken.set()
                    source._reactor.callFromThread(source._wake)

        base = fixed_part(self.settings.path)
        if not os.path.isdir(base):
            return
        observer = Observer()
        try:
            observer.schedule(Wake(), base, recursive="**" in self.settings.path or
                              glob.has_magic(os.path.dirname(self.settings.path)))
            observer.daemon = True
            observer.start()
        except OSError as exc:
            self.log.warn("source {source}: no change notification for {base} ({error}); polling every "
                          "{interval} s", source=self.name, base=base, error=exc, interval=self.settings.interval)
            return
        self._observer = observer

    def _wake(self) -> None:
        self._woken.clear()
        self._schedule()

    # -- reading ----------------------------------------------------------------

    def _stop_pumping(self) -> None:
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None

    def _schedule(self) -> None:
        """Read in the next reactor turn (sooner than a poll that waits)."""
        if not self._running or self._pauses.paused:
            return
        call = self._pump_call
        if call is None:
            self._pump_call = self._reactor.callLater(0, self._pump)
        elif call.active() and call.getTime() > self._reactor.seconds():
            call.reset(0)

    def _pump(self) -> None:
        self._pump_call = None
        window = self.settings.window
        more = False
        now = self._reactor.seconds()
        files = list(self._files.values())
        share = max(CHUNK, TURN // max(1, len(files)))
        for file in files:
            if self._pauses.paused or self._inflight >= window:
                return
            if file.done:
                continue
            got = 0
            budget = share
            while budget > 0 and not self._pauses.paused and self._inflight < window:
                try:
                    read = self._read(file)
                except OSError as exc:
                    self._complain(file.path, f"cannot read {file.path}: {exc}")
                    read = 0
                    break
                got += read
                budget -= read
                if read == 0:
                    break
            if got:
                file.idle_since = None
                file.at_end = False
                more = True
            else:
                file.at_end = True
                if file.idle_since is None:
                    file.idle_since = now
                self._maybe_finish(file, now)
        if more:
            self._schedule()
        elif any(not file.done for file in self._files.values()) and self._observer is None:
            self._pump_call = self._reactor.callLater(min(self.settings.interval, 0.1), self._pump)
        elif any(file.moved or file.reader.archive for file in self._files.values()):
            self._pump_call = self._reactor.callLater(min(self.settings.interval, LINGER), self._pump)

    def _maybe_finish(self, file, now: float) -> None:
        """An archive read to its end, or a renamed-away file idle at its end, is closed once committed; the
        bytes after its last line end are its last line."""
        if file.backlog:
            return
        ending = file.reader.archive or (file.moved and file.idle_since is not None and now - file.idle_since >= LINGER)
        if ending and self._last_line(file) or file.inflight:
            return  # closed once its lines are committed
        if file.reader.archive:
            if not file.done:
                file.done = True
                self._state[file.key] = file.state()
                self._dirty = True
                self._save_soon()
                file.reader.close()
                self._files.pop(file.key, None)
                self.log.info("source {source}: archive {path} read to its end and recorded as done",
                              source=self.name, path=file.path)
        elif ending:
            self._close(file, forget=True)
            self._save_soon()

    def _last_line(self, file) -> bool:
        """Deliver the bytes after the last line end of a file that grows no more (an archive at its end, a file
        renamed away and idle): its end ends that line, as a writer's ``printf '%s'`` or an export without a
        final newline leave it. Whether a message went out."""
        if file.skipping is not None:  # an over-long last line: its size and hash
            self._passed_over(file, file.skipping[0])
            return True
        line = file.buffer
        if not line:
            return False
        end = file.offset + len(line)
        file.offset, file.buffer = end, b""
        line = line[:-1] if line.endswith(b"\r") else line
        if not line.strip() or line == file.header:
            return False
        if file.lead and line.startswith(file.lead):
            self._retitle(file, line, end)
            return False
        self._emit(file, line, end)
        return True

    def _read(self, file) -> int:
        """Deliver the whole lines of ``file`` that are buffered, or else of its
        next chunk, until the window is full or the source paused; the bytes used."""
        if file.backlog:
            data, used = file.buffer, 0
        else:
            chunk = file.reader.read(file.offset + len(file.buffer), CHUNK)
            if not chunk:
                return 0
            used = len(chunk)
            if file.skipping is not None:
                rest = self._skip(file, chunk)
                if rest is None:
                    return used
                chunk = rest
            data = file.buffer + chunk if file.buffer else chunk
        start = file.offset
        position = 0
        find = data.find
        window = self.settings.window
        longest = self.settings.max_line
        holders = self._pauses._holders
        file.backlog = False
        while True:
            if self._inflight >= window or holders:
                file.backlog = True
                break
            newline = find(b"\n", position)
            if newline < 0:
                break
            line = data[position:newline]
            position = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            # (the header again, as a logger appending after a restart writes it: no data, as a blank line)
            if line.strip() and line != file.header:
                if len(line) > longest:
                    # (one that came whole in a chunk was a message as any: the limit held only across chunks)
                    self._too_long(file, len(line), hashlib.sha256(line).hexdigest(), start + position)
                elif file.lead and line.startswith(file.lead):
                    self._retitle(file, line, start + position)
                else:
                    self._emit(file, line, start + position)
        file.offset = start + position
        file.buffer = data[position:]
        if file.backlog:
            return used or position
        if len(file.buffer) > self.settings.max_line:
            # an over-long line: hashed as it passes, never held
            file.skipping = [len(file.buffer), hashlib.sha256(file.buffer)]
            file.offset += len(file.buffer)
            file.buffer = b""
        return used or position

    def _retitle(self, file, header: bytes, end: int) -> None:
        """A header of other columns mid-file (its line ends at ``end``): the lines after it go with it."""
        self.log.info("source {source}: {path} has a new header before byte {offset}: {header}; the lines after it "
                      "are read by it", source=self.name, path=file.path, offset=end,
                      header=header.decode("utf-8", "backslashreplace")[:200])
        file.retitle(header, end)

    def _skip(self, file, chunk: bytes):
        """Pass over an over-long line; the rest of ``chunk`` after it, or None."""
        size, digest = file.skipping
        newline = chunk.find(b"\n")
        part = chunk if newline < 0 else chunk[:newline]
        digest.update(part)
        size += len(part)
        if newline < 0:
            file.skipping[0] = size
            file.offset += len(chunk)  # the line's bytes are passed over, never held
            return None
        file.offset += newline + 1
        self._passed_over(file, size)
        return chunk[newline + 1 :]

    def _passed_over(self, file, size: int) -> None:
        """The end of an over-long line (its ``size`` bytes hashed as they passed): a dead letter by its hash."""
        digest = file.skipping[1]
        file.skipping = None
        self._too_long(file, size, digest.hexdigest(), file.offset)

    def _too_long(self, file, size: int, sha256: str, end: int) -> None:
        """A line longer than ``max_line`` (ending at ``end``): a dead letter by its size and hash. The first of a
        file is logged; the others are counted (``oversized``), and the channel's warnings, rate-limited, tell them
        (an error a line flooded the log where lines of blobs are left out by a small max_line, on purpose)."""
        self.oversized += 1
        file.too_long += 1
        if file.too_long == 1:
            self.log.warn("source {source}: a line of {size} bytes in {path} is longer than max_line ({limit}); "
                          "kept as a dead letter by its SHA-256 (this file's next ones are counted, not logged)",
                          source=self.name, size=size, path=file.path, limit=self.settings.max_line)
        self._emit(file, b"", end, oversize=(size, sha256, "max_line"))

    def _emit(self, file, line: bytes, end: int, oversize=None) -> None:
        cell = [end, False]
        file.inflight.append(cell)
        self._inflight += 1
        payload = file.header + b"\n" + line if file.header is not None and oversize is None else line
        if self._charset is not None:
            payload = transcoded(payload, self._charset)
        self.received += 1
        position = (file.stream, file.mark, end)
        file.mark = end
        self.deliver(Message(file.topic, payload, 1, False, time_of_day(self._reactor)(), file.path, _LineAck(file, cell),
                             oversize, position))

    # -- acknowledgements and the state file ---------------------------------------

    def _acked(self, file) -> None:
        inflight = file.inflight
        advanced = False
        while inflight and inflight[0][1]:
            file.committed = inflight.popleft()[0]
            self._inflight -= 1
            advanced = True
        if not advanced:
            return
        if file.key in self._state or file.key in self._files:
            self._state[file.key] = file.state()
        self._dirty = True
        self._save_soon()
        if self._inflight < self.settings.window:
            self._schedule()

    def _save_soon(self) -> None:
        if self._save_call is None and self._running:
            self._save_call = self._reactor.callLater(1.0, self._save)

    def _save(self) -> None:
        """Write the committed offsets: to a new file, synced, then renamed over the old one."""
        self._save_call = None
        self._dirty = False
        path = self.state_path
        document = {"version": 1, "pattern": self.settings.path, "streams": self._state}
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            temporary = path + ".new"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            self._dirty = True
            self._complain(path, f"cannot write its offsets to {path}: {exc}")

    # -- status -------------------------------------------------------------------

    def status(self) -> dict:
        return {"files": [{"path": file.path, "offset": file.offset, "committed": file.committed,
                           "in_flight": len(file.inflight), "moved": file.moved, "archive": file.reader.archive}
                          for file in self._files.values()],
                "oversized": self.oversized, "rotations": self.rotations}

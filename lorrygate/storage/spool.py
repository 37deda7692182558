"""
A durable local spool for batches a storage cannot take right now.

Each spooled batch is one file in ``<data_dir>/spool/<storage>/``, named by a
growing sequence number and the writing process's id, written to a temporary name, fsync'd, renamed into
place and the directory fsync'd: once `Spool.put` fires, the batch survives
a crash, and its messages may be acknowledged. A file holds a checksummed
record::

    b"LGSP" | version (1 byte) | length (4 bytes, big-endian) | CRC-32 (4 bytes) | MessagePack body

A spool knows which database it holds batches for: ``target.json`` in its
directory records the storage's kind and target (its URL without
credentials). A spool with batches for another target is never drained into
the configured storage: start-up fails with `SpoolMismatch`, naming the
directory and both targets, and ``lorrygate spool list|drain|discard`` lets
an operator decide.

Files are drained oldest first. A file that is truncated or fails its
checksum is reported and moved to ``damaged/`` beside them, where a person
can look at it; the drain goes on with the next file. The spool has a size
bound: when a batch does not fit, `put` fails with `SpoolFull` and the
gateway holds the batch in memory and applies backpressure instead of
dropping anything. All file I/O runs on the spool's own thread.
"""

import builtins
import os
import struct
import time
import zlib
from typing import Any

import attrs
import msgpack
from twisted.internet.defer import fail, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lorrygate.errors import StorageError
from lorrygate.model import Address, Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.layout import TOO_DEEP

MAGIC = b"LGSP"
VERSION = 1
_HEADER = struct.Struct(">4sBII")
SUFFIX = ".batch"


class SpoolFull(StorageError):
    """The spool has no room for a batch: hold it and apply backpressure."""


class SpoolMismatch(StorageError):
    """The spool holds batches for another target than the configured storage's."""


class DamagedRecord(Exception):
    pass


IDENTITY = "target.json"


def read_identity(directory: str) -> dict | None:
    """The recorded ``{"kind": ..., "target": ...}`` of a spool directory, or None."""
    import json

    try:
        with open(os.path.join(directory, IDENTITY), encoding="utf-8") as handle:
            identity = json.load(handle)
    except (OSError, ValueError):
        return None
    return identity if isinstance(identity, dict) else None


def write_identity(directory: str, kind: str, target: str) -> None:
    import json

    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, IDENTITY)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"kind": kind, "target": target}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(path + ".tmp", path)


def spooled_files(directory: str) -> list:
    """The batch files of a spool directory, oldest first."""
    try:
        return sorted(name for name in os.listdir(directory) if name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def _address(address):
    if address is None:
        return None
    return [address.realm, address.network, address.gateway, address.node, address.kind, address.rest,
            address.field, [list(pair) for pair in address.labels]]


def _message(message):
    fields = [message.topic, message.payload, message.qos, message.retain, message.received, message.subscription]
    more = [list(message.position) if message.position is not None else None, message.content_type,
            [list(pair) for pair in message.headers], message.sent]
    while more and not more[-1] and more[-1] != 0:  # (what a message does not have is left out at the end)
        more.pop()
    return fields + more


def _unmessage(fields) -> Message:
    """A spooled message back (six fields, then its position, its Content Type, its headers and the bus's time
    of it when it had them)."""
    topic, payload, qos, retain, received, subscription = fields[:6]
    position = tuple(fields[6]) if len(fields) > 6 and fields[6] is not None else None
    content_type = fields[7] if len(fields) > 7 else None
    headers = tuple(tuple(pair) for pair in fields[8] or ()) if len(fields) > 8 else ()
    sent = fields[9] if len(fields) > 9 else None
    return Message(topic, payload, qos, retain, received, subscription, position=position, content_type=content_type,
                   headers=headers, sent=sent)


def encode(batch) -> bytes:
    """The remaining rows and the dead letters of a batch as a spool record."""
    progress = batch.progress
    entries = []
    for index, entry in enumerate(batch.entries):
        records = [[r.time, r.fields, r.tags] for p, r in enumerate(entry.records) if (index, p) not in progress]
        if not records and entry.records:
            continue
        table = [entry.table.schema, entry.table.table] if entry.table is not None else None
        entries.append([table, records, entry.channel, _message(entry.message), entry.decoder, _address(entry.address)])
    dead = [[d.channel, _message(d.message), d.stage, d.error, d.decoder] + ([d.part] if d.part is not None else [])
            for i, d in enumerate(list(batch.dead_letters) + list(batch.extra_dead))
            if ("dead", i) not in progress and id(d) not in progress]
    # surrogatepass: any str a decoder produced round-trips; a spool write
    # never fails on what a message carried.
    try:
        body = _pack({"created": time.time(), "entries": entries, "dead": dead})
    except ValueError:
        # a record nested past msgpack's limit (~1,020 levels, from a decoder of your own): its message is a dead
        # letter, as the database would make it (no JSON text holds it either), so that the rest is spooled
        kept = []
        for item in entries:
            try:
                _pack(item)
                kept.append(item)
            except ValueError:
                dead.append([item[2], item[3], "store", f"{TOO_DEEP}; not spooled", item[4]])
        body = _pack({"created": time.time(), "entries": kept, "dead": dead})
    return _HEADER.pack(MAGIC, VERSION, len(body), zlib.crc32(body)) + body


def _pack(document) -> bytes:
    return msgpack.packb(document, use_bin_type=True, default=str, unicode_errors="surrogatepass")


def decode(data: bytes) -> Batch:
    """A spool record back into a batch (messages without ack handles); DamagedRecord if broken."""
    if len(data) < _HEADER.size:
        raise DamagedRecord(f"{len(data)} bytes, shorter than a record header")
    magic, version, length, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise DamagedRecord(f"not a spool record (magic {magic!r}, version {version})")
    body = data[_HEADER.size :]
    if len(body) != length:
        raise DamagedRecord(f"truncated: {len(body)} of {length} bytes")
    if zlib.crc32(body) != checksum:
        raise DamagedRecord("checksum mismatch")
    document = msgpack.unpackb(body, raw=False, strict_map_key=False, unicode_errors="surrogatepass")
    batch = Batch()
    read: dict = {}

    def unmessage(fields) -> Message:
        # A message with a position is one object again for all its entries and its dead letter (a dataflow's
        # derived table, the bad lines of a CSV): the positions take its range once for all of them, and would
        # leave out all but the first of several objects (`lorrygate.storage.positions`)
        if len(fields) <= 6 or fields[6] is None:
            return _unmessage(fields)
        key = _pack(fields)
        message = read.get(key)
        if message is None:
            message = read[key] = _unmessage(fields)
        return message

    for table, records, channel, message, decoder, address in document["entries"]:
        entry = Entry(
            TableName(*table) if table is not None else None,
            [Record(t, fields, tags) for t, fields, tags in records],
            channel,
            unmessage(message),
            decoder,
            Address(*address[:7], tuple(tuple(pair) for pair in address[7])) if address else None,  # type: ignore[call-arg]
        )
        batch.add(entry)
    for channel, message, stage, error, decoder, *part in document["dead"]:
        batch.add_dead_letter(DeadLetter(channel, unmessage(message), stage, error, decoder, part[0] if part else None))
    batch.spooled_at = document["created"]
    return batch


@attrs.define(eq=False)
class Spool:
    directory: str
    reactor: Any
    max_bytes: int = 1 << 30
    #: the storage's kind and target (`StorageUrl.target`); None: not checked
    kind: str = ""
    target: str = ""
    _pool: ThreadPool | None = None
    #: (path, size, created) of the spooled files, oldest first
    _files: list = attrs.Factory(list)
    _bytes: int = 0
    _sequence: int = 0
    damaged: int = 0
    #: the identity (target.json) could not be written at the start (a full disk): written before the first batch
    _unnamed: bool = False

    log = Logger()

    # -- state, for status and health ---------------------------------------------

    @property
    def batches(self) -> int:
        return len(self._files)

    @property
    def bytes(self) -> int:
        return self._bytes

    def oldest_age(self, now: float) -> float | None:
        return round(now - self._files[0][2], 3) if self._files else None

    # -- lifecycle ---------------------------------------------------------------

    def start(self, threaded: bool = True):
        """Scan the directory (fires with the number of spooled batches found).

        ``threaded=False`` does all file I/O in the caller's thread (tests).
        """
        if threaded:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"lorrygate-spool-{os.path.basename(self.directory)}")
            self._pool.start()
        return self._call(self._scan)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def _call(self, function, *args):
        if self._pool is None:
            return maybeDeferred(function, *args)
        return deferToThreadPool(self.reactor, self._pool, function, *args)

    def _scan(self) -> int:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(self.directory, name))  # a write that never completed
        names = spooled_files(self.directory)
        if self.target is not None:
            self._check_identity(names)
        for name in names:
            path = os.path.join(self.directory, name)
            stat = os.stat(path)
            self._files.append((path, stat.st_size, stat.st_mtime))
            self._bytes += stat.st_size
            self._sequence = max(self._sequence, int(name[: -len(SUFFIX)].partition("-")[0]))
        return len(names)

    def _check_identity(self, names: list) -> None:
        recorded = read_identity(self.directory)
        if recorded is not None and recorded.get("target") == self.target:
            return
        if names:
            was = (f"{recorded.get('kind')} {recorded.get('target')}" if recorded is not None
                   else "an unknown storage (no target.json)")
            raise SpoolMismatch(
                f"spool {self.directory} holds {len(names)} batch(es) for {was}, but the storage configured "
                f"here writes to {self.kind} {self.target}; they are not drained into it. See "
                f"`lorrygate spool list`; then `lorrygate spool drain NAME --adopt` writes them here, "
                f"or `lorrygate spool discard NAME --yes` deletes them"
            )
        try:
            write_identity(self.directory, self.kind, self.target)
        except OSError:
            # a full disk at the start (an edge box's SD card): an empty spool has nothing to mix up; the first
            # batch to spool writes the identity first (`_write`), or fails as the batch itself would
            self._unnamed = True

    # -- put, take, remove ---------------------------------------------------------

    def put(self, batch):
        """Write a batch durably; fires once it is on disk, fails with SpoolFull when it does not fit."""
        data = encode(batch)
        if self._bytes + len(data) > self.max_bytes:
            raise_full = SpoolFull(
                f"spool {self.directory} is full ({self._bytes} of {self.max_bytes} bytes): holding the batch in memory"
            )
            return fail(raise_full)
        self._sequence += 1
        # The process id makes a name unique even if two processes ever shared
        # the directory (the data directory's lock is there to prevent that).
        path = os.path.join(self.directory, f"{self._sequence:020d}-{os.getpid()}{SUFFIX}")
        self._bytes += len(data)
        d = self._call(self._write, path, data)

        def written(_):
            self._files.append((path, len(data), time.time()))
            return path

        def failed(failure):
            self._bytes -= len(data)
            return failure

        return d.addCallbacks(written, failed)

    def _write(self, path: str, data: builtins.bytes) -> None:
        if self._unnamed:
            write_identity(self.directory, self.kind, self.target)
            self._unnamed = False
        temporary = path + ".tmp"
        try:
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temporary, path)
        except BaseException:
            # A write that failed (ENOSPC, say) leaves no partial file behind.
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def oldest(self):
        """Fires with ``(path, batch)`` of the oldest readable batch, or None; damaged files are moved aside."""
        return self._call(self._oldest, list(self._files))

    def _oldest(self, files):
        for path, size, _ in files:
            try:
                with open(path, "rb") as handle:
                    return path, decode(handle.read())
            except (DamagedRecord, ValueError, TypeError, msgpack.UnpackException) as exc:
                self._move_aside(path, size, str(exc))
            except FileNotFoundError:
                self._forget(path, size)
        return None

    def _move_aside(self, path: str, size: int, reason: str) -> None:
        damaged = os.path.join(self.directory, "damaged")
        os.makedirs(damaged, exist_ok=True)
        target = os.path.join(damaged, os.path.basename(path))
        os.rename(path, target)
        self.damaged += 1
        if self._pool is None:
            self._forget(path, size)
        else:
            self.reactor.callFromThread(self._forget, path, size)
        self.log.error(
            "spool {directory}: damaged record {path} ({reason}) moved to {target}; the rest drains",
            directory=self.directory,
            path=os.path.basename(path),
            reason=reason,
            target=target,
        )

    def _forget(self, path: str, size: int) -> None:
        before = len(self._files)
        self._files = [item for item in self._files if item[0] != path]
        if len(self._files) != before:
            self._bytes -= size

    def remove(self, path: str):
        """Delete a drained file."""
        size = next((item[1] for item in self._files if item[0] == path), 0)
        self._forget(path, size)
        return self._call(os.unlink, path)

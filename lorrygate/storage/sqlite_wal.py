"""
How many pages of an SQLite database wait in its WAL for a checkpoint.

Read from the WAL index, the ``-shm`` file next to the database, whose header
SQLite documents (https://www.sqlite.org/walformat.html, 2.2): in the host's
byte order, ``iVersion`` (3007000) at byte 0, ``mxFrame`` (the last frame in
the WAL) at 16 and ``nBackfill`` (frames already copied into the database)
at 96. The header is read without a lock: a hint, as SQLite's own
``wal_autocheckpoint`` is.

The descriptors stay open for the life of the process. Closing a descriptor
drops every POSIX lock the process holds on that file, SQLite's own locks on
the ``-shm`` file among them (https://www.sqlite.org/howtocorrupt.html, 2.2).
A descriptor is closed only once its file is deleted: SQLite deletes the
``-shm`` file when the last connection to the database closes, and no
connection uses it after that.
"""

import os
import stat as stat_module
import sys
import threading

WAL_INDEX_VERSION = 3007000

#: open descriptors of ``-shm`` files by (device, inode)
_open: dict = {}
#: more descriptors of files in `_open`, from a race between a stat and an open, closed as those are
_spare: list = []
_lock = threading.Lock()


def _descriptor(path: str) -> int | None:
    """An open descriptor of the file at ``path``; None when there is none, -1 when it is no regular file."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None  # (SQLite makes it with the first transaction)
    key = (stat.st_dev, stat.st_ino)
    with _lock:
        fd = _open.get(key)
        if fd is not None:
            return fd
        for other, descriptor in list(_open.items()):
            if os.fstat(descriptor).st_nlink == 0:
                os.close(descriptor)
                del _open[other]
        for descriptor in [d for d in _spare if os.fstat(d).st_nlink == 0]:
            os.close(descriptor)
            _spare.remove(descriptor)
        try:
            # (not blocking: a FIFO planted there must not hold the writer thread)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        opened = os.fstat(fd)
        if not stat_module.S_ISREG(opened.st_mode):
            os.close(fd)  # (no SQLite lock is on what is not a file)
            return -1
        key = (opened.st_dev, opened.st_ino)
        if key in _open:
            # replaced between the stat and the open by a file already open here: this second descriptor
            # is kept as well (closing it would drop SQLite's locks on that file too)
            _spare.append(fd)
            return _open[key]
        _open[key] = fd
        return fd


def waiting_pages(database: str) -> int | None:
    """Pages in the WAL of ``database`` not yet copied into it: 0 without a WAL index yet, None for a WAL
    index of a format other than the one described above (or one that is not a regular file)."""
    fd = _descriptor(database + "-shm")
    if fd is None:
        return 0
    if fd < 0:
        return None  # not a file: not a WAL index this code reads
    header = os.pread(fd, 100, 0)
    if len(header) < 100:
        return 0  # (being made)
    version = int.from_bytes(header[0:4], sys.byteorder)
    if version != WAL_INDEX_VERSION:
        return 0 if version == 0 else None  # (0: not written yet)
    return int.from_bytes(header[16:20], sys.byteorder) - int.from_bytes(header[96:100], sys.byteorder)


def open_descriptors() -> int:
    """How many ``-shm`` files are open (for the tests)."""
    return len(_open)

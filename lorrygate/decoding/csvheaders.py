"""
The CSV headers devices announce once, remembered per address in ``<data_dir>/csv-headers.sqlite``.

Kotori's HTTP API lets a client send its column names once (``## temperature,humidity``, or a data
logger's own header line) and only data lines afterwards; it keeps the names per channel. The ``csv``
decoder does the same through a `HeaderStore`: an announcement is written (and synced) before the
message that carried it is acknowledged, so a header announced alone is not lost to a restart, and the
gateway and ``lorrygate dead-letters replay`` (another process) read the same file. Nothing is cached:
each data-only message reads its address's header (a primary-key lookup), so an announcement made
through one channel or process holds at once for the others. The reads and writes run on a thread of
the store's own, one at a time in the order they were asked (an announcement is written before the data
lines after it are read), never on the reactor's.

A replayed dead letter that announced a header does not replace a header announced later: each header
keeps the receive time of the message that announced it.
"""

import json
import os
import sqlite3
import threading

import attrs
from twisted.internet import threads
from twisted.internet.interfaces import IReactorThreads
from twisted.python.threadpool import ThreadPool

#: the file in the data directory
FILE = "csv-headers.sqlite"
#: the most addresses a store remembers headers for, and the most columns of one header: a hostile sender
#: of announcements to ever new addresses must not fill the disk
MAX_ADDRESSES = 100_000
MAX_COLUMNS = 1_000


class StoreFull(Exception):
    """The store holds `MAX_ADDRESSES` headers and the address is not among them."""


@attrs.frozen
class Announced:
    """A header as it was announced for an address."""

    columns: tuple
    delimiter: str
    #: the receive time (seconds since the epoch) of the message that announced it
    received: float
    topic: str


def address_key(address) -> str:
    """The key of an address: its realm, network, gateway, node and labels (a declarative strategy's)."""
    return json.dumps([address.realm, address.network, address.gateway, address.node, list(address.labels)])


def copy_headers(data_dir: str, target_dir: str) -> None:
    """Copy the headers remembered in ``data_dir`` into ``target_dir`` (a dry run's own directory: it reads what
    the gateway was told, and an announcement among its messages changes nothing of the gateway's)."""
    path = os.path.join(data_dir, FILE)
    if not os.path.exists(path):
        return
    from lorrygate.storage.sqlite_schema import read_only

    source = read_only(path)
    target = sqlite3.connect(os.path.join(target_dir, FILE))
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


class HeaderStore:
    """The remembered headers of one data directory; the file is opened on first use (so a router made only
    to describe a topic creates nothing) and closed by `stop`."""

    def __init__(self, data_dir: str, reactor=None):
        self.path = os.path.join(data_dir, FILE)
        self._conn: sqlite3.Connection | None = None
        #: the reactor whose threads run the store's reads and writes; None: they run when asked (a dry run, a
        #: description, a test's clock)
        self._reactor = reactor if IReactorThreads.providedBy(reactor) else None
        self._pool: ThreadPool | None = None
        #: address key -> (columns, delimiter) this store wrote or found last: a logger's header that comes with
        #: every upload (or before every line of a file, ``header = true``) costs no query after the first
        self._known: dict = {}

    def ask(self, method, *args):
        """``method(*args)`` (`get`, `remember`) on the store's thread, after what was asked before, as a
        Deferred; or its result at once where the store has no reactor's threads."""
        if self._reactor is None:
            return method(*args)
        if self._pool is None:
            self._pool = _OneThread(minthreads=1, maxthreads=1, name="lorrygate-csv-headers")
            self._pool.start()
        return threads.deferToThreadPool(self._reactor, self._pool, method, *args)

    def _connection(self, create: bool = True) -> sqlite3.Connection | None:
        """The open file; None where it does not exist and ``create`` is false (a read makes no file)."""
        if self._conn is None:
            if not create and not os.path.exists(self.path):
                return None
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # an announcement is synced before its message is acked
            conn.execute("CREATE TABLE IF NOT EXISTS headers (address TEXT PRIMARY KEY, columns TEXT NOT NULL, "
                         "delimiter TEXT NOT NULL, received REAL NOT NULL, topic TEXT NOT NULL)")
            self._conn = conn
        return self._conn

    def get(self, address) -> Announced | None:
        """The header announced for ``address``, or None."""
        conn = self._connection(create=False)
        if conn is None:
            return None
        row = conn.execute(
            "SELECT columns, delimiter, received, topic FROM headers WHERE address = ?", (address_key(address),)
        ).fetchone()
        if row is None:
            return None
        return Announced(tuple(json.loads(row[0])), row[1], row[2], row[3])

    def remember(self, address, announced: Announced) -> bool:
        """Keep ``announced`` for ``address`` unless a later announcement is kept; True when it is now the
        address's header. Raises `StoreFull`, or `sqlite3.Error` (a full disk, a read-only directory)."""
        key = address_key(address)
        columns = json.dumps(list(announced.columns))
        if self._known.get(key) == (columns, announced.delimiter):
            return True
        conn = self._connection()
        assert conn is not None
        row = conn.execute("SELECT columns, delimiter, received FROM headers WHERE address = ?", (key,)).fetchone()
        if row is not None:
            if announced.received < row[2]:
                return False
            if (row[0], row[1]) == (columns, announced.delimiter):
                self._remember_known(key, columns, announced.delimiter)
                return True  # (a logger that sends its header with every upload: no write)
        elif conn.execute("SELECT count(*) FROM headers").fetchone()[0] >= MAX_ADDRESSES:
            raise StoreFull(f"{self.path} already remembers the headers of {MAX_ADDRESSES:,} addresses")
        conn.execute(
            "INSERT INTO headers (address, columns, delimiter, received, topic) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (address) DO UPDATE SET columns = excluded.columns, delimiter = excluded.delimiter, "
            "received = excluded.received, topic = excluded.topic",
            (key, columns, announced.delimiter, announced.received, announced.topic),
        )
        self._remember_known(key, columns, announced.delimiter)
        return True

    def _remember_known(self, key: str, columns: str, delimiter: str) -> None:
        if len(self._known) >= 10_000:
            self._known.clear()
        self._known[key] = (columns, delimiter)

    def all(self) -> list:
        """``(address key, Announced)`` of every remembered header, by address."""
        conn = self._connection(create=False)
        if conn is None:
            return []
        rows = conn.execute(
            "SELECT address, columns, delimiter, received, topic FROM headers ORDER BY address").fetchall()
        return [(key, Announced(tuple(json.loads(columns)), delimiter, received, topic))
                for key, columns, delimiter, received, topic in rows]

    def stop(self) -> None:
        """Let the store's thread finish what it was asked, then close the file."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _OneThread(ThreadPool):
    """A daemon thread: a store's write still running when the process exits does not hold it."""

    def threadFactory(self, *args, **kwargs):
        return threading.Thread(*args, daemon=True, **kwargs)

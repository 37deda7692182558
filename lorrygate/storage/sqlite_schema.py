"""
What tables and columns an SQLite database has, read by the storage's writer
thread or, for a gateway that starts, ahead of it (`read_ahead`).

With 10,000 tables the read takes ~0.15 s: SQLite parses the schema at the
first statement (~50 ms) and lists the columns of every table (~80 ms). A
gateway's first write waits for it; the broker meanwhile holds back all but
its in-flight window. `read_ahead` starts that read in a thread of its own as
soon as the configuration is loaded, while the gateway still imports the
rest of itself (~80 ms), and the storage's start adopts the connection and
what it read (`take`). Both parts run inside SQLite without the GIL; the
columns come back as one JSON text, one call, so that reading beside the
imports (or beside the reactor thread) does not give up and wait for the GIL
once per column.

This module imports no Twisted: `lorrygate.cli` calls `read_ahead` before
the reactor is imported.
"""

import json
import os
import sqlite3
import threading

#: prepared statements kept per connection, one INSERT per table shape: with 10,000 tables each
#: commit prepared thousands again (measured in `make bench`, 10,000 existing tables: 17.9k ->
#: 21.3k msg/s with 2 KiB pages, for ~50 MB of memory; beyond this many tables they are prepared again)
STATEMENTS = 12_000

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

#: every table's columns as one JSON object (one step of one statement)
_COLUMNS_JSON = (
    "SELECT json_group_object(name, json(columns)) FROM (SELECT m.name AS name, json_group_array(p.name) AS columns "
    "FROM sqlite_master AS m, pragma_table_info(m.name) AS p WHERE m.type = 'table' GROUP BY m.name)"
)
#: the same as rows, for an SQLite without its JSON functions (before 3.38 they could be left out)
_COLUMNS_ROWS = "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p WHERE m.type = 'table'"


def fold(name: str) -> str:
    """How SQLite compares names: ASCII letters without case."""
    # for ASCII text ``lower`` is that fold, and 7x faster than ``translate`` (40 against 285 ns)
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


def connect(path: str) -> sqlite3.Connection:
    """A connection as the storage uses it: autocommit, for its writer thread, statements kept."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENTS)


def read_only(path: str, timeout: float = 10.0) -> sqlite3.Connection:
    """A read-only connection to the database at ``path``, by a URI of its path: ``file:PATH?mode=ro`` cut a
    path with ``#`` or ``?`` at that character, and opened (read-write, so made) another file."""
    from urllib.request import pathname2url

    return sqlite3.connect(f"file:{pathname2url(os.path.abspath(path))}?mode=ro", uri=True, timeout=timeout,
                           check_same_thread=False)


def identity(path: str) -> tuple:
    """(device, inode) of the file at ``path``: whether a connection still has that file open."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def read_columns(conn) -> dict:
    """{table: {folded column name: column name}} of every table in the database (`spellings`)."""
    try:
        (text,), = conn.execute(_COLUMNS_JSON).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such function" not in str(exc):
            raise
        columns: dict = {}
        for table, column in conn.execute(_COLUMNS_ROWS):
            columns.setdefault(table, {}).update(spellings((column,)))
        return columns
    return {table: spellings(names) for table, names in json.loads(text or "{}").items()}


def spellings(names) -> dict:
    """``{folded name: name}`` of a table's columns: SQLite finds a column by any case of its name, and
    the storage gives a field the column of its own spelling (`lorrygate.storage.layout.column_names`). A
    name that is its own fold is one object for both (no more memory for 10,000 tables than the folds)."""
    return {name if (folded := fold(name)) == name else folded: name for name in names}


def objects(conn, prefix: str = "") -> dict:
    """``{folded name: name as made}`` of the tables and views of a database (`own_name`), those whose name
    starts with ``prefix`` (in any case) where it is given."""
    query = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
    if not prefix:
        return spellings(name for name, in conn.execute(query))
    # (LIKE compares ASCII letters without case, as SQLite's names are)
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return spellings(name for name, in conn.execute(query + " AND name LIKE ? ESCAPE '\\'", (pattern,)))


def own_name(name: str, objects: dict) -> str:
    """The table (or view) of ``name`` in a database of ``objects`` (`objects`, and the names a storage claimed):
    ``name`` itself, unless a table of another case of it is there, then the first of ``name_2``, ``name_3``, ...
    that is there in that spelling or whose fold nothing has. SQLite compares names without case: rows of a
    drop-in strategy's ``S__T`` and ``s__t`` went into one table, as if of one address. The same rule as a
    field's column (`lorrygate.storage.layout.column_names`), so a table of the name ``s__t_2`` shares it."""
    have = objects.get(fold(name))
    if have is None or have == name:
        return name
    number = 2
    while True:
        candidate = f"{name}_{number}"
        have = objects.get(fold(candidate))
        if have is None or have == candidate:
            return candidate
        number += 1


def own_in(conn, name: str) -> tuple:
    """(the table of ``name`` in the database of ``conn`` (`own_name`), whether it is there)."""
    there = objects(conn, name)
    own = own_name(name, there)
    return own, there.get(fold(own)) == own


def own_table(path: str, name: str) -> str | None:
    """The table of ``name`` in the database at ``path`` (`own_name`), which a query of ``name`` would not read
    where another case of it is a table; None where the file cannot be read."""
    if not os.path.exists(path):
        return None
    try:
        conn = read_only(path)
        try:
            return own_in(conn, name)[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


class _Reading:
    """One read ahead: its thread, and the connection, file identity and columns once it is done."""

    def __init__(self, path: str):
        self.path = path
        self.result: tuple | None = None
        self.thread = threading.Thread(target=self._read, name="lorrygate-sqlite-read-ahead", daemon=True)

    def _read(self) -> None:
        conn = None
        try:
            before = identity(self.path)
            conn = connect(self.path)
            columns = read_columns(conn)
            if identity(self.path) == before:
                self.result = (conn, before, columns)
                return
        except Exception:
            pass  # the storage's own start opens the file again, and says what is wrong with it
        if conn is not None:
            conn.close()


_ahead: dict = {}
_lock = threading.Lock()


def read_ahead(path: str) -> None:
    """Start reading an existing database's tables and columns in a thread (only reads: the file
    is neither made nor changed here, and a read that fails is left to the storage's start)."""
    try:
        if os.path.getsize(path) == 0:
            return
    except OSError:
        return
    reading = _Reading(path)
    with _lock:
        if os.path.abspath(path) in _ahead:
            return
        _ahead[os.path.abspath(path)] = reading
    reading.thread.start()


def take(path: str) -> tuple | None:
    """(connection, file identity, columns) read ahead for ``path``, once, after waiting for the
    read; None when nothing was read ahead, the read failed, or the file is another one now."""
    with _lock:
        reading = _ahead.pop(os.path.abspath(path), None)
    if reading is None:
        return None
    reading.thread.join()
    if reading.result is None:
        return None
    conn, file, columns = reading.result
    try:
        same = identity(path) == file
    except OSError:
        same = False
    if not same:
        conn.close()
        return None
    return conn, file, columns

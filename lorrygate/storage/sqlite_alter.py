"""
Columns added to many SQLite tables in one write.

SQLite's ``ALTER TABLE ... ADD COLUMN`` edits the table's ``CREATE TABLE``
text in ``sqlite_master`` and then parses the CREATE statement of every
table in the database again. With per-address tables that is quadratic:
measured with SQLite 3.40, one ADD COLUMN takes 0.23 ms beside 100 tables,
2.1 ms beside 1,000, 16.5 ms beside 5,000 and 54 ms beside 10,000. A fleet of
10,000 nodes whose firmware sends one new field needs 10,000 of them (~9
minutes, in one transaction, while nothing is stored), and a DDL template
that creates a table with fewer columns than the rows have needs one per
field and table.

`add_columns` makes the same edit for all the columns a write adds, with
one schema re-read for all of them:

1. the first column goes through SQLite's own ALTER TABLE, which also
   raises the file format where needed;
2. for each other table, SQLite itself makes the new CREATE text: the
   table's CREATE statement and the ADD COLUMNs run in an empty in-memory
   database (which also checks them as ALTER TABLE would);
3. the texts go into ``sqlite_master`` with ``PRAGMA writable_schema`` in
   one UPDATE, ``writable_schema = RESET`` makes this connection read it
   again, once, and ``schema_version`` is raised by one, as ALTER TABLE
   raises it (other connections read the schema again). Raised after the
   RESET, which forgets that the transaction changed the schema, so that a
   rollback makes the connection read it again too.

This is the procedure of SQLite's documentation for schema changes that
leave the stored rows as they are ("Making Other Kinds Of Table Schema
Changes", https://sqlite.org/lang_altertable.html); a column added at the
end, nullable, without default or constraint, is one: rows written before
read NULL there, as after ALTER TABLE. All of it runs inside the write's
transaction, and a rollback (of the transaction or of an entry's savepoint)
takes it back with the rows.

A table whose CREATE text the in-memory database refuses (a collation it
does not know, say), and every column where SQLite refuses writing
``sqlite_master`` (a build with ``SQLITE_DBCONFIG_DEFENSIVE``), go through
ALTER TABLE one by one, as before.
"""

import sqlite3

from lorrygate.topology.naming import quote

#: column additions in one write from which on they go in at once; fewer go through ALTER TABLE one by
#: one (at most three schema re-reads, which cost little unless the tables are many)
AT_ONCE = 4
#: the primary result codes of SQLite refusing to write ``sqlite_master``: ERROR ("table sqlite_master may
#: not be modified", a defensive build) and AUTH (an authorizer)
_REFUSED = frozenset({1, 23})
#: the SQL function through which the UPDATE of ``sqlite_master`` reads the new texts (while it runs only)
_FUNCTION = "lorrygate_altered_sql"


def alter(conn, table: str, definition: str) -> None:
    conn.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {definition}")


class ColumnAdder:
    """Adds columns (``"name" TYPE`` definitions) to the tables of one connection, many at once."""

    def __init__(self) -> None:
        #: False once SQLite refused writing ``sqlite_master``: ALTER TABLE only, from then on
        self.writable = True
        self._scratch: sqlite3.Connection | None = None
        #: (what follows a CREATE text's table name, definitions) -> the same with the columns added (None:
        #: the in-memory database refused it)
        self._edits: dict = {}

    def close(self) -> None:
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            scratch.close()

    def add_columns(self, conn, adding: list) -> None:
        """Add ``adding``, (table, definition) pairs in order, inside the connection's transaction."""
        if len(adding) < AT_ONCE or not self.writable:
            for table, definition in adding:
                alter(conn, table, definition)
            return
        alter(conn, *adding[0])
        by_table: dict = {}
        for table, definition in adding[1:]:
            by_table.setdefault(table, []).append(definition)
        # every table's text (10,000 tables: a few ms, once a write), without SQLite's JSON functions, which a
        # build before 3.38 may lack (`lorrygate.storage.sqlite_schema` reads columns without them too)
        texts = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        altered = {}
        for table, definitions in by_table.items():
            text = self._altered(table, texts.get(table), definitions)
            if text is None:
                for definition in definitions:  # ALTER TABLE says what is wrong, or does it
                    alter(conn, table, definition)
            else:
                altered[table] = text
        if altered and not self._write(conn, altered):
            for table in altered:
                for definition in by_table[table]:
                    alter(conn, table, definition)

    def _altered(self, table: str, text: str | None, definitions: list) -> str | None:
        """The CREATE text of ``table`` with ``definitions`` added, as SQLite's ALTER TABLE writes it.

        The edit depends on what follows the table's name only (SQLite inserts the columns before the
        table's constraints): the tables of a fleet share that part, and the in-memory database runs
        once for each of them (each ADD COLUMN there costs ~45 us, measured)."""
        if text is None:
            return None
        prefix = f"CREATE TABLE {quote(table)}"
        key = None
        if text.startswith(prefix):
            key = (text[len(prefix):], tuple(definitions))
            if key in self._edits:
                rest = self._edits[key]
                return None if rest is None else prefix + rest
        if self._scratch is None:
            self._scratch = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        scratch = self._scratch
        try:
            scratch.execute(text)
        except sqlite3.Error:
            altered = None
        else:
            try:
                for definition in definitions:
                    alter(scratch, table, definition)
                altered = scratch.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                          (table,)).fetchone()[0]
            except sqlite3.Error:
                altered = None
            finally:
                scratch.execute(f"DROP TABLE {quote(table)}")
        if key is not None and (altered is None or altered.startswith(prefix)):
            if len(self._edits) > 1_000:
                self._edits.clear()
            self._edits[key] = None if altered is None else altered[len(prefix):]
        return altered

    def _write(self, conn, altered: dict) -> bool:
        """Put the texts into ``sqlite_master`` and have the schema read again; False if SQLite refused."""
        (version,), = conn.execute("PRAGMA schema_version").fetchall()
        conn.create_function(_FUNCTION, 1, altered.get, deterministic=True)
        conn.execute("PRAGMA writable_schema = ON")
        try:
            conn.execute(f"UPDATE sqlite_master SET sql = {_FUNCTION}(name) "
                         f"WHERE type = 'table' AND {_FUNCTION}(name) IS NOT NULL")
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 1) & 0xFF not in _REFUSED:
                raise  # the database is unwell (I/O, disk full): the write fails and is retried
            # SQLITE_DBCONFIG_DEFENSIVE (or an authorizer) forbids it: the statement changed nothing
            self.writable = False
            return False
        finally:
            conn.execute("PRAGMA writable_schema = RESET")  # off, and this connection reads the schema again
            conn.create_function(_FUNCTION, 1, None)
        # after the RESET, which forgets that the transaction changed the schema: a rollback (of the transaction,
        # or to an entry's savepoint) then kept the columns in this connection's schema, which they are not in
        # the file, and each entry written again after it failed with "duplicate column name" (a dead letter)
        conn.execute(f"PRAGMA schema_version = {version + 1}")
        return True

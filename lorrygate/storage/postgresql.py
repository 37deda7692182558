"""
PostgreSQL storage, with psycopg 3 on one named thread.

Layout: schema ``<schema>`` (created if missing), table ``<table>``, a
``time TIMESTAMPTZ`` column and one column per field (see
`lorrygate.storage.layout`): BOOLEAN, BIGINT, DOUBLE PRECISION, TEXT or JSONB
by the first value; a new field adds a column (``ADD COLUMN IF NOT EXISTS``).
Rows go in with ``COPY`` (a multi-row ``INSERT ... ON CONFLICT DO NOTHING``
when idempotent rows are on). A value that does not fit its column (text in a
BIGINT column) makes the database refuse it: that message becomes a dead
letter with PostgreSQL's reason, and the rest of the batch is committed.
PostgreSQL keeps microseconds; the nanoseconds of a time are cut.
"""

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from lorrygate.decoding.timestamps import IsoTime
from lorrygate.sources import headers as message_headers
from lorrygate.storage.layout import (
    ID_COLUMN,
    INT64,
    MERGED_ROW,
    POSTGRESQL_COLUMN_LIMIT,
    kind_of,
    merge_clause,
    reserved,
    shorten,
    to_json,
)
from lorrygate.storage.row_size import SAFE_FIELDS
from lorrygate.storage.sqlstorage import SqlStorage
from lorrygate.topology.naming import quote

_TYPES = {"bool": "BOOLEAN", "int": "BIGINT", "float": "DOUBLE PRECISION", "text": "TEXT", "json": "JSONB",
          "bytes": "BYTEA"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: rows a table up to which tables of one shape go in pipelined INSERTs instead of a shared COPY
#: (`PostgresDialect._insert_pipelined`). Measured, 8,000 rows into tables out of 10,000 (an index on time),
#: ms a write, pipelined / shared: a row a table 338 / 481 (5,000 rows: 136 / 247), 2 rows a table
#: 147 / 216, 4 rows 91 / 117, 8 rows 69 / 70, 16 rows 50 / 47
PIPELINE_ROWS = 8
#: tables, and parameters, at most in one statement of pipelined INSERTs (PostgreSQL takes 65,535 parameters)
WITH_TABLES = 100
WITH_PARAMETERS = 30_000


def _json_text():
    """A psycopg dumper of objects and lists as JSON text (`layout.to_json`), as a table's own COPY writes
    them (`PostgresDialect._text_row`); made when first connecting (psycopg is an optional extra)."""
    from psycopg.adapt import Dumper

    class JsonText(Dumper):
        def dump(self, obj) -> bytes:
            return to_json(obj).encode()

    return JsonText


#: libpq's TCP keepalives and user timeout for every connection lorrygate makes: a server whose host died, or a
#: network that drops the connection's packets (a NAT or a firewall that forgot it), left a write waiting for an
#: answer for good (keepalives are off in the kernel by default; data sent unanswered is given up on after ~15
#: minutes): the storage said nothing, its rows pending, no spool, the sources paused and the broker's queue
#: filling. Now such a connection fails within about 25 s of waiting (30 s of sending unanswered), the batch
#: is spooled, and the storage reconnects. A URL that sets one of these keeps its own.
LIVENESS = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
            "tcp_user_timeout": "30000"}


#: seconds a cancel request may take to reach the server (`PostgresDialect.interrupt`)
CANCEL_TIMEOUT = 5.0


def liveness(url: str) -> dict:
    """`LIVENESS` for ``psycopg.connect(url, ...)``, without what ``url`` sets itself (libpq ignores them on a
    Unix socket)."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    return {key: value for key, value in LIVENESS.items() if key not in given}


def schema_name(table) -> str:
    """The PostgreSQL schema of a `TableName`: ``public`` for none; names that
    PostgreSQL reserves (``pg_...``, e.g. from a realm ``pg-lab``) get the
    prefix ``lg_``, since CREATE SCHEMA refuses them."""
    schema = table.schema or "public"
    # (shortened as every name lorrygate makes: "lg_" and 63 bytes cut by PostgreSQL merged two realms' schemas)
    if schema.lower().startswith("pg_"):
        return shorten("lg_" + schema, PostgresDialect.identifier_limit)
    return shorten(schema, PostgresDialect.identifier_limit)


def table_part(table) -> str:
    """The PostgreSQL name of a `TableName`'s table. A strategy of one's own may give a name (or a schema,
    `schema_name`) of more than 63 bytes, which PostgreSQL cut: two tables whose names shared their first 63
    bytes were one, and the storage, which looked for the whole name, did not know the table it had made.
    Such a name keeps its first bytes and a hash of the whole (`shorten`), as the built-in strategies' names.
    A name of lorrygate's own tables in ``public`` (`lorrygate.storage.layout.OWN_TABLES`: a strategy's ``schema
    = public``) gets the prefix ``lg_``."""
    name = table.table
    if reserved(name) and schema_name(table) == "public":
        name = "lg_" + name
    return shorten(name, PostgresDialect.identifier_limit)


def physical_name(table) -> str:
    """``schema.table`` as the database names a `TableName`'s table, unquoted (the storage's key of a table)."""
    return f"{schema_name(table)}.{table_part(table)}"


def qualified(table) -> str:
    return f"{quote(schema_name(table))}.{quote(table_part(table))}"


#: the comment of the per-network layout's views (`PostgresDialect.shared_views`)
VIEW_COMMENT = "lorrygate: a view of the per-network layout, the rows of one address of a shared table"


def view_statement(view, shared, columns: list, literal=None) -> str:
    """Per-network: the view that shows a per-address table's rows of a shared table with the columns the
    per-address table would have (all the shared table's but the address columns, in its order: a new
    column makes the view again with it at the end, which ``CREATE OR REPLACE VIEW`` takes). ``literal``
    makes the address a string literal (the connection's own quoting; a standard literal without)."""
    if literal is None:
        from lorrygate.storage.shared_layout import literal

    names = ", ".join(quote(column) for column in columns)
    return (f"CREATE OR REPLACE VIEW {qualified(view)} AS SELECT {names} FROM {qualified(shared)} "
            f'WHERE "address" = {literal(view.table)}')


def _shown(text):
    """Text of a dead letter (a topic, an error) with the character NUL, which PostgreSQL stores in no text, shown as
    ``\\0``: an HTTP path (``%00``), a Redis field or a Kafka key can carry it into a topic, and the refused row
    failed its whole batch at every retry from the spool. (The payload is bytes, kept as it came.)"""
    return text.replace("\0", "\\0") if text and "\0" in text else text


def _time(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1000)


@attrs.define(eq=False)
class PostgresDialect:
    url: str
    name: str = "postgresql"
    #: the most columns a table can have
    column_limit: int = POSTGRESQL_COLUMN_LIMIT
    #: a row of more fields than this may be more bytes than a row can have: `SqlStorage._fit_row`
    row_fields: int = SAFE_FIELDS
    #: row times as ISO 8601 text, which COPY parses (a datetime per row cost twice the Python time:
    #: 0.70 s against 0.38 s per 200,000 rows, measured)
    _iso: Any = attrs.Factory(lambda: IsoTime().__call__)  # (a bound method: see SQLiteDialect._iso)
    #: COPY and INSERT statements by (table, columns, idempotent, merge)
    _statements: dict = attrs.Factory(dict)
    #: temporary tables for rows of many tables of one shape, by (columns, types), in this connection
    _stages: dict = attrs.Factory(dict)
    #: shapes whose temporary table the open transaction made, and how many were made in this session
    _fresh: list = attrs.Factory(list)
    _made: int = 0
    #: temporary tables of earlier transactions the open one dropped, (shape, name): a rollback brings them back
    _dropped: list = attrs.Factory(list)
    #: temporary tables written in the open transaction
    _used: set = attrs.Factory(set)
    #: temporary tables kept at most per connection
    max_stages: int = 64
    #: schemas this connection made or found, committed (a table's ``CREATE SCHEMA IF NOT EXISTS`` cost
    #: 0.5-0.9 ms, measured), and those the open transaction made. A rollback forgets them all: a failed
    #: write (a schema dropped meanwhile, say) makes them again, if not exists
    _schemas: set = attrs.Factory(set)
    _new_schemas: set = attrs.Factory(set)
    #: the connection of its own that makes part of a batch's new tables beside the rows' transaction
    #: (`create_tables_beside`), opened when first needed
    _beside: Any = None
    #: a cancel request on its way (`interrupt`)
    _cancelling: bool = False
    #: rows a table up to which tables of one shape go in pipelined INSERTs (`PIPELINE_ROWS`)
    pipeline_rows: int = PIPELINE_ROWS
    #: PostgreSQL cuts names at 63 bytes (NAMEDATALEN - 1)
    identifier_limit = 63
    #: names no field's column may have: the time, the id, and PostgreSQL's system columns, which every table has
    #: (a field ``xmin``, an accelerometer's range say, made each of its messages a dead letter: "column name
    #: "xmin" conflicts with a system column name"); such a field is ``xmin_2``
    reserved = ("time", ID_COLUMN, "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")
    #: per-network layout: the views are made beside the writes, in transactions of their own
    #: (`lorrygate.storage.view_rounds`), not in the rows' transaction
    views_beside = True

    @staticmethod
    def fold(name: str) -> str:
        """How PostgreSQL compares quoted names: exactly (they are at most 63 bytes here)."""
        return name

    def describe(self) -> str:
        from lorrygate.config.values import mask_url

        return f"PostgreSQL at {mask_url(self.url)}"

    def connect(self):
        import psycopg

        self._stages.clear()
        self._fresh.clear()
        self._dropped.clear()
        self._used.clear()
        self._schemas.clear()  # (another server, perhaps: a failover)
        self._new_schemas.clear()
        self._close_beside()
        conn = psycopg.connect(self.url, autocommit=False, connect_timeout=10, **liveness(self.url))
        dumper = _json_text()
        for kind in (dict, list, tuple):  # a shared COPY's values as they come (see `row`)
            conn.adapters.register_dumper(kind, dumper)
        return conn

    def prepare(self, conn, dead_letter_table: str) -> None:
        with conn.cursor() as cursor:
            cursor.execute(
                f"""CREATE TABLE IF NOT EXISTS public.{quote(dead_letter_table)} (
                    id BIGSERIAL PRIMARY KEY, received TIMESTAMPTZ NOT NULL, channel TEXT NOT NULL,
                    topic TEXT NOT NULL, qos SMALLINT, retain BOOLEAN, payload BYTEA, stage TEXT NOT NULL,
                    error TEXT NOT NULL, decoder TEXT)"""
            )
            for column, kind in (("replayed", "TIMESTAMPTZ"), ("content_type", "TEXT"), ("headers", "TEXT"),
                                 ("sent", "TIMESTAMPTZ")):
                cursor.execute(f"ALTER TABLE public.{quote(dead_letter_table)} ADD COLUMN IF NOT EXISTS {column} {kind}")
        conn.commit()

    def mark_replayed(self, conn, table: str, ids: list) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(f"UPDATE public.{quote(table)} SET replayed = now() WHERE id = %s", [(i,) for i in ids])

    def fail_again(self, conn, table: str, refused: list) -> None:
        """Replayed dead letters whose rows were refused again: ``(id, DeadLetter)``, the new stage and reason."""
        with conn.cursor() as cursor:
            cursor.executemany(f"UPDATE public.{quote(table)} SET stage = %s, error = %s, replayed = NULL WHERE id = %s",
                               [(d.stage, _shown(d.error), i) for i, d in refused])

    def read_positions(self, conn, table: str) -> list:
        for attempt in range(3):
            try:
                with conn.cursor() as cursor:
                    cursor.execute(f"CREATE TABLE IF NOT EXISTS public.{quote(table)} (stream TEXT PRIMARY KEY, "
                                   "ranges TEXT NOT NULL, updated TIMESTAMPTZ NOT NULL)")
                    cursor.execute(f"SELECT stream, ranges FROM public.{quote(table)}")
                    rows = cursor.fetchall()
                conn.commit()
                return rows
            except Exception as exc:
                conn.rollback()
                if attempt == 2 or not self.transient(exc):
                    raise
        raise AssertionError("unreachable")

    def write_positions(self, conn, table: str, rows: list) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO public.{quote(table)} (stream, ranges, updated) VALUES (%s, %s, now()) "
                "ON CONFLICT (stream) DO UPDATE SET ranges = excluded.ranges, updated = excluded.updated", rows)

    def existing_columns(self, conn) -> dict:
        columns = self._read_columns(conn, "table_schema NOT IN ('pg_catalog', 'information_schema')")
        conn.commit()
        return columns

    def physical(self, table) -> str:
        return physical_name(table)

    def columns_of(self, conn, table) -> dict:
        return self._read_columns(conn, "table_schema = %s AND table_name = %s",
                                  (schema_name(table), table_part(table))).get(self.physical(table), {})

    @staticmethod
    def _read_columns(conn, where: str, params: tuple = ()) -> dict:
        """The columns of the tables ``where`` selects in ``information_schema.columns``: ``{physical: {column:
        type}}``, the physical name as `physical` writes it."""
        from psycopg.types.array import ListDumper

        columns: dict = {}
        with conn.cursor() as cursor:
            cursor.adapters.register_dumper(list, ListDumper)  # (the connection's writes a list as JSON: see `connect`)
            cursor.execute("SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                           f"WHERE {where}", params)
            for schema, table, column, kind in cursor.fetchall():
                columns.setdefault(f"{schema}.{table}", {})[column] = kind
        return columns

    def begin(self, conn) -> None:
        pass  # psycopg opens the transaction with the first statement

    def commit(self, conn) -> None:
        conn.commit()
        self._schemas |= self._new_schemas
        self._new_schemas.clear()
        self._fresh.clear()
        self._dropped.clear()
        self._used.clear()

    def rollback(self, conn) -> None:
        for key in self._fresh:  # made in the transaction that is rolled back
            self._stages.pop(key, None)
        for key, stage in self._dropped:  # its DROP TABLE is rolled back too: the table is there again
            self._stages.setdefault(key, stage)
        self._fresh.clear()
        self._dropped.clear()
        self._used.clear()
        self._schemas.clear()
        self._new_schemas.clear()
        if not conn.closed:
            conn.rollback()

    def execute(self, conn, sql: str) -> None:
        conn.execute(sql)

    def run_ddl(self, conn, statements: list) -> None:
        for statement in statements:
            conn.execute(statement)

    def ensure_schema(self, conn, table) -> None:
        schema = schema_name(table)
        if schema not in self._schemas and schema not in self._new_schemas:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            self._new_schemas.add(schema)

    def create_table(self, conn, table, idempotent: bool, fields: list) -> None:
        """One CREATE TABLE with the first row's columns (rather than one ALTER TABLE each), and its index on
        time in the same round trip (two statements in one string, which psycopg sends as a simple query
        when there are no parameters). Measured, 100 new tables a transaction, alternating: 3.2-5.2 ms a
        table with a CREATE SCHEMA each and a round trip a statement, 2.4-3.9 ms now; the client's CPU
        0.5-0.8 -> 0.2-0.44 ms a table."""
        self.ensure_schema(conn, table)
        conn.execute(self._create_statement(table, idempotent, fields))

    def _create_statement(self, table, idempotent: bool, fields: list) -> str:
        columns = ['"time" TIMESTAMPTZ NOT NULL'] + [f"{quote(name)} {_TYPES[kind_of(value)]}" for name, value in fields]
        if idempotent:
            columns += [f"{ID_COLUMN} TEXT NOT NULL", f'PRIMARY KEY ("time", {ID_COLUMN})']
        statement = f"CREATE TABLE IF NOT EXISTS {qualified(table)} ({', '.join(columns)})"
        if not idempotent:  # the primary key of idempotent tables starts with time already
            index = shorten(f"{table.table}_time_idx", self.identifier_limit)
            statement += f'; CREATE INDEX IF NOT EXISTS {quote(index)} ON {qualified(table)} ("time")'
        return statement

    def merge_keys(self, conn, tables: list) -> set:
        """Of ``tables``, those with a unique key on exactly (time, lorrygate_id) (``merge``): one query."""
        from psycopg.types.array import ListDumper

        pairs = sorted({(schema_name(table), table_part(table)) for table in tables})
        with conn.cursor() as cursor:
            cursor.adapters.register_dumper(list, ListDumper)  # (the connection's writes a list as JSON: `connect`)
            cursor.execute(
                "SELECT n.nspname, c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 2 "
                "AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                "AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute AS a "
                "WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = %s::text[]",
                ([schema for schema, _ in pairs], [name for _, name in pairs], sorted([ID_COLUMN, "time"])))
            return {f"{schema}.{name}" for schema, name in cursor.fetchall()}

    def key_for_merge(self, conn, table) -> None:
        index = shorten(f"{table.table}_merge_key", self.identifier_limit)
        conn.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS {quote(index)} ON {qualified(table)} ("time", {ID_COLUMN})')

    def create_tables(self, conn, tables: list, idempotent: bool) -> dict:
        """Make ``[(table, fields)]`` in the open transaction (`create_table` each), and read their columns with
        one query (a query a table took 0.7-1.2 ms, measured): ``{physical: {column: type}}`` (`columns_of`)."""
        for table, fields in tables:
            self.create_table(conn, table, idempotent, fields)
        return self._columns_of_tables(conn, tables) if tables else {}

    def _columns_of_tables(self, conn, tables: list) -> dict:
        pairs = sorted({(schema_name(table), table_part(table)) for table, _ in tables})
        return self._read_columns(conn, "(table_schema, table_name) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                                  ([schema for schema, _ in pairs], [name for _, name in pairs]))

    def beside_schemas(self, tables: list) -> list:
        """Of ``[(table, fields)]``, those `create_tables_beside` may make: not in a schema that the open
        transaction made (uncommitted, a connection of its own would wait for it, and this one for that)."""
        return [item for item in tables if schema_name(item[0]) not in self._new_schemas]  # (the items themselves)

    def create_tables_beside(self, tables: list, idempotent: bool, ready) -> tuple:
        """Make ``[(table, fields)]`` on a connection of its own, each table committed by itself (made also
        when the rows' transaction rolls back: an empty table, as a concurrent gateway could have made it),
        while the writer's connection makes a batch's other new tables: PostgreSQL makes a table's catalog
        entries and files in its own time (1-8 ms, measured), so two connections make them in about half
        the time (200 tables, measured: 1.0-2.1 -> 0.4-1.7 ms a table). Runs in a thread of its own; sets
        ``ready`` once their schemas are made (the writer's connection then finds them: it would otherwise
        make one too, and the two would wait for each other). Returns the columns of the tables made or
        found, ``{physical: {column: type}}`` (`columns_of`), and why it failed ("" if it did not): what failed
        is left to the writer's connection, which makes it in the transaction as it makes any new table."""
        made: dict = {}
        failed = ""
        try:
            conn = self._beside
            if conn is None or conn.closed:
                conn = self._beside = self.connect_aside()
            for schema in sorted({schema_name(table) for table, _ in tables} - self._schemas):
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
                self._schemas.add(schema)  # (committed: a rollback of the writer's transaction forgets it, harmlessly)
            ready.set()
            for table, fields in tables:
                conn.execute(self._create_statement(table, idempotent, fields))
            made = self._columns_of_tables(conn, tables)
        except Exception as exc:
            self._close_beside()  # (the next batch connects anew; the writer's connection makes what is missing)
            made.clear()
            failed = self.explain(exc)
        finally:
            ready.set()
        return made, failed

    def _close_beside(self) -> None:
        conn, self._beside = self._beside, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self, conn) -> None:
        self._close_beside()
        conn.close()

    def connect_aside(self):
        """A connection of its own, for reads beside the writer's (`lorrygate.storage.view_rounds`); its
        statements end within 30 s, so that a stop never waits longer for the thread that reads."""
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10, **liveness(self.url))
        conn.execute("SET statement_timeout = '30s'")
        return conn

    def index_addresses(self, conn, table) -> None:
        """Per-network: the index a view's ``WHERE "address" = ...`` and its time range read by (and the
        start's list of addresses, `addresses`)."""
        from lorrygate.storage.layout import shorten

        index = shorten(f"{table.table}_address_time_idx", self.identifier_limit)
        conn.execute(f'CREATE INDEX IF NOT EXISTS {quote(index)} ON {qualified(table)} ("address", "time")')

    # -- the per-network layout's views (`lorrygate.storage.shared_layout`) --------------------------------

    def shared_tables(self, conn) -> list:
        """The tables that have the address columns and a shared table's name (``sensors``,
        ``sensors_hourly``), as `TableName` s of their physical schema."""
        from lorrygate.model import TableName
        from lorrygate.storage.shared_layout import is_shared_name

        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT c.table_schema, c.table_name FROM information_schema.columns c "
                "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
                "WHERE t.table_type = 'BASE TABLE' AND c.column_name IN ('address', 'gateway', 'node') "
                "AND c.table_schema NOT IN ('pg_catalog', 'information_schema') "
                "GROUP BY 1, 2 HAVING count(*) = 3")
            return [TableName(schema, name) for schema, name in cursor.fetchall() if is_shared_name(name)]

    def shared_views(self, conn, table=None) -> list:
        """The views of the per-network layout that the database has (over ``table``, or any), as (view, its
        shared table): views over one table that carry `VIEW_COMMENT` (what `make_views` makes; other views
        are the user's, and left alone). From the catalogs: 10,000 views in ~0.2 s, where
        ``information_schema.view_table_usage`` and the views' definitions took 0.9 s (measured)."""
        from lorrygate.model import TableName

        where, params = (("AND tn.nspname = %s AND t.relname = %s", (schema_name(table), table_part(table)))
                         if table is not None else ("", ()))
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT vn.nspname, v.relname, tn.nspname, t.relname FROM pg_class v "
                "JOIN pg_namespace vn ON vn.oid = v.relnamespace "
                "JOIN pg_description c ON c.objoid = v.oid AND c.classoid = 'pg_class'::regclass AND c.objsubid = 0 "
                "JOIN pg_rewrite r ON r.ev_class = v.oid "
                "JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass "
                "AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> v.oid "
                "JOIN pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'p') "
                "JOIN pg_namespace tn ON tn.oid = t.relnamespace "
                f"WHERE v.relkind = 'v' AND c.description = %s {where}", (VIEW_COMMENT, *params))
            return [(TableName(schema, name), TableName(table_schema, table))
                    for schema, name, table_schema, table in cursor.fetchall()]

    def addresses(self, conn, table) -> list:
        """The addresses that have rows in a shared table: one probe of its address index per address (a loose
        index scan), not a scan of its rows."""
        name = qualified(table)
        with conn.cursor() as cursor:
            cursor.execute(
                f'WITH RECURSIVE a AS ((SELECT "address" FROM {name} WHERE "address" IS NOT NULL ORDER BY 1 LIMIT 1) '
                f'UNION ALL SELECT (SELECT "address" FROM {name} WHERE "address" > a."address" ORDER BY 1 LIMIT 1) '
                'FROM a WHERE a."address" IS NOT NULL) SELECT "address" FROM a WHERE "address" IS NOT NULL')
            return [row[0] for row in cursor.fetchall()]

    def view_columns(self, conn, table) -> list:
        """A shared table's columns but the address columns, in the table's order: a view's columns."""
        from lorrygate.storage.shared_layout import ADDRESS_COLUMNS

        with conn.cursor() as cursor:
            cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
                           "table_name = %s ORDER BY ordinal_position", (schema_name(table), table_part(table)))
            return [row[0] for row in cursor.fetchall() if row[0] not in ADDRESS_COLUMNS]

    def make_views(self, conn, views: list) -> None:
        """Views, (view, shared table, its columns), each with the comment that tells it from the user's views
        (`shared_views`), in one round trip."""
        from psycopg import sql

        def literal(text: str) -> str:  # as the server reads it, whatever its standard_conforming_strings
            return sql.Literal(text).as_string(conn)

        comment = literal(VIEW_COMMENT)
        conn.execute("; ".join(f"{view_statement(view, shared, columns, literal)}; COMMENT ON VIEW "
                               f"{qualified(view)} IS {comment}" for view, shared, columns in views))

    def drop_views(self, conn, views: list) -> None:
        conn.execute(f"DROP VIEW IF EXISTS {', '.join(qualified(view) for view in views)}")

    def name_taken(self, exc: Exception) -> bool:
        """Whether a view could not be made because its name is another object's: a table (42809, "is not a
        view"), or a view of other columns (42P16, "cannot drop columns from view" and the like)."""
        return getattr(exc, "sqlstate", None) in ("42809", "42P16")

    def blocked_by_views(self, exc: Exception) -> bool:
        """Whether PostgreSQL refused to change a column's type because views use it (SQLSTATE 0A000)."""
        return getattr(exc, "sqlstate", None) == "0A000" and "used by a view" in str(exc)

    def add_column(self, conn, table, column: str, value) -> str:
        kind = _TYPES[kind_of(value)]
        conn.execute(f"ALTER TABLE {qualified(table)} ADD COLUMN IF NOT EXISTS {quote(column)} {kind}")
        return kind.lower()

    def add_pending_columns(self, conn) -> None:
        pass  # `add_column` added it: an ADD COLUMN took ~0.06 ms beside 100 tables, ~0.1 ms beside 10,000 (measured)

    def entry_rolled_back(self) -> None:
        """An entry's statements were rolled back to its savepoint: a schema it made is gone again (the next
        entries make theirs again, if not exists)."""
        self._schemas.clear()
        self._new_schemas.clear()

    def widen(self, conn, table, column: str, current, value):
        """A float into a BIGINT column widens it to DOUBLE PRECISION (21, then 21.5)."""
        if current == "bigint" and type(value) is float:
            conn.execute(f"ALTER TABLE {qualified(table)} ALTER COLUMN {quote(column)} TYPE DOUBLE PRECISION")
            return "double precision"
        return None

    @staticmethod
    def row(time: int, values) -> tuple:
        """A row as it comes: the time in nanoseconds and the values. A shared COPY writes it as it is (the
        time becomes a timestamp in the database, and objects and lists go through `_json_text`); a table's
        own COPY or INSERT makes it text first (`_text_row`). Measured: the writer's Python for a row
        without the database 2.51 -> 1.24 us; a drain into 100 tables 44.9k-50.4k -> 52.2k-58.0k msg/s."""
        return (time, *values)

    def _text_row(self, row: tuple) -> list:
        """A row for a table's own COPY or INSERT: the time as ISO 8601 text, objects and lists as JSON."""
        time = row[0]
        out = [self._iso(time - time % 1000)]  # PostgreSQL keeps microseconds: cut, as before, not rounded
        for value in row[1:]:
            kind = type(value)
            if kind is dict or kind is list or kind is tuple:
                value = to_json(value)
            elif kind is int and not INT64[0] <= value <= INT64[1]:
                value = str(value)
            out.append(value)
        return out

    def insert(self, conn, table, columns: tuple, rows: list, idempotent: bool, merge: bool = False) -> None:
        """``idempotent``: a row whose key (time, lorrygate_id) is stored is left out, or with ``merge`` merged
        into the stored row (`merge_clause`); else a COPY."""
        key = (table, columns, idempotent, merge)
        statement = self._statements.get(key)
        if statement is None:
            if len(self._statements) > 20_000:
                self._statements.clear()
            names = ", ".join(quote(column) for column in ("time",) + columns)
            marks = ", ".join(["%s"] * (len(columns) + 1))
            alias, conflict = (f" AS {MERGED_ROW}", merge_clause(columns, quote)) if merge else (
                "", " ON CONFLICT DO NOTHING")
            statement = (f"INSERT INTO {qualified(table)}{alias} ({names}) VALUES ({marks}){conflict}"
                         if idempotent else f"COPY {qualified(table)} ({names}) FROM STDIN")
            self._statements[key] = statement
        text_row = self._text_row
        rows = [text_row(row) for row in rows]
        with conn.cursor() as cursor:
            if idempotent:
                try:
                    cursor.executemany(statement, rows)
                except Exception as exc:
                    # (an INSERT's error names a parameter, $2, not a column as a COPY's does: `explain_refusal`)
                    exc.lorrygate_insert = (table, ("time",) + columns)  # type: ignore[attr-defined]
                    raise
                return
            with cursor.copy(statement) as copy:
                write = copy.write_row
                for row in rows:
                    write(row)

    def insert_all(self, conn, groups: list, idempotent: bool, types_of, merged: set | frozenset = frozenset(),
                   keyed: set | frozenset = frozenset()) -> None:
        """Write the rows of many tables: the tables of one shape (the same columns of the same types, a fleet's
        nodes of one kind) with one COPY into a temporary table and one round trip of ``INSERT ... SELECT``s,
        instead of a COPY of two round trips per table (measured, 100 tables of 20 rows: 155 -> 31 us of
        client CPU a table). Tables of a shape of their own, or of a type not in `_STAGED_TYPES`, get their COPY.
        ``merged``: the (physical, columns) of groups whose rows merge into the stored rows of their key (an
        ``INSERT ... ON CONFLICT`` each, as idempotent rows); ``keyed``: of groups whose rows are idempotent ones
        although the storage's are not (rows of a table made with the key)."""
        shapes: dict = {}
        for group in groups:
            table, physical, columns, rows = group
            types = types_of(physical, columns)
            if types is not None and not _JSON_TYPES.isdisjoint(types):
                rows = _as_json(rows, [index for index, kind in enumerate(types) if kind in _JSON_TYPES])
                group = (table, physical, columns, rows)
            merge = (physical, columns) in merged
            if idempotent or merge or (physical, columns) in keyed:
                self.insert(conn, table, columns, rows, True, merge)
                continue
            if types is None or types[0] not in _STAGED_TIMES or not all(kind in _STAGED_TYPES for kind in types):
                self.insert(conn, table, columns, rows, idempotent)
                continue
            shapes.setdefault((columns, types), []).append(group)
        for (columns, types), members in shapes.items():
            if len(members) < STAGE_MIN_TABLES:
                for table, _, _, rows in members:
                    self.insert(conn, table, columns, rows, idempotent)
                continue
            few = [member for member in members if len(member[3]) <= self.pipeline_rows]
            binary = self._binary(types, few) if few else None
            if binary is not None:
                self._insert_pipelined(conn, columns, types, binary, few)
                if len(few) == len(members):
                    continue
                members = [member for member in members if len(member[3]) > self.pipeline_rows]
                if len(members) < STAGE_MIN_TABLES:
                    for table, _, _, rows in members:
                        self.insert(conn, table, columns, rows, idempotent)
                    continue
            binary = self._binary(types, members)
            stage = self._stage(conn, columns, types)
            if stage in self._used:
                conn.execute(f"TRUNCATE {stage}")  # rows of an earlier use in this transaction (emptied at commit)
            self._used.add(stage)
            names = ", ".join(quote(column) for column in ("time",) + columns)
            values = ", ".join([_STAGED_TIMES[types[0]]] + [quote(column) for column in columns])
            with conn.cursor() as cursor:
                with cursor.copy(f"COPY {stage} (lorrygate_table, {names}) FROM STDIN"
                                 + (" (FORMAT BINARY)" if binary else "")) as copy:
                    if binary:
                        copy.set_types(binary)
                    write = copy.write_row
                    for index, (_, _, _, rows) in enumerate(members):
                        for row in rows:
                            write((index, *row))
                moves = [f"INSERT INTO {qualified(table)} ({names}) SELECT {values} FROM {stage} "
                         f"WHERE lorrygate_table = {index}" for index, (table, _, _, _) in enumerate(members)]
                cursor.execute("; ".join(moves))

    def _insert_pipelined(self, conn, columns: tuple, types: tuple, binary: list, members: list) -> None:
        """Write the rows of tables with a few rows each (`PIPELINE_ROWS`): an ``INSERT ... VALUES`` a table,
        up to `WITH_TABLES` of them in one statement (data-modifying ``WITH`` clauses), the statements in one
        pipeline (one round trip); the values are parameters typed as the binary COPY types them, the time
        the ISO text a table's own COPY sends. What the shared COPY costs the server is its ``INSERT ...
        SELECT`` a table, most of all the time's arithmetic from nanoseconds. The statements have
        PostgreSQL's own placeholders (``$1``): psycopg's conversion of ``%s`` keeps 128 statements and cost
        ~12 us each when a batch had thousands. Measured, 5,000 rows into as many tables out of 10,000,
        us a row, wall / the gateway's CPU: an INSERT statement a table 32 / 31, 100 tables a statement
        27 / 21, the shared COPY 49 / 19 (the CPU with the batch's making, ~10 us)."""
        from psycopg import RawCursor

        names = ", ".join(quote(column) for column in ("time",) + columns)
        casts = [f"::{kind}" for kind in (_PIPELINED_TIMES[types[0]], *binary[2:])]
        width = len(casts)
        iso = self._iso
        heads = self._statements
        with conn.pipeline(), RawCursor(conn) as cursor:
            parts: list = []
            params: list = []
            for table, _, _, rows in members:
                if parts and (len(parts) >= WITH_TABLES or len(params) + len(rows) * width > WITH_PARAMETERS):
                    cursor.execute(f"WITH {', '.join(parts)} SELECT 1", params, prepare=False)
                    parts, params = [], []
                key = (table, columns, None)  # (an INSERT's or COPY's key is (table, columns, idempotent, merge))
                head = heads.get(key)
                if head is None:
                    if len(heads) > 20_000:
                        heads.clear()
                    head = heads[key] = f"INSERT INTO {qualified(table)} ({names}) VALUES "
                tuples = []
                for time, *values in rows:
                    first = len(params) + 1
                    params.append(iso(time - time % 1000))  # microseconds, cut (as `_text_row`)
                    params += values
                    tuples.append("(" + ", ".join(f"${first + index}{cast}" for index, cast in enumerate(casts)) + ")")
                parts.append(f"w{len(parts)} AS ({head}{', '.join(tuples)})")
            if parts:
                cursor.execute(f"WITH {', '.join(parts)} SELECT 1", params, prepare=False)

    def _binary(self, types: tuple, members: list) -> list | None:
        """The types of a binary COPY for the rows of a shape, or None for text: binary when every column
        is of a type in `_BINARY` and every value is of a Python type that its column takes as it is, so
        that the database stores what the text would have given it (a bool in a BIGINT column, refused as
        text, goes as text and is refused). Measured, a COPY of 8,500 rows of 100 tables with floats of 17
        digits: the client's CPU 21 -> 5.5 ms, the server's 14 -> 10 ms; the writer alone with the
        benchmark's telemetry (floats of a few digits), CPU a row 3.6 -> 2.2 us. The check goes column by
        column (whether a value fits depends on its column alone), each in one C loop: a row's tuple of
        types and its lookup cost ~3,000 instructions a row."""
        if not all(kind in _BINARY for kind in types[1:]):
            return None
        takes = [_BINARY[kind][1] for kind in types[1:]]
        for _, _, _, rows in members:
            columns = zip(*rows)
            if not _TIMES.issuperset(map(type, next(columns, ()))):
                return None
            for values, fits in zip(columns, takes):
                if not fits.issuperset(map(type, values)):
                    return None
        return ["int4", "int8"] + [_BINARY[kind][0] for kind in types[1:]]

    def _stage(self, conn, columns: tuple, types: tuple) -> str:
        """The temporary table of a shape (made once per connection, and again after a rollback)."""
        key = (columns, types)
        stage = self._stages.get(key)
        if stage is None:
            if len(self._stages) >= self.max_stages:
                # shapes come and go (a new field makes a new one): the oldest temporary table goes
                oldest = next(iter(self._stages))
                dropped = self._stages.pop(oldest)
                conn.execute(f"DROP TABLE IF EXISTS {dropped}")
                if oldest in self._fresh:
                    self._fresh.remove(oldest)
                else:
                    self._dropped.append((oldest, dropped))
            self._made += 1
            stage = f"lorrygate_stage_{self._made}"  # never reused in a session
            # the time as the row has it, nanoseconds (bigint), made a timestamp by the INSERT ... SELECT
            definition = ", ".join(f"{quote(column)} {kind}" for column, kind in zip(("time",) + columns,
                                                                                     ("bigint",) + types[1:]))
            conn.execute(f"CREATE TEMPORARY TABLE {stage} (lorrygate_table integer NOT NULL, {definition}) "
                         "ON COMMIT DELETE ROWS")
            # each INSERT ... SELECT finds its table's rows by the index, not by a scan of them all (7,000
            # rows of 100 tables, measured: 42.6 -> 20.4 ms a commit; a COPY per table: 31.9 ms)
            conn.execute(f"CREATE INDEX ON {stage} (lorrygate_table)")
            self._stages[key] = stage
            self._fresh.append(key)
        return stage

    def insert_dead_letters(self, conn, table: str, dead_letters: list) -> None:
        from lorrygate.decoding.timestamps import seconds_to_ns

        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO public.{quote(table)} (received, channel, topic, qos, retain, payload, stage, error, decoder, "
                "content_type, headers, sent) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (_time(seconds_to_ns(d.message.received)), _shown(d.channel), _shown(d.message.topic),
                     d.message.qos, d.message.retain, d.payload, d.stage, _shown(d.error), _shown(d.decoder),
                     _shown(d.message.content_type), _shown(message_headers.as_json(d.message.headers)),
                     _time(seconds_to_ns(d.message.sent)) if d.message.sent is not None else None)
                    for d in dead_letters
                ],
            )

    def interrupt(self, conn) -> None:
        """Ask the server to cancel the running statement, from a thread of its own, within `CANCEL_TIMEOUT`
        seconds. A cancel request goes over a connection of its own: to a server that is away (its host down,
        its network dropping packets) it blocked the calling thread, the reactor's, for minutes, once a second,
        and the gateway froze in its stop. The write ends all the same once the connection fails
        (`LIVENESS`)."""
        if self._cancelling:
            return
        self._cancelling = True

        def cancel():
            try:
                if hasattr(conn, "cancel_safe"):  # (psycopg 3.2: with a timeout)
                    conn.cancel_safe(timeout=CANCEL_TIMEOUT)
                else:
                    conn.cancel()
            except Exception:  # (the connection closed meanwhile, or the server is away: nothing more to do)
                pass
            finally:
                self._cancelling = False

        threading.Thread(target=cancel, name="lorrygate-cancel", daemon=True).start()

    def lock_budget(self, conn) -> int:
        """Half of the server's lock table (``max_locks_per_transaction`` x (``max_connections`` +
        ``max_prepared_transactions``), 6,400 by default), which all its sessions share: what one transaction
        of this writer may take (`lorrygate.storage.sqlstorage.LOCKS_NEW_TABLE`)."""
        from lorrygate.storage.sqlstorage import LOCKS_NEW_TABLE

        with conn.cursor() as cursor:
            cursor.execute("SELECT current_setting('max_locks_per_transaction')::int * "
                           "(current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int)")
            (capacity,) = cursor.fetchone()
        conn.rollback()
        return max(LOCKS_NEW_TABLE, capacity // 2)

    def out_of_locks(self, exc: Exception) -> bool:
        """"out of shared memory" with the hint to raise ``max_locks_per_transaction`` (SQLSTATE 53200)."""
        diag = getattr(exc, "diag", None)
        return getattr(exc, "sqlstate", None) == "53200" and "max_locks_per_transaction" in (
            getattr(diag, "message_hint", None) or "")

    def transient(self, exc: Exception) -> bool:
        """Whether an error says the server is unavailable (the storage is down),
        by SQLSTATE class, not by message text. Data and schema errors (class
        22, 23, 42, 54 program limits such as too many columns, ...) are not:
        the offending entry becomes a dead letter and the storage keeps writing."""
        import psycopg

        state = getattr(exc, "sqlstate", None)
        if state is None:
            # No answer from the server at all: the connection failed or broke.
            return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        if state == "23505" and (getattr(getattr(exc, "diag", None), "constraint_name", "") or "").startswith("pg_"):
            # Another writer created the same table at the same moment (CREATE TABLE IF NOT EXISTS
            # races in PostgreSQL's catalog): the next try finds it.
            return True
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES

    def connection_lost(self, exc: Exception) -> bool:
        import psycopg

        state = getattr(exc, "sqlstate", None)
        if state is None:
            return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        return state[:2] in ("08", "57")

    def explain(self, exc: Exception) -> str:
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text}"

    @staticmethod
    def unwell(exc: Exception) -> str:
        """What a write that failed for the server's state says: psycopg's message."""
        return str(exc)

    @staticmethod
    def unusable(exc: Exception) -> str:
        """Why a connection cannot be used: psycopg's message."""
        return str(exc)

    def passing(self, exc: Exception) -> bool:
        """Whether the server cannot be used for a state that passes (`transient`: it is away, starting, full)."""
        return self.transient(exc)

    #: what `unstorable_text` recognises
    unstorable_text_is = "the character NUL, U+0000, in text or JSON"

    def unstorable_text(self, exc: Exception) -> bool:
        r"""Whether the database refused text for the character NUL, which PostgreSQL stores in no text or JSONB
        value: psycopg's own refusal of a text value (no SQLSTATE), or the server's of ``\u0000`` in JSON
        (22P05, "unsupported Unicode escape sequence")."""
        state = getattr(exc, "sqlstate", None)
        text = str(exc)
        return (state is None and "NUL (0x00)" in text) or (state == "22P05" and "\\u0000" in text)

    @staticmethod
    def scrub_row(row: tuple) -> tuple:
        """A row without the character NUL in its text, also inside objects and lists (`unstorable_text`)."""
        return tuple(_without_nul(value) for value in row)

    def explain_refusal(self, exc: Exception, tables: list, columns_of) -> str:
        """`explain`, and for a value that its column's type refuses in a COPY (a data exception, SQLSTATE
        class 22: ``"warm"`` in a DOUBLE PRECISION column), which column of which table, and how to store
        such values: change the column's type, or convert them in the channel, then replay the dead
        letters. ``tables``: the `TableName` objects the rows may have gone to; ``columns_of``: a physical
        name's columns and their types, as the storage knows them."""
        text = self.explain(exc)
        state = getattr(exc, "sqlstate", None) or ""
        context = getattr(getattr(exc, "diag", None), "context", None) or ""
        if state[:2] != "22":
            return text
        inserted = getattr(exc, "lorrygate_insert", None)
        parameter = re.search(r"parameter \$(\d+)", context)
        if inserted is not None and parameter is not None and 0 < int(parameter.group(1)) <= len(inserted[1]):
            table, names = inserted
            column = names[int(parameter.group(1)) - 1]
            return self._how_to_store(text, state, table, column, columns_of(self.physical(table)))
        for table in tables:
            head = f"COPY {table_part(table)}, line "
            if not context.startswith(head):
                continue
            _, found, rest = context[len(head):].partition(", column ")
            columns = columns_of(self.physical(table))
            # the longest known name that the context names: a column's name may hold ": " itself
            named = [column for column in columns if rest.startswith(column + ": ") or rest.rstrip() == column]
            if not found or not named:
                return text
            return self._how_to_store(text, state, table, max(named, key=len), columns)
        return text

    @staticmethod
    def _how_to_store(text: str, state: str, table, column: str, columns: dict) -> str:
        kind = (columns.get(column) or "").upper()
        wider = "NUMERIC" if state == "22003" else "TEXT"  # (22003: out of range, a BIGINT's 64 bits)
        return (f"{text} -- column {column} of {qualified(table)} is {kind}: to store such values, change its "
                f"type (ALTER TABLE {qualified(table)} ALTER COLUMN {quote(column)} TYPE {wider}) or convert "
                "them in the channel (convert =), then run lorrygate dead-letters replay --stage store")


def _without_nul(value):
    r"""``value`` without the character NUL in its text (a C string's padding: ``"1.2.3\0\0"`` is ``"1.2.3"``)."""
    kind = type(value)
    if kind is str:
        return value.replace("\0", "") if "\0" in value else value
    if kind is dict:
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_without_nul(item) for item in value]
    return value


#: tables of one shape in a batch from which they share a COPY
STAGE_MIN_TABLES = 3
#: a shared COPY carries the time in nanoseconds; the ``INSERT ... SELECT`` makes it the table's time
#: column, cut to microseconds as the ISO text was (floor, before 1970 too): whole seconds and the
#: microseconds apart, each exact in the float an interval is multiplied by. A time column of another type
#: (custom DDL) makes its table's own COPY.
_NANOS = '"time"'
_SUBSECOND = f"(({_NANOS} % 1000000000) + 1000000000) % 1000000000"
_SINCE_EPOCH = (f"(({_NANOS} - {_SUBSECOND}) / 1000000000) * interval '1 second' + "
                f"({_SUBSECOND} / 1000) * interval '1 microsecond'")
#: column types (information_schema's names) a shared COPY writes in binary: the type's name for psycopg,
#: and the Python types of values that go in as they are (what text would give the same value)
_BINARY = {
    "bigint": ("int8", frozenset({int, type(None)})),
    "double precision": ("float8", frozenset({float, int, type(None)})),
    "text": ("text", frozenset({str, type(None)})),
    "boolean": ("bool", frozenset({bool, type(None)})),
}
#: what a row's time is, for a binary COPY (nanoseconds)
_TIMES = frozenset({int})
_STAGED_TIMES = {
    "timestamp with time zone": f"timestamptz 'epoch' + {_SINCE_EPOCH}",
    "timestamp without time zone": f"timestamp 'epoch' + {_SINCE_EPOCH}",
}
#: the time's type in a pipelined INSERT (`PostgresDialect._insert_pipelined`), as ISO 8601 text
_PIPELINED_TIMES = {"timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp"}
#: column types that hold JSON: any value goes into them as its JSON text (`_as_json`)
_JSON_TYPES = frozenset({"jsonb", "json"})


def _as_json(rows: list, positions: list) -> list:
    """Rows whose values at ``positions`` (a JSON column's) are JSON text: a value that is no list or object (a
    number, a text, a boolean) is a JSON value too, and went in as its bare text, which a JSONB column refused
    (``abc``, ``t``: the row a dead letter) when a field's first value had been a list."""
    out = []
    for row in rows:
        row = list(row)
        for index in positions:
            value = row[index]
            if value is not None:
                row[index] = to_json(value)
        out.append(row)
    return out


#: column types (information_schema's names) a shared COPY's temporary table takes as they are; a
#: column of another type (an array, a user-defined type from custom DDL) makes its table's own COPY
_STAGED_TYPES = frozenset({
    "bigint", "integer", "smallint", "double precision", "real", "numeric", "text", "character varying", "boolean",
    "jsonb", "json", "bytea", "timestamp with time zone", "timestamp without time zone", "date", "uuid",
})


#: SQLSTATE classes of unavailability: connection exception, invalid
#: authorization, transaction rollback (serialization, deadlock),
#: insufficient resources (disk full, out of memory, too many connections),
#: operator intervention (shutdown, cancel), system error (I/O)
_TRANSIENT_CLASSES = frozenset({"08", "28", "40", "53", "57", "58"})
#: single states of unavailability: read-only transaction (a standby), lock not available
_TRANSIENT_STATES = frozenset({"25006", "55P03"})


def PostgresStorage(name: str, url: str, reactor, idempotent: bool = False, ddl=None, merge: float = 0.0):
    """The PostgreSQL storage: a `SqlStorage` with the PostgreSQL dialect; ``merge``: seconds of the buckets whose
    rows of a table and tags are one row (0: a row a record)."""
    storage = SqlStorage(name, PostgresDialect(url), reactor, idempotent, ddl or {})
    storage.merge = round(merge * 1e9)
    return storage

"""
Custom DDL: a template used instead of the default CREATE TABLE when a table
is first seen, to choose shards, partitions, replicas or a hypertable.

    [storage:crate]
    url = crate://localhost:4200/
    ddl =
        CREATE TABLE IF NOT EXISTS {qualified} (
            "time" TIMESTAMP WITH TIME ZONE NOT NULL,
            tags OBJECT(DYNAMIC),
            fields OBJECT(DYNAMIC),
            month TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', "time")
        ) CLUSTERED INTO 3 SHARDS PARTITIONED BY (month) WITH (number_of_replicas = '0-1')

``ddl = @path/file.sql`` reads the template from a file. Several statements
are separated by ``;``; the ones after the first run right after it
(``SELECT create_hypertable(...)`` for TimescaleDB). Placeholders:

=====================  ================================================
``{schema}``           the schema, quoted: ``"mqttkit_1_testdrive"``
``{table}``            the table, quoted: ``"area_42_node_1_sensors"``
``{qualified}``        ``"schema"."table"`` (SQLite: ``"schema__table"``)
``{qualified_text}``   the same as an SQL string literal, for functions
                       that take a table name
``{realm}`` ...        ``{realm}``, ``{network}``, ``{gateway}``,
                       ``{node}``, ``{kind}``: sanitized address parts
``{channel}``          the channel's name, sanitized
=====================  ================================================

The table must still have what the writer inserts: ``time``, and for CrateDB
``tags`` and ``fields`` objects; for SQLite and PostgreSQL the field columns
are added as fields appear. For CrateDB every statement a template makes is
checked against CrateDB's grammar (``cratedb-sqlparse``) at start-up.
"""

import re
from typing import Any

import attrs

from lorrygate.topology.naming import quote, sanitize

PLACEHOLDERS = ("schema", "table", "qualified", "qualified_text", "realm", "network", "gateway", "node", "kind",
                "channel")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def split_statements(text: str) -> list:
    """Split on ``;`` outside quotes; drop empty statements."""
    statements, current, quote_char = [], [], None
    for char in text:
        if quote_char:
            current.append(char)
            if char == quote_char:
                quote_char = None
        elif char in "'\"":
            quote_char = char
            current.append(char)
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@attrs.frozen
class DdlTemplate:
    text: str
    qualify: Any = attrs.field(eq=False)  # TableName -> qualified SQL name
    #: TableName -> the schema its table is in (PostgreSQL's ``lg_pg_...`` for a ``pg_...`` one)
    schema_of: Any = attrs.field(default=None, eq=False)
    #: TableName -> its table's name (PostgreSQL's within 63 bytes: `lorrygate.storage.postgresql.table_part`)
    table_of: Any = attrs.field(default=None, eq=False)

    @classmethod
    def parse(cls, text: str, qualify, validate=None, schema_of=None, table_of=None) -> "DdlTemplate":
        """Check placeholders (and, with ``validate``, each rendered statement); ValueError says what is wrong."""
        unknown = sorted({name for name in _PLACEHOLDER.findall(text) if name not in PLACEHOLDERS})
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {', '.join(PLACEHOLDERS)})")
        template = cls(text, qualify, schema_of, table_of)
        from lorrygate.model import TableName

        statements = template.render(TableName("sample_schema", "sample_table"), None)
        if not statements:
            raise ValueError("no statement")
        if validate is not None:
            for statement in statements:
                validate(statement)
        return template

    def render(self, table, entry, physical: str | None = None) -> list:
        """The statements for one table, placeholders filled; ``physical``: the table's name in the database where
        the storage tells it (SQLite's of its own where another case of the name is a table,
        `lorrygate.storage.sqlite_schema.own_name`), as ``{qualified}``."""
        qualified = quote(physical) if physical is not None else self.qualify(table)
        values = {
            "schema": quote(self.schema_of(table) if self.schema_of is not None else table.schema),
            "table": quote(self.table_of(table) if self.table_of is not None else table.table),
            "qualified": qualified,
            "qualified_text": sql_literal(qualified),
            "channel": sanitize(entry.channel) if entry is not None else "channel",
        }
        address = None
        if entry is not None:
            address = getattr(entry, "address", None)
        for key in ("realm", "network", "gateway", "node", "kind"):
            value = getattr(address, key, None) if address is not None else key
            values[key] = sanitize(value or "")
        return split_statements(_PLACEHOLDER.sub(lambda match: values[match.group(1)], self.text))


def crate_validator():
    """Check a statement against CrateDB's grammar; ValueError with the parser's message."""
    try:
        from cratedb_sqlparse import sqlparse
    except ImportError:
        raise ValueError("custom DDL for CrateDB is checked against its grammar with the cratedb-sqlparse "
                         "package: pip install 'lorrygate[cratedb]'") from None

    def validate(statement: str) -> None:
        try:
            sqlparse(statement, raise_exception=True)
        except Exception as exc:  # ParsingException and friends
            raise ValueError(f"CrateDB would refuse {statement.splitlines()[0][:60]!r}...: {exc}") from None

    return validate

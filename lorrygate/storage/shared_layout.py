"""
The shared-table layout (``layout = per-network``, CrateDB, PostgreSQL and
SQLite): one table per network and kind instead of one per address.

Every CrateDB table costs shards, and a node holds
``cluster.max_shards_per_node`` of them (1,000 by default): a fleet of
thousands of devices with a table each outgrows its cluster
(docs/storage.rst). In SQLite, a fleet's queries across its devices read one
table instead of thousands. With this layout the rows of a per-address table
named ``<name>_<suffix>`` (``sensors``, ``events``, ``errors`` by the
address's kind: every built-in strategy's names, and a declarative
strategy's that end with ``{suffix}``) go into the table ``<suffix>`` of the
same schema (the realm and network), with three more columns: ``address``
(the per-address table's name), ``gateway`` and ``node`` (as the topic gave
them, for queries). A view named as the per-address table keeps the queries
of the per-address layout working:

    CREATE OR REPLACE VIEW "schema"."<name>_<suffix>" AS                -- CrateDB
        SELECT "time", "tags", "fields" FROM "schema"."<suffix>" WHERE "address" = '<name>_<suffix>'
    CREATE VIEW IF NOT EXISTS "schema__<name>_<suffix>" AS              -- SQLite
        SELECT * FROM "schema__<suffix>" WHERE "address" = '<name>_<suffix>'

A new field never changes a CrateDB view's columns (``tags`` and
``fields`` are objects), and SQLite expands a view's ``*`` when it is
queried, so a SQLite view shows the columns added since. PostgreSQL expands
it once, when the view is made, as the SQL standard says, and refuses to
widen a column a view uses: its views list their columns
(`lorrygate.storage.postgresql.view_statement`) and are made, made again
and dropped beside the writes (`lorrygate.storage.view_rounds`).

A dataflow's derived table (``into = table``: ``<name>_<suffix>_<transform>``)
goes the same way into ``<suffix>_<transform>``, with a view per address
named as the derived table. Tables of other names (a declarative strategy's
own naming without ``{suffix}``) are written per address.
"""

from lorrygate.model import TableName
from lorrygate.storage.layout import reserved as own_table
from lorrygate.topology.naming import quote
from lorrygate.topology.wan import TABLE_SUFFIXES

LAYOUTS = ("per-address", "per-network")
#: the columns a shared table has beyond those of a per-address one, in the order rows carry them
ADDRESS_COLUMNS = ("address", "gateway", "node")


def shared_table(table: TableName, address) -> TableName | None:
    """The shared table of a per-address table: ``<suffix>`` for ``<name>_<suffix>`` (a table named as the
    suffix alone is the shared table itself), ``<suffix>_<transform>`` for a dataflow's derived table
    ``<name>_<suffix>_<transform>``; None for a table of another name."""
    kind = getattr(address, "kind", None)
    suffix = TABLE_SUFFIXES.get(kind) if kind else None
    if suffix is None:
        return None
    name = table.table
    if name.endswith("_" + suffix) or name == suffix:
        return TableName(table.schema, suffix)
    # a dataflow's derived rows (`lorrygate.decoding.dataflow.derived_table`): their own shared table
    head, separator, transform = name.rpartition("_" + suffix + "_")
    if separator and head and transform:
        return TableName(table.schema, suffix + "_" + transform)
    return None


def is_shared_name(name: str) -> bool:
    """Whether a table's name is one `shared_table` gives (``sensors``, ``sensors_hourly``)."""
    return any(name == suffix or name.startswith(suffix + "_") for suffix in TABLE_SUFFIXES.values())


def literal(text: str) -> str:
    """A string literal of CrateDB and SQLite (a standard one: ``'`` doubled, no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


def qualified(table: TableName) -> str:
    """A CrateDB table's quoted name (``doc`` the schema of a table without one)."""
    return f"{quote(table.schema or 'doc')}.{quote(table.table)}"


#: the schemas CrateDB creates no table in: its read-only system schemas (``Schemas.READ_ONLY_SYSTEM_SCHEMAS``)
#: and ``blob``, which holds BLOB tables only
CRATE_RESERVED_SCHEMAS = frozenset({"sys", "information_schema", "pg_catalog", "blob"})


def crate_table(table: TableName) -> TableName:
    """The table a per-address `TableName` is in CrateDB, which refuses to create a relation whose schema or name
    is empty, starts with ``_`` (``RelationName.ensureValidForRelationCreation``: a Tasmota device or a
    zigbee2mqtt friendly name ``_attic``, a realm ``_test``) or holds a ``.`` (``RelationName.of``), or in one of
    `CRATE_RESERVED_SCHEMAS` (the topic strategy's ``sys/...``): such a part gets the prefix ``lg_`` and its dots
    become ``_``, as PostgreSQL's ``pg_`` schemas become ``lg_pg_`` (`lorrygate.storage.postgresql.schema_name`).
    The CREATE TABLE failed at every retry, and the batch with it: one device so named stopped the storage. So
    does the name of lorrygate's own table in ``doc`` (`lorrygate.storage.layout.OWN_TABLES`). A name CrateDB
    takes comes back as it is; an empty schema is none (``doc``)."""
    schema, name = table.schema, table.table
    # (an empty schema is none, as for SQLite and PostgreSQL: the table goes into doc)
    fixed_schema = _crate_part(schema, reserved=schema.lower() in CRATE_RESERVED_SCHEMAS) if schema else None
    fixed_name = _crate_part(name, reserved=own_table(name) and (fixed_schema or "doc") == "doc")
    if fixed_schema == schema and fixed_name == name:
        return table
    return TableName(fixed_schema, fixed_name)


def _crate_part(part: str, reserved: bool = False) -> str:
    part = part.replace(".", "_")
    return "lg_" + part if reserved or not part or part.startswith("_") else part


def view_statement(view: TableName, shared: TableName, extra: bool = False) -> str:
    """CrateDB: the view that shows a per-address table's rows of a shared table as the per-address table had
    them; ``extra``: with the column of the fields CrateDB does not index (`lorrygate.storage.crate_extra`)."""
    columns = '"time", "tags", "fields", "extra_fields"' if extra else '"time", "tags", "fields"'
    return (f'CREATE OR REPLACE VIEW {qualified(view)} AS SELECT {columns} FROM {qualified(shared)} '
            f'WHERE "address" = {literal(view.table)}')


def sqlite_view_statement(view: str, shared: str, address: str) -> str:
    """SQLite: the view ``view`` of the rows of ``address`` in the table ``shared`` (physical names)."""
    return f'CREATE VIEW IF NOT EXISTS {quote(view)} AS SELECT * FROM {quote(shared)} WHERE "address" = {literal(address)}'


def address_values(table: TableName, address) -> list:
    """The values of `ADDRESS_COLUMNS` for the rows of a per-address table."""
    return [table.table, address.gateway, address.node]

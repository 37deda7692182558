"""
Column identity against the real databases: whatever the field names of a
row (case variants, ``Time`` beside ``time``, unicode, quotes, SQL keywords,
names over PostgreSQL's 63 bytes with a common prefix, NUL from a padded C
string), every value is read back from a column of its own.
"""

import itertools
import string

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.postgresql import PostgresDialect, qualified
from lorrygate.storage.sqlite import table_name
from lorrygate.topology.naming import quote
from tests.integration.pgstore import connected

NS = 1_717_243_200_000_000_000
LONG = "sensor_" + "x" * 60
names = st.one_of(
    st.sampled_from(["time", "Time", "TIME", "tImE", "lorrygate_id", "select", "from", "Temp", "temp", "TEMP",
                     'quo"te', "semi;colon", "ümlaut", "ÜMLAUT", "dot.ted", LONG + "a", LONG + "b", LONG + "A",
                     "xmin", "xmax", "ctid", "tableoid", "cmin", "cmax", "oid", "rowid", "temp\0\0", "\0"]),
    st.text(alphabet=string.ascii_letters + "_äöüÄÖÜ€ \"'\0", min_size=1, max_size=80),
)
rows = st.dictionaries(names, st.integers(-1000, 1000), min_size=1, max_size=12)
#: a table of its own for every example
TABLES = itertools.count()


def commit(store, table, fields):
    batch = Batch()
    batch.add(Entry(table, [Record(NS, fields)], "main", Message("t", b"{}", 1, False, 1.0, "#"), "json"))
    store._commit(batch)
    return batch


def stored_row(store, fields) -> tuple:
    """The one row that ``fields`` became in a table of its own (refused by nothing)."""
    table = TableName("ids", f"t{next(TABLES)}")
    batch = commit(store, table, fields)
    assert not batch.extra_dead, batch.extra_dead
    name = qualified(table) if isinstance(store.dialect, PostgresDialect) else quote(table_name(table))
    (row,) = store._conn.execute(f"SELECT * FROM {name}").fetchall()
    store._conn.commit()
    return row


def stored_values(conn_rows) -> list:
    return sorted(value for value in conn_rows if value is not None and not isinstance(value, str))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=rows)
def test_sqlite_keeps_every_value_in_its_own_column(sqlite_store, fields):
    """SQLite (names compared without ASCII case): every value of the row is read back."""
    assert stored_values(stored_row(sqlite_store, fields)[1:]) == sorted(fields.values())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=rows)
def test_postgresql_keeps_every_value_in_its_own_column(pg_store, fields):
    """PostgreSQL (names cut at 63 bytes): every value of the row is read back."""
    assert stored_values(stored_row(pg_store, fields)[1:]) == sorted(fields.values())


#: names that differ only in case, ``time`` among them (SQLite compares ASCII letters without case only)
CASES = st.sampled_from(["temp", "Temp", "TEMP", "tEmp", "time", "Time", "TIME", "ümlaut", "Ümlaut", "a", "A"])
messages = st.lists(st.dictionaries(CASES, st.just(0), min_size=1, max_size=5), min_size=2, max_size=6)


def columns_of_names(store, sequence, together) -> dict:
    """Store ``sequence`` of rows (the value of each field unique) into a table of its own, in one batch
    (``together``) or a batch each; returns {field name: the columns its values were read back from}."""
    table = TableName("ids", f"seq{next(TABLES)}")
    where = {}
    batches = [Batch()] if together else []
    for number, fields in enumerate(sequence):
        values = {}
        for position, name in enumerate(fields):
            values[name] = number * 100 + position
            where[number * 100 + position] = name
        if not together:
            batches.append(Batch())
        batches[-1].add(Entry(table, [Record(NS + number, values)], "main", Message("t", b"{}", 1, False, 1.0, "#"),
                              "json"))
    for batch in batches:
        store._commit(batch)
        assert not batch.extra_dead, batch.extra_dead
    name = qualified(table) if isinstance(store.dialect, PostgresDialect) else quote(table_name(table))
    cursor = store._conn.execute(f"SELECT * FROM {name}")
    heads = [column[0] for column in cursor.description]
    found: dict = {}
    for row in cursor.fetchall():
        for head, value in zip(heads, row):
            if type(value) is int:
                found.setdefault(where.pop(value), set()).add(head)
    store._conn.commit()
    assert not where, f"values not read back: {where}"
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=messages, together=st.booleans())
def test_each_field_name_keeps_one_column_across_messages(sqlite_store, pg_store, sequence, together):
    """Names that differ only in case, across messages of one table: each name's values are in one column of
    its own, in SQLite (which compares names without case: a later ``temp`` went into the ``Temp`` that an
    earlier message made) as in PostgreSQL."""
    for store in (sqlite_store, pg_store):
        found = columns_of_names(store, sequence, together)
        assert all(len(columns) == 1 for columns in found.values()), found
        columns = [next(iter(names)) for names in found.values()]
        assert len(set(columns)) == len(columns), found


#: nested objects of dotted and plain keys, nulls among the values, within the default flatten_depth (3)
NESTED_KEYS = st.sampled_from(["a", "b", "a.b", "b.a", "a.b.a", "A", "time"])
nested = st.dictionaries(
    NESTED_KEYS,
    st.one_of(st.integers(-1000, 1000), st.none(),
              st.dictionaries(NESTED_KEYS, st.one_of(st.integers(-1000, 1000), st.none(),
                                                     st.dictionaries(NESTED_KEYS, st.integers(-1000, 1000),
                                                                     min_size=1, max_size=3)),
                              min_size=1, max_size=3)),
    min_size=1, max_size=5)


def leaves(document) -> list:
    """The numbers of a document, nulls not counted."""
    out = []
    for value in document.values():
        if type(value) is dict:
            out += leaves(value)
        elif value is not None:
            out.append(value)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=nested)
def test_sqlite_keeps_every_value_of_nested_objects(sqlite_store, fields):
    """SQLite: a key with a dot beside an object that flattens onto the same name ({"a.b": 1, "a": {"b": 2}})
    keeps both values; a null makes no column."""
    row = stored_row(sqlite_store, fields)
    assert stored_values(row[1:]) == sorted(leaves(fields))
    assert None not in row  # no column of a null


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=nested)
def test_postgresql_keeps_every_value_of_nested_objects(pg_store, fields):
    """PostgreSQL: the same."""
    row = stored_row(pg_store, fields)
    assert stored_values(row[1:]) == sorted(leaves(fields))
    assert None not in row


def test_a_null_first_value_leaves_the_type_to_the_first_value(sqlite_store, pg_store):
    """Zigbee2MQTT sends ``"battery": null`` until a device reports: the column comes with the first number and
    has its type (a null made a TEXT column before, and the readings were stored as text)."""
    for store in (sqlite_store, pg_store):
        table = TableName("ids", f"nulls{next(TABLES)}")
        commit(store, table, {"battery": None, "linkquality": 60, "update": {"state": None, "installed": 1}})
        commit(store, table, {"battery": 87.5, "linkquality": 61, "update": {"state": "idle", "installed": 1}})
        commit(store, table, {"battery": None, "linkquality": 62, "update": {"state": None, "installed": 2}})
        if store is sqlite_store:
            name = quote(table_name(table))
            types = dict(store._conn.execute(f"SELECT name, type FROM pragma_table_info('{table_name(table)}')"))
            stored = store._conn.execute(f'SELECT battery, typeof(battery), "update.state" FROM {name} '
                                         "ORDER BY linkquality").fetchall()
            assert types == {"time": "TEXT", "linkquality": "INTEGER", "update.installed": "INTEGER",
                             "battery": "REAL", "update.state": ""}  # (text: no type, no affinity)
            assert stored == [(None, "null", None), (87.5, "real", "idle"), (None, "null", None)]
        else:
            types = dict(store._conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s", (table.schema, table.table)))
            stored = store._conn.execute(f'SELECT battery, "update.state" FROM {qualified(table)} '
                                         "ORDER BY linkquality").fetchall()
            store._conn.commit()
            assert types == {"time": "timestamp with time zone", "linkquality": "bigint",
                             "update.installed": "bigint", "battery": "double precision", "update.state": "text"}
            assert stored == [(None, None), (87.5, "idle"), (None, None)]


def test_lists_and_objects_with_nan_or_keys_of_two_kinds_are_stored_as_json(sqlite_store, pg_store):
    """JSON has no NaN: a list holding one (a MessagePack or NaN-literal payload, values = as-sent) made
    PostgreSQL's JSONB refuse the row, and SQLite's JSON functions the text; now it is null, as in CrateDB. An
    object of a decoder of your own with keys 1 and "a" failed to sort."""
    fields = {"l": [float("nan"), 1.5, float("inf")], "o": {"p": {"q": {1: 2, "a": float("-inf")}}}}
    for store in (sqlite_store, pg_store):
        table = TableName("ids", f"json{next(TABLES)}")
        batch = commit(store, table, fields)
        assert not batch.extra_dead, batch.extra_dead
        if store is sqlite_store:
            (row,) = store._conn.execute(f"""SELECT json_extract(l, '$[1]'), l, "o.p.q" FROM """
                                         f"{quote(table_name(table))}").fetchall()
            assert row == (1.5, "[null, 1.5, null]", '{"1": 2, "a": null}')
        else:
            (row,) = store._conn.execute(f'SELECT l, "o.p.q" FROM {qualified(table)}').fetchall()
            store._conn.commit()
            assert row == ([None, 1.5, None], {"1": 2, "a": None})


def test_a_json_column_takes_any_later_value_as_json(pg_store, postgres):
    """A field whose first value was a list has a JSONB column; a later number, text, boolean, list or NaN is a
    JSON value too (the text and the boolean went in bare, ``abc`` and ``t``, and the row was refused), in one
    table's COPY and in the shared COPY of many tables of a shape, and with idempotent rows."""
    values = [[1, "x"], 5, "abc", True, [{"k": None}], 2.5, float("nan"), None, ""]
    expected = [[1, "x"], 5, "abc", True, [{"k": None}], 2.5, None, None, ""]
    tables = [TableName("ids", f"jsonany{next(TABLES)}") for _ in range(3)]
    for index, value in enumerate(values):
        batch = Batch()
        for table in tables:  # (three tables of one shape: the shared COPY from the second value on)
            batch.add(Entry(table, [Record(NS + index, {"v": value, "n": index})], "main",
                            Message("t", b"{}", 1, False, 1.0, "#"), "json"))
        pg_store._commit(batch)
        assert not batch.extra_dead, batch.extra_dead
    for table in tables:
        stored = pg_store._conn.execute(f"SELECT v FROM {qualified(table)} ORDER BY n").fetchall()
        pg_store._conn.commit()
        assert [row[0] for row in stored] == expected
    with connected(postgres.url, idempotent=True) as store:
        table = TableName("ids", f"jsonany{next(TABLES)}")
        for index, value in enumerate(values):
            batch = commit(store, table, {"v": value, "n": index})
            assert not batch.extra_dead, batch.extra_dead
        stored = store._conn.execute(f"SELECT v FROM {qualified(table)} ORDER BY n").fetchall()
        store._conn.commit()
        assert [row[0] for row in stored] == expected


def test_a_field_with_an_empty_name_is_stored_as_underscore(sqlite_store, pg_store):
    """{"": 1}: PostgreSQL has no empty identifier ("zero-length delimited identifier": a dead letter)."""
    for store in (sqlite_store, pg_store):
        table = TableName("ids", f"empty{next(TABLES)}")
        batch = commit(store, table, {"": 1, "_": 2, "a": 3})
        assert not batch.extra_dead, batch.extra_dead
        name = quote(table_name(table)) if store is sqlite_store else qualified(table)
        row = store._conn.execute(f'SELECT "_", "__2", a FROM {name}').fetchone()  # (the field "_" came second)
        store._conn.commit()
        assert row == (1, 2, 3)


def test_a_field_of_a_postgresql_system_columns_name_is_stored(sqlite_store, pg_store):
    """An accelerometer's {"xmin": -2, "xmax": 2}: PostgreSQL refused the column ("conflicts with a system column
    name") and each such message was a dead letter. The field is xmin_2 there; SQLite has no such columns."""
    fields = {"xmin": -2, "xmax": 2, "ctid": 3, "tableoid": 4, "cmin": 5, "cmax": 6, "oid": 7, "rowid": 8}
    for store, names in ((pg_store, ["xmin_2", "xmax_2", "ctid_2", "tableoid_2", "cmin_2", "cmax_2", "oid", "rowid"]),
                         (sqlite_store, list(fields))):
        table = TableName("ids", f"system{next(TABLES)}")
        batch = commit(store, table, fields)
        assert not batch.extra_dead, batch.extra_dead
        name = quote(table_name(table)) if store is sqlite_store else qualified(table)
        row = store._conn.execute(f"SELECT {', '.join(quote(column) for column in names)} FROM {name}").fetchone()
        store._conn.commit()
        assert row == tuple(fields.values())


def test_time_beside_a_time_field_is_renamed_deterministically(sqlite_store):
    """A Tasmota-style "Time" field next to the time column lands in "Time_2", every time."""
    table = TableName("ids", "tasmota")
    commit(sqlite_store, table, {"Time": "2024-06-01T12:00:00", "Temp": 21.5})
    commit(sqlite_store, table, {"Time": "2024-06-01T12:01:00", "Temp": 21.6})
    columns = [row[1] for row in sqlite_store._conn.execute(f"PRAGMA table_info({quote(table_name(table))})")]
    assert columns == ["time", "Time_2", "Temp"]
    assert sqlite_store._conn.execute(f'SELECT "Time_2" FROM {quote(table_name(table))}').fetchall() == [
        ("2024-06-01T12:00:00",), ("2024-06-01T12:01:00",)]


def test_postgresql_tables_have_an_index_on_time(pg_store, postgres):
    """A table PostgreSQL gets on the first sample has an index on time, for the queries dashboards make."""
    table = TableName("ids", "indexed")
    commit(pg_store, table, {"v": 1})
    with psycopg.connect(postgres.url) as conn:
        (definition,) = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'ids' AND tablename = "
                                     "'indexed'").fetchone()
    assert '("time")' in definition or "(\"time\")" in definition or "(time)" in definition


@settings(max_examples=60, deadline=None)
@given(fields=rows, level=names)
def test_cratedb_keys_are_distinct_and_statements_parse(fields, level):
    """CrateDB: every field name becomes a distinct object key CrateDB takes (no . [ ] tab CR LF), and the
    statements for a table named from a topic level parse with CrateDB's own grammar."""
    from cratedb_sqlparse import sqlparse

    from lorrygate.storage.crate_values import FORBIDDEN, Conversions, crate_object
    from lorrygate.storage.cratedb import default_ddl, insert_statement
    from lorrygate.topology.naming import join, sanitize

    stored = crate_object(fields, Conversions())
    assert len(stored) == len(fields) and not any(FORBIDDEN.search(key) for key in stored)
    assert sorted(stored.values()) == sorted(float(v) for v in fields.values())
    table = TableName(sanitize(level) or "x", join(level, "sensors"))
    for idempotent in (False, True):
        sqlparse(default_ddl(table, "year", 1, "0-1", idempotent), raise_exception=True)
        sqlparse(insert_statement(table, idempotent), raise_exception=True)


def test_postgresql_says_which_column_refused_a_value_and_how_to_store_such_values(pg_store):
    """A value its column's type refuses: the dead letter names the column (whatever its name holds) and its
    type, and the statement that makes the column take such values; a value out of a BIGINT's range gets
    NUMERIC. Other refusals keep PostgreSQL's message as it is."""
    table = TableName("ids", f"t{next(TABLES)}")
    assert not commit(pg_store, table, {"a: b": 1.5, "n": 1, "flag": True}).extra_dead
    (dead,) = commit(pg_store, table, {"a: b": "warm"}).extra_dead
    assert f'column a: b of {qualified(table)} is DOUBLE PRECISION' in dead.error, dead.error
    assert f'(ALTER TABLE {qualified(table)} ALTER COLUMN "a: b" TYPE TEXT)' in dead.error, dead.error
    assert dead.error.endswith("then run lorrygate dead-letters replay --stage store")
    (dead,) = commit(pg_store, table, {"n": 2**64}).extra_dead
    assert "out of range for type bigint" in dead.error and 'ALTER COLUMN "n" TYPE NUMERIC' in dead.error, dead.error
    (dead,) = commit(pg_store, table, {"flag": "maybe"}).extra_dead
    assert "is BOOLEAN" in dead.error and 'ALTER COLUMN "flag" TYPE TEXT' in dead.error, dead.error
    pg_store._conn.execute(f'ALTER TABLE {qualified(table)} ALTER COLUMN "a: b" TYPE TEXT')  # the fix it names works
    pg_store._conn.commit()
    assert not commit(pg_store, table, {"a: b": "warm"}).extra_dead


def test_postgresql_stores_text_without_the_nul_character_it_cannot_store(pg_store):
    """Firmware pads C strings with NUL, which PostgreSQL stores in no text or JSONB value: every message of
    such a device was a dead letter. Its rows are stored with the NULs left out (in text, in JSON, in tags), from
    then on up front; rows of other tables are left as they are."""
    table, other = TableName("ids", f"t{next(TABLES)}"), TableName("ids", f"t{next(TABLES)}")
    batch = Batch()
    message = Message("t", b"{}", 1, False, 1.0, "#")
    batch.add(Entry(table, [Record(NS, {"fw": "1.2.3\0\0", "v": 1, "names": ["a\0b"]}, {"site": "x\0"})], "main",
                    message, "json"))
    batch.add(Entry(other, [Record(NS, {"v": 2})], "main", message, "json"))
    pg_store._commit(batch)
    assert not batch.extra_dead, batch.extra_dead
    assert pg_store._conn.execute(f"SELECT fw, v, names, site FROM {qualified(table)}").fetchall() == [
        ("1.2.3", 1, ["ab"], "x")]
    assert commit(pg_store, table, {"fw": "2.0\0", "doc": [{"k": "v\0"}]}).extra_dead == []
    assert pg_store._conn.execute(f"SELECT fw, doc FROM {qualified(table)} WHERE fw = '2.0'").fetchall() == [
        ("2.0", [{"k": "v"}])]
    third = TableName("ids", f"t{next(TABLES)}")  # JSON first: the server's refusal of \u0000 (22P05)
    assert commit(pg_store, third, {"doc": ["x\0"], "v": 1}).extra_dead == []
    assert commit(pg_store, third, {"doc": ["y\0"], "v": 2}).extra_dead == []
    assert pg_store._conn.execute(f"SELECT doc FROM {qualified(third)} ORDER BY v").fetchall() == [(["x"],), (["y"],)]
    (dead,) = commit(pg_store, other, {"v": "warm"}).extra_dead  # another refusal of a scrubbed table's kind stays one
    assert "is BIGINT" in dead.error
    pg_store._conn.commit()


def test_postgresql_keeps_a_dead_letter_whose_topic_has_the_nul_character(pg_store):
    """An HTTP path (``/api/a%00b``), a Redis field or a Kafka key can carry NUL into a topic, and a message that
    no strategy routes is a dead letter with that topic: PostgreSQL refused the dead-letter row, and the whole
    batch with it, at every retry from the spool, for good. The topic and the error are kept with NUL shown as
    ``\\0``; the payload (bytes) as it came, and the batch's rows beside it."""
    from lorrygate.storage.batch import DeadLetter

    table = TableName("ids", f"t{next(TABLES)}")
    batch = Batch()
    hostile = Message("a\0b/c", b"{\"t\": \"\0\"}", 1, False, 1.0, "#")
    batch.add(Entry(table, [Record(NS, {"v": 1})], "main", Message("t", b"{}", 1, False, 1.0, "#"), "json"))
    batch.add_dead_letter(DeadLetter("main", hostile, "topology", "no route for 'a\0b/c'", ""))
    pg_store._commit(batch)
    assert pg_store._conn.execute(f"SELECT v FROM {qualified(table)}").fetchall() == [(1,)]
    assert pg_store._conn.execute("SELECT topic, payload, error FROM lorrygate_dead_letter WHERE topic LIKE 'a%' "
                                  "AND stage = 'topology'").fetchall() == [("a\\0b/c", b'{"t": "\0"}',
                                                                           "no route for 'a\\0b/c'")]
    pg_store._conn.commit()


def test_postgresql_max_tables_refuses_a_new_table_beyond_it(pg_store):
    """max_tables counts the tables of the database the storage knows: one more is made, the next is a dead letter
    that says so, and a known table keeps getting rows."""
    made, beyond = TableName("ids", f"t{next(TABLES)}"), TableName("ids", f"t{next(TABLES)}")
    pg_store.max_tables = len(pg_store._columns) + 1
    try:
        assert commit(pg_store, made, {"v": 1}).extra_dead == []
        (dead,) = commit(pg_store, beyond, {"v": 2}).extra_dead
        assert "TableBudgetExceeded" in dead.error and "its max_tables" in dead.error, dead.error
        assert commit(pg_store, made, {"v": 3, "w": 4}).extra_dead == []
    finally:
        pg_store.max_tables = 0
    assert pg_store._conn.execute(f"SELECT count(*) FROM {qualified(made)}").fetchone() == (2,)
    pg_store._conn.commit()


@pytest.mark.parametrize("store_name", ["sqlite_store", "pg_store"])
def test_a_field_named_with_nul_is_stored_in_the_column_of_its_name_without_them(request, store_name):
    """No SQL name may hold NUL, which firmware pads C strings with: a field or a nested key of such a name made
    its whole message a dead letter, every message of such a device. The name goes without them now (as
    PostgreSQL's text values do), and beside a field of that name, in a column of its own."""
    store = request.getfixturevalue(store_name)
    table = TableName("ids", f"t{next(TABLES)}")
    batch = Batch()
    for n, fields in enumerate(({"temp\0\0": 1}, {"wifi": {"rs\0si": -60}}, {"temp": 3, "temp\0": 4}, {"\0": 5})):
        batch.add(Entry(table, [Record(NS + n, fields)], "main", Message("t", b"{}", 1, False, 1.0, "#"), "json"))
    store._commit(batch)
    assert batch.extra_dead == []
    name = qualified(table) if isinstance(store.dialect, PostgresDialect) else quote(table_name(table))
    assert store._conn.execute(f'SELECT temp, "wifi.rssi", temp_2, "_" FROM {name} ORDER BY time').fetchall() == [
        (1, None, None, None), (None, -60, None, None), (3, None, 4, None), (None, None, None, 5)]
    store._conn.commit()


def test_postgresql_keeps_tables_apart_whose_names_share_their_first_63_bytes(postgres):
    """A strategy of one's own may name a table (or schema) beyond PostgreSQL's 63 bytes; PostgreSQL cut the
    name, so two such tables were one, and the storage, which looked for the whole name, did not find the
    table it had made (its columns unknown, after a restart too). Such a name keeps 63 bytes with a hash."""
    from lorrygate.storage.postgresql import PostgresStorage

    schema = "fleet_" + "s" * 70
    first, second = TableName(schema, "x" * 70 + "_a"), TableName(schema, "x" * 70 + "_b")
    for attempt in range(2):  # a restart reads what the first made
        store = PostgresStorage(f"long{attempt}", postgres.url, reactor=None)
        store._connect()
        try:
            for number, table in enumerate((first, second)):
                batch = commit(store, table, {"value": attempt * 10 + number, f"new{attempt}": 1})
                assert not batch.extra_dead, batch.extra_dead
            stored = []
            for table in (first, second):
                stored.append(store._conn.execute(f"SELECT value FROM {qualified(table)} ORDER BY value").fetchall())
            store._conn.commit()
            assert stored == [[(number,) for number in range(0, attempt * 10 + 1, 10)],
                              [(number + 1,) for number in range(0, attempt * 10 + 1, 10)]]
            assert all(len(name.encode()) <= 63 for name in store._columns for name in name.split("."))
        finally:
            store._close()

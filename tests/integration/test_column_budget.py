"""
The column budget against the real databases: a document far larger than a
table should hold (Zigbee2MQTT's bridge/info with 600 devices) is stored in
one row within ``max_columns``; objects nested deeper than ``flatten_depth``
and the fields beyond the budget are JSON, nothing is lost.
"""

import json
import uuid

import pytest

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.layout import EXTRA_COLUMN, flatten
from lorrygate.storage.postgresql import PostgresStorage, qualified
from lorrygate.storage.sqlite import SQLiteStorage, table_name
from lorrygate.topology.naming import quote
from tests.fleet.payloads import z2m_bridge_info

NS = 1_717_243_200_000_000_000


def commit(store, table, fields):
    batch = Batch()
    batch.add(Entry(table, [Record(NS, fields)], "main", Message("t", b"{}", 1, False, 1.0, "#"), "json"))
    store._commit(batch)
    return batch


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        backend = SQLiteStorage("db", str(tmp_path / "budget.sqlite"), reactor=None)
    else:
        backend = PostgresStorage("db", request.getfixturevalue("postgres").url, reactor=None)
    backend._connect()
    yield backend
    backend._close()


def read_all(store, table) -> list:
    """Every row of a table, as dicts by column name."""
    if store.dialect.name == "sqlite":
        cursor = store._conn.execute(f"SELECT * FROM {quote(table_name(table))}")
    else:
        cursor = store._conn.execute(f"SELECT * FROM {qualified(table)}")
        store._conn.commit()
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def read(store, table) -> dict:
    (row,) = read_all(store, table)
    return row


def as_json(value):
    """A JSON column's value (SQLite keeps JSON as text); other values as they are."""
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    return value


def test_bridge_info_of_600_devices_fits_the_budget_and_loses_nothing(store):
    """600 devices, 2,400 leaves: one row, at most max_columns columns; an object deeper than flatten_depth
    (each device's settings) is one JSON value, in its column or, beyond the budget, in extra_fields."""
    table = TableName("z2m", f"bridge_events_{store.dialect.name}")
    document = json.loads(z2m_bridge_info(600))
    batch = commit(store, table, document)
    assert not batch.extra_dead
    row = read(store, table)
    assert len(row) <= store.max_columns
    assert row["version"] == "1.35.1" and row["config.mqtt.base_topic"] == "zigbee2mqtt"
    extra = as_json(row[EXTRA_COLUMN])
    stored = {name: as_json(value) for name, value in list(row.items()) + list(extra.items()) if value is not None}
    devices = {name.split(".")[-1]: value for name, value in stored.items() if name.startswith("config.devices.")}
    assert len(devices) == 600 and devices["0x00158d0000000257"]["friendly_name"] == "sensor 599"
    assert stored["config.groups.1"]["friendly_name"] == "living room"
    assert stored["network.extended_pan_id"] == [221, 221, 221, 221]


def test_fields_beyond_max_columns_go_into_one_json_column(store):
    """A table at its budget keeps its columns; a row's new fields beyond go into extra_fields, readable."""
    store.max_columns = 20
    table = TableName("z2m", f"wide_{store.dialect.name}")
    first = {f"a{n}": n for n in range(15)}
    commit(store, table, first)
    second = dict(first, **{f"b{n}": n for n in range(10)})
    batch = commit(store, table, second)
    assert not batch.extra_dead
    rows = read_all(store, table)
    assert len(rows[0]) <= 20
    (wide,) = [row for row in rows if row[EXTRA_COLUMN] is not None]  # both rows share a time: no order
    stored = {k: v for k, v in wide.items() if k.startswith(("a", "b")) and v is not None}
    stored.update(as_json(wide[EXTRA_COLUMN]))
    assert stored == second


def test_flatten_keeps_objects_deeper_than_the_depth_whole():
    """flatten_depth = 2: {"a": {"b": {"c": 1}}} is a.b = {"c": 1}; an empty object is a value."""
    assert flatten({"a": {"b": {"c": 1}}, "e": {}}, {}, depth=2) == {"a.b": {"c": 1}, "e": {}}
    assert flatten({"a": {"b": {"c": 1}}}, {}, depth=3) == {"a.b.c": 1}


def test_a_budget_beyond_the_databases_limit_is_held_to_it(store):
    """max_columns above what a table of the database can have (SQLite 2,000 as built, PostgreSQL 1,600): a
    row of more fields is stored within that limit, the rest in extra_fields, at once. (It went to the
    database, which added columns one by one up to its limit, 8 s with SQLite while nothing else was stored,
    and then refused the row.)"""
    store.max_columns = 32767
    limit = store.dialect.column_limit
    assert limit == (1600 if store.dialect.name == "postgresql" else 2000)
    table = TableName("budget", "beyond")
    fields = {f"f{n}": str(n) for n in range(limit + 1)}  # (text: 1,600 numbers are too big for a PostgreSQL row)
    batch = commit(store, table, fields)
    assert batch.extra_dead == []
    row = read(store, table)
    assert len(row) == limit
    extra = as_json(row[EXTRA_COLUMN])
    assert {**{k: v for k, v in row.items() if k.startswith("f")}, **extra} == fields


@pytest.fixture
def pg(postgres):
    backend = PostgresStorage("db", postgres.url, reactor=None)
    backend.max_columns = 1600
    backend._connect()
    yield backend
    backend._close()


def test_a_row_beyond_postgresqls_page_keeps_the_fields_that_fit_and_loses_none(pg):
    """PostgreSQL keeps a row in one 8 kB page, and TOAST moves no numbers out of it: 1,500 numbers within the
    1,600 columns were refused (row is too big, a dead letter). The row keeps the numbers it has room for, the
    rest goes into extra_fields; the next row of them keeps the same columns."""
    table = TableName("budget", "numbers")
    first = {f"f{n}": n + 0.5 for n in range(1500)}
    second = {name: value + 1 for name, value in first.items()}
    for fields in (first, second):
        assert commit(pg, table, fields).extra_dead == []
    rows = read_all(pg, table)
    assert len(rows) == 2
    for row in rows:
        stored = {name: value for name, value in row.items() if name.startswith("f")}
        assert 900 < len(stored) < 1000  # (~990 doubles a row)
        assert {**stored, **as_json(row[EXTRA_COLUMN])} in (first, second)
    assert {tuple(name for name in row if name.startswith("f")) for row in rows} == {tuple(
        name for name in rows[0] if name.startswith("f"))}
    assert pg.stats["over_row_size"] == 2


def _alternating(one, other):
    return lambda n: {f"v{i}": (one if i % 2 else other)(i) for i in range(n)}


@pytest.mark.parametrize("make", [
    lambda n: {f"v{i}": i + 0.25 for i in range(n)},
    lambda n: {f"v{i}": i for i in range(n)},
    _alternating(lambda i: i % 3 == 0, lambda i: i * 1.5),  # a padding before each number
    _alternating(lambda i: f"{i:023d}", lambda i: i * 1.5),  # text of 23 bytes: stays in the row
    _alternating(lambda i: "é" * 12, lambda i: i),  # 24 bytes of UTF-8 in 12 characters
    _alternating(lambda i: f"{i}" * 100, lambda i: i * 1.5),  # long text: TOAST moves it out
    _alternating(lambda i: [i, i + 1, str(i)], lambda i: i),  # JSONB
    lambda n: {f"v{i}": i % 2 == 0 for i in range(n)},
], ids=["floats", "ints", "bools-floats", "text23-floats", "utf8-ints", "longtext-floats", "json-ints", "bools"])
def test_the_row_size_bound_holds_against_postgresql(pg, make):
    """The most fields of each kind of value that `row_size.fit` lets through as they are: PostgreSQL takes
    that row (the bound is from above), and a row of more, fitted, too."""
    from lorrygate.storage import row_size

    most = max(n for n in range(1, 1599) if row_size.fit(make(n), {}, {}, str) is None)
    assert most >= row_size.SAFE_FIELDS
    table = TableName("bound", f"t{uuid.uuid4().hex[:12]}")
    assert commit(pg, table, make(most)).extra_dead == []
    row = read(pg, table)
    assert EXTRA_COLUMN not in row and sum(1 for name in row if name.startswith("v")) == most
    if most < 1598:
        wider = make(min(most + 200, 1598))
        assert commit(pg, TableName("bound", f"t{uuid.uuid4().hex[:12]}"), wider).extra_dead == []

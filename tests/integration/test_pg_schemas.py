"""
PostgreSQL makes a network's schema once and a new table with its time index in one round trip, against a
real server: the statements sent are seen on their way (a spy: each still goes). A schema made by an entry
that is then rolled back (to its savepoint, or the whole transaction) is made again for the next table. A
write's many new tables are made half on a connection of their own, beside the rows' transaction: never in a
schema that transaction made, and by the writer's connection when that connection fails.
"""

import itertools

import psycopg
import pytest

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.postgresql import PostgresDialect, qualified
from tests.integration.pgstore import connected

NS = 1_717_243_200_000_000_000
RUN = itertools.count()
#: the `sent` fixture's statements by connection (``id(conn)``), in a list of one
statements_by_connection: list = []


@pytest.fixture
def sent(monkeypatch):
    """The statements the dialect executes on its connection (``Connection.execute``), in order."""
    statements: list = []
    execute = psycopg.Connection.execute

    def spy(conn, query, params=None, **kwargs):
        statements.append(str(query))
        by_connection.setdefault(id(conn), []).append(str(query))
        return execute(conn, query, params, **kwargs)

    by_connection: dict = {}
    statements_by_connection.clear()
    statements_by_connection.append(by_connection)

    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    return statements


def entry(table, fields, n, topic="t"):
    return Entry(table, [Record(NS + n * 1000, fields)], "main", Message(topic, b"{}", 1, False, 1.0, "#"), "json")


def refused_entry(table, n, topic):
    """An entry whose first row makes its table's column a BIGINT and whose second the database refuses."""
    return Entry(table, [Record(NS + n * 1000, {"note": 1}), Record(NS + n * 1000 + 1, {"note": "warm"})], "main",
                 Message(topic, b"{}", 1, False, 1.0, "#"), "json")


def count(url, table) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {qualified(table)}").fetchone()[0]


def time_indexes(url, schema) -> set:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)).fetchall()
    return {table for table, definition in rows if definition.endswith('("time")')}


def test_a_networks_tables_make_its_schema_once_and_each_its_index_in_the_same_round_trip(postgres, sent):
    """Five new tables in one batch, three more in the next: one CREATE SCHEMA in all; each table's CREATE TABLE
    and CREATE INDEX go as one statement string, and every table has its rows and its index on time."""
    schema = f"schemas_{next(RUN)}"
    fleet = [TableName(schema, f"node_{i}") for i in range(8)]
    with connected(postgres.url) as store:
        store.beside_min_tables = None  # (the writer's connection makes them all: one CREATE SCHEMA in all)
        for members in (fleet[:5], fleet[5:]):
            batch = Batch()
            for k, table in enumerate(members):
                batch.add(entry(table, {"temperature": 20.5 + k, "seq": k}, k))
            store._commit(batch)
    made = [s for s in sent if s.startswith("CREATE SCHEMA")]
    assert made == [f'CREATE SCHEMA IF NOT EXISTS "{schema}"']
    tables = [s for s in sent if s.startswith("CREATE TABLE")]
    assert len(tables) == 8
    assert all("; CREATE INDEX IF NOT EXISTS" in s for s in tables)
    assert time_indexes(postgres.url, schema) == {table.table for table in fleet}
    assert [count(postgres.url, table) for table in fleet] == [1] * 8


def test_a_schema_made_by_a_refused_entry_is_made_again_for_the_next_one(postgres, sent):
    """The first entry of a new network makes its schema and table, then its row is refused (text in the BIGINT
    column its first row made): rolled back to the entry's savepoint, the schema is gone, and the
    next entry of that network makes it again instead of failing on a schema that is not there."""
    schema = f"schemas_{next(RUN)}"
    wide, fine = TableName(schema, "wide"), TableName(schema, "fine")
    with connected(postgres.url) as store:
        batch = Batch()
        batch.add(refused_entry(wide, 0, topic="wide"))
        batch.add(entry(fine, {"seq": 1}, 1, topic="fine"))
        store._commit(batch)
        assert [d.message.topic for d in batch.extra_dead] == ["wide"]
        assert count(postgres.url, fine) == 1
        later = Batch()  # and the next transaction finds the schema made (no CREATE SCHEMA)
        later.add(entry(TableName(schema, "later"), {"seq": 2}, 2))
        before = len([s for s in sent if s.startswith("CREATE SCHEMA")])
        store._commit(later)
    assert len([s for s in sent if s.startswith("CREATE SCHEMA")]) == before
    assert count(postgres.url, TableName(schema, "later")) == 1


def test_a_schema_dropped_while_running_is_made_again_after_the_failed_write(postgres):
    """Someone drops a network's schema while the gateway writes: the next new table of it fails the batch
    once, the rollback forgets the schemas known, and the entry-by-entry retry makes the schema again: the
    row is stored, not a dead letter."""
    schema = f"schemas_{next(RUN)}"
    with connected(postgres.url) as store:
        first = Batch()
        first.add(entry(TableName(schema, "a"), {"seq": 1}, 1))
        store._commit(first)
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        again = Batch()
        again.add(entry(TableName(schema, "b"), {"seq": 2}, 2))
        store._commit(again)
        assert again.extra_dead == []
    assert count(postgres.url, TableName(schema, "b")) == 1


def creates(statements, schema) -> list:
    return [s for s in statements if s.startswith("CREATE TABLE") and f'"{schema}".' in s]


def test_a_writes_new_tables_are_made_half_on_a_connection_of_their_own(postgres, sent):
    """40 new tables in one batch: 20 made by the writer's connection in the rows' transaction, 20 beside it on a
    connection of its own; every table has its row and its index on time, and the next batch makes none."""
    schema = f"beside_{next(RUN)}"
    fleet = [TableName(schema, f"node_{i}") for i in range(40)]
    with connected(postgres.url) as store:
        for n in range(2):
            batch = Batch()
            for k, table in enumerate(fleet):
                batch.add(entry(table, {"temperature": 20.5 + k, "seq": k}, n * 100 + k))
            store._commit(batch)
        assert store.dialect._beside is not None and not store.dialect._beside.closed
    (by_connection,) = statements_by_connection
    made = sorted(len(creates(statements, schema)) for statements in by_connection.values())
    assert made[-2:] == [20, 20] and sum(made) == 40
    assert time_indexes(postgres.url, schema) == {table.table for table in fleet}
    assert [count(postgres.url, table) for table in fleet] == [2] * 40


def test_tables_made_beside_a_transaction_that_fails_stay_and_its_rows_go_in_entry_by_entry(postgres):
    """20 new tables, one row of them refused (text in a BIGINT column): the whole transaction rolls back, the tables
    made beside it stay (empty, as a concurrent gateway could have made them), and the entry-by-entry retry
    stores every other row, once; the refused one is a dead letter."""
    schema = f"beside_{next(RUN)}"
    fleet = [TableName(schema, f"node_{i}") for i in range(20)]
    with connected(postgres.url) as store:
        batch = Batch()
        for k, table in enumerate(fleet):
            batch.add(refused_entry(table, k, f"t/{k}") if k == 7 else entry(table, {"note": k}, k, topic=f"t/{k}"))
        store._commit(batch)
        assert [d.message.topic for d in batch.extra_dead] == ["t/7"]
    assert [count(postgres.url, table) for table in fleet] == [0 if k == 7 else 1 for k in range(20)]


def test_a_schema_the_rows_transaction_made_is_not_made_beside_it(postgres, sent):
    """A new table with rows of two shapes makes its schema in the rows' transaction (the table first, then the
    second shape's column); the 20 new tables after it in that schema are made by the writer's connection
    alone: the other connection would wait for that transaction's schema, and the transaction for it."""
    schema = f"beside_{next(RUN)}"
    first = TableName(schema, "first")
    fleet = [TableName(schema, f"node_{i}") for i in range(20)]
    with connected(postgres.url) as store:
        batch = Batch()
        batch.add(entry(first, {"a": 1}, 0))
        batch.add(entry(first, {"a": 2, "b": 3}, 1))
        for k, table in enumerate(fleet):
            batch.add(entry(table, {"seq": k}, 10 + k))
        store._commit(batch)
    (by_connection,) = statements_by_connection
    naming = [statements for statements in by_connection.values() if any(f'"{schema}"' in s for s in statements)]
    assert len(naming) == 1 and len(creates(naming[0], schema)) == 21  # (not even a CREATE SCHEMA beside)
    assert [count(postgres.url, table) for table in [first] + fleet] == [2] + [1] * 20


def test_when_the_connection_beside_fails_the_writers_connection_makes_every_table(postgres, monkeypatch):
    """The connection of its own cannot connect: the writer's connection makes all 20 tables, every row stored."""
    schema = f"beside_{next(RUN)}"
    fleet = [TableName(schema, f"node_{i}") for i in range(20)]

    def refused(self):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(PostgresDialect, "connect_aside", refused)
    with connected(postgres.url) as store:
        batch = Batch()
        for k, table in enumerate(fleet):
            batch.add(entry(table, {"seq": k}, k))
        store._commit(batch)
        assert batch.extra_dead == [] and store.dialect._beside is None
    assert [count(postgres.url, table) for table in fleet] == [1] * 20

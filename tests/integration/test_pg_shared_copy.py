"""
PostgreSQL writes the tables of one shape with one COPY (into a temporary table, then one round trip of
INSERT ... SELECT), against a real server: every row in its own table once, in order; a refused value still
makes only its message a dead letter; a rolled-back transaction's temporary table is made again.
"""

import itertools

import psycopg
import pytest

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.postgresql import PostgresStorage, qualified

NS = 1_717_243_200_000_000_000
RUN = itertools.count()


@pytest.fixture
def store(postgres):
    storage = PostgresStorage("db", postgres.url, reactor=None)
    storage._connect()
    yield storage
    storage._close()


def entry(table, fields, n, topic="t"):
    return Entry(table, [Record(NS + n * 1000, fields)], "main", Message(topic, b"{}", 1, False, 1.0, "#"), "json")


def read(url, table, columns):
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {columns} FROM {qualified(table)} ORDER BY time").fetchall()


def tables(prefix, count):
    return [TableName(f"shared_{prefix}", f"node_{i}") for i in range(count)]


def test_tables_of_one_shape_share_a_copy_and_every_row_lands_once_in_its_table(store, postgres):
    """12 tables of one shape, 2 of another, one whose seq column is a float: each gets exactly its rows."""
    run = next(RUN)
    fleet, others, odd = tables(f"{run}_a", 12), tables(f"{run}_b", 2), TableName(f"shared_{run}_c", "odd")
    for round_ in range(2):  # the first batch creates the tables, the second finds them (and the shared COPY)
        batch = Batch()
        n = 0
        for k in range(60):
            table = fleet[k % 12]
            batch.add(entry(table, {"temperature": k / 2, "seq": k, "sensor": "bme280"}, round_ * 1000 + n))
            n += 1
            if k % 10 == 0:
                batch.add(entry(others[(k // 10) % 2], {"level": k}, round_ * 1000 + n))
                batch.add(entry(odd, {"temperature": 1.5, "seq": k + 0.5, "sensor": "x"}, round_ * 1000 + n))
                n += 1
        store._commit(batch)
        assert batch.tables == 15  # what the batcher tells a wide write by
    assert store.dialect._stages, "the fleet's tables shared a COPY"
    for i, table in enumerate(fleet):
        expected = [(k / 2, k, "bme280") for k in range(i, 60, 12)] * 2
        assert read(postgres.url, table, "temperature, seq, sensor") == expected
    for i, table in enumerate(others):
        assert read(postgres.url, table, "level") == [(k,) for k in range(0, 60, 10) if (k // 10) % 2 == i] * 2
    assert read(postgres.url, odd, "seq") == [(k + 0.5,) for k in range(0, 60, 10)] * 2


def test_a_value_its_column_refuses_is_one_dead_letter_and_the_shared_copy_goes_on(store, postgres):
    """Text in a BIGINT column, among 30 good rows of 6 tables: that message is a dead letter, the rest stored,
    and the next batch shares its COPY again."""
    run = next(RUN)
    fleet = tables(f"{run}_d", 6)
    first = Batch()
    for k in range(6):
        first.add(entry(fleet[k], {"seq": k}, k))
    store._commit(first)
    bad = Batch()
    for k in range(30):
        fields = {"seq": "not a number"} if k == 7 else {"seq": 100 + k}
        bad.add(entry(fleet[k % 6], fields, 100 + k, topic=f"bad/{k}" if k == 7 else "t"))
    store._commit(bad)
    assert [(d.message.topic, d.stage) for d in bad.extra_dead] == [("bad/7", "store")]
    assert "bigint" in bad.extra_dead[0].error
    after = Batch()
    for k in range(6):
        after.add(entry(fleet[k], {"seq": 200 + k}, 200 + k))
    store._commit(after)
    stored = sorted(seq for table in fleet for (seq,) in read(postgres.url, table, "seq"))
    assert stored == sorted(list(range(6)) + [100 + k for k in range(30) if k != 7] + [200 + k for k in range(6)])
    assert store.dialect._stages


def test_a_rolled_back_transaction_forgets_the_temporary_table_it_made(store, postgres):
    """The temporary table made in a transaction that rolls back is gone with it: the next batch makes another."""
    run = next(RUN)
    fleet = tables(f"{run}_e", 4)
    for k in range(4):  # one table a batch: no shared COPY yet
        first = Batch()
        first.add(entry(fleet[k], {"v": k}, k))
        store._commit(first)
    assert not store.dialect._stages
    conn = store._conn
    store.dialect.insert_all(conn, [(t, store.dialect.physical(t), ("v",), [[f"2024-06-01T12:00:0{k}Z", k]])
                                    for k, t in enumerate(fleet)], False,
                             lambda physical, columns: store._types(physical, columns, {}))
    made = dict(store.dialect._stages)
    assert made
    store.dialect.rollback(conn)
    assert not store.dialect._stages
    second = Batch()
    for k in range(4):
        second.add(entry(fleet[k], {"v": 10 + k}, 10 + k))
    store._commit(second)
    assert sorted(v for t in fleet for (v,) in read(postgres.url, t, "v")) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert store.dialect._stages and set(store.dialect._stages.values()) != set(made.values())


def test_a_temporary_table_used_twice_in_a_transaction_does_not_move_rows_twice(store, postgres):
    """Two shared COPYs of one shape in one transaction (the table's rows of the first are gone before the second)."""
    run = next(RUN)
    fleet = tables(f"{run}_f", 3)
    for k in range(3):
        first = Batch()
        first.add(entry(fleet[k], {"v": k}, k))
        store._commit(first)
    conn, dialect = store._conn, store.dialect
    for base in (10, 20):
        dialect.insert_all(conn, [(t, dialect.physical(t), ("v",), [[f"2024-06-01T12:00:{base + k}Z", base + k]])
                                  for k, t in enumerate(fleet)], False,
                           lambda physical, columns: store._types(physical, columns, {}))
    dialect.commit(conn)
    assert sorted(v for t in fleet for (v,) in read(postgres.url, t, "v")) == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_the_temporary_tables_are_bounded_as_shapes_come_and_go(store, postgres):
    """At most max_stages temporary tables: a new shape's table replaces the oldest, and rows still land."""
    store.dialect.max_stages = 2
    run = next(RUN)
    fleet = tables(f"{run}_g", 3)
    for shape in range(4):
        batch = Batch()
        for k, table in enumerate(fleet):
            batch.add(entry(table, {f"f{shape}": k}, shape * 10 + k))
        store._commit(batch)  # the first makes the tables, the later add a column each
    assert store.dialect._made == 4 and len(store.dialect._stages) == 2  # each shape shared a COPY
    for k, table in enumerate(fleet):
        assert read(postgres.url, table, "f0, f1, f2, f3") == [(k, None, None, None), (None, k, None, None),
                                                                (None, None, k, None), (None, None, None, k)]
    temporary = store._conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'lorrygate_stage_%' "
                                    "AND relkind = 'r' AND relpersistence = 't' AND pg_table_is_visible(oid)")
    assert temporary.fetchone()[0] == 2
    store._conn.rollback()

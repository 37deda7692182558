"""
PostgreSQL's lock table is shared by all sessions (``max_locks_per_transaction`` x ``max_connections``, 6,400
by default), and a transaction takes locks for each table it creates (~7 with a TOAST table) or writes (1): a
batch over more tables than that is written in several transactions. Against real servers: the session's, and
one of this module's with a small lock table (10 x 20), where 300 new tables in one transaction run out of it
as 8,000 did on a default server (a 10,000-node fleet's first batch never succeeded).
"""

import itertools

import psycopg
import pytest

from lorrygate.errors import StorageError
from lorrygate.model import Message, Record, TableName
from lorrygate.storage import spool
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.postgresql import PostgresDialect, qualified
from lorrygate.storage.sqlstorage import LOCKS_KNOWN_TABLE, LOCKS_NEW_TABLE
from tests.integration.pgstore import connected
from tests.servers import PostgreSQL

NS = 1_717_243_200_000_000_000
RUN = itertools.count()


@pytest.fixture(scope="module")
def small():
    """A server with a small lock table: 10 locks a transaction, 20 connections."""
    server = PostgreSQL(options="-c max_locks_per_transaction=10 -c max_connections=20").start()
    yield server
    server.stop()


@pytest.fixture
def store(small):
    with connected(small.url) as storage:
        # every new table made in the rows' transaction, as these tests count its locks (made beside it, half of
        # a batch's new tables take none there: `SqlStorage._make_new`)
        storage.beside_min_tables = None
        yield storage


@pytest.fixture
def fresh():
    """A small server of the test's own, for the tests that need 300 new tables to overflow its lock table:
    they do on a fresh server, but fitted in one transaction after another test's writes on the same server
    (seen when this module's tests were spread over two pytest workers)."""
    server = PostgreSQL(options="-c max_locks_per_transaction=10 -c max_connections=20").start()
    try:
        with connected(server.url) as storage:
            storage.beside_min_tables = None
            yield storage, server
    finally:
        server.stop()


def message(topic="t"):
    return Message(topic, b"{}", 1, False, 1.0, "#")


def fleet_batch(schema, count, n=0, dead=0):
    batch = Batch()
    for i in range(count):
        batch.add(Entry(TableName(schema, f"node_{i}"), [Record(NS + n, {"temperature": i + 0.5}),
                                                          Record(NS + n + 1, {"temperature": i + 1.5})],
                        "main", message(), "json"))
    for i in range(dead):
        batch.add_dead_letter(DeadLetter("main", message(f"bad/{schema}/{i}"), "decode", "not JSON"))
    return batch


def stored(url, schema, count, start=0):
    """Rows a table and the transactions (xmin) that wrote them."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows, transactions = [], set()
        for i in range(start, count):
            found = conn.execute(f"SELECT temperature, xmin::text FROM {qualified(TableName(schema, f'node_{i}'))} "
                                 "ORDER BY time").fetchall()
            rows.append([value for value, _ in found])
            transactions.update(xmin for _, xmin in found)
        return rows, transactions


def dead_letters(url, schema):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM lorrygate_dead_letter WHERE topic LIKE %s",
                            (f"bad/{schema}/%",)).fetchone()[0]


def test_the_budget_is_half_the_servers_lock_table(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        per_transaction, connections, prepared = (int(conn.execute(f"SHOW {name}").fetchone()[0]) for name in (
            "max_locks_per_transaction", "max_connections", "max_prepared_transactions"))
    with connected(postgres.url) as storage:
        assert storage.lock_budget == per_transaction * (connections + prepared) // 2


def test_more_new_tables_than_the_lock_table_takes_are_written_in_several_transactions(fresh):
    """300 new tables run out of the small server's lock table in one transaction; with the budget every row
    is stored once, in transactions of half the lock table's worth of tables, the dead letters with them."""
    store, small = fresh
    schema = f"locks_{next(RUN)}"
    budget, store.lock_budget = store.lock_budget, None
    with pytest.raises(StorageError, match="out of shared memory"):
        store._commit(fleet_batch(f"{schema}_whole", 300))
    store._close()
    store.lock_budget = budget
    batch = fleet_batch(schema, 300, dead=2)
    store._commit(batch)
    rows, transactions = stored(small.url, schema, 300)
    assert rows == [[i + 0.5, i + 1.5] for i in range(300)]
    assert budget == 10 * 20 // 2 and len(transactions) == -(-300 // (budget // LOCKS_NEW_TABLE))
    assert batch.tables == 300 and dead_letters(small.url, schema) == 2
    # the same tables again: known tables take fewer locks, so fewer transactions
    again = fleet_batch(schema, 300, n=10)
    store._commit(again)
    assert again.tables == 300
    rows, transactions = stored(small.url, schema, 300)
    assert rows == [[i + 0.5, i + 1.5, i + 0.5, i + 1.5] for i in range(300)]


def test_a_part_that_fails_leaves_the_parts_before_it_committed_and_the_retry_writes_the_rest(store, small,
                                                                                              monkeypatch):
    """The third transaction fails: the first two stay committed and marked in the batch's progress; the spool
    would keep only the rest, and the retry writes only the rest (no row twice)."""
    schema = f"locks_{next(RUN)}"
    store.lock_budget = 10 * LOCKS_NEW_TABLE
    batch = fleet_batch(schema, 30, dead=3)
    # a row the database refuses, in the first part: a dead letter of its own, committed with that part
    batch.entries.insert(1, Entry(TableName(schema, "node_0"), [Record(NS + 5, {"bad": "\ud800"})], "main",
                                  message(f"bad/{schema}/refused"), "json"))
    commit = PostgresDialect.commit
    commits = []

    def third_fails(self, conn):
        commits.append(1)
        if len(commits) == 3:
            raise psycopg.OperationalError("the server went away")
        commit(self, conn)

    monkeypatch.setattr(PostgresDialect, "commit", third_fails)
    with pytest.raises(StorageError):
        store._commit(batch)
    rows, _ = stored(small.url, schema, 20)
    assert rows == [[i + 0.5, i + 1.5] for i in range(20)]
    assert dead_letters(small.url, schema) == 3 + 1  # with the first part
    assert len(batch.extra_dead) == 1 and batch.refused_rows == 1
    left = spool.decode(spool.encode(batch))
    assert [entry.table.table for entry in left.entries] == [f"node_{i}" for i in range(20, 30)]
    assert left.dead_letters == []

    store._close()
    store._commit(batch)
    rows, _ = stored(small.url, schema, 30)
    assert rows == [[i + 0.5, i + 1.5] for i in range(30)]
    assert dead_letters(small.url, schema) == 3 + 1
    # (the first part went in entry by entry, each in a savepoint of its own: a transaction id each)
    assert len(stored(small.url, schema, 30, start=10)[1]) == 2


def test_a_server_with_fewer_free_locks_halves_the_budget_until_a_batch_fits(fresh):
    """A budget larger than what the server has (other sessions hold locks, or a small lock table): the write
    fails with "out of shared memory", is retried as the batcher retries, and goes in with half the tables
    a transaction, then a quarter, ..."""
    store, small = fresh
    schema = f"locks_{next(RUN)}"
    store.lock_budget = 8 * 300 * LOCKS_NEW_TABLE
    batch = fleet_batch(schema, 300)
    failures = 0
    while True:
        try:
            store._commit(batch)
            break
        except StorageError as exc:
            assert "out of shared memory" in str(exc)
            failures += 1
            assert failures < 10
    assert failures >= 4 and store.lock_budget <= 300 * LOCKS_NEW_TABLE // 2
    rows, _ = stored(small.url, schema, 300)
    assert rows == [[i + 0.5, i + 1.5] for i in range(300)]


def test_known_tables_count_as_fewer_locks(store, small):
    """Tables the writer knows need a lock (two with a new column), not a new table's seven."""
    schema = f"locks_{next(RUN)}"
    store.lock_budget = 10 * LOCKS_NEW_TABLE
    store._commit(fleet_batch(schema, 40))  # 10 new tables a transaction
    store._commit(fleet_batch(schema, 40, n=10))  # 40 known ones
    _, transactions = stored(small.url, schema, 40)
    assert 10 * LOCKS_NEW_TABLE // LOCKS_KNOWN_TABLE == 40 and len(transactions) == 4 + 1


def test_running_out_of_locks_while_writing_entry_by_entry_halves_the_budget_too(fresh):
    """A refused entry first, then more new tables than the lock table takes: the batch is written entry by
    entry (a savepoint each), runs out of locks there, and that halves the budget as well."""
    store, small = fresh
    schema = f"locks_{next(RUN)}"
    store.lock_budget = 8 * 300 * LOCKS_NEW_TABLE
    batch = fleet_batch(schema, 300)
    batch.entries.insert(0, Entry(TableName(schema, "node_0"), [Record(NS + 5, {"bad": "\ud800"})], "main",
                                  message(f"bad/{schema}/refused"), "json"))
    for _attempt in range(10):
        try:
            store._commit(batch)
            break
        except StorageError as exc:
            assert "out of shared memory" in str(exc)
    else:
        pytest.fail(f"never written; the budget stayed {store.lock_budget}")
    rows, _ = stored(small.url, schema, 300)
    assert rows == [[i + 0.5, i + 1.5] for i in range(300)]
    assert dead_letters(small.url, schema) == 1

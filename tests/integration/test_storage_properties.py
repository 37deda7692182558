"""
The SQLite and PostgreSQL writers against arbitrary field values (tests/anyvalues.py) in a real database:
whatever a fleet sends, a commit never fails (a failed commit is retried, then spooled, and the storage
waits on it), and every message ends stored or a dead letter.
"""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.postgresql import PostgresDialect, qualified
from lorrygate.storage.sqlite import table_name
from lorrygate.topology.naming import quote
from tests import anyvalues

pytestmark = pytest.mark.integration

T = 1_717_243_200_000_000_000
#: tables of their own for every example
EXAMPLES = itertools.count()


def count_rows(store, table) -> int:
    if isinstance(store.dialect, PostgresDialect):
        found = store._conn.execute("SELECT to_regclass(%s)", (qualified(table),)).fetchone()[0]
        count = store._conn.execute(f"SELECT count(*) FROM {qualified(table)}").fetchone()[0] if found else 0
        store._conn.commit()
        return count
    name = table_name(table)
    exists = store._conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return store._conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0] if exists else 0


ARBITRARY = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@ARBITRARY
@given(batches=anyvalues.batches)
def test_sqlite_never_fails_a_commit_of_arbitrary_fields_and_keeps_each_message(sqlite_store, batches):
    each_message_stored_or_dead(sqlite_store, batches)


@ARBITRARY
@given(batches=anyvalues.batches)
def test_postgresql_never_fails_a_commit_of_arbitrary_fields_and_keeps_each_message(pg_store, batches):
    each_message_stored_or_dead(pg_store, batches)


def each_message_stored_or_dead(store, batches) -> None:
    example = next(EXAMPLES)
    tables = [TableName(f"p{example}", "gw_node_1_sensors"), TableName(f"p{example}", "gw_node_2_sensors")]
    sent = {0: 0, 1: 0}
    dead = 0
    for number, items in enumerate(batches):
        batch = Batch()
        for seq, (which, fields, tags) in enumerate(items):
            message = Message("net/gw/node/data.json", f"{number}/{seq}".encode(), 1, False, 1.0, "#")
            batch.add(Entry(tables[which], [Record(T + (number * 1000 + seq) * 1_000_000, fields, tags)], "main",
                            message, "json"))
            sent[which] += 1
        store._commit(batch)  # (raises: the batch failed)
        dead += len({id(d.message) for d in batch.extra_dead})
    stored = count_rows(store, tables[0]) + count_rows(store, tables[1])
    assert stored + dead == sent[0] + sent[1], (stored, dead, sent)

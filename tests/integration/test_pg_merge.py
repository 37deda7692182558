"""``merge`` against a real PostgreSQL: the rows of a table with the same tags in one time bucket are one row."""

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Entry
from tests.integration.pgstore import connected
from tests.unit.test_sqlite_merge import BUCKET, NS, SECOND, batch, expected_rows, sent

pytestmark = pytest.mark.integration



def entry(table, fields, time=NS, tags=None):
    return Entry(table, [Record(time, fields, tags)], "main", Message("solar/1/0/power", b"1", 1, False, 1.5, "#"),
                 "value")


def query(url, sql):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def fresh() -> TableName:
    return TableName(f"m{uuid.uuid4().hex[:8]}", "inverter_1_sensors")


def test_values_of_a_bucket_merge_within_and_across_batches(postgres):
    """One batch with three values of a key (merged before they are written) and a later batch (merged by
    PostgreSQL): one row at the bucket's start; the later value wins, a missing one keeps its value; other tags
    and buckets stay apart."""
    table = fresh()
    name = f'"{table.schema}"."{table.table}"'
    with connected(postgres.url, merge=10.0) as store:
        store._commit(batch(entry(table, {"power": 1.5, "yield": 7}), entry(table, {"voltage": 231.0}, NS + SECOND),
                            entry(table, {"power": 2.5}, NS + 2 * SECOND),
                            entry(table, {"power": 9.0}, tags={"channel": "1"}),
                            entry(table, {"power": 4.0}, BUCKET + 10 * SECOND)))
        store._commit(batch(entry(table, {"current": 1.25}, NS + 3 * SECOND)))
    assert query(postgres.url, f"SELECT extract(epoch FROM time)::bigint, channel, power, yield, voltage, current "
                               f"FROM {name} ORDER BY time, channel NULLS FIRST") == [
        (1_717_243_200, None, 2.5, 7, 231.0, 1.25), (1_717_243_200, "1", 9.0, None, None, None),
        (1_717_243_210, None, 4.0, None, None, None)]


def test_a_table_made_before_merge_gets_a_unique_key(postgres):
    """A table of an earlier run, a row a record, gets a unique index on (time, lorrygate_id) at its first merged
    write (one, however often the gateway starts); its rows stay."""
    table = fresh()
    name = f'"{table.schema}"."{table.table}"'
    with connected(postgres.url) as plain:
        plain._commit(batch(entry(table, {"power": 1.0}), entry(table, {"voltage": 2.0})))
    for run in range(2):
        with connected(postgres.url, merge=10.0) as store:
            store._commit(batch(entry(table, {"power": 3.0 + run}), entry(table, {"voltage": 4.0})))
    assert sorted(query(postgres.url, f"SELECT power, voltage, lorrygate_id IS NULL FROM {name}"), key=repr) == [
        (1.0, None, True), (4.0, 4.0, False), (None, 2.0, True)]
    assert query(postgres.url, f"SELECT indexname FROM pg_indexes WHERE schemaname = '{table.schema}' "
                               "AND indexdef LIKE 'CREATE UNIQUE%' ORDER BY indexname") == [
        ("inverter_1_sensors_merge_key",)]


def test_a_new_table_has_the_key_as_its_primary_key_and_a_refused_entry_is_a_dead_letter(postgres):
    """A new table's primary key is the merge key (no index besides); a value its column refuses (text into a
    number) is a dead letter with PostgreSQL's reason and the column it names (an INSERT's error names a parameter),
    the rest of the batch merges."""
    table = fresh()
    name = f'"{table.schema}"."{table.table}"'
    with connected(postgres.url, merge=10.0) as store:
        store._commit(batch(entry(table, {"power": 1.0})))
        store._commit(batch(entry(table, {"power": "n/a"}, NS + 1), entry(table, {"voltage": 2.0})))
    assert query(postgres.url, f"SELECT power, voltage FROM {name}") == [(1.0, 2.0)]
    assert query(postgres.url, f"SELECT indexname FROM pg_indexes WHERE schemaname = '{table.schema}'") == [
        ("inverter_1_sensors_pkey",)]
    errors = query(postgres.url, "SELECT error FROM lorrygate_dead_letter WHERE error LIKE '%n/a%'")
    assert errors and f'column power of "{table.schema}"."inverter_1_sensors" is DOUBLE PRECISION' in errors[-1][0]


def test_a_channels_own_merge_leaves_the_other_channels_rows_alone(postgres):
    """``merge`` of a channel: its rows merge, another channel's rows of the same storage and batch stay a row a
    message (a COPY, a table without the key, with its time index)."""
    table = fresh()
    rooms = TableName(table.schema, "room_1_sensors")

    def on(channel, into, fields, time):
        return Entry(into, [Record(time, fields)], channel, Message("t", b"1", 1, False, 1.5, "#"), "value")

    with connected(postgres.url) as store:
        store.merges = {"dtu": 10 * SECOND}
        store._commit(batch(on("dtu", table, {"power": 1.0}, NS), on("main", rooms, {"t": 20.5}, NS),
                            on("dtu", table, {"voltage": 2.0}, NS + SECOND), on("main", rooms, {"t": 20.6}, NS + 1000)))
    assert query(postgres.url, f'SELECT power, voltage FROM "{table.schema}"."{table.table}"') == [(1.0, 2.0)]
    assert query(postgres.url, f'SELECT t FROM "{table.schema}"."room_1_sensors" ORDER BY time') == [(20.5,), (20.6,)]
    assert query(postgres.url, f"SELECT indexname FROM pg_indexes WHERE schemaname = '{table.schema}' "
                               "ORDER BY indexname") == [("inverter_1_sensors_pkey",), ("room_1_sensors_time_idx",)]


def test_a_keyed_table_keeps_taking_rows_after_merge_is_turned_off(postgres):
    """A table made with merge on has a NOT NULL lorrygate_id: written without merge, its rows get an id of their
    content (idempotent rows), not a dead letter each."""
    table = fresh()
    with connected(postgres.url, merge=10.0) as store:
        store._commit(batch(entry(table, {"power": 1.0})))
    with connected(postgres.url) as store:
        done = batch(entry(table, {"power": 2.0}, NS + 1), entry(table, {"power": 2.0}, NS + 1),
                     entry(table, {"voltage": 3.0}, NS + 2))
        store._commit(done)
    assert done.extra_dead == []
    assert query(postgres.url, f'SELECT count(*), count(lorrygate_id) FROM "{table.schema}"."{table.table}"') == [
        (3, 3)]


#: values of one type a column (PostgreSQL fixes a column's type by its first value: other types are refused)
_values = st.one_of(st.none(), st.floats(-10, 10, allow_nan=False),
                    st.dictionaries(st.sampled_from(["rssi", "ch"]), st.one_of(st.none(), st.integers(0, 3)),
                                    min_size=1, max_size=2))
_messages = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 25), st.sampled_from([None, "1", "2"]),
                               st.dictionaries(st.sampled_from(["power", "voltage", "wifi"]), _values,
                                               min_size=1, max_size=3)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_messages, min_size=1, max_size=3))
def test_each_column_of_a_merged_row_holds_its_last_value_in_the_messages_order(postgres, batches):
    """As the SQLite property test, against PostgreSQL (its INSERT ... ON CONFLICT DO UPDATE a row, tables of a
    shape written together): one row a (table, tags, bucket), each column its last value in the messages' order."""
    schema = f"m{uuid.uuid4().hex[:8]}"
    tables = [TableName(schema, f"inverter_{n}_sensors") for n in range(3)]
    with connected(postgres.url, merge=10.0) as store:
        for messages in batches:
            done = sent(messages, tables)
            store._commit(done)
            assert done.extra_dead == []
    stored: dict = {}
    with psycopg.connect(postgres.url) as conn:
        for which, table in enumerate(tables):
            if not conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                                (schema, table.table)).fetchall():
                continue
            cursor = conn.execute(f'SELECT *, extract(second FROM "time")::int AS lg_second FROM '
                                  f'"{schema}"."{table.table}"')
            names = [column.name for column in cursor.description]
            for values in cursor.fetchall():
                row = dict(zip(names, values))
                key = (which, row.pop("lg_second") // 10, row.pop("channel", None))
                assert key not in stored, f"two rows of {key}"
                row.pop("time")
                row.pop("lorrygate_id")
                stored[key] = {name: value for name, value in row.items() if value is not None}
    assert stored == expected_rows(batches)

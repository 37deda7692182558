"""SQLite's ``time_index``: an index on each table's time, so that a time range (a Grafana panel, the HTTP
export) reads the rows of that range, not the whole table, on a real SQLite file."""

import pytest

from lorrygate.config import loads
from lorrygate.config.loader import ConfigError
from lorrygate.errors import StorageError
from lorrygate.model import TableName
from lorrygate.pipeline.describe import _ddl
from lorrygate.storage.sqlite import SQLiteDialect, SQLiteStorage
from tests.unit.test_sqlite_layout import FLEET, address, batch_of, table

#: the range query of the export and of the Grafana panels (`lorrygate.sources.export`, `lorrygate.hooks.grafana`)
RANGE = 'SELECT "time", n FROM {} WHERE "time" >= ? AND "time" <= ? ORDER BY "time"'
BOUNDS = ("2024-06-01T00:00:00Z", "2024-06-02T00:00:00Z")


def open_storage(path, time_index=True, layout="per-address", idempotent=False):
    store = SQLiteStorage("db", str(path), reactor=None, idempotent=idempotent)
    store.layout, store.time_index = layout, time_index
    store._connect()
    store._read_columns()
    return store


def plan(store, sql, *args) -> str:
    return " ".join(row[-1] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, args))


def indexes(store) -> dict:
    return dict(store._conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))


NODE = (table("net1", "node-1"), address("net1", "node-1"), {"n": 1})
PHYSICAL = '"r_net1__gw_node_1_sensors"'


def test_a_new_table_gets_its_time_index_and_a_range_reads_by_it(tmp_path):
    store = open_storage(tmp_path / "db.sqlite")
    try:
        store._commit(batch_of([NODE]))
        assert indexes(store) == {"r_net1__gw_node_1_sensors:time": 'CREATE INDEX "r_net1__gw_node_1_sensors:time" '
                                                                    'ON "r_net1__gw_node_1_sensors" (time)'}
        assert plan(store, RANGE.format(PHYSICAL), *BOUNDS) == (
            "SEARCH r_net1__gw_node_1_sensors USING INDEX r_net1__gw_node_1_sensors:time (time>? AND time<?)")
    finally:
        store._close()


def test_without_it_no_index_is_made_and_a_range_reads_the_whole_table(tmp_path):
    store = open_storage(tmp_path / "db.sqlite", time_index=False)
    try:
        store._commit(batch_of([NODE]))
        assert indexes(store) == {}
        assert "SCAN" in plan(store, RANGE.format(PHYSICAL), *BOUNDS)
    finally:
        store._close()


def test_a_table_of_an_earlier_run_gets_it_at_its_first_write_once(tmp_path, monkeypatch):
    path = tmp_path / "db.sqlite"
    first = open_storage(path, time_index=False)
    first._commit(batch_of([NODE] * 3))
    first._close()
    second = open_storage(path)
    try:
        assert second._indexed == set()
        second._commit(batch_of([NODE]))
        assert list(indexes(second)) == ["r_net1__gw_node_1_sensors:time"]
        assert second._conn.execute(f"SELECT count(*) FROM {PHYSICAL} WHERE time >= ''").fetchall() == [(4,)]
        made = []
        monkeypatch.setattr(SQLiteDialect, "index_time", staticmethod(lambda *args: made.append(args)))
        second._commit(batch_of([NODE]))
        assert made == []  # once a run
    finally:
        second._close()
    third = open_storage(path)
    try:
        assert third._indexed == {"r_net1__gw_node_1_sensors"}  # read with the columns: not made again
    finally:
        third._close()


def test_a_write_rolled_back_leaves_the_index_to_the_next_one(tmp_path, monkeypatch):
    store = open_storage(tmp_path / "db.sqlite")
    try:
        def failing(self, conn):
            raise OSError("disk gone")

        monkeypatch.setattr(SQLiteDialect, "commit", failing)
        with pytest.raises(StorageError, match="disk gone"):
            store._commit(batch_of([NODE]))
        assert store._indexed == set()
        monkeypatch.undo()
        store._commit(batch_of([NODE]))
        assert list(indexes(store)) == ["r_net1__gw_node_1_sensors:time"]
    finally:
        store._close()


def test_a_shared_table_is_indexed_by_address_and_time_which_its_views_read_by(tmp_path):
    store = open_storage(tmp_path / "db.sqlite", layout="per-network")
    try:
        store._commit(batch_of(FLEET))
        made = indexes(store)
        assert made["r_net1__sensors:time"] == 'CREATE INDEX "r_net1__sensors:time" ON "r_net1__sensors" (address, time)'
        assert made["r_net1__gw_node_1_raw:time"].endswith("(time)")  # a table of its own name stays per address
        # the view of an address
        assert "USING INDEX r_net1__sensors:time (address=? AND time>? AND time<?)" in plan(
            store, RANGE.format(PHYSICAL), *BOUNDS)
    finally:
        store._close()


def test_an_idempotent_tables_key_is_its_time_index(tmp_path):
    store = open_storage(tmp_path / "db.sqlite", idempotent=True)
    try:
        store._commit(batch_of([NODE]))
        assert indexes(store) == {}
        assert "USING INDEX sqlite_autoindex" in plan(store, RANGE.format(PHYSICAL), *BOUNDS)
    finally:
        store._close()


CONFIG = "[broker:b]\nhost = localhost\n[storage:db]\nurl = {url}\n{extra}\n[channel:c]\ntopics = mqttkit-1/#\n"


def test_the_config_and_describe():
    settings = loads(CONFIG.format(url="sqlite:///db.sqlite", extra="time_index = true"))
    (storage,) = settings.storages.values()
    assert storage.time_index is True
    channel = settings.channels[0]
    where = TableName("mqttkit_1_net", "gw_node_sensors")
    assert _ddl(storage, where, channel) == [
        'CREATE TABLE IF NOT EXISTS "mqttkit_1_net__gw_node_sensors" (time TEXT NOT NULL)',
        'CREATE INDEX IF NOT EXISTS "mqttkit_1_net__gw_node_sensors:time" ON "mqttkit_1_net__gw_node_sensors" (time)',
        "-- then ALTER TABLE ... ADD COLUMN per field, on its first appearance"]
    with pytest.raises(ConfigError, match="time_index"):
        loads(CONFIG.format(url="postgresql://u@localhost/db", extra="time_index = true"))


def test_a_launch_texts_sqlite_element_takes_it_and_describe_shows_the_shared_tables():
    from lorrygate.pipeline.model import parse_launch

    pipeline = parse_launch("mqtt://localhost/mqttkit-1/%23 ! sqlite location=x.sqlite layout=per-network "
                            "time-index=true")
    text = pipeline.describe(["mqttkit-1/testdrive/area-42/node-1/data.json"])
    assert ('CREATE INDEX IF NOT EXISTS "mqttkit_1_testdrive__sensors:time" ON "mqttkit_1_testdrive__sensors" '
            '(address, time)') in text
    assert "node_1_sensors:time" not in text  # (the view has none of its own)


def test_the_grafana_panels_query_reads_by_it(tmp_path):
    from lorrygate.hooks.grafana import column_query

    store = open_storage(tmp_path / "db.sqlite")
    try:
        store._commit(batch_of([NODE]))
        query = column_query("sqlite", NODE[0], "n")
        query = query.replace("$__unixEpochFrom()", "1717200000").replace("$__unixEpochTo()", "1717300000")
        assert "USING INDEX r_net1__gw_node_1_sensors:time" in plan(store, query)
        assert store._conn.execute(query).fetchall() == [(1717243200.0, 1)]
    finally:
        store._close()


def test_an_entry_rolled_back_to_its_savepoint_takes_back_its_tables_index_only(tmp_path):
    """A value SQLite refuses (a lone surrogate, which no UTF-8 text holds) makes the write go entry by entry: the
    refused entry's new table and its index are rolled back, the others' kept; the refused table gets both with its
    next good row."""
    store = open_storage(tmp_path / "db.sqlite")
    other = (table("net1", "node-2"), address("net1", "node-2"))
    try:
        store._commit(batch_of([NODE, (*other, {"a": "\ud800"})]))
        assert list(indexes(store)) == ["r_net1__gw_node_1_sensors:time"]
        assert store._indexed == {"r_net1__gw_node_1_sensors"}
        store._commit(batch_of([(*other, {"n": 2})]))
        assert sorted(indexes(store)) == ["r_net1__gw_node_1_sensors:time", "r_net1__gw_node_2_sensors:time"]
    finally:
        store._close()

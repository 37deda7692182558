"""SQLite's per-network layout (``layout = per-network``, `lorrygate.storage.shared_layout`) on a real
SQLite file: one table per network and kind with the address in columns, and a view per address that reads
as the per-address table did, new columns included."""

import pytest

from lorrygate.model import Address, Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.sqlite import SQLiteStorage

NS = 1_717_243_200_000_000_000


def address(network: str, node: str, kind: str = "data") -> Address:
    return Address("r", network, "gw", node, kind)


def table(network: str, node: str, suffix: str = "sensors") -> TableName:
    return TableName(f"r_{network}", f"gw_{node.replace('-', '_')}_{suffix}")


def batch_of(rows) -> Batch:
    """rows: (table, address, fields) -> a batch of one message each."""
    batch = Batch()
    for n, (where, at, fields) in enumerate(rows):
        batch.add(Entry(where, [Record(NS + n * 1_000_000, fields)], "main", Message("t", b"{}", 1, False, 1.0, "#"),
                        "json", at))
    return batch


def open_storage(path, layout="per-network", idempotent=False):
    store = SQLiteStorage("db", str(path), reactor=None, idempotent=idempotent)
    store.layout = layout
    store._connect()
    return store


@pytest.fixture
def store(tmp_path):
    made = open_storage(tmp_path / "fleet.sqlite")
    yield made
    made._close()


def rows(store, sql):
    return store._conn.execute(sql).fetchall()


def objects(store, kind):
    return sorted(row[0] for row in rows(store, f"SELECT name FROM sqlite_master WHERE type = '{kind}'"))


FLEET = [
    (table("net1", "node-1"), address("net1", "node-1"), {"n": 1}),
    (table("net1", "node-2"), address("net1", "node-2"), {"n": 2}),
    (table("net1", "node-1"), address("net1", "node-1"), {"n": 3}),
    (table("net2", "node-3"), address("net2", "node-3"), {"n": 4}),
    (table("net1", "node-1", "events"), address("net1", "node-1", "event"), {"event": "boot"}),
    # a dataflow's derived table (<address>_<suffix>_<transform>): shared per network and transform
    (TableName("r_net1", "gw_node_1_sensors_hourly"), address("net1", "node-1"), {"mean": 2.0}),
    (TableName("r_net1", "gw_node_2_sensors_hourly"), address("net1", "node-2"), {"mean": 3.0}),
    # a declarative strategy's own name, without the suffix: written per address
    (TableName("r_net1", "gw_node_1_raw"), address("net1", "node-1"), {"raw": 1}),
]


def test_a_fleet_goes_into_one_table_per_network_and_kind_with_a_view_per_address(store):
    store._commit(batch_of(FLEET))
    assert [t for t in objects(store, "table") if t.startswith("r_")] == [
        "r_net1__events", "r_net1__gw_node_1_raw", "r_net1__sensors", "r_net1__sensors_hourly", "r_net2__sensors"]
    assert objects(store, "view") == ["r_net1__gw_node_1_events", "r_net1__gw_node_1_sensors",
                                      "r_net1__gw_node_1_sensors_hourly", "r_net1__gw_node_2_sensors",
                                      "r_net1__gw_node_2_sensors_hourly", "r_net2__gw_node_3_sensors"]
    assert rows(store, 'SELECT address, gateway, node, n FROM "r_net1__sensors" ORDER BY time') == [
        ("gw_node_1_sensors", "gw", "node-1", 1), ("gw_node_2_sensors", "gw", "node-2", 2),
        ("gw_node_1_sensors", "gw", "node-1", 3)]
    # the queries of the per-address layout read the views
    assert rows(store, 'SELECT time, n FROM "r_net1__gw_node_1_sensors" ORDER BY time') == [
        ("2024-06-01T12:00:00.000000000Z", 1), ("2024-06-01T12:00:00.002000000Z", 3)]
    assert rows(store, 'SELECT event FROM "r_net1__gw_node_1_events"') == [("boot",)]
    assert rows(store, 'SELECT mean FROM "r_net1__gw_node_1_sensors_hourly"') == [(2.0,)]
    assert rows(store, 'SELECT address, node, mean FROM "r_net1__sensors_hourly" ORDER BY mean') == [
        ("gw_node_1_sensors_hourly", "node-1", 2.0), ("gw_node_2_sensors_hourly", "node-2", 3.0)]
    assert rows(store, 'SELECT raw FROM "r_net1__gw_node_1_raw"') == [(1,)]
    assert store.details()["views"] == 6

    # a field that comes later is a column of the shared table, and the views show it
    store._commit(batch_of([(table("net1", "node-2"), address("net1", "node-2"), {"n": 5, "rssi": -60})]))
    assert rows(store, 'SELECT n, rssi FROM "r_net1__gw_node_2_sensors" ORDER BY n') == [(2, None), (5, -60)]
    assert rows(store, 'SELECT count(*) FROM "r_net1__gw_node_1_sensors" WHERE rssi IS NULL') == [(2,)]


def test_a_restarted_gateway_knows_the_views_and_makes_only_the_new_ones(tmp_path):
    first = open_storage(tmp_path / "fleet.sqlite")
    first._commit(batch_of(FLEET))
    first._close()
    again = open_storage(tmp_path / "fleet.sqlite")
    try:
        again._commit(batch_of(FLEET[:2]))
        assert again._made_views == [] and again._views is not None and len(again._views) == 6
        again._commit(batch_of([(table("net1", "node-9"), address("net1", "node-9"), {"n": 9})]))
        assert again._made_views == ["r_net1__gw_node_9_sensors"]
        assert rows(again, 'SELECT n FROM "r_net1__gw_node_9_sensors"') == [(9,)]
    finally:
        again._close()


def test_fields_named_as_an_address_column_keep_their_values_under_another_name(store):
    """A device that sends ``node`` (or ``Address``: SQLite ignores ASCII case) loses neither that value
    nor its address."""
    store._commit(batch_of([(table("net1", "node-1"), address("net1", "node-1"),
                             {"node": "sensor board 2", "Address": 7, "node_2": "taken"})]))
    assert rows(store, 'SELECT node, address, node_3, Address_2, node_2 FROM "r_net1__sensors"') == [
        ("node-1", "gw_node_1_sensors", "sensor board 2", 7, "taken")]
    assert rows(store, 'SELECT node_3 FROM "r_net1__gw_node_1_sensors"') == [("sensor board 2",)]


def test_a_table_of_the_per_address_layout_keeps_its_rows_and_gets_no_view(tmp_path):
    old = open_storage(tmp_path / "fleet.sqlite", layout="per-address")
    old._commit(batch_of(FLEET[:1]))
    old._close()
    store = open_storage(tmp_path / "fleet.sqlite")
    try:
        store._commit(batch_of(FLEET[:2]))
        store._commit(batch_of(FLEET[:2]))
        assert rows(store, 'SELECT n FROM "r_net1__gw_node_1_sensors"') == [(1,)]  # the old table, untouched
        assert rows(store, 'SELECT node, n FROM "r_net1__sensors" ORDER BY rowid') == [
            ("node-1", 1), ("node-2", 2), ("node-1", 1), ("node-2", 2)]
        refused = store.details()["refused_views"]
        assert list(refused) == ["r_net1__gw_node_1_sensors"] and "rename or drop it" in refused[
            "r_net1__gw_node_1_sensors"]
        assert objects(store, "view") == ["r_net1__gw_node_2_sensors"]
    finally:
        store._close()


def test_idempotent_rows_of_a_shared_table_are_told_apart_by_their_address(tmp_path):
    store = open_storage(tmp_path / "fleet.sqlite", idempotent=True)
    try:
        same = [(table("net1", "node-1"), address("net1", "node-1"), {"n": 1}),
                (table("net1", "node-2"), address("net1", "node-2"), {"n": 1})]
        batch = batch_of(same)
        batch.entries[1].records[0].time = batch.entries[0].records[0].time  # the same reading, two devices
        store._commit(batch)
        store._commit(batch)  # delivered again
        assert rows(store, 'SELECT node, n FROM "r_net1__sensors" ORDER BY node') == [("node-1", 1), ("node-2", 1)]
    finally:
        store._close()


def test_the_per_address_layout_is_unchanged(tmp_path):
    store = open_storage(tmp_path / "fleet.sqlite", layout="per-address")
    try:
        store._commit(batch_of(FLEET[:2]))
        assert objects(store, "view") == []
        assert rows(store, 'SELECT * FROM "r_net1__gw_node_1_sensors"') == [("2024-06-01T12:00:00.000000000Z", 1)]
    finally:
        store._close()



@pytest.mark.parametrize(("name", "kind", "shared"), [
    ("gw_node_1_sensors", "data", "sensors"),
    ("sensors", "data", "sensors"),
    ("gw_node_1_sensors_hourly", "data", "sensors_hourly"),
    ("gw_node_1_events_count", "event", "events_count"),
    # the last suffix names the transform: a node named like a kind does not split the name there
    ("gw_my_sensors_box_sensors_dew_point", "data", "sensors_dew_point"),
    ("gw_node_1_raw", "data", None),
    ("gw_node_1_sensors_", "data", None),
    ("gw_node_1_events", "data", None),
])
def test_shared_table_names(name, kind, shared):
    from lorrygate.storage.shared_layout import shared_table

    found = shared_table(TableName("r_n", name), address("n", "node", kind))
    assert (found.table if found else None) == shared

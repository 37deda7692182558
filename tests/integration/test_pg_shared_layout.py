"""
PostgreSQL's per-network layout (``layout = per-network``) against a real server: a fleet's rows go into one
table per network and kind with the address in columns, and each address gets a view with the columns its
per-address table would have. The views are made beside the writes, in rounds of their own
(`lorrygate.storage.view_rounds`): the rows never wait for them, a new column makes them again, a column that
must widen drops them first, and a new connection makes those a stop left missing or behind.
"""

import itertools
import uuid

import attrs
import psycopg
import pytest

from lorrygate.model import Address, Message, Record, TableName
from lorrygate.storage import view_rounds
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.postgresql import PostgresStorage

pytestmark = pytest.mark.integration

NS = 1_717_243_200_000_000_000
TIMES = itertools.count()


@pytest.fixture
def realm():
    return f"r{uuid.uuid4().hex[:8]}"


def address(realm: str, node: str, kind: str = "data") -> Address:
    return Address(realm, "net", "gw", node, kind)


def table(realm: str, node: str, suffix: str = "sensors") -> TableName:
    return TableName(f"{realm}_net", f"gw_{node.replace('-', '_')}_{suffix}")


def batch_of(realm: str, rows) -> Batch:
    """rows: (node, fields) -> a batch of one message each."""
    batch = Batch()
    for node, fields in rows:
        batch.add(Entry(table(realm, node), [Record(NS + next(TIMES) * 1_000_000, fields)], "main",
                        Message("t", b"{}", 1, False, 1.0, "#"), "json", address(realm, node)))
    return batch


def open_storage(url: str) -> PostgresStorage:
    store = PostgresStorage("db", url, reactor=None)
    store.layout = "per-network"
    store._connect()
    return store


@pytest.fixture
def store(postgres):
    made = open_storage(postgres.url)
    yield made
    made._close()


def rounds(store) -> int:
    """Run the rounds of views until none waits (as the writer thread does between writes)."""
    count = 1
    while store._rounds.round():
        count += 1
    return count


def sql(url: str, statement: str, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def relations(url: str, realm: str) -> dict:
    return dict(sql(url, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s",
                    (f"{realm}_net",)))


def columns(url: str, schema: str, name: str) -> list:
    return [row[0] for row in sql(url, "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                                       "AND table_name = %s ORDER BY ordinal_position", (schema, name))]


def test_a_fleet_goes_into_one_table_with_a_view_per_address_made_after_the_rows(store, postgres, realm):
    store._commit(batch_of(realm, [("node-1", {"n": 1}), ("node-2", {"n": 2}), ("node-1", {"n": 3})]))
    # the rows are committed, and no view waited for them
    assert relations(postgres.url, realm) == {"sensors": "BASE TABLE"}
    assert sql(postgres.url, f'SELECT address, gateway, node, n FROM "{realm}_net".sensors ORDER BY time') == [
        ("gw_node_1_sensors", "gw", "node-1", 1), ("gw_node_2_sensors", "gw", "node-2", 2),
        ("gw_node_1_sensors", "gw", "node-1", 3)]
    assert rounds(store) == 1
    assert relations(postgres.url, realm) == {"sensors": "BASE TABLE", "gw_node_1_sensors": "VIEW",
                                              "gw_node_2_sensors": "VIEW"}
    # a view has the columns of the per-address table, and its address's rows
    assert columns(postgres.url, f"{realm}_net", "gw_node_1_sensors") == ["time", "n"]
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_1_sensors ORDER BY time') == [(1,), (3,)]
    # the views read by the address and time
    indexes = sql(postgres.url, "SELECT indexdef FROM pg_indexes WHERE schemaname = %s", (f"{realm}_net",))
    assert any(definition.endswith('USING btree (address, "time")') for (definition,) in indexes), indexes
    # a new address after the first round: its view comes with the next round
    store._commit(batch_of(realm, [("node-3", {"n": 4})]))
    assert "gw_node_3_sensors" not in relations(postgres.url, realm)
    assert list(store._rounds.queue) == [f"{realm}_net.gw_node_3_sensors"]
    assert rounds(store) == 1
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_3_sensors') == [(4,)]
    assert store.details()["views_to_make"] == 0


def test_a_new_field_makes_the_views_again_with_its_column(store, postgres, realm):
    store._commit(batch_of(realm, [("node-1", {"n": 1}), ("node-2", {"n": 2})]))
    rounds(store)
    store._commit(batch_of(realm, [("node-1", {"n": 3, "rssi": -70})]))
    assert sorted(store._rounds.queue) == [f"{realm}_net.gw_node_1_sensors", f"{realm}_net.gw_node_2_sensors"]
    rounds(store)
    assert sql(postgres.url, f'SELECT n, rssi FROM "{realm}_net".gw_node_1_sensors ORDER BY time') == [
        (1, None), (3, -70)]
    assert columns(postgres.url, f"{realm}_net", "gw_node_2_sensors") == ["time", "n", "rssi"]


def test_a_column_that_widens_drops_the_views_and_they_come_back(store, postgres, realm):
    """A float into a BIGINT column: PostgreSQL refuses to change the type of a column that views use; the
    views go, the row is stored, and the views come back with the column's new type."""
    store._commit(batch_of(realm, [("node-1", {"n": 21}), ("node-2", {"n": 22})]))
    rounds(store)
    batch = batch_of(realm, [("node-2", {"n": 21.5}), ("node-1", {"n": 23})])
    store._commit(batch)
    assert batch.extra_dead == [] and batch.refused_rows == 0
    assert relations(postgres.url, realm) == {"sensors": "BASE TABLE"}
    rounds(store)
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_2_sensors ORDER BY time') == [(22.0,), (21.5,)]
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_1_sensors ORDER BY time') == [(21.0,), (23.0,)]
    assert sql(postgres.url, "SELECT data_type FROM information_schema.columns WHERE table_schema = %s AND "
                             "table_name = 'gw_node_1_sensors' AND column_name = 'n'",
               (f"{realm}_net",)) == [("double precision",)]


def test_a_view_of_the_users_that_keeps_a_column_from_widening_makes_a_dead_letter(store, postgres, realm):
    """A view the layout did not make uses the column: nothing can widen it, so the row that needs it becomes a
    dead letter with PostgreSQL's reason, the rest of the batch is committed, and the layout's views come
    back."""
    store._commit(batch_of(realm, [("node-1", {"n": 21}), ("node-2", {"n": 22})]))
    rounds(store)
    sql(postgres.url, f'CREATE VIEW "{realm}_net".fleet_mean AS SELECT avg(n) AS mean FROM "{realm}_net".sensors')
    batch = batch_of(realm, [("node-2", {"n": 21.5}), ("node-1", {"n": 23})])
    store._commit(batch)
    assert len(batch.extra_dead) == 1 and "used by a view" in batch.extra_dead[0].error
    assert sql(postgres.url, f'SELECT address, n FROM "{realm}_net".sensors ORDER BY time') == [
        ("gw_node_1_sensors", 21), ("gw_node_2_sensors", 22), ("gw_node_1_sensors", 23)]
    rounds(store)
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_1_sensors ORDER BY time') == [(21,), (23,)]
    assert sql(postgres.url, f'SELECT mean FROM "{realm}_net".fleet_mean')[0][0] == 22


def test_a_new_connection_makes_the_views_a_stop_left_missing_or_behind(store, postgres, realm):
    store._commit(batch_of(realm, [("node-1", {"n": 1}), ("node-2", {"n": 2}), ("node-3", {"n": 3})]))
    rounds(store)
    store._close()
    # as a stop between the rows and their views, or between a new column and the views made again, leaves it
    sql(postgres.url, f'DROP VIEW "{realm}_net".gw_node_2_sensors')
    sql(postgres.url, f'ALTER TABLE "{realm}_net".sensors ADD COLUMN rssi BIGINT')
    sql(postgres.url, f'UPDATE "{realm}_net".sensors SET rssi = -60')
    again = open_storage(postgres.url)
    try:
        assert again._rounds.round() is False
        assert again.details()["views_to_make"] == 0
        assert sum(kind == "VIEW" for kind in relations(postgres.url, realm).values()) == 3
        for node in (1, 2, 3):
            assert sql(postgres.url, f'SELECT n, rssi FROM "{realm}_net".gw_node_{node}_sensors') == [(node, -60)]
    finally:
        again._close()


def test_a_table_of_a_views_name_keeps_its_rows_and_the_view_is_refused(store, postgres, realm):
    """An address's table of the per-address layout: its old rows stay there, the new ones go into the shared
    table, and the status says why that address has no view."""
    sql(postgres.url, f'CREATE SCHEMA "{realm}_net"')
    sql(postgres.url, f'CREATE TABLE "{realm}_net".gw_node_1_sensors ("time" TIMESTAMPTZ, n BIGINT)')
    store._close()
    store._connect()
    store._commit(batch_of(realm, [("node-1", {"n": 1}), ("node-2", {"n": 2})]))
    rounds(store)
    assert relations(postgres.url, realm) == {"sensors": "BASE TABLE", "gw_node_1_sensors": "BASE TABLE",
                                              "gw_node_2_sensors": "VIEW"}
    refused = store.details()["refused_views"]
    assert list(refused) == [f"{realm}_net.gw_node_1_sensors"]
    assert "exists" in refused[f"{realm}_net.gw_node_1_sensors"]
    assert sql(postgres.url, f'SELECT address, n FROM "{realm}_net".sensors ORDER BY time') == [
        ("gw_node_1_sensors", 1), ("gw_node_2_sensors", 2)]


def test_views_are_made_in_rounds_of_their_own_transaction(store, postgres, realm, monkeypatch):
    """Many addresses at once: a round makes `VIEW_ROUND` views in one transaction (10,000 in one ran out of
    PostgreSQL's lock table), and the next round the rest."""
    monkeypatch.setattr(view_rounds, "VIEW_ROUND", 40)
    store._commit(batch_of(realm, [(f"node-{n}", {"n": n}) for n in range(100)]))
    assert store._rounds.round() is True
    assert sum(kind == "VIEW" for kind in relations(postgres.url, realm).values()) == 40
    assert rounds(store) == 2
    assert sum(kind == "VIEW" for kind in relations(postgres.url, realm).values()) == 100
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_77_sensors') == [(77,)]


def test_a_gateway_with_the_per_network_layout_stores_a_fleet_in_one_postgresql_table(tmp_path, mosquitto, postgres):
    """The whole way, with a real Mosquitto and PostgreSQL: 300 messages of 30 nodes make one table and 30
    views, and ``lorrygate status`` counts them."""
    import json

    from lorrygate.control_client import request
    from tests.gatewayproc import GatewayProcess, Publisher, write_config
    from tests.servers import free_port, wait_until

    realm = f"fleet{uuid.uuid4().hex[:6]}"
    control = free_port()
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                                       f"url = {postgres.url}\nlayout = per-network")
    text = text.replace("stats_interval = 1s", f"stats_interval = 1s\ncontrol = tcp:{control}:interface=127.0.0.1")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node-{n % 30}/data.json", json.dumps({"n": n})) for n in range(300))
    schema = f"{realm}_net"

    def views() -> int:
        return sql(postgres.url, "SELECT count(*) FROM information_schema.views WHERE table_schema = %s",
                   (schema,))[0][0]

    def rows() -> int:
        return sql(postgres.url, f'SELECT count(*) FROM "{schema}".sensors')[0][0] if views() else 0

    wait_until(lambda: views() == 30 and rows() == 300, 60, "the 300 rows and 30 views")
    status = request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")
    backend = status["storages"][0]["backend"]
    # (the views of the other tests' fleets in this database count too)
    assert backend["layout"] == "per-network" and backend["views"] >= 30 and backend["views_to_make"] == 0
    assert gateway.stop() == 0
    assert relations(postgres.url, realm)["sensors"] == "BASE TABLE" and len(relations(postgres.url, realm)) == 31
    assert sql(postgres.url, f'SELECT n FROM "{schema}".gw_node_7_sensors ORDER BY n') == [
        (n,) for n in range(7, 300, 30)]


def test_a_custom_ddl_without_the_address_columns_gets_them_and_the_index(postgres, realm):
    """A ``ddl`` written for the per-address tables (no address columns): the shared table gets them, and the
    index, after the DDL made it; no row is refused."""
    from lorrygate.config.settings import ddl_template

    template = ddl_template('CREATE TABLE IF NOT EXISTS {qualified} ("time" TIMESTAMPTZ NOT NULL, '
                            "committed DOUBLE PRECISION DEFAULT extract(epoch FROM clock_timestamp()))", "postgresql")
    store = PostgresStorage("db", postgres.url, reactor=None, ddl={"": template})
    store.layout = "per-network"
    store._connect()
    try:
        batch = batch_of(realm, [("node-1", {"n": 1}), ("node-2", {"n": 2})])
        store._commit(batch)
        assert batch.extra_dead == []
        rounds(store)
        assert columns(postgres.url, f"{realm}_net", "sensors") == ["time", "committed", "address", "gateway", "node",
                                                                    "n"]
        assert columns(postgres.url, f"{realm}_net", "gw_node_2_sensors") == ["time", "committed", "n"]
        assert sql(postgres.url, "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE "
                                 "'%%(address, \"time\")'", (f"{realm}_net",)) == [(1,)]
    finally:
        store._close()


def test_a_refused_message_of_a_new_address_wants_no_view(store, postgres, realm):
    """A message the database refuses (text in a BIGINT column) is a dead letter, and its address, which has no
    rows, gets no view (nor is it refused one: its next rows make it)."""
    store._commit(batch_of(realm, [("node-1", {"n": 1})]))
    rounds(store)
    batch = batch_of(realm, [("node-2", {"n": "many"}), ("node-3", {"n": 3})])
    store._commit(batch)
    assert len(batch.extra_dead) == 1
    assert list(store._rounds.queue) == [f"{realm}_net.gw_node_3_sensors"]
    rounds(store)
    assert not [view for view in store.refused_views if view.startswith(realm)]
    store._commit(batch_of(realm, [("node-2", {"n": 2})]))
    rounds(store)
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_2_sensors') == [(2,)]


def test_a_view_of_the_users_of_an_addresss_name_is_left_alone(store, postgres, realm):
    """A view the user made with an address's name (and the columns a layout's view would have) is neither
    replaced nor dropped: the address is refused its view, and the user's view stays as it was."""
    store._commit(batch_of(realm, [("node-1", {"n": 1})]))
    rounds(store)
    sql(postgres.url, f'CREATE VIEW "{realm}_net".gw_node_2_sensors AS SELECT "time", n FROM "{realm}_net".sensors '
                      "WHERE n > 100")
    store._close()
    store._connect()
    store._commit(batch_of(realm, [("node-2", {"n": 2})]))
    rounds(store)
    assert f"{realm}_net.gw_node_2_sensors" in store.refused_views
    assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_2_sensors') == []
    # a column that must widen drops the layout's views, not the user's (which then keeps it from widening)
    batch = batch_of(realm, [("node-1", {"n": 1.5})])
    store._commit(batch)
    assert len(batch.extra_dead) == 1
    assert relations(postgres.url, realm)["gw_node_2_sensors"] == "VIEW"
    rounds(store)
    assert relations(postgres.url, realm)["gw_node_1_sensors"] == "VIEW"


def test_the_look_beside_the_writer_and_the_rows_committed_meanwhile(store, postgres, realm):
    """A new connection looks at the views on a connection of its own while the writer goes on: the views of
    rows committed meanwhile are made, and those the look found are not made again."""
    store._commit(batch_of(realm, [("node-1", {"n": 1}), ("node-2", {"n": 2})]))
    rounds(store)
    store._close()
    again = open_storage(postgres.url)
    try:
        found = again._rounds.look()  # (as on a thread of the reactor's pool, on its own connection)
        again._commit(batch_of(realm, [("node-1", {"n": 3}), ("node-3", {"n": 4})]))
        again._rounds._found = found
        assert again._rounds.round() is False
        assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_3_sensors') == [(4,)]
        assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_1_sensors ORDER BY time') == [(1,), (3,)]
        assert {f"{realm}_net.gw_node_{n}_sensors" for n in (1, 2, 3)} <= again._views
        assert again.details()["views_to_make"] == 0
    finally:
        again._close()


def test_idempotent_rows_are_told_apart_by_their_address(postgres, realm):
    """``idempotent = true``: the same reading of two devices is two rows, the same message again none."""
    store = PostgresStorage("db", postgres.url, reactor=None, idempotent=True)
    store.layout = "per-network"
    store._connect()
    try:
        rows = [("node-1", {"n": 1}), ("node-2", {"n": 1})]
        first, again = batch_of(realm, rows), batch_of(realm, rows)
        again.entries[:] = [attrs.evolve(entry, records=[attrs.evolve(entry.records[0], time=record.time)])
                            for entry, record in zip(again.entries, (e.records[0] for e in first.entries))]
        store._commit(first)
        store._commit(again)
        rounds(store)
        assert sql(postgres.url, f'SELECT address, n FROM "{realm}_net".sensors ORDER BY address') == [
            ("gw_node_1_sensors", 1), ("gw_node_2_sensors", 1)]
        assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_2_sensors') == [(1,)]
        assert "lorrygate_id" in columns(postgres.url, f"{realm}_net", "gw_node_2_sensors")
    finally:
        store._close()


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_a_view_of_an_address_with_quotes_backslashes_and_dashes(postgres, realm, conforming):
    """An address whose name has ``'``, ``\\`` and ``--`` (a declarative strategy's names are the user's):
    the view selects exactly its rows, whatever the server's standard_conforming_strings."""
    store = PostgresStorage("db", postgres.url, reactor=None)
    store.layout = "per-network"
    store._connect()
    try:
        store._conn.execute(f"SET standard_conforming_strings = {conforming}")
        store._conn.commit()
        odd = TableName(f"{realm}_net", "o'k\\ -- x_sensors")
        batch = batch_of(realm, [("node-1", {"n": 1})])
        batch.add(Entry(odd, [Record(NS, {"n": 2})], "main", Message("t", b"{}", 1, False, 1.0, "#"), "json",
                        address(realm, "o'k")))
        store._commit(batch)
        rounds(store)
        assert sql(postgres.url, f'SELECT n FROM "{realm}_net"."o\'k\\ -- x_sensors"') == [(2,)]
        assert sql(postgres.url, f'SELECT n FROM "{realm}_net".gw_node_1_sensors') == [(1,)]
    finally:
        store._close()

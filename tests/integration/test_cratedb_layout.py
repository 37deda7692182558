"""CrateDB's per-network layout (``layout = per-network``, `lorrygate.storage.shared_layout`) over real HTTP
sockets against the fake that follows CrateDB's documented responses (tests/fakecrate.py: every statement
checked against CrateDB's grammar); and, when LORRYGATE_CRATEDB_URL is set, against a real CrateDB, where
the views are queried."""

import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.server import Site

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.cratedb import CrateStorage, make_client
from tests.fakecrate import FakeCrate
from tests.integration.test_cratedb_http import CRATE_URL, crate_sql
from tests.unit.test_sqlite_layout import address, table

T0 = 1_717_243_200_000_000_000


def batch_of(rows) -> Batch:
    """rows: (table, address, n) -> a batch of one message each."""
    batch = Batch()
    for where, at, n in rows:
        message = Message("t", b"{}", 1, False, 1.0, "#")
        batch.add(Entry(where, [Record(T0 + n * 1_000_000, {"n": n}, {"site": "x"})], "main", message, "json", at))
    return batch


FLEET = [
    (table("net1", "node-1"), address("net1", "node-1"), 1),
    (table("net1", "node-2"), address("net1", "node-2"), 2),
    (table("net1", "node-1"), address("net1", "node-1"), 3),
    (table("net2", "node-3"), address("net2", "node-3"), 4),
    (table("net1", "node-1", "events"), address("net1", "node-1", "event"), 5),
    # a dataflow's derived table (<address>_<suffix>_<transform>): shared per network and transform
    (TableName("r_net1", "gw_node_1_sensors_hourly"), address("net1", "node-1"), 6),
    # a declarative strategy's own name, without the suffix: written per address
    (TableName("r_net1", "gw_node_1_raw"), address("net1", "node-1"), 8),
]


def storage(port: int, layout: str = "per-network", **kwargs) -> CrateStorage:
    return CrateStorage("crate", f"http://127.0.0.1:{port}", reactor, http=make_client(reactor, False, ""),
                        layout=layout, **kwargs)


@pytest.fixture
def fake():
    crate = FakeCrate()
    listening = reactor.listenTCP(0, Site(crate), interface="127.0.0.1")
    crate.port = listening.getHost().port
    yield crate
    listening.stopListening()


def views_made(fake) -> list:
    return [s for s in fake.statements if s.startswith("CREATE OR REPLACE VIEW")]


@pytest_twisted.ensureDeferred
async def test_a_fleet_goes_into_one_table_per_network_and_kind_with_a_view_per_address(fake):
    store = storage(fake.port)
    await store.start()
    await store.write(batch_of(FLEET))
    assert views_made(fake) == []  # the rows (and their acknowledgements) do not wait for the views
    await store.views_made()
    assert set(fake.tables) == {("r_net1", "sensors"), ("r_net1", "events"), ("r_net2", "sensors"),
                                ("r_net1", "sensors_hourly"), ("r_net1", "gw_node_1_raw")}
    assert '"address" TEXT NOT NULL, "gateway" TEXT, "node" TEXT' in fake.tables[("r_net1", "sensors")]["ddl"]
    shared = fake.rows("r_net1", "sensors")
    assert [(row["address"], row["gateway"], row["node"], row["fields"]["n"]) for row in shared] == [
        ("gw_node_1_sensors", "gw", "node-1", 1), ("gw_node_2_sensors", "gw", "node-2", 2),
        ("gw_node_1_sensors", "gw", "node-1", 3)]
    assert [row["address"] for row in fake.rows("r_net1", "sensors_hourly")] == ["gw_node_1_sensors_hourly"]
    assert "address" not in fake.rows("r_net1", "gw_node_1_raw")[0]
    # the views read as the per-address tables did
    assert set(fake.views) == {("r_net1", "gw_node_1_sensors"), ("r_net1", "gw_node_2_sensors"),
                               ("r_net2", "gw_node_3_sensors"), ("r_net1", "gw_node_1_events"),
                               ("r_net1", "gw_node_1_sensors_hourly")}
    assert [row["fields"]["n"] for row in fake.view_rows("r_net1", "gw_node_1_sensors_hourly")] == [6]
    assert [row["fields"]["n"] for row in fake.view_rows("r_net1", "gw_node_1_sensors")] == [1, 3]
    assert fake.view_rows("r_net1", "gw_node_1_sensors")[0] == {"time": T0 // 1_000_000 + 1, "tags": {"site": "x"},
                                                                 "fields": {"n": 1}}
    assert [row["fields"]["n"] for row in fake.view_rows("r_net1", "gw_node_1_events")] == [5]
    assert len(views_made(fake)) == 5
    assert store.details()["views"] == 5

    # more rows of the same addresses make no view again; a new address makes its own
    await store.write(batch_of(FLEET[:2] + [(table("net1", "node-9"), address("net1", "node-9"), 7)]))
    await store.views_made()
    assert len(views_made(fake)) == 6
    assert [row["fields"]["n"] for row in fake.view_rows("r_net1", "gw_node_9_sensors")] == [7]

    # a restarted gateway reads the views CrateDB has, once, and makes none of them again
    again = storage(fake.port)
    await again.start()
    await again.write(batch_of(FLEET))
    await again.views_made()
    await again.write(batch_of(FLEET))
    await again.stop()
    assert len(views_made(fake)) == 6
    assert sum("information_schema.views" in s for s in fake.statements) == 2
    assert len(fake.rows("r_net1", "sensors")) == 3 + 3 + 2 * 3


@pytest_twisted.ensureDeferred
async def test_a_table_of_the_per_address_layout_keeps_its_rows_and_gets_no_view(fake):
    """Switching an existing fleet to the per-network layout: the old per-address table stays as it is, the
    new rows go into the shared table, and the status says why there is no view (once, not every batch)."""
    old = storage(fake.port, layout="per-address")
    await old.start()
    await old.write(batch_of(FLEET[:1]))
    store = storage(fake.port)
    await store.start()
    await store.write(batch_of(FLEET[:2]))
    await store.views_made()
    await store.write(batch_of(FLEET[:2]))
    await store.stop()
    assert len(fake.rows("r_net1", "gw_node_1_sensors")) == 1  # the old rows, untouched
    assert [row["node"] for row in fake.rows("r_net1", "sensors")] == ["node-1", "node-2"] * 2
    refused = store.details()["refused_views"]
    assert list(refused) == ["r_net1.gw_node_1_sensors"]
    assert "rename or drop it" in refused["r_net1.gw_node_1_sensors"]
    assert sum('"gw_node_1_sensors" AS' in s for s in views_made(fake)) == 1
    assert ("r_net1", "gw_node_2_sensors") in fake.views


@pytest_twisted.ensureDeferred
async def test_idempotent_rows_of_a_shared_table_are_told_apart_by_their_address(fake):
    """The same reading from two nodes is two rows; the same message twice is one."""
    store = storage(fake.port, idempotent=True)
    await store.start()
    same = [(table("net1", "node-1"), address("net1", "node-1"), 1),
            (table("net1", "node-2"), address("net1", "node-2"), 1)]
    await store.write(batch_of(same))
    await store.write(batch_of(same))
    assert sorted(row["node"] for row in fake.rows("r_net1", "sensors")) == ["node-1", "node-2"]
    assert "PRIMARY KEY" in fake.tables[("r_net1", "sensors")]["ddl"]


@pytest.mark.skipif(not CRATE_URL, reason="LORRYGATE_CRATEDB_URL is not set (see docs/storage.rst: docker compose up)")
@pytest_twisted.ensureDeferred
async def test_real_cratedb_views_read_as_the_per_address_tables():
    from urllib.parse import urlsplit

    network = f"n{uuid.uuid4().hex[:6]}"
    parts = urlsplit(CRATE_URL)
    store = CrateStorage("crate", f"{parts.scheme}://{parts.netloc}", reactor,
                         http=make_client(reactor, parts.scheme == "https", ""), layout="per-network", replicas="0")
    await store.start()
    rows = [(table(network, f"node-{n % 3}"), address(network, f"node-{n % 3}"), n) for n in range(30)]
    await store.write(batch_of(rows))
    await store.views_made()
    schema = f"r_{network}"
    crate_sql(f'REFRESH TABLE "{schema}"."sensors"')
    answer = crate_sql(f'SELECT fields[\'n\'] FROM "{schema}"."gw_node_1_sensors" ORDER BY 1')
    assert [row[0] for row in answer["rows"]] == list(range(1, 30, 3))
    assert crate_sql(f'SELECT count(*) FROM "{schema}"."sensors" WHERE node = \'node-2\'')["rows"] == [[10]]
    assert [c for c in crate_sql(f'SELECT * FROM "{schema}"."gw_node_1_sensors" LIMIT 1')["cols"]] == [
        "time", "tags", "fields"]
    crate_sql(f'DROP VIEW "{schema}"."gw_node_0_sensors", "{schema}"."gw_node_1_sensors", '
              f'"{schema}"."gw_node_2_sensors"')
    crate_sql(f'DROP TABLE "{schema}"."sensors"')


@pytest_twisted.ensureDeferred
async def test_rows_do_not_wait_for_their_views_and_a_view_that_failed_for_now_is_made_with_the_next_rows(fake):
    store = storage(fake.port)
    await store.start()
    await store.write(batch_of(FLEET[:1]))  # the shared table exists; its view is on its way
    await store.views_made()
    fake.fail_next(503, 5000, "EsRejectedExecutionException[rejected execution]", statement="CREATE OR REPLACE VIEW")
    new = [(table("net1", "node-7"), address("net1", "node-7"), 8)]
    await store.write(batch_of(new))  # the rows are stored: the write is done before the view is tried
    assert [row["node"] for row in fake.rows("r_net1", "sensors")][-1] == "node-7"
    await store.views_made()
    assert ("r_net1", "gw_node_7_sensors") not in fake.views and not store.details()["refused_views"]
    await store.write(batch_of(new))
    await store.stop()
    assert ("r_net1", "gw_node_7_sensors") in fake.views


@pytest_twisted.ensureDeferred
async def test_a_shared_table_that_gets_extra_fields_makes_its_views_again_with_them(fake):
    """A per-network table gets extra_fields for a text too long to index: the view of each address is made
    again with that column (once), so that the per-address view reads the row whole, as its table would."""
    store = storage(fake.port)
    await store.start()
    await store.write(batch_of(FLEET[:2]))
    await store.views_made()
    assert len(views_made(fake)) == 2
    long = Batch()
    message = Message("t", b"{}", 1, False, 1.0, "#")
    long.add(Entry(table("net1", "node-1"), [Record(T0 + 9_000_000, {"n": 9, "log": "x" * 40_000})], "main", message,
                   "json", address("net1", "node-1")))
    await store.write(long)
    await store.write(batch_of(FLEET[:2]))
    await store.views_made()
    remade = views_made(fake)[2:]
    assert len(remade) == 2 and all('"extra_fields" FROM' in statement for statement in remade)
    rows = fake.view_rows("r_net1", "gw_node_1_sensors")
    assert [row["extra_fields"] for row in rows if row["fields"]["n"] == 9] == [{"log": "x" * 40_000}]
    await store.write(batch_of(FLEET[:2]))
    await store.views_made()
    assert len(views_made(fake)) == 4  # (made again once)
    await store.stop()

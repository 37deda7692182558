"""The per-network layout the whole way: a gateway with ``layout = per-network`` in its SQLite storage,
a real Mosquitto, a fleet of 30 nodes."""

import pytest

pytestmark = pytest.mark.integration


def test_a_gateway_with_the_per_network_layout_stores_a_fleet_in_one_table(tmp_path, mosquitto):
    """The whole way, with a real Mosquitto: ``layout = per-network`` in the storage section; 300 messages of
    30 nodes make one table and 30 views, and ``lorrygate status`` counts the views."""
    import json
    import uuid

    from lorrygate.control_client import request
    from tests.gatewayproc import GatewayProcess, Publisher, query, write_config
    from tests.servers import free_port, wait_until

    realm = f"fleet{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    control = free_port()
    text = open(config).read().replace("synchronous = NORMAL", "synchronous = NORMAL\nlayout = per-network")
    text = text.replace("stats_interval = 1s", f"stats_interval = 1s\ncontrol = tcp:{control}:interface=127.0.0.1")
    open(config, "w").write(text)
    database = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node-{n % 30}/data.json", json.dumps({"n": n})) for n in range(300))
    shared = f"{realm}_net__sensors"
    wait_until(lambda: query(database, f'SELECT count(*) FROM "{shared}"') == [(300,)]
               if shared in {r[0] for r in query(database, "SELECT name FROM sqlite_master")} else False,
               60, "the 300 rows")
    status = request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")
    assert [storage["backend"]["views"] for storage in status["storages"]] == [30]
    assert gateway.stop() == 0
    names = {row[0] for row in query(database, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {name for name in names if name.startswith(realm)} == {shared}
    assert query(database, f'SELECT count(*) FROM sqlite_master WHERE type = \'view\' AND name LIKE \'{realm}%\'') \
        == [(30,)]
    assert query(database, f'SELECT n FROM "{realm}_net__gw_node_7_sensors" ORDER BY n') == [
        (n,) for n in range(7, 300, 30)]

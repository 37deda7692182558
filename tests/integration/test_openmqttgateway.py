"""
OpenMQTTGateway through a real Mosquitto into SQLite with the ``openmqttgateway`` strategy: the BLE devices a
gateway hears (a new MAC address each, as phones change theirs) are rows of one table, the device's id its column;
its LWT an event, a command (with a password in it) ignored, nothing a dead letter.
"""

import uuid

from tests.gatewayproc import GatewayProcess, Publisher, query, tables, write_config
from tests.servers import wait_until


def test_a_gateways_ble_devices_are_rows_of_one_table(tmp_path, mosquitto):
    gateway_name = f"omg{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{gateway_name}",
                          topics=f"home/{gateway_name}/#", extra="strategy = openmqttgateway\n")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    sensors, events = f"openmqttgateway__{gateway_name}_bt_sensors", f"openmqttgateway__{gateway_name}_events"
    phones = [f"5{n}10A84690AC" for n in range(5)]
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many(
            [(f"home/{gateway_name}/LWT", "online"),
             (f"home/{gateway_name}/commands/MQTTtoSYS/config", '{"wifi_ssid": "home", "wifi_pass": "secret"}'),
             (f"home/{gateway_name}/BTtoMQTT/A4C138BB1B6E", '{"id": "A4:C1:38:BB:1B:6E", "model_id": "LYWSD03MMC_ATC",'
                                                          ' "rssi": -74, "tempc": 21.9, "hum": 53}')]
            + [(f"home/{gateway_name}/BTtoMQTT/{mac}", f'{{"id": "{mac}", "rssi": -80}}') for mac in phones])
        publisher.close()
        wait_until(lambda: {sensors, events} <= tables(db) and query(db, f'SELECT count(*) FROM "{sensors}"') == [(6,)],
                   30, "the devices' rows stored")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT id, model_id, tempc, hum FROM "{sensors}" WHERE id LIKE \'A4%\'') == [
        ("A4:C1:38:BB:1B:6E", "LYWSD03MMC_ATC", 21.9, 53)]
    assert sorted(row[0] for row in query(db, f'SELECT id FROM "{sensors}" WHERE model_id IS NULL')) == phones
    assert query(db, f'SELECT LWT FROM "{events}"') == [("online",)]
    assert {t for t in tables(db) if gateway_name in t} == {sensors, events}  # (not a table a MAC address)
    assert "lorrygate_dead_letter" not in tables(db) or query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]
    for path in (tmp_path / "gateway.sqlite", tmp_path / "gateway.sqlite-wal", tmp_path / "gw.log"):
        assert not path.exists() or b"secret" not in path.read_bytes(), path

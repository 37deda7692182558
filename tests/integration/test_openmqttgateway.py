"""
OpenMQTTGateway through a real Mosquitto into SQLite with the ``openmqttgateway`` strategy: the BLE devices a
gateway hears (a new MAC address each, as phones change theirs) are rows of one table, the device's id its column;
its LWT an event, a command (with a password in it) ignored, nothing a dead letter.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway, tables


def test_a_gateways_ble_devices_are_rows_of_one_table(tmp_path, mosquitto):
    gateway_name = f"omg{uuid.uuid4().hex[:6]}"
    sensors, events = f"openmqttgateway__{gateway_name}_bt_sensors", f"openmqttgateway__{gateway_name}_events"
    phones = [f"5{n}10A84690AC" for n in range(5)]
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"home/{gateway_name}/#", strategy="openmqttgateway",
                               messages=[
        (f"home/{gateway_name}/LWT", "online"),
        (f"home/{gateway_name}/commands/MQTTtoSYS/config", '{"wifi_ssid": "home", "wifi_pass": "secret"}'),
        (f"home/{gateway_name}/BTtoMQTT/A4C138BB1B6E", '{"id": "A4:C1:38:BB:1B:6E", "model_id": "LYWSD03MMC_ATC",'
                                                     ' "rssi": -74, "tempc": 21.9, "hum": 53}'),
    ] + [(f"home/{gateway_name}/BTtoMQTT/{mac}", f'{{"id": "{mac}", "rssi": -80}}') for mac in phones],
        tables_={sensors, events}, table=sensors, rows=6)
    assert query(db, f'SELECT id, model_id, tempc, hum FROM "{sensors}" WHERE id LIKE \'A4%\'') == [
        ("A4:C1:38:BB:1B:6E", "LYWSD03MMC_ATC", 21.9, 53)]
    assert sorted(row[0] for row in query(db, f'SELECT id FROM "{sensors}" WHERE model_id IS NULL')) == phones
    assert query(db, f'SELECT LWT FROM "{events}"') == [("online",)]
    assert {t for t in tables(db) if gateway_name in t} == {sensors, events}  # (not a table a MAC address)
    assert no_dead_letters(db)
    for path in (tmp_path / "gateway.sqlite", tmp_path / "gateway.sqlite-wal", tmp_path / "gw.log"):
        assert not path.exists() or b"secret" not in path.read_bytes(), path

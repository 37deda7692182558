"""
A Zigbee2Tasmota bridge through a real Mosquitto into SQLite with the ``tasmota`` strategy: what its Zigbee devices
sent, on the bridge's SENSOR topic and on a topic a device (SetOption89), is a row a report in the bridge's table,
the device's short address and name in their own columns, its attributes as fields; nothing a dead letter. The
BLE sensors an ESP32 reports (MI32) a row each, the sensor's mac and name its columns.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway


def test_a_zigbee_bridges_devices_are_rows_of_its_table(tmp_path, mosquitto):
    bridge = f"zb{uuid.uuid4().hex[:6]}"
    sensors = f"tasmota__{bridge}_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"tele/{bridge}/#", strategy="tasmota", messages=[
        (f"tele/{bridge}/SENSOR", '{"ZbReceived":{"0x8F20":{"Device":"0x8F20","Name":"Kitchen","Temperature":'
                                  '21.01,"Humidity":53.68,"Endpoint":1,"LinkQuality":88}}}'),
        (f"tele/{bridge}/SENSOR", '{"ZbReceived":{"0x4773":{"Device":"0x4773","Power":true,"Endpoint":3,'
                                  '"LinkQuality":52}}}'),
        (f"tele/{bridge}/8F20/SENSOR", '{"ZbReceived":{"0x8F20":{"Device":"0x8F20","Name":"Kitchen",'
                                       '"Temperature":21.5,"Endpoint":1,"LinkQuality":90}}}'),
    ], tables_={sensors}, table=sensors, rows=3)
    assert query(db, f'SELECT Device, Name, Temperature, Power, LinkQuality FROM "{sensors}" ORDER BY time') == [
        ("0x8F20", "Kitchen", 21.01, None, 88), ("0x4773", None, None, 1, 52), ("0x8F20", "Kitchen", 21.5, None, 90)]
    assert no_dead_letters(db)


def test_the_ble_sensors_an_esp32_hears_are_rows_of_its_table(tmp_path, mosquitto):
    esp = f"ble{uuid.uuid4().hex[:6]}"
    sensors = f"tasmota__{esp}_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"tele/{esp}/#", strategy="tasmota", messages=[
        (f"tele/{esp}/SENSOR", '{"Time":"2024-06-01T12:00:00","ATCbb1b6e":{"mac":"a4c138bb1b6e","Temperature":21.9,'
                               '"Humidity":53.0},"ATC112233":{"mac":"a4c138112233","Temperature":19.5,'
                               '"Humidity":61.0},"TempUnit":"C"}')], tables_={sensors}, table=sensors, rows=2)
    assert query(db, f'SELECT mac, name, Temperature, Humidity, TempUnit FROM "{sensors}" ORDER BY mac') == [
        ("a4c138112233", "ATC112233", 19.5, 61.0, "C"), ("a4c138bb1b6e", "ATCbb1b6e", 21.9, 53.0, "C")]
    assert no_dead_letters(db)

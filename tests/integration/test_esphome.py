"""
ESPHome devices through a real Mosquitto into SQLite with the ``esphome`` strategy: a device's states in one
table (the object id the column, the component a tag), a light's JSON under its name, ``nan`` no value, the birth an
event, a command ignored and nothing a dead letter.
"""

import uuid

from tests.gatewayproc import GatewayProcess, Publisher, query, tables, write_config
from tests.servers import wait_until


def test_an_esphome_devices_states_are_one_table(tmp_path, mosquitto):
    device = f"esp{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{device}", topics=f"{device}/#",
                          extra="strategy = esphome\n")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    sensors, events = f"esphome__{device}_sensors", f"esphome__{device}_events"
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([
            (f"{device}/status", "online"),
            (f"{device}/sensor/temperature/state", "nan"),
            (f"{device}/sensor/temperature/state", "21.5"),
            (f"{device}/binary_sensor/motion/state", "ON"),
            (f"{device}/light/ceiling/command", '{"state": "OFF"}'),
            (f"{device}/light/ceiling/state", '{"state": "ON", "brightness": 255}'),
        ])
        publisher.close()

        def stored():
            return ({sensors, events} <= tables(db)
                    and query(db, f'SELECT count(*) FROM "{sensors}"') == [(4,)])

        wait_until(stored, 30, "the device's states stored")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT component, temperature, motion, "ceiling.state", "ceiling.brightness" '
                     f'FROM "{sensors}" ORDER BY time') == [
        ("sensor", None, None, None, None), ("sensor", 21.5, None, None, None),
        ("binary_sensor", None, "ON", None, None), ("light", None, None, "ON", 255)]
    assert query(db, f'SELECT status FROM "{events}"') == [("online",)]
    assert "lorrygate_dead_letter" not in tables(db) or query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]

"""
ESPHome devices through a real Mosquitto into SQLite with the ``esphome`` strategy: a device's states in one
table (the object id the column, the component a tag), a light's JSON under its name, ``nan`` no value, the birth an
event, a command ignored and nothing a dead letter.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway


def test_an_esphome_devices_states_are_one_table(tmp_path, mosquitto):
    device = f"esp{uuid.uuid4().hex[:6]}"
    sensors, events = f"esphome__{device}_sensors", f"esphome__{device}_events"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"{device}/#", strategy="esphome", messages=[
        (f"{device}/status", "online"),
        (f"{device}/sensor/temperature/state", "nan"),
        (f"{device}/sensor/temperature/state", "21.5"),
        (f"{device}/binary_sensor/motion/state", "ON"),
        (f"{device}/light/ceiling/command", '{"state": "OFF"}'),
        (f"{device}/light/ceiling/state", '{"state": "ON", "brightness": 255}'),
    ], tables_={sensors, events}, table=sensors, rows=4)
    assert query(db, f'SELECT component, temperature, motion, "ceiling.state", "ceiling.brightness" '
                     f'FROM "{sensors}" ORDER BY time') == [
        ("sensor", None, None, None, None), ("sensor", 21.5, None, None, None),
        ("binary_sensor", None, "ON", None, None), ("light", None, None, "ON", 255)]
    assert query(db, f'SELECT status FROM "{events}"') == [("online",)]
    assert no_dead_letters(db)

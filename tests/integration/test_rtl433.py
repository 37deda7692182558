"""
rtl_433's default MQTT output (events, devices and states, as ``rtl_433 -F mqtt://...`` publishes them; here at
QoS 1, so that the test knows when the broker has them all) through a real Mosquitto into SQLite: each reception stored once, in the receiver's table with the device as
tags at its local time, the per-value copies ignored and counted, no dead letter.
"""

import json
import uuid

from tests.gatewayproc import GatewayProcess, Publisher, last_stats, query, tables, write_config
from tests.servers import wait_until

READINGS = [
    {"time": "2026-12-05 13:00:00", "model": "Acurite-Tower", "id": 1234, "channel": "A", "battery_ok": 1,
     "temperature_C": 21.5, "humidity": 40, "mic": "CHECKSUM"},
    {"time": "2026-12-05 13:00:30", "model": "Toyota", "type": "TPMS", "id": "a1b2c3", "status": 128,
     "pressure_PSI": 32.0, "temperature_C": 12.0, "mic": "CRC"},
]


def published(host):
    """What rtl_433 publishes for READINGS: each event, then its values a topic each, and its state."""
    for reading in READINGS:
        yield f"rtl_433/{host}/events", json.dumps(reading)
        device = "/".join(str(reading[key]) for key in ("type", "model", "channel", "id") if key in reading)
        for key, value in reading.items():
            if key not in ("type", "model"):
                yield f"rtl_433/{host}/devices/{device}/{key}", str(value)
    yield f"rtl_433/{host}/states", json.dumps({"time": "2026-12-05 13:01:00", "enabled": 200,
                                                 "frames": {"count": 10, "events": 8}})


def test_rtl_433s_default_output_is_stored_once_a_reception(tmp_path, mosquitto):
    host = f"pi{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{host}", topics=f"rtl_433/{host}/#",
                          extra="strategy = rtl_433\ntimezone = Europe/Berlin\n")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    messages = list(published(host))
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many(messages)
        publisher.close()
        events = f"rtl_433__{host}_events"
        wait_until(lambda: events in tables(db), 30, "the receiver's state stored (the last message)")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    rows = query(db, f'SELECT time, model, id, channel, type, mic, temperature_C, humidity, pressure_PSI '
                     f'FROM "rtl_433__{host}_sensors" ORDER BY time')
    assert rows == [("2026-12-05T12:00:00.000000000Z", "Acurite-Tower", "1234", "A", None, "CHECKSUM", 21.5, 40, None),
                    ("2026-12-05T12:00:30.000000000Z", "Toyota", "a1b2c3", None, "TPMS", "CRC", 12.0, None, 32.0)]
    assert sorted(t for t in tables(db) if host in t) == [f"rtl_433__{host}_events", f"rtl_433__{host}_sensors"]
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]
    stats = last_stats(gateway.events())
    assert stats["ignored"] == len(messages) - 3, stats

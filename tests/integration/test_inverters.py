"""
OpenDTU and AhoyDTU through a real Mosquitto into SQLite with the ``opendtu`` and ``ahoy`` strategies: an
inverter's values, a value a topic, are rows of one table (the channel a column), the DTU's and the totals' in
tables of their own, its last will an event; a command is ignored and an empty name stores nothing; nothing is a
dead letter.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway, tables


def test_an_inverters_values_are_rows_of_one_table_the_channel_a_column(tmp_path, mosquitto):
    serial = str(uuid.uuid4().int)[:12]
    sensors = f"solar__{serial}_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics="solar/#", strategy="opendtu", messages=[
        ("solar/dtu/status", "online"),
        (f"solar/{serial}/cmd/limit_persistent_absolute", "600"),
        (f"solar/{serial}/name", "HM-800 Garage"),
        (f"solar/{serial}/1/name", ""),
        (f"solar/{serial}/0/power", "512.3"),
        (f"solar/{serial}/0/voltage", "231.2"),
        (f"solar/{serial}/1/power", "256.1"),
        (f"solar/{serial}/2/power", "256.2"),
        (f"solar/{serial}/status/reachable", "1"),
        ("solar/dtu/heap/free", "123456"),
        ("solar/ac/power", "768.4"),
    ], tables_={sensors, "solar__dtu_events", "solar__dtu_sensors", "solar__ac_sensors"}, table=sensors, rows=6)
    assert query(db, f'SELECT channel, power FROM "{sensors}" WHERE power IS NOT NULL ORDER BY channel') == [
        ("0", 512.3), ("1", 256.1), ("2", 256.2)]
    assert query(db, f'SELECT channel, voltage FROM "{sensors}" WHERE voltage IS NOT NULL') == [("0", 231.2)]
    assert query(db, f'SELECT "status.reachable" FROM "{sensors}" WHERE channel IS NULL AND name IS NULL') == [(1,)]
    assert query(db, f'SELECT name FROM "{sensors}" WHERE name IS NOT NULL') == [("HM-800 Garage",)]
    assert query(db, 'SELECT status FROM "solar__dtu_events"') == [("online",)]
    assert query(db, 'SELECT "heap.free" FROM "solar__dtu_sensors"') == [(123456,)]
    assert query(db, 'SELECT power FROM "solar__ac_sensors"') == [(768.4,)]
    assert not any("cmd" in table or "limit" in table for table in tables(db))
    assert no_dead_letters(db)


def test_ahoys_values_and_json_channels_are_rows_of_one_table(tmp_path, mosquitto):
    name = f"HM-600-{uuid.uuid4().hex[:6]}"
    sensors = f"inverter__{name.lower().replace('-', '_')}_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics="inverter/#", strategy="ahoy", messages=[
        ("inverter/mqtt", "connected"),
        ("inverter/ctrl/limit/0", "50"),
        (f"inverter/{name}/ch0/P_AC", "120.3"),
        (f"inverter/{name}/ch1", '{"U_DC": 33.1, "P_DC": 69.5, "ts": 1717243200}'),
        (f"inverter/{name}/firmware", '{"version": 10012, "build_year": "2020"}'),
        (f"inverter/{name}/hardware", '{"part": 269619200, "version": "65536"}'),
        (f"inverter/{name}/alarm/0", '{"code": 1, "str": "Inverter start", "start": 1717214960, "end": 0}'),
        (f"inverter/{name}/alarm/1", '{"code": 2, "str": "DTU command failed", "start": 1717222800, "end": 0}'),
        (f"inverter/{name}/alarm/0", '{"code": 1, "str": "Inverter start", "start": 1717214960, "end": 0}'),
        ("inverter/uptime", "3600"),
    ], tables_={sensors, "inverter__dtu_events", "inverter__dtu_sensors"}, table=sensors, rows=4)
    assert query(db, f'SELECT time, channel, P_DC FROM "{sensors}" WHERE P_DC IS NOT NULL') == [
        ("2024-06-01T12:00:00.000000000Z", "1", 69.5)]
    assert query(db, f'SELECT "firmware.version", "hardware.version" FROM "{sensors}" WHERE channel IS NULL '
                     'ORDER BY "firmware.version" IS NULL') == [(10012, None), (None, "65536")]
    assert query(db, 'SELECT mqtt FROM "inverter__dtu_events"') == [("connected",)]
    assert query(db, 'SELECT uptime FROM "inverter__dtu_sensors"') == [(3600,)]
    events = f"inverter__{name.lower().replace('-', '_')}_events"
    assert query(db, f'SELECT code FROM "{events}" ORDER BY code') == [(1,), (2,)]  # the first alarm once
    assert not any("ctrl" in table or "limit" in table for table in tables(db))
    assert no_dead_letters(db)


def test_with_merge_an_inverters_values_of_a_bucket_are_one_row_a_channel(tmp_path, mosquitto):
    """``merge = 1d`` in the channel's section: OpenDTU's values, a topic each, are one row a channel (and one of
    the inverter's own values), not a row a value; nothing is a dead letter."""
    import time

    if 86400 - time.time() % 86400 < 10:  # (not across midnight UTC, where the day's bucket ends)
        time.sleep(86400 - time.time() % 86400 + 0.5)
    serial = str(uuid.uuid4().int)[:12]
    sensors = f"solar__{serial}_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics="solar/#", strategy="opendtu", sections="merge = 1d",
                               messages=[
        (f"solar/{serial}/name", "HM-800 Garage"),
        (f"solar/{serial}/0/power", "512.3"),
        (f"solar/{serial}/0/voltage", "231.2"),
        (f"solar/{serial}/1/power", "256.1"),
        (f"solar/{serial}/1/voltage", "33.1"),
        (f"solar/{serial}/status/reachable", "1"),
        (f"solar/{serial}/0/power", "514.0"),
        ("solar/ac/power", "768.4"),
        (f"solar/{serial}/2/power", "256.2"),  # (the last: its row is the fourth, the signal that all are in)
    ], tables_={sensors, "solar__ac_sensors"}, table=sensors, rows=4)
    day = time.strftime("%Y-%m-%dT00:00:00.000000000Z", time.gmtime())
    assert query(db, f'SELECT time, channel, power, voltage, name, "status.reachable" FROM "{sensors}" '
                     "ORDER BY channel NULLS FIRST") == [
        (day, None, None, None, "HM-800 Garage", 1), (day, "0", 514.0, 231.2, None, None),
        (day, "1", 256.1, 33.1, None, None), (day, "2", 256.2, None, None, None)]
    assert no_dead_letters(db)

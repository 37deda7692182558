"""
Ruuvi Gateway through a real Mosquitto into SQLite with the ``ruuvi`` strategy: the RuuviTags a gateway relays as
hex (its default) are rows of its table with their values, the MAC a column, at the time the gateway heard them;
another device's advertisement keeps its hex; the gateway's status is an event; nothing is a dead letter.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway, tables


def test_a_gateways_tags_are_rows_of_its_table_with_their_values(tmp_path, mosquitto):
    gateway = ":".join(f"{byte:02X}" for byte in uuid.uuid4().bytes[:6])
    sensors, events = f"ruuvi__{gateway.lower().replace(':', '_')}_sensors", f"ruuvi__{gateway.lower().replace(':', '_')}_events"
    tag = "CB:B8:33:4C:88:4F"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"ruuvi/{gateway}/#", strategy="ruuvi", messages=[
        (f"ruuvi/{gateway}/gw_status", '{"state": "online"}'),
        (f"ruuvi/{gateway}/{tag}", f'{{"gw_mac": "{gateway}", "rssi": -62, "aoa": [], "gwts": 1653668027, '
                                   '"ts": 1653668027, "data": "0201061BFF99040512FD5395C37C0004FFFC040CAC364200CDCB'
                                   'B8334C884F", "coords": ""}'),
        (f"ruuvi/{gateway}/5A:10:A8:46:90:AC", '{"rssi": -80, "aoa": [], "gwts": 1653668027, "ts": 1653668027, '
                                              '"data": "02011A020A0C0AFF4C001005071C1F2A5B", "coords": ""}'),
    ], tables_={sensors, events}, table=sensors, rows=2)
    assert query(db, f'SELECT time, temperature, humidity, pressure, voltage, "measurementSequenceNumber", data '
                     f'FROM "{sensors}" WHERE mac = \'{tag}\'') == [
        ("2022-05-27T16:13:47.000000000Z", 24.305, 53.4925, 100044, 2.977, 205, None)]
    assert query(db, f'SELECT data, temperature FROM "{sensors}" WHERE mac = \'5A:10:A8:46:90:AC\'') == [
        ("02011A020A0C0AFF4C001005071C1F2A5B", None)]
    assert query(db, f'SELECT state FROM "{events}"') == [("online",)]
    assert {t for t in tables(db) if t.startswith("ruuvi__")} == {sensors, events}
    assert no_dead_letters(db)

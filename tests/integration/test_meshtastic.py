"""
Meshtastic gateway nodes through a real Mosquitto into SQLite with the ``meshtastic`` strategy: the packets of a
mesh channel are rows of its table at the times the gateways received them, the sending node, the packet's type
and the gateway that heard it columns; a packet two gateways heard is one row (the first gateway's), or with
``receptions = each`` a row of each, which its ``packet_id`` and ``node`` tell; the other format's copies and the
map reports are ignored; nothing is a dead letter. Read from the protobuf topics (encrypted with the default key,
as nodes publish them out of the box), and from the JSON output with ``output = json``.
"""

import json
import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway, tables


def packet(gateway: str, kind: str, payload: dict, **envelope) -> str:
    return json.dumps({"channel": 0, "from": 2130636288, "id": 1412106178, "sender": gateway, "timestamp": 1716837450,
                       "to": 4294967295, "type": kind, "payload": payload, **envelope})


def test_a_mesh_channels_json_packets_are_rows_of_its_table(tmp_path, mosquitto):
    region = f"T{uuid.uuid4().hex[:8]}"
    root = f"msh/{region}/2"
    schema = f"msh_{region.lower()}"
    sensors = f"{schema}__longfast_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"msh/{region}/#", strategy="mesh", messages=[
        (f"{root}/e/LongFast/!a1b2c3d4", b"\n\x1f\r\x00\xee\xfe~\x15\xff\xff\xff\xff"),
        (f"{root}/json/LongFast/!a1b2c3d4", packet("!a1b2c3d4", "telemetry", {
            "temperature": 21.5, "relative_humidity": 48.25, "barometric_pressure": 1013.2}, rssi=-94, snr=6.25)),
        (f"{root}/json/LongFast/!0000beef", packet("!0000beef", "telemetry", {
            "temperature": 21.5, "relative_humidity": 48.25, "barometric_pressure": 1013.2}, rssi=-120, snr=-7.5,
            timestamp=1716837451)),
        (f"{root}/json/LongFast/!a1b2c3d4", packet("!a1b2c3d4", "position", {
            "latitude_i": 523456789, "longitude_i": 134567890, "altitude": 40, "time": 1716837400}, id=99,
            timestamp=1716837460)),
        (f"{root}/json/LongFast/!a1b2c3d4", packet("!a1b2c3d4", "neighborinfo", {
            "node_id": 2130636288, "neighbors": [{"node_id": 1, "snr": 5}]}, id=100, timestamp=1716837470)),
        (f"{root}/json/LongFast/!a1b2c3d4", json.dumps({"channel": 0, "from": 2130636288, "id": 101,
                                                        "sender": "!a1b2c3d4", "timestamp": 1716837480,
                                                        "to": 4294967295, "type": ""})),
        (f"{root}/map/", b"\n\x1f"),
    ], tables_={sensors}, table=sensors, rows=4, decoders="each, value",
        sections="[strategy:mesh]\ntype = meshtastic\noutput = json\n\n[decoder:each]\ntype = meshtastic\n"
                 "receptions = each\n")
    assert query(db, f'SELECT time, node, gateway, type, packet_id, temperature, relative_humidity, rssi, snr '
                     f'FROM "{sensors}" WHERE type = \'telemetry\' ORDER BY time') == [
        ("2024-05-27T19:17:30.000000000Z", "!7efeee00", "!a1b2c3d4", "telemetry", 1412106178, 21.5, 48.25, -94, 6.25),
        ("2024-05-27T19:17:31.000000000Z", "!7efeee00", "!0000beef", "telemetry", 1412106178, 21.5, 48.25, -120,
         -7.5)]
    # one reading, whichever gateways heard it
    assert query(db, f'SELECT count(DISTINCT node || packet_id) FROM "{sensors}" WHERE type = \'telemetry\'') == [(1,)]
    assert query(db, f'SELECT latitude, longitude, altitude, position_time FROM "{sensors}" '
                     f'WHERE type = \'position\'') == [(52.3456789, 13.456789, 40, 1716837400)]
    [(neighbors,)] = query(db, f'SELECT neighbors FROM "{sensors}" WHERE type = \'neighborinfo\'')
    assert json.loads(neighbors) == [{"node_id": 1, "snr": 5}]
    assert {t for t in tables(db) if t.startswith(schema)} == {sensors}
    assert no_dead_letters(db)


def test_a_mesh_channels_encrypted_packets_are_rows_of_its_table(tmp_path, mosquitto):
    """Two gateways' encrypted copies of one telemetry packet (one row: the first gateway's) and a position, a
    JSON copy beside them."""
    from meshtastic.protobuf import mesh_pb2, telemetry_pb2

    from tests.fleet.meshtastic import envelope

    region = f"T{uuid.uuid4().hex[:8]}"
    root = f"msh/{region}/2"
    sensors = f"msh_{region.lower()}__longfast_sensors"
    telemetry = telemetry_pb2.Telemetry(device_metrics=telemetry_pb2.DeviceMetrics(battery_level=87, voltage=3.95))
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"msh/{region}/#", strategy="meshtastic", messages=[
        (f"{root}/e/LongFast/!a1b2c3d4", envelope("TELEMETRY_APP", telemetry)),
        (f"{root}/json/LongFast/!a1b2c3d4", packet("!a1b2c3d4", "telemetry", {"battery_level": 87, "voltage": 3.95})),
        (f"{root}/e/LongFast/!0000beef", envelope("TELEMETRY_APP", telemetry, gateway="!0000beef", rx_rssi=-120)),
        (f"{root}/e/LongFast/!a1b2c3d4", envelope("POSITION_APP", mesh_pb2.Position(
            latitude_i=523456789, longitude_i=134567890), packet_id=99)),
        (f"{root}/e/LongFast/!a1b2c3d4", envelope("ROUTING_APP", b"\x18\x00", packet_id=100)),
    ], tables_={sensors}, table=sensors, rows=2)
    assert query(db, f'SELECT gateway, node, type, battery_level, voltage, rssi FROM "{sensors}" '
                     f'WHERE type = \'telemetry\'') == [("!a1b2c3d4", "!7efeee00", "telemetry", 87, 3.95, -94)]
    assert query(db, f'SELECT latitude, longitude FROM "{sensors}" WHERE packet_id = 99') == [(52.3456789, 13.456789)]
    assert no_dead_letters(db)

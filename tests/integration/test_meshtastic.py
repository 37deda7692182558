"""
Meshtastic gateway nodes through a real Mosquitto into SQLite with the ``meshtastic`` strategy: the packets of a
mesh channel are rows of its table at the times the gateways received them, the sending node, the packet's type
and the gateway that heard it columns; a packet two gateways heard is one row (the first gateway's), or with
``receptions = each`` a row of each, which its ``packet_id`` and ``node`` tell; the other format's copies and the
map reports are ignored; nothing is a dead letter. Read from the protobuf topics (encrypted with the default key,
as nodes publish them out of the box), and from the JSON output with ``output = json``.
"""

import base64
import json
import os
import subprocess
import sys
import uuid

import psycopg
from meshtastic.protobuf import mesh_pb2, telemetry_pb2

from tests.fleet.meshtastic import envelope
from tests.gatewayproc import (
    GatewayProcess,
    Publisher,
    no_dead_letters,
    query,
    store_through_gateway,
    tables,
    write_config,
)
from tests.servers import wait_until


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


def test_a_channel_of_its_own_key_is_kept_until_the_key_is_given_and_then_replayed(tmp_path, mosquitto):
    """A packet of a channel encrypted with a key lorrygate has not is a dead letter that says where the key goes
    (each gateway's copy); with the key given (from the environment, never in the file) the replay stores the
    packet once."""
    region = f"T{uuid.uuid4().hex[:8]}"
    key = bytes(range(32))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{region}", topics=f"msh/{region}/#",
                          extra="strategy = meshtastic\ndecoders = mesh, value\n\n[decoder:mesh]\ntype = meshtastic\n"
                                "keys = ${ENV:MESH_KEYS}\n")
    db = str(tmp_path / "gateway.sqlite")
    environment = dict(os.environ, MESH_KEYS="LongFast:AQ==")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"), env=environment)
    gateway.start(ready="subscribed")
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([(f"msh/{region}/2/e/Family/{heard_by}",
                                 envelope("TEXT_MESSAGE_APP", b"dinner at 7", channel="Family", key=key,
                                          gateway=heard_by)) for heard_by in ("!a1b2c3d4", "!0000beef")])
        publisher.close()
        wait_until(lambda: "lorrygate_dead_letter" in tables(db) and query(
            db, "SELECT count(*) FROM lorrygate_dead_letter") == [(2,)], 30, "the copies kept as dead letters")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    [(error,), _] = query(db, "SELECT error FROM lorrygate_dead_letter")
    assert "encrypted with channel 'Family''s own key: give it as keys = Family:" in error
    assert base64.b64encode(key).decode() not in gateway.text()

    environment["MESH_KEYS"] = f"LongFast:AQ==, Family:{base64.b64encode(key).decode()}"
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "replay", "-c", config],
                          capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 replayed (1 rows)" in done.stdout, done.stdout  # the second gateway's copy: nothing to store
    sensors = f"msh_{region.lower()}__family_sensors"
    assert query(db, f'SELECT node, gateway, type, text FROM "{sensors}"') == [
        ("!7efeee00", "!a1b2c3d4", "text", "dinner at 7")]
    assert base64.b64encode(key).decode() not in done.stdout + done.stderr


def test_a_mesh_channels_packets_in_postgresql_have_their_types(tmp_path, mosquitto, postgres):
    """The same packets into PostgreSQL: a column each value, of its type (a neighbours' list JSONB, degrees
    DOUBLE PRECISION, a packet id BIGINT), the node and gateway text columns."""
    base = f"m{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{base}", topics=f"{base}/#",
                          extra=f"strategy = mesh\n\n[strategy:mesh]\ntype = meshtastic\nbase = {base}\n")
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:
        handle.write(text.replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                                  f"url = {postgres.url}"))
    telemetry = telemetry_pb2.Telemetry(device_metrics=telemetry_pb2.DeviceMetrics(battery_level=87, voltage=3.95))
    neighbours = mesh_pb2.NeighborInfo(node_id=2130636288, neighbors=[mesh_pb2.Neighbor(node_id=1, snr=5.5)])
    topic = f"{base}/EU_868/2/e/LongFast/!a1b2c3d4"
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    schema = f"{base}_eu_868"
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([
            (topic, envelope("TELEMETRY_APP", telemetry, packet_id=4_000_000_000)),
            (topic, envelope("NEIGHBORINFO_APP", neighbours, packet_id=2)),
            (topic, envelope("POSITION_APP", mesh_pb2.Position(latitude_i=523456789, longitude_i=134567890),
                             packet_id=3)),
            (topic, envelope("NODEINFO_APP", mesh_pb2.User(id="!7efeee00", long_name="Garden", hw_model=43),
                             packet_id=4)),
        ])
        publisher.close()

        def rows() -> int:
            with psycopg.connect(postgres.url, autocommit=True) as conn:
                found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."longfast_sensors"',)).fetchone()[0]
                return conn.execute(f'SELECT count(*) FROM "{schema}"."longfast_sensors"').fetchone()[0] if found else 0

        wait_until(lambda: rows() == 4, 30, "four rows in PostgreSQL")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_schema = %s AND table_name = 'longfast_sensors'", (schema,)).fetchall())
        assert {name: types[name] for name in ("node", "gateway", "type", "packet_id", "battery_level", "voltage",
                                               "neighbors", "latitude", "longname", "hardware")} == {
            "node": "text", "gateway": "text", "type": "text", "packet_id": "bigint", "battery_level": "bigint",
            "voltage": "double precision", "neighbors": "jsonb", "latitude": "double precision", "longname": "text",
            "hardware": "bigint"}
        assert conn.execute(f'SELECT neighbors, packet_id FROM "{schema}"."longfast_sensors" '
                            "WHERE type = 'neighborinfo'").fetchall() == [([{"node_id": 1, "snr": 5.5}], 2)]
        assert conn.execute(f'SELECT voltage FROM "{schema}"."longfast_sensors" WHERE packet_id = 4000000000'
                            ).fetchall() == [(3.95,)]

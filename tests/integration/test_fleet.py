"""
A recorded mixed fleet (tests/fleet/payloads.py: Tasmota, Zigbee2MQTT with a
600-device bridge/info, Shelly Gen1 and Gen2, Homie, The Things Stack uplinks
and join events, ChirpStack, WeeWX, Kotori WAN, a Sparkplug B edge node and device) published through a real
Mosquitto into SQLite and PostgreSQL at once: no dead letter for valid vendor
traffic, every command ignored and counted, no error report published into a
vendor's tree, every value with the device's time, no table over the column
budget.
"""

import textwrap
import threading
import uuid

import paho.mqtt.client as paho
import psycopg

from tests.fleet.payloads import fleet
from tests.gatewayproc import GatewayProcess, Publisher, query, tables
from tests.servers import wait_until

CHANNELS = {
    # channel: (strategy, topics)
    "tasmota": ("tasmota", "+/{realm}-plug-0/+, +/{realm}-plug-1/+, +/{realm}-plug-2/+"),
    "z2m": ("z2m", "{realm}z2m/#"),
    "shelly": ("shelly", "shellies/shelly1pm-{realm}/#, shellyplus1pm-{realm}/#"),
    "homie": ("homie", "homie/boiler-{realm}/#"),
    "ttn": ("ttn", "v3/climate-{realm}@ttn/#"),
    "chirpstack": ("chirpstack", "application/{realm}/#"),
    "wan": ("wan", "{realm}/#"),
    "sparkplug": ("sparkplug", "spBv1.0/{realm}/#, spBv1.0/STATE/host-{realm}"),
    "ha": ("ha", "{realm}ha/#"),
    "owntracks": ("ot", "{realm}ot/#"),
}


def channel_of(topic: str, realm: str) -> str:
    for name, prefix in (("z2m", f"{realm}z2m/"), ("shelly", "shellies/"), ("shelly", "shellyplus1pm-"),
                         ("homie", "homie/"), ("ttn", "v3/"), ("chirpstack", "application/"), ("wan", f"{realm}/"),
                         ("sparkplug", "spBv1.0/"), ("ha", f"{realm}ha/"),
                         ("owntracks", f"{realm}ot/")):
        if topic.startswith(prefix):
            return name
    return "tasmota"


def config(directory, port, realm, pg_url) -> str:
    sections = "".join(textwrap.dedent(f"""
        [channel:{name}]
        source = test
        topics = {topics.format(realm=realm)}
        strategy = {strategy}
        storage = db, pg
        timezone = Europe/Berlin
        """) for name, (strategy, topics) in CHANNELS.items())
    path = f"{directory}/fleet.ini"
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s

            [broker:test]
            host = 127.0.0.1
            port = {port}
            client_id = gw-{realm}

            [storage:db]
            url = sqlite:///{directory}/fleet.sqlite
            synchronous = NORMAL

            [storage:pg]
            url = {pg_url}

            [strategy:z2m]
            type = zigbee2mqtt
            base = {realm}z2m

            [strategy:ha]
            type = homeassistant
            base = {realm}ha

            [strategy:ot]
            type = owntracks
            base = {realm}ot
            """) + sections)
    return path


class Topics:
    """Every topic published on the broker while the test runs (to catch error reports)."""

    def __init__(self, port):
        self.seen = []
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda client, userdata, message: self.seen.append(message.topic)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe("#", qos=0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def stats_by_channel(events, final=False) -> dict:
    return {e["channel"]: e for e in events if e.get("event") == "stats" and bool(e.get("final")) == final}


def pg_tables(conn, schemas) -> dict:
    rows = conn.execute(
        "SELECT table_schema, table_name, count(*) FROM information_schema.columns "
        "WHERE table_schema = ANY(%s) GROUP BY 1, 2", (list(schemas),)).fetchall()
    return {(schema, table): columns for schema, table, columns in rows}


def test_a_recorded_fleet_is_stored_whole(tmp_path, mosquitto, postgres):
    realm = f"f{uuid.uuid4().hex[:6]}"
    messages = fleet(realm)
    expected = {}
    for topic, _, kind in messages:
        name = channel_of(topic, realm)
        counts = expected.setdefault(name, {"received": 0, "ignored": 0})
        counts["received"] += 1
        counts["ignored"] += kind == "command"
    watcher = Topics(mosquitto.port)
    gateway = GatewayProcess(config(str(tmp_path), mosquitto.port, realm, postgres.url), str(tmp_path / "gw.log"))
    gateway.start()
    wait_until(lambda: sum("subscribed" in e.get("message", "") for e in gateway.events()) >= len(CHANNELS)
               or "lorrygate is running" in gateway.text(), 30, "every channel's SUBACK")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((topic, payload) for topic, payload, _ in messages)
    publisher.close()

    def all_received():
        stats = stats_by_channel(gateway.events())
        return all(stats.get(name, {}).get("received") == counts["received"] for name, counts in expected.items())

    wait_until(all_received, 60, "every message received by its channel", interval=0.2)
    assert gateway.stop() == 0, gateway.text()[-3000:]
    watcher.close()
    final = stats_by_channel(gateway.events(), final=True)

    # Every command ignored and counted; nothing unmatched, undecodable or dead.
    for name, counts in expected.items():
        assert (final[name]["received"], final[name]["ignored"]) == (counts["received"], counts["ignored"]), name
        assert (final[name]["unmatched"], final[name]["undecodable"]) == (0, 0), final[name]
        assert final[name]["dead_letters_by_stage"] == {}, final[name]
    db = str(tmp_path / "fleet.sqlite")
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0] == 0
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        dead = conn.execute("SELECT topic, error FROM lorrygate_dead_letter WHERE topic LIKE %s OR topic LIKE %s",
                            (f"%{realm}%", "tele/%")).fetchall()
        assert [d for d in dead if realm in d[0]] == []

        # No error report published into anyone's tree.
        assert [t for t in watcher.seen if realm in t and t.endswith("error.json")] == []

        # Every value with the device's time.
        def times(table_sqlite, schema, table):
            lite = [row[0] for row in query(db, f'SELECT time FROM "{table_sqlite}"')]
            pg = [row[0].isoformat() for row in conn.execute(f'SELECT time FROM "{schema}"."{table}"').fetchall()]
            return lite, pg

        lite, pg = times(f"tasmota__{realm}_plug_0_sensors", "tasmota", f"{realm}_plug_0_sensors")
        assert set(lite) == {"2024-06-01T12:00:00.000000000Z"} and set(pg) == {"2024-06-01T12:00:00+00:00"}
        lite, pg = times(f"ttn_climate_{realm}__lht65_01_sensors", f"ttn_climate_{realm}", "lht65_01_sensors")
        assert lite == ["2024-06-01T12:00:00.098765432Z"] and pg == ["2024-06-01T12:00:00.098765+00:00"]
        lite, _ = times(f"chirpstack_{realm}__a840410001812346_sensors", f"chirpstack_{realm}", "a840410001812346_sensors")
        assert lite == ["2024-06-01T12:00:00.555000000Z"]
        # ChirpStack v3 ("json" marshaler: the values in objectJSON) and v2 topics: values as columns
        v3 = query(db, f'SELECT time, temperature, moisture, "fPort" FROM "chirpstack_{realm}__0202020202020202_sensors"')
        assert v3 == [("2024-06-01T12:00:00.500000000Z", 19.5, 31, 5)]
        v2 = query(db, f'SELECT time, temperature, moisture FROM "chirpstack_{realm}__0303030303030303_sensors"')
        assert v2 == [("2024-06-01T12:00:01.000000000Z", 18.5, 40)]
        lite, _ = times(f"{realm}_home__station_vantage_sensors", f"{realm}_home", "station_vantage_sensors")
        assert lite == ["2017-04-17T22:15:00.000000000Z"]

        # Vendor events are rows a user finds, named after the event.
        plug = f"tasmota__{realm}_plug_0_events"
        assert query(db, f'SELECT "LWT" FROM "{plug}" WHERE "LWT" IS NOT NULL') == [("Online",)]
        assert sorted(query(db, f'SELECT "POWER" FROM "{plug}" WHERE "POWER" IS NOT NULL')) == [("OFF",), ("OFF",)]
        shelly = f"shelly__shelly1pm_{realm}_sensors"
        assert sorted(query(db, f'SELECT component, state, power, energy FROM "{shelly}" WHERE component IS NOT NULL'),
                      key=repr) == [("relay:0", "on", None, None), ("relay:0", None, 12.3, None),
                                    ("relay:0", None, None, 4711)]
        gen2 = query(db, f'SELECT component, apower FROM "shelly__shellyplus1pm_{realm}_sensors" '
                         "WHERE apower IS NOT NULL")
        assert gen2 == [("switch:0", 8.9)]
        # Gen2's status notification: a row of its component at the device's ts
        notified = query(db, f'SELECT time, component, output FROM "shelly__shellyplus1pm_{realm}_sensors" '
                             "WHERE apower IS NULL AND output IS NOT NULL")
        assert notified == [("2024-06-01T12:00:00.120000000Z", "switch:0", 0)]
        # a button push, on the same topic: a row of the device's events, not of its status
        pushed = query(db, f'SELECT time, component, event FROM "shelly__shellyplus1pm_{realm}_events" '
                           "WHERE event IS NOT NULL")
        assert pushed == [("2024-06-01T12:00:05.430000000Z", "input:0", "single_push")]
        assert query(db, f'SELECT component, event, event_cnt FROM "shelly__shelly1pm_{realm}_events" '
                         "WHERE event IS NOT NULL") == [("input:0", "L", 4)]
        assert "event" not in [row[1] for row in query(db, f'PRAGMA table_info("shelly__shellyplus1pm_{realm}_sensors")')]
        state = query(db, f'SELECT "Device.Vcc", "Device.Wifi.RSSI" FROM "tasmota__{realm}_plug_0_sensors" '
                          'WHERE "Device.Vcc" IS NOT NULL')
        assert state == [(3.2, 80)]
        weewx = query(db, f'SELECT "outTemp_C", typeof("outTemp_C") FROM "{realm}_home__station_vantage_sensors"')
        assert weewx == [(3.55555555556, "real")]

        # Sparkplug B: births and data (aliases only) as rows at the metrics' times, deaths and a host's STATE
        # as events
        node = query(db, f'SELECT time, "Temperature", "Counter", "Pressure", "Properties/Hardware Make" '
                         f'FROM "sparkplug_{realm}__edge_7_sensors" ORDER BY time')
        assert node == [("2024-06-01T12:00:00.000000000Z", 21.1, -5, 1013.25, "Siemens"),
                        ("2024-06-01T12:00:00.500000000Z", None, None, 1000.5, None),
                        ("2024-06-01T12:00:01.000000000Z", 22.4, -7, None, None)]
        plc = conn.execute(f'SELECT time, "Inputs/A", "Levels", "Flags", "Recipe", "Motor/Speed" '
                           f'FROM "sparkplug_{realm}"."edge_7_plc1_sensors" ORDER BY time').fetchall()
        assert [(row[0].isoformat(),) + row[1:] for row in plc] == [
            ("2024-06-01T11:59:00+00:00", None, [0.3], None, None, None),
            ("2024-06-01T12:00:02+00:00", -3, [1.5, 2.25], [True, False, True],
             [{"step": 1, "temp": 80.5}, {"step": -1, "temp": 0.1}], 1450.0),
            ("2024-06-01T12:00:03+00:00", -4, None, [False], None, None)]
        assert query(db, f'SELECT event, "bdSeq" FROM "sparkplug_{realm}__edge_7_events"') == [("NDEATH", 3)]
        assert query(db, f'SELECT event FROM "sparkplug_{realm}__edge_7_plc1_events"') == [("DDEATH",)]
        assert query(db, f'SELECT time, online FROM "sparkplug__host_{realm}_events"') == [
            ("2024-06-01T11:59:59.000000000Z", 1)]

        # Home Assistant: the state a number, unavailable and unknown no value (not text, not a dead letter)
        ha = query(db, f'SELECT state, typeof(state), unit_of_measurement, last_updated '
                       f'FROM "{realm}ha__sensor_kitchen_temperature_sensors"')
        assert sorted(ha, key=repr) == sorted([(None, "null", None, None), (21.5, "real", None, None),
                                               (None, "null", "°C", None),
                                               (None, "null", None, "2024-06-01T12:00:00.123456+00:00"),
                                               (None, "null", None, None), (22.0, "real", None, None)], key=repr)
        ha_pg = conn.execute(f'SELECT state FROM "{realm}ha"."sensor_kitchen_temperature_sensors" '
                             "WHERE state IS NOT NULL ORDER BY time").fetchall()
        assert ha_pg == [(21.5,), (22.0,)]

        # OwnTracks: at the time the phone took the location, not when it came
        lite, pg = times(f"{realm}ot__jane_phone_sensors", f"{realm}ot", "jane_phone_sensors")
        assert lite == ["2024-06-01T12:00:00.000000000Z"] and pg == ["2024-06-01T12:00:00+00:00"]
        assert query(db, f'SELECT event, "desc" FROM "{realm}ot__jane_phone_events"') == [("enter", "Home")]

        # No table over the column budget, in either database.
        ours = [t for t in tables(db) if realm in t]
        assert ours and all(len(query(db, f'PRAGMA table_info("{t}")')) <= 250 for t in ours)
        schemas = {row[0] for row in conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
                   if realm in row[0]} | {"tasmota", "shelly", "homie"}
        columns = {k: v for k, v in pg_tables(conn, schemas).items() if realm in k[0] or realm in k[1]}
        assert columns and max(columns.values()) <= 250
        bridge = pg_tables(conn, [f"{realm}z2m"])
        assert bridge[(f"{realm}z2m", "bridge_events")] <= 250

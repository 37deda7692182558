"""
MQTT 5 user properties through a real Mosquitto into SQLite: the ones a channel's ``headers`` names are tags of
the message's rows (a renamed one under its tag, a repeated one joined in the order sent), a message without
them has none, and the others are not stored. A dead letter keeps them all (SQLite, PostgreSQL), and its replay
stores the tags as the gateway would have.
"""

import subprocess
import sys
import uuid

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.gatewayproc import GatewayProcess, query, tables
from tests.integration.test_content_type import dead_letter_rows, mqtt5_config, publish
from tests.servers import wait_until


def test_user_properties_are_stored_as_the_tags_the_channel_names(tmp_path, mosquitto):
    realm = f"up{uuid.uuid4().hex[:6]}"
    path = mqtt5_config(tmp_path, mosquitto.port, realm, "topic\nheaders = device-id:device, zone")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    try:
        publish(mosquitto.port, [
            (f"{realm}/kitchen", b'{"temperature": 21.5}', None,
             [("device-id", "d-17"), ("zone", "north"), ("firmware", "1.2"), ("zone", "roof")]),
            (f"{realm}/kitchen", b'{"temperature": 22.5}', None, [("zone", "south")]),
            (f"{realm}/kitchen", b'{"temperature": 23.5}', None),
        ])
        table = f"{realm}__kitchen"
        wait_until(lambda: table in tables(db) and query(db, f'SELECT count(*) FROM "{table}"') == [(3,)], 30,
                   "three rows")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    rows = query(db, f'SELECT temperature, device, zone FROM "{table}" ORDER BY temperature')
    assert rows == [(21.5, "d-17", "north, roof"), (22.5, None, "south"), (23.5, None, None)]
    columns = {row[1] for row in query(db, f'PRAGMA table_info("{table}")')}
    assert columns == {"time", "temperature", "device", "zone"}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_dead_letter_keeps_its_headers_and_the_replay_stores_them_as_tags(tmp_path, mosquitto, kind, request):
    realm = f"uh{uuid.uuid4().hex[:6]}"
    storage = request.getfixturevalue("postgres").url if kind == "postgresql" else None
    path = mqtt5_config(tmp_path, mosquitto.port, realm, "wan\nheaders = device-id:device", storage)
    db = str(tmp_path / "gateway.sqlite")

    def dead_letters() -> list:
        return dead_letter_rows(storage, db, realm, "headers, stage")

    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    try:  # (the wan strategy refuses a topic of two levels)
        publish(mosquitto.port, [(f"{realm}/kitchen", b'{"temperature": 21.5}', None,
                                  [("device-id", "d-17"), ("zone", "n\u00f6rd")])])
        wait_until(lambda: len(dead_letters()) == 1, 30, "the message kept as a dead letter")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert dead_letters() == [('[["device-id","d-17"],["zone","n\u00f6rd"]]', "topology")]
    listed = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "list", "-c", path, "--topic",
                             f"{realm}/#"], capture_output=True, text=True, timeout=120)
    assert "topology [device-id=d-17, zone=n\u00f6rd]:" in listed.stdout, listed.stdout + listed.stderr

    mqtt5_config(tmp_path, mosquitto.port, realm, "topic\nheaders = device-id:device", storage)
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "replay", "-c", path, "--topic",
                           f"{realm}/#"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 replayed (1 rows)" in done.stdout, done.stdout
    if storage is None:
        assert query(db, f'SELECT temperature, device FROM "{realm}__kitchen"') == [(21.5, "d-17")]
    else:
        with psycopg.connect(storage) as conn:
            assert conn.execute(f'SELECT temperature, device FROM "{realm}"."kitchen"').fetchall() == [(21.5, "d-17")]


def test_a_relay_between_mqtt_5_brokers_keeps_the_content_type_and_the_user_properties(tmp_path, mosquitto):
    """``lorrygate relay`` from MQTT 5 to MQTT 5 publishes each message with its Content Type and its user
    properties, in the order sent (they were dropped: a typed CBOR payload came out untyped, and the gateway
    that read the relayed stream could not decode it)."""
    import queue
    import threading

    realm = f"ur{uuid.uuid4().hex[:6]}"
    received: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
    subscriber.on_message = lambda client, userdata, message: received.put(message)
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect("127.0.0.1", mosquitto.port)
    subscriber.loop_start()
    subscriber.subscribe(f"out/{realm}/#", qos=1)
    assert subscribed.wait(10), "no SUBACK"
    log = tmp_path / "relay.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "lorrygate.cli", "relay",
             f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23?protocol=5",
             f"mqtt://127.0.0.1:{mosquitto.port}/out/{{topic}}?protocol=5",
             "--data-dir", str(tmp_path / "state"), "--log-format", "json"], stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"subscribed" in log.read_bytes() or process.poll() is not None, 60, "the relay's SUBACK")
        assert process.poll() is None, log.read_text()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/cbor"
        properties.UserProperty = [("device-id", "d-17"), ("zone", "a"), ("zone", "b")]
        client.publish(f"{realm}/kitchen", b"\xa1\x61t\x01", qos=1, properties=properties).wait_for_publish(30)
        client.publish(f"{realm}/hall", b"plain", qos=1).wait_for_publish(30)
        client.disconnect()
        client.loop_stop()
        got = {}
        for _ in range(2):
            message = received.get(timeout=30)
            got[message.topic] = (message.payload, getattr(message.properties, "ContentType", None),
                                  getattr(message.properties, "UserProperty", None))
    finally:
        process.send_signal(subprocess.signal.SIGTERM)
        process.wait(30)
        subscriber.disconnect()
        subscriber.loop_stop()
    assert got == {
        f"out/{realm}/kitchen": (b"\xa1\x61t\x01", "application/cbor",
                                 [("device-id", "d-17"), ("zone", "a"), ("zone", "b")]),
        f"out/{realm}/hall": (b"plain", None, None),
    }

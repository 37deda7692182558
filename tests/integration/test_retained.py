"""Retained messages: ingested for a new subscription, not again on every reconnect (unless asked)."""

import json
import uuid

import paho.mqtt.client as paho
import pytest

from tests.gatewayproc import GatewayProcess, count_rows, last_stats, query, tables, write_config
from tests.servers import wait_until


def publish_retained(port, topic, payload):
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("protocol, retained, rows_after_restart", [
    ("3.1.1", "new", 1), ("5", "new", 1), ("3.1.1", "always", 2), ("5", "never", 0),
], ids=["3.1.1-new", "5-new", "3.1.1-always", "5-never"])
def test_retained_policy(tmp_path, mosquitto, protocol, retained, rows_after_restart):
    """retained = new ingests a retained value once, always on every (re)subscribe, never not at all."""
    realm = f"ret-{uuid.uuid4().hex[:8]}"
    topic = f"{realm}/net/gw/node/data.json"
    publish_retained(mosquitto.port, topic, json.dumps({"v": 1}))
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("keepalive = 10", f"keepalive = 10\nprotocol = {protocol}")
    text = text.replace("qos = 1", f"qos = 1\nretained = {retained}")
    open(config, "w").write(text)
    db = str(tmp_path / "gateway.sqlite")
    schema = realm.replace("-", "_")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    if retained != "never":
        wait_until(lambda: count_rows(db, schema) >= 1, 20, "the retained value")
    assert gateway.stop() == 0
    gateway.start()
    wait_until(lambda: any(e.get("event") == "stats" for e in gateway.events()), 20, "a stats line")
    assert gateway.stop() == 0
    assert count_rows(db, schema) == rows_after_restart
    publish_retained(mosquitto.port, topic, b"")  # clear the retained message


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_clearing_a_retained_message_stores_nothing_and_is_no_dead_letter(tmp_path, mosquitto, protocol):
    """Mosquitto sends the empty payload that clears a retained message to every subscriber (with MQTT 3.1.1
    without the retain flag): acknowledged and counted as empty, not a dead letter; the stream goes on."""
    realm = f"clr-{uuid.uuid4().hex[:8]}"
    topic = f"{realm}/net/gw/node/data.json"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("keepalive = 10", f"keepalive = 10\nprotocol = {protocol}")
    open(config, "w").write(text)
    db = str(tmp_path / "gateway.sqlite")
    schema = realm.replace("-", "_")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start("every subscription acknowledged")
    publish_retained(mosquitto.port, topic, json.dumps({"v": 1}))
    publish_retained(mosquitto.port, topic, b"")
    publish_retained(mosquitto.port, topic.replace("/node/", "/other/"), json.dumps({"v": 2}))
    wait_until(lambda: count_rows(db, schema) == 2, 20, "the value after the cleared one")
    assert gateway.stop() == 0
    assert "lorrygate_dead_letter" not in tables(db) or query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]
    assert last_stats(gateway.events())["empty"] == 1
    publish_retained(mosquitto.port, topic.replace("/node/", "/other/"), b"")

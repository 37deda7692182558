"""MQTT 5 sessions and reconnects against a real Mosquitto of the test's own."""

import json
import uuid

import pytest

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, write_config
from tests.servers import Mosquitto, wait_until


def test_mqtt5_session(tmp_path, mosquitto):
    """With protocol = 5 the gateway receives and stores QoS 1 messages, also those queued while it was down."""
    realm = f"v5-{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    config_text = open(config).read().replace("keepalive = 10", "keepalive = 10\nprotocol = 5")
    open(config, "w").write(config_text)
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    publisher = Publisher(mosquitto.port)
    topic = f"{realm}/net/gw/node/data.json"
    publisher.publish_many((topic, json.dumps({"seq": n})) for n in range(100))
    wait_until(lambda: count_rows(db, realm.replace("-", "_")) >= 100, 30, "100 rows")
    assert gateway.stop() == 0
    publisher.publish_many((topic, json.dumps({"seq": n})) for n in range(100, 200))
    gateway.start()
    wait_until(lambda: count_rows(db, realm.replace("-", "_")) >= 200, 30, "the 100 queued messages")
    assert gateway.stop() == 0
    publisher.close()
    assert count_rows(db, realm.replace("-", "_")) == 200


def test_gateway_reconnects_after_a_broker_restart(tmp_path):
    """When the broker restarts, the gateway reconnects with backoff, resubscribes and stores what follows."""
    broker = Mosquitto(str(tmp_path)).start()
    try:
        config = write_config(str(tmp_path), broker.port, client_id="gw-reconnect", topics="rc/#")
        db = str(tmp_path / "gateway.sqlite")
        gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
        publisher = Publisher(broker.port)
        publisher.publish_many([("rc/n/g/a/data.json", json.dumps({"seq": 1}))])
        wait_until(lambda: count_rows(db, "rc_n") >= 1, 30, "the first row")
        publisher.close()
        broker.stop()
        broker.start()
        wait_until(
            lambda: sum("connected to" in e.get("message", "") for e in gateway.events()) >= 2,
            30,
            "the gateway to reconnect",
        )
        assert any("connection to" in e.get("message", "") and "lost" in e.get("message", "")
                   for e in gateway.events())
        publisher = Publisher(broker.port)
        publisher.publish_many([("rc/n/g/a/data.json", json.dumps({"seq": 2}))])
        wait_until(lambda: count_rows(db, "rc_n") >= 2, 30, "the row after the restart")
        publisher.close()
        assert gateway.stop() == 0
    finally:
        broker.stop()


def test_qos2_subscription(tmp_path, mosquitto):
    """A QoS 2 channel stores QoS 2 publications (PUBREC after commit, PUBCOMP on PUBREL)."""
    import paho.mqtt.client as paho

    realm = f"q2-{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("qos = 1", "qos = 2")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    infos = [client.publish(f"{realm}/n/g/d/data.json", json.dumps({"seq": n}), qos=2) for n in range(200)]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    db = str(tmp_path / "gateway.sqlite")
    wait_until(lambda: count_rows(db, realm.replace("-", "_")) >= 200, 30, "200 rows")
    assert gateway.stop() == 0
    assert count_rows(db, realm.replace("-", "_")) == 200


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_narrowed_channel_no_longer_receives_what_its_old_topics_matched(tmp_path, mosquitto, protocol):
    """A broker keeps a session's subscriptions: a channel whose ``topics`` were narrowed (``realm/#`` to
    ``realm/site-a/#``) went on receiving, through its persistent session, what the old filter matched, and stored
    it (site-b's rows after the operator had left site-b out), after a restart and after a reload alike. The
    source records what it subscribed (``<data_dir>/mqtt-sessions/``) and unsubscribes what the config dropped."""
    import signal

    from tests.gatewayproc import query, tables

    realm = f"nr{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("keepalive = 10", f"keepalive = 10\nprotocol = {protocol}")
    open(config, "w").write(text)
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    assert gateway.stop() == 0
    open(config, "w").write(text.replace(f"topics = {realm}/#", f"topics = {realm}/site-a/#"))
    gateway.start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/site-b/gw/node/data.json", json.dumps({"seq": 1})),
                            (f"{realm}/site-a/gw/node/data.json", json.dumps({"seq": 2}))])
    wait_until(lambda: count_rows(db, f"{realm}_site_a") >= 1, 30, "site-a's row")
    # (site-b's, sent before it on the one connection, would be in its commit or an earlier one)
    assert [t for t in tables(db) if t.startswith(realm)] == [f"{realm}_site_a__gw_node_sensors"]
    assert any(e.get("message", "").startswith(f"MQTT source main: unsubscribed from {realm}/#, which its persistent "
                                               "session kept") for e in gateway.events())

    # a reload that narrows them again replaces the channel's source, which unsubscribes the same way
    open(config, "w").write(text.replace(f"topics = {realm}/#", f"topics = {realm}/site-a/node-1/#"))
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any(e.get("message", "").startswith(f"MQTT source main: unsubscribed from {realm}/site-a/#")
                           for e in gateway.events()), 30, "the reload's unsubscription")
    publisher.publish_many([(f"{realm}/site-a/gw/node/data.json", json.dumps({"seq": 3})),
                            (f"{realm}/site-a/node-1/gw/data.json", json.dumps({"seq": 4}))])
    wait_until(lambda: count_rows(db, f"{realm}_site_a__node_1") >= 1, 30, "node-1's row")
    assert gateway.stop() == 0
    publisher.close()
    stored = {t: [r[0] for r in query(db, f'SELECT seq FROM "{t}"')] for t in tables(db) if t.startswith(realm)}
    assert stored == {f"{realm}_site_a__gw_node_sensors": [2], f"{realm}_site_a__node_1_gw_sensors": [4]}, stored
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]

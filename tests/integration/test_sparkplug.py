"""
Sparkplug B through a real Mosquitto: a gateway that subscribes after an edge
node's birth asks the edge node for a rebirth (``rebirth = yes``), and the
data after the rebirth is stored; the message that came before it is a dead
letter that says so, with its payload.
"""

import threading
import uuid

import paho.mqtt.client as paho
import pytest

pytest.importorskip("google.protobuf")

from lorrygate.decoding.sparkplug_schema import Payload  # noqa: E402
from tests.fleet.payloads import SPARKPLUG  # noqa: E402
from tests.gatewayproc import GatewayProcess, Publisher, query, tables, write_config  # noqa: E402
from tests.servers import wait_until  # noqa: E402


class EdgeNode:
    """An edge node, as a Sparkplug edge node answers ``Node Control/Rebirth``: its NBIRTH again, then data.
    paho-mqtt, an independent MQTT client."""

    def __init__(self, port: int, group: str):
        self.group, self.commands = group, []
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_connect = lambda client, *args: client.subscribe(f"spBv1.0/{group}/NCMD/Edge-7", qos=0)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._command
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _command(self, client, userdata, message):
        command = Payload.FromString(message.payload)
        self.commands.append([(m.name, m.boolean_value) for m in command.metrics])
        if ("Node Control/Rebirth", True) in self.commands[-1]:
            client.publish(f"spBv1.0/{self.group}/NBIRTH/Edge-7", bytes.fromhex(SPARKPLUG["nbirth"]), qos=1)
            client.publish(f"spBv1.0/{self.group}/NDATA/Edge-7", bytes.fromhex(SPARKPLUG["ndata"]), qos=1)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_a_gateway_that_missed_the_birth_asks_for_a_rebirth_and_stores_what_follows(tmp_path, mosquitto):
    group = f"g{uuid.uuid4().hex[:6]}"
    edge = EdgeNode(mosquitto.port, group)
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{group}", topics=f"spBv1.0/{group}/#",
                          extra="strategy = sparkplug\ndecoders = spb, json, value\n\n"
                                "[decoder:spb]\ntype = sparkplug\nrebirth = yes\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    db = str(tmp_path / "gateway.sqlite")
    table = f"sparkplug_{group}__edge_7_sensors"
    try:
        # the edge node was born before the gateway came: its data names metrics by alias only
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([(f"spBv1.0/{group}/NDATA/Edge-7", bytes.fromhex(SPARKPLUG["ndata"]))])
        publisher.close()
        wait_until(lambda: table in tables(db) and len(query(db, f'SELECT * FROM "{table}"')) == 3, 30,
                   "the rebirth's NBIRTH and the NDATA after it stored")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
        edge.close()
    assert edge.commands == [[("Node Control/Rebirth", True)]]
    rows = query(db, f'SELECT time, "Temperature", "Counter" FROM "{table}" ORDER BY time')
    assert rows == [("2024-06-01T12:00:00.000000000Z", 21.1, -5), ("2024-06-01T12:00:00.500000000Z", None, None),
                    ("2024-06-01T12:00:01.000000000Z", 22.4, -7)]
    [(topic, payload, error)] = query(db, "SELECT topic, payload, error FROM lorrygate_dead_letter")
    assert (topic, bytes(payload)) == (f"spBv1.0/{group}/NDATA/Edge-7", bytes.fromhex(SPARKPLUG["ndata"]))
    assert f"the gateway asked it to (Node Control/Rebirth on spBv1.0/{group}/NCMD/Edge-7)" in error


def test_a_gap_in_an_edge_nodes_seq_is_counted_in_the_status(tmp_path, mosquitto):
    """Messages of an edge node lost before the gateway (Sparkplug's data goes at QoS 0) show in `lorrygate
    status` and in the channel's final statistics, not only in a log line: NBIRTH seq 0, NDATA seq 1, then an
    NDATA with seq 5 (three never came)."""
    import json
    import subprocess
    import sys

    group = f"g{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{group}", topics=f"spBv1.0/{group}/#",
                          extra="strategy = sparkplug\ndecoders = spb\n\n[decoder:spb]\ntype = sparkplug\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    later = Payload.FromString(bytes.fromhex(SPARKPLUG["ndata"]))
    later.seq = 5
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"spBv1.0/{group}/NBIRTH/Edge-7", bytes.fromhex(SPARKPLUG["nbirth"])),
                            (f"spBv1.0/{group}/NDATA/Edge-7", bytes.fromhex(SPARKPLUG["ndata"])),
                            (f"spBv1.0/{group}/NDATA/Edge-7", later.SerializeToString())])
    publisher.close()

    def status(*args):
        result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", config, "status", *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        wait_until(lambda: json.loads(status("--json"))["channels"][0]["received"] == 3, 30, "the three messages")
        assert json.loads(status("--json"))["channels"][0]["seq_gaps"] == 1
        assert "1 sequence gaps (messages lost before the gateway)" in status()
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    [final] = [e for e in gateway.events() if e.get("event") == "stats" and e.get("final")]
    assert final["seq_gaps"] == 1

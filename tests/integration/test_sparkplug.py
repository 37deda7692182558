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

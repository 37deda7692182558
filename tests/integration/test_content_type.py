"""
MQTT 5's Content Type through a real Mosquitto: a CBOR payload on a topic tree without a convention (the
``topic`` strategy, whose chain has no cbor) is stored when its publisher says ``application/cbor``, and a
dead letter without it, as before.
"""

import uuid

import cbor2
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.gatewayproc import GatewayProcess, query, tables, write_config
from tests.servers import wait_until


def test_a_content_type_picks_the_decoder(tmp_path, mosquitto):
    realm = f"ct{uuid.uuid4().hex[:6]}"
    path = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                        extra="strategy = topic\n")
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text.replace("keepalive = 10", "keepalive = 10\nprotocol = 5"))
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    try:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        typed = Properties(PacketTypes.PUBLISH)
        typed.ContentType = "application/cbor"
        infos = [client.publish(f"{realm}/kitchen", cbor2.dumps({"temperature": 21.5}), qos=1, properties=typed),
                 client.publish(f"{realm}/kitchen", cbor2.dumps({"temperature": 22.5}), qos=1)]
        for info in infos:
            info.wait_for_publish(30)
        client.disconnect()
        client.loop_stop()
        table = f"{realm}__kitchen"
        wait_until(lambda: {table, "lorrygate_dead_letter"} <= tables(db)
                   and query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(1,)], 30,
                   "the typed payload stored and the other kept as a dead letter")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT temperature FROM "{realm}__kitchen"') == [(21.5,)]

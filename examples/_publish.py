"""Shared by the examples: publish a few sample messages (paho-mqtt)."""

import json
import os

PORT = int(os.environ.get("LORRYGATE_EXAMPLE_PORT", "1883"))


def publish(messages, port: int = PORT) -> None:
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, document in messages:
        client.publish(topic, json.dumps(document), qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()

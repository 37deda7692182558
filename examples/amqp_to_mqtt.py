"""
amqp-to-mqtt: RabbitMQ's topic exchange relayed to an MQTT broker, at least
once (a message is acknowledged to RabbitMQ only after the MQTT broker's PUBACK).

    python examples/amqp_to_mqtt.py   (RabbitMQ on localhost:5672 as guest, Mosquitto on localhost:1883;
                                       or LORRYGATE_EXAMPLE_AMQP_PORT, _AMQP_USER, _AMQP_PASSWORD, _PORT)

The same as the command line

    lorrygate relay "amqp://guest:guest@localhost/%2F?exchange=amq.topic&topic=example-amqp/%23" \\
        "mqtt://localhost:1883/relayed/{topic}"
"""

import json
import os
import threading

import paho.mqtt.client as paho
import pika
from _publish import PORT
from twisted.internet import defer, task, threads

from lorrygate import parse_launch

AMQP_PORT = int(os.environ.get("LORRYGATE_EXAMPLE_AMQP_PORT", "5672"))
USER = os.environ.get("LORRYGATE_EXAMPLE_AMQP_USER", "guest")
PASSWORD = os.environ.get("LORRYGATE_EXAMPLE_AMQP_PASSWORD", "guest")


def publish_to_rabbitmq(count: int) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", AMQP_PORT, credentials=pika.PlainCredentials(USER, PASSWORD)))
    channel = connection.channel()
    channel.confirm_delivery()
    for n in range(count):
        # routing keys as RabbitMQ's MQTT plugin writes topics: words are levels, "/" stands for "."
        channel.basic_publish("amq.topic", f"example-amqp.sensor-{n}.data/json", json.dumps({"value": n}).encode())
    connection.close()


async def main(reactor):
    received, done = [], threading.Event()

    def on_message(client, userdata, message):
        received.append(message.topic)
        if len(received) == 5:
            done.set()

    subscribed = threading.Event()
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2)
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *_: subscribed.set()  # the broker's SUBACK
    subscriber.connect("127.0.0.1", PORT)
    subscriber.subscribe("relayed/example-amqp/#", qos=1)
    subscriber.loop_start()
    assert await threads.deferToThread(subscribed.wait, 30), "no SUBACK from the MQTT broker"
    pipeline = parse_launch(
        f"amqp://{USER}:{PASSWORD}@127.0.0.1:{AMQP_PORT}/%2F?exchange=amq.topic&topic=example-amqp/%23"
        f"&queue=example-amqp-to-mqtt ! mqtt://127.0.0.1:{PORT}/relayed/{{topic}}",
        data_dir="var/example-amqp",
    )
    await pipeline.start(reactor)
    await pipeline.when_ready()  # every subscription acknowledged: what is published now arrives
    await threads.deferToThread(publish_to_rabbitmq, 5)
    arrived = await threads.deferToThread(done.wait, 30)
    await pipeline.stop()
    subscriber.loop_stop()
    subscriber.disconnect()
    print(f"relayed {len(received)} messages to MQTT: {sorted(received)[0]} ...")
    assert arrived


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))

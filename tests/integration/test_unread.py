"""
What a broker sent that the gateway has not read yet (`lorrygate.sources.unread`),
against a real Mosquitto, plain and over TLS: the signal by which a batcher tells
a queue worked off from a live stream.
"""

import uuid

import paho.mqtt.client as paho
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.task import deferLater

from lorrygate.config.loader import loads
from lorrygate.sources.mqtt import MQTTSource
from lorrygate.storage.batcher import WIDE_GATHER_BACKLOG
from tests.certs import write_tls_files
from tests.servers import Mosquitto

MESSAGES = 1000
PAYLOAD = b"x" * 400

CONFIG = """
[lorrygate]
data_dir = {data_dir}
control = off

[broker:b]
host = {host}
port = {port}
client_id = unread-{name}
{tls}

[storage:db]
url = sqlite:///{data_dir}/x.sqlite

[channel:main]
source = b
topics = unread/#
storage = db
"""


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tls-mosquitto"))
    tls = write_tls_files(directory)
    broker = Mosquitto(directory, extra=f"cafile {tls['ca.pem']}\ncertfile {tls['server.pem']}\n"
                                        f"keyfile {tls['server.key']}\nallow_anonymous true\n").start()
    broker.tls = tls
    yield broker
    broker.stop()


def publish(broker, tls: bool, topic: str, count: int) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    if tls:
        client.tls_set(ca_certs=broker.tls["ca.pem"])
    client.connect("localhost" if tls else "127.0.0.1", broker.port)
    client.loop_start()
    try:
        for info in [client.publish(topic, PAYLOAD, qos=1) for _ in range(count)]:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


async def until(reactor, condition, what: str, timeout: float = 30.0) -> None:
    """Look every 10 ms until ``condition()`` holds (it is the signal itself: bytes in a socket)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    pytest.fail(f"{what} not within {timeout} s")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest_twisted.ensureDeferred
async def test_an_mqtt_source_tells_the_bytes_waiting_while_it_is_paused(tmp_path, mosquitto, tls_broker, tls):
    """Paused, the source leaves what the broker sends in its socket, and says so; resumed, it reads it all
    and says nothing waits. Over TLS the encrypted bytes count."""
    from twisted.internet import reactor

    broker = tls_broker if tls else mosquitto
    name = uuid.uuid4().hex[:8]
    tls_lines = f"tls = true\ntls_ca = {broker.tls['ca.pem']}" if tls else ""
    settings = loads(CONFIG.format(data_dir=tmp_path, host="localhost" if tls else "127.0.0.1", port=broker.port,
                                   name=name, tls=tls_lines), source="unread.ini")
    received = []

    def deliver(message):
        received.append(message)
        message.ack.ack()

    source = MQTTSource("main", settings.brokers["b"], (f"unread/{name}/#",), 1, deliver, reactor)
    assert source.unread() == 0  # no connection: nothing waits
    source.startService()
    try:
        await source.when_subscribed()
        assert source.unread() == 0
        holder = object()
        source.pause(holder)
        await threads.deferToThread(publish, broker, tls, f"unread/{name}/n/g/node/data", MESSAGES)
        await until(reactor, lambda: (source.unread() or 0) >= WIDE_GATHER_BACKLOG,
                    f"{WIDE_GATHER_BACKLOG} bytes waiting (the source says {source.unread()})")
        assert not received
        source.resume(holder)
        await until(reactor, lambda: len(received) == MESSAGES, f"{MESSAGES} messages")
        assert source.unread() == 0
    finally:
        await source.stopService()
    assert source.unread() == 0

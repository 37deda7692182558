"""
A session handed from one connection to the next, with a real Mosquitto:
the new connection (a reload reconnects at once) must find every message the
old one acknowledged before its DISCONNECT gone from the session, none
delivered again.
"""

import uuid

import paho.mqtt.client as paho
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from lorrygate.mqtt import codec
from lorrygate.mqtt.protocol import MQTTClientProtocol

ROUNDS = 8
MESSAGES = 500


class Session:
    """One connection of a persistent session: what arrived, and a Deferred for a payload's arrival."""

    def __init__(self, reactor):
        self.received = []
        self._wanted = None
        self.protocol = MQTTClientProtocol(self._on_publish, reactor)

    def _on_publish(self, publish, handle):
        self.received.append((publish, handle))
        if self._wanted is not None and publish.payload == self._wanted[0]:
            d, self._wanted = self._wanted[1], None
            d.callback(None)

    def when_received(self, payload: bytes, reactor) -> Deferred:
        d = Deferred()
        d.addTimeout(60, reactor, onTimeoutCancel=lambda *_: pytest.fail(
            f"{payload!r} did not arrive within 60 s ({len(self.received)} messages did)"))
        if any(p.payload == payload for p, _ in self.received):
            d.callback(None)
        else:
            self._wanted = (payload, d)
        return d


async def connect(reactor, port: int, client_id: str, topic: str) -> Session:
    session = Session(reactor)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), session.protocol)
    await session.protocol.connect(codec.Connect(client_id, clean_start=False, keepalive=30))
    await session.protocol.subscribe([(topic, 1)])
    return session


def publish(port: int, topic: str, payloads) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=1) for payload in payloads]:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest_twisted.ensureDeferred
async def test_reconnecting_at_once_after_acks_and_disconnect_redelivers_nothing(mosquitto):
    """500 QoS 1 messages acknowledged in one write with the DISCONNECT, and a new connection of the
    same session at once, eight times: not one message comes again (Mosquitto reads one packet per
    socket and turn, so a CONNECT sent before it closed the old connection overtakes unread acks)."""
    from twisted.internet import reactor

    topic = f"handover/{uuid.uuid4().hex[:8]}"
    client_id = f"handover-{uuid.uuid4().hex[:8]}"
    session = await connect(reactor, mosquitto.port, client_id, topic)
    again, order = [], 0
    for round in range(ROUNDS):
        payloads = [f"{round}:{n}".encode() for n in range(MESSAGES)]
        await threads.deferToThread(publish, mosquitto.port, topic, payloads)
        await session.when_received(payloads[-1], reactor)
        fresh = set(payloads)
        again += [p.payload for p, _ in session.received if p.payload not in fresh]
        order += [p.payload for p, _ in session.received if p.payload in fresh] != payloads
        for _, handle in session.received:
            handle.ack()
        await session.protocol.disconnect()
        session = await connect(reactor, mosquitto.port, client_id, topic)
    sentinel = b"sentinel"
    await threads.deferToThread(publish, mosquitto.port, topic, [sentinel])
    await session.when_received(sentinel, reactor)
    again += [p.payload for p, _ in session.received[:-1]]
    await session.protocol.disconnect()
    assert again == [], f"{len(again)} acknowledged messages delivered again"
    assert order == 0, "a round's messages did not arrive once each, in order"

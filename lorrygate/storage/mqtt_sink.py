"""
The MQTT sink: a storage that publishes to a broker (``url = mqtt://host:1883/``).

``payload = message`` (the default) publishes each message's payload as it
came, once, to ``topic`` (a template, by default ``{topic}``: the topic it
came with); ``payload = records`` publishes each record as a JSON object
(``time`` in ISO 8601, then tags and fields). The template takes ``{topic}``,
``{realm}``, ``{network}``, ``{gateway}``, ``{node}``, ``{kind}``, ``{rest}``
(the levels after the address), ``{schema}`` and ``{table}``.

Delivery: every publication is QoS 1 and a batch counts as written only once
the broker has acknowledged (PUBACK) every message of it; only then are the
source messages acknowledged, so a relay is at-least-once end to end. A
connection lost mid-batch fails the batch: it is retried (or spooled) and
published again, so duplicates are possible, never a loss. Dead letters go
to ``dead_letter_topic`` as JSON (topic, payload in base64, stage, reason).

The connection is `lorrygate.sources.mqtt.MQTTSource` without subscriptions:
the same reconnects, TLS, credentials and failure messages as a source.
"""

import base64
import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.decoding.timestamps import to_iso
from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.storage.layout import json_text

#: publications in flight at once within a batch (the broker's Receive Maximum may be lower)
WINDOW = 500


class _Fields(dict):
    """The values of a topic template; a placeholder without a value is empty."""

    def __missing__(self, key):
        return ""


def topic_for(template: str, entry) -> str:
    """A topic template filled from an entry's message, address and table."""
    address = entry.address
    values = _Fields(topic=entry.message.topic)
    if address is not None:
        values.update(realm=address.realm, network=address.network or "", gateway=address.gateway or "",
                      node=address.node or "", kind=address.kind, rest=address.rest)
    if entry.table is not None:
        values.update(schema=entry.table.schema, table=entry.table.table)
    return template.format_map(values)


def outgoing(batch, render, payload: str, dead_letter_topic: str):
    """What a publishing sink sends for a batch: (the message's topic, the target topic, bytes) for each
    message once (``payload = message``) or each record as JSON (``records``), then each dead letter."""
    seen = set()
    for entry in batch.entries:
        if entry.table is None:
            continue  # acknowledged without rows (ignored topics, own reports)
        if payload == "message":
            if id(entry.message) in seen:
                continue
            seen.add(id(entry.message))
            yield entry.message.topic, render(entry), entry.message.payload
        else:
            topic = render(entry)
            for position, record in enumerate(entry.records):
                row = {"time": to_iso(record.time), **record.tags, **record.fields}
                try:
                    text = json_text(row)
                except ValueError as exc:  # (nested too deeply): the message is a dead letter, the batch goes on
                    dead = batch.refuse(entry, position, f"a record that JSON text cannot hold: {exc}")
                    yield entry.message.topic, dead_letter_topic, _dead_letter_json(dead)
                    continue
                yield entry.message.topic, topic, text.encode("utf-8")
    for dead in batch.dead_letters:
        yield dead.message.topic, dead_letter_topic, _dead_letter_json(dead)


def too_large_reference(topic: str, payload: bytes, why: str) -> bytes:
    """The dead letter that stands for a message a publishing sink cannot send: its topic, size and SHA-256."""
    import hashlib

    return json.dumps({"topic": topic, "stage": "size", "size": len(payload), "payload_base64": None,
                       "sha256": hashlib.sha256(payload).hexdigest(),
                       "error": f"{len(payload)} bytes, {why}"}).encode("utf-8")


def _dead_letter_json(dead) -> bytes:
    message = dead.message
    return json.dumps({
        "channel": dead.channel, "topic": message.topic, "stage": dead.stage, "error": dead.error,
        "decoder": dead.decoder, "payload_base64": base64.b64encode(message.payload).decode("ascii"),
    }).encode("utf-8")


@implementer(IStorage)
@attrs.define(eq=False)
class MqttSink:
    name: str
    broker: Any  # lorrygate.config.settings.BrokerSettings
    reactor: Any
    topic: str = "{topic}"
    payload: str = "message"
    dead_letter_topic: str = "lorrygate/dead-letters"
    _client: Any = None
    published: int = 0
    #: messages larger than the broker takes, a reference to each published to the dead-letter topic instead
    too_large: int = 0

    log = Logger()

    def start(self) -> Deferred:
        from lorrygate.sources.mqtt import MQTTSource

        self._client = MQTTSource(self.name, self.broker, (), 1, None, self.reactor, self.reactor)
        self._client.startService()
        return succeed(None)  # a broker that is away is an outage: batches wait (spool, backpressure)

    def stop(self) -> Deferred:
        client, self._client = self._client, None
        return client.stopService() if client is not None else succeed(None)

    def details(self) -> dict:
        client = self._client
        return {"broker": f"{self.broker.host}:{self.broker.port}", "connected": bool(client and client.connected),
                "published": self.published, "too_large": self.too_large,
                "last_error": client.last_error if client else ""}

    def topic_for(self, entry) -> str:
        return topic_for(self.topic, entry)

    def write(self, batch) -> Deferred:
        client = self._client
        protocol = getattr(client, "_protocol", None) if client is not None else None
        if protocol is None or not protocol.connected:
            why = client.last_error if client is not None and client.last_error else "not connected yet"
            return fail(StorageError(f"MQTT sink {self.name}: {self.broker.host}:{self.broker.port} is away ({why})"))
        return Deferred.fromCoroutine(self._publish(protocol, list(self._items(batch))))

    def _items(self, batch):
        for _, topic, payload in outgoing(batch, self.topic_for, self.payload, self.dead_letter_topic):
            yield topic, payload

    async def _publish(self, protocol, items: list) -> None:
        from lorrygate.mqtt.protocol import PacketTooLarge

        pending: list = []
        try:
            for topic, payload in items:
                if len(pending) >= WINDOW:
                    await pending.pop(0)
                try:
                    pending.append(protocol.publish(topic, payload, 1))
                except PacketTooLarge as exc:
                    # The broker would never take it, and failing the batch for it would stop the sink for good:
                    # a reference to it goes to the dead-letter topic instead, as a message over max_payload is kept.
                    self.too_large += 1
                    self.log.error("MQTT sink {sink}: a message to {topic} not published: {error}; a reference to it "
                                   "goes to {dead}", sink=self.name, topic=topic, error=str(exc),
                                   dead=self.dead_letter_topic)
                    pending.append(protocol.publish(self.dead_letter_topic, too_large_reference(
                        topic, payload, f"more than the broker takes: {exc}"), 1))
            for d in pending:
                await d
        except StorageError:
            raise
        except Exception as exc:
            for d in pending:
                d.addErrback(lambda failure: None)
            raise StorageError(f"MQTT sink {self.name}: publishing to {self.broker.host}:{self.broker.port} "
                               f"failed ({exc}); the batch is published again") from None
        self.published += len(items)

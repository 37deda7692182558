"""
The MQTT sink: a storage that publishes to a broker (``url = mqtt://host:1883/``).

``payload = message`` (the default) publishes each message's payload as it
came, once, to ``topic`` (a template, by default ``{topic}``: the topic it
came with); ``payload = records`` publishes each record as a JSON object
(``time`` in ISO 8601, then tags and fields). Under MQTT 5 (``?protocol=5``) a message goes out with its
Content Type and its headers as user properties (`mqtt_properties`), a record as ``application/json``. The
template takes ``{topic}``,
``{realm}``, ``{network}``, ``{gateway}``, ``{node}``, ``{kind}``, ``{rest}``
(the levels after the address), ``{schema}`` and ``{table}``.

Delivery: every publication is QoS 1 and a batch counts as written only once
the broker has acknowledged (PUBACK) every message of it; only then are the
source messages acknowledged, so a relay is at-least-once end to end. A
connection lost mid-batch fails the batch: it is retried (or spooled), and
what the broker acknowledged before is not published again (the batch's
progress, which the spool honours too); the messages in flight when the
connection was lost are, so duplicates are possible (those), never a loss. Dead letters go
to ``dead_letter_topic`` as JSON (topic, payload in base64, stage, reason).

A message the broker would refuse never stops the sink: one whose topic is no
MQTT topic name (empty, ``+`` or ``#``, U+0000, control characters or
non-characters, more than 65,535 bytes: MQTT 4.7.3 and 1.5.4; Mosquitto
closes the connection for them) is not sent, one the broker refuses with a
PUBACK reason code (MQTT 5: not authorized, topic name invalid, ...) is not
sent again, and one for which the broker closes the connection each time
(Mosquitto: a topic of more than 200 levels) is found by sending the
messages that were in flight one at a time on the next try and, if the
broker closes the connection again for the same one, twice, set aside. Each
goes to ``dead_letter_topic`` as a dead letter with the reason instead. A
broker that refuses the dead letter too fails the batch (the reason in the
status): nothing is acknowledged that was not published somewhere.

The connection is `lorrygate.sources.mqtt.MQTTSource` without subscriptions:
the same reconnects, TLS, credentials and failure messages as a source.
"""

import base64
import json
import re
from collections import deque
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.decoding.timestamps import to_iso
from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.mqtt.codec import MQTT_5
from lorrygate.storage.layout import json_text

#: publications in flight at once within a batch (the broker's Receive Maximum may be lower)
WINDOW = 500

#: PUBACK reason codes (MQTT 5, 3.4.2.1) after which the same message may be taken later: the batch is tried again
TRY_AGAIN = frozenset({0x97})  # quota exceeded

#: times the broker closed the connection while a message was the only one in flight before it is set aside
STRIKES = 2

#: what no topic name may hold (MQTT 1.5.4, 4.7.3): U+0000, wildcards, and what Mosquitto refuses by closing the
#: connection, the control characters and the non-characters (U+FDD0-U+FDEF and the last two of every plane)
_NOT_IN_TOPICS = re.compile("[\x00-\x1f\x7f-\x9f+#\ufdd0-\ufdef\ud800-\udfff"
                            + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
                            + "]")


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a topic name to publish to (MQTT 4.7.3, 1.5.4), or None."""
    if not topic:
        return "the topic is empty"
    bad = _NOT_IN_TOPICS.search(topic)
    if bad is not None:
        char = bad.group()
        what = "a wildcard" if char in "+#" else f"U+{ord(char):04X}, which no MQTT topic may hold"
        return f"the topic holds {char!r} at character {bad.start()} ({what})"
    size = len(topic.encode("utf-8"))
    if size > 65535:
        return f"the topic is {size} bytes long, more than MQTT's 65,535"
    return None


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


#: what goes with a record published as JSON (``payload = records``)
JSON_BESIDE = ("application/json", ())


#: what no MQTT string may hold, as Mosquitto checks them (U+0000, the control characters, the non-characters)
_NOT_IN_STRINGS = re.compile(_NOT_IN_TOPICS.pattern.replace("+#", ""))


def _mqtt_text(text: str) -> str:
    """A header's text as an MQTT string may hold it: a character no MQTT string may hold as ``\\uXXXX`` (a
    broker closes the connection for a PUBLISH with one; headers from AMQP and Kafka may have them)."""
    if _NOT_IN_STRINGS.search(text) is None:
        return text
    return _NOT_IN_STRINGS.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def mqtt_properties(beside) -> dict | None:
    """The MQTT 5 PUBLISH properties of what goes beside the payload of an item of `outgoing`: its Content Type and its
    headers as user properties, in the order sent (under MQTT 3.1.1 they are not sent)."""
    if beside is None:
        return None
    content_type, headers = beside
    properties: dict = {}
    if content_type:
        properties["content_type"] = _mqtt_text(content_type)
    if headers:
        properties["user_property"] = tuple((_mqtt_text(name), _mqtt_text(text)) for name, text in headers)
    return properties


def outgoing(batch, render, payload: str, dead_letter_topic: str):
    """What a publishing sink sends for a batch: (the message's topic, the target topic, bytes, keys, what goes
    beside the payload) for each message once (``payload = message``) or each record as JSON (``records``), then each
    dead letter. ``keys`` are what the item adds to the batch's ``progress`` once published (the keys
    `lorrygate.storage.spool` leaves out): an item whose keys the progress holds already was published by an
    earlier try of the batch and is not yielded again. What goes beside the payload is ``(content type, headers)``: the
    message's own for ``payload = message``, ``application/json`` for a record, None for a dead letter."""
    progress = batch.progress
    entries = batch.entries
    if payload == "message":
        # a message is published once, for all its entries (one a table it has rows in)
        indices: dict = {}
        for index, entry in enumerate(entries):
            if entry.table is not None:
                indices.setdefault(id(entry.message), []).append(index)
    for index, entry in enumerate(entries):
        if entry.table is None:
            continue  # acknowledged without rows (ignored topics, own reports)
        if payload == "message":
            same = indices.pop(id(entry.message), None)
            if same is None:
                continue
            keys = tuple((i, p) for i in same for p in range(len(entries[i].records))) or (("message", index),)
            if progress.issuperset(keys):
                continue
            message = entry.message
            yield message.topic, render(entry), message.payload, keys, (message.content_type, message.headers)
        else:
            topic = render(entry)
            for position, record in enumerate(entry.records):
                if (index, position) in progress:
                    continue
                row = {"time": to_iso(record.time), **record.tags, **record.fields}
                try:
                    text = json_text(row)
                except ValueError as exc:  # (nested too deeply): the message is a dead letter, the batch goes on
                    dead = batch.refuse(entry, position, f"a record that JSON text cannot hold: {exc}")
                    if id(dead) in progress:  # (published for another of its records)
                        progress.add((index, position))
                        continue
                    yield (entry.message.topic, dead_letter_topic, _dead_letter_json(dead), ((index, position), id(dead)),
                           None)
                    continue
                yield entry.message.topic, topic, text.encode("utf-8"), ((index, position),), JSON_BESIDE
    for index, dead in enumerate(batch.dead_letters):
        if ("dead", index) not in progress:
            yield dead.message.topic, dead_letter_topic, _dead_letter_json(dead), (("dead", index),), None


def too_large_reference(topic: str, payload: bytes, why: str) -> bytes:
    """The dead letter that stands for a message a publishing sink cannot send: its topic, size and SHA-256."""
    import hashlib

    return json.dumps({"topic": topic, "stage": "size", "size": len(payload), "payload_base64": None,
                       "sha256": hashlib.sha256(payload).hexdigest(),
                       "error": f"{len(payload)} bytes, {why}"}).encode("utf-8")


def refused_letter(source: str, target: str, why: str, payload: bytes) -> dict:
    """The dead letter of a message a publishing sink's broker will not take (to be JSON): the topic it came
    with, the one it was to go to, why, and its payload in base64."""
    return {"topic": source, "target": target, "stage": "store", "error": why,
            "payload_base64": base64.b64encode(payload).decode("ascii")}


def _dead_letter_json(dead) -> bytes:
    message = dead.message
    return json.dumps({
        "channel": dead.channel, "topic": message.topic, "stage": dead.stage, "error": dead.error,
        "decoder": dead.decoder, "payload_base64": base64.b64encode(dead.payload).decode("ascii"),
    }).encode("utf-8")


@attrs.define(slots=True, eq=False)
class _Flight:
    """One publication in flight: what it stands for, and its PUBACK once it came (a Deferred's result is gone
    once it was awaited, so the acknowledgement is noted here as it comes)."""

    d: Deferred
    #: the message's own topic, the topic published to, the payload
    source: str
    topic: str
    payload: bytes
    #: whether it is a dead letter (the batch's, or one that stands for a message set aside)
    dead: bool
    #: what it adds to the batch's progress once acknowledged, and the counter it counts in
    keys: tuple
    counter: str
    ack: Any = None

    def __attrs_post_init__(self) -> None:
        self.d.addCallback(self._noted)

    def _noted(self, ack):
        self.ack = ack
        return ack

    @property
    def taken(self) -> bool:
        """Whether the broker's PUBACK came and took the message (MQTT 5: a reason code below 0x80)."""
        return self.ack is not None and getattr(self.ack, "reason", 0) < 0x80


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
    #: messages set aside as dead letters: a topic no broker takes, or one this broker refused
    refused: int = 0
    #: (the first message in flight when the broker last closed the connection, how many were), if it did
    _suspect: Any = None
    #: how often the broker closed the connection while a message was alone in flight
    _strikes: dict = attrs.Factory(dict)
    #: messages larger than the broker takes, a reference to each published to the dead-letter topic instead
    too_large: int = 0
    #: whether it was said (once) that MQTT 3.1.1 drops the messages' Content Types and headers
    _said_dropped: bool = False

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
                "published": self.published, "too_large": self.too_large, "refused": self.refused,
                "last_error": client.last_error if client else ""}

    def topic_for(self, entry) -> str:
        return topic_for(self.topic, entry)

    def write(self, batch) -> Deferred:
        client = self._client
        protocol = getattr(client, "_protocol", None) if client is not None else None
        if protocol is None or not protocol.connected:
            why = client.last_error if client is not None and client.last_error else "not connected yet"
            return fail(StorageError(f"MQTT sink {self.name}: {self.broker.host}:{self.broker.port} is away ({why})"))
        items = list(outgoing(batch, self.topic_for, self.payload, self.dead_letter_topic))
        if not self._said_dropped and protocol.version != MQTT_5:
            self._say_dropped(items)
        return Deferred.fromCoroutine(self._publish(protocol, items, batch.progress))

    def _say_dropped(self, items: list) -> None:
        """Warn once that a message's Content Type or headers, which a publisher sent, do not go out: MQTT 3.1.1 has
        no properties (they were dropped without a word)."""
        for _source, _topic, _payload, _keys, beside in items:
            if beside is not None and beside != JSON_BESIDE and (beside[0] or beside[1]):
                self._said_dropped = True
                self.log.warn("MQTT sink {sink}: {host}:{port} speaks MQTT 3.1.1, which has no properties: the "
                              "messages' Content Types and headers are not published with them (protocol = 5 "
                              "publishes them); said once", sink=self.name, host=self.broker.host,
                              port=self.broker.port)
                return

    def _items(self, batch):
        for _, topic, payload, _keys, _beside in outgoing(batch, self.topic_for, self.payload, self.dead_letter_topic):
            yield topic, payload

    def _set_aside(self, protocol, source: str, topic: str, payload: bytes, why: str) -> Deferred:
        """Publish a dead letter for a message the broker will not take, instead of it."""
        self.log.error("MQTT sink {sink}: a message to {topic!r:.300} (from {source!r:.300}) not published: {why}; "
                       "it goes to {dead} as a dead letter", sink=self.name, topic=topic, source=source, why=why,
                       dead=self.dead_letter_topic)
        from lorrygate.mqtt.protocol import PacketTooLarge

        letter = refused_letter(source, topic, why, payload)
        try:
            return protocol.publish(self.dead_letter_topic, json.dumps(letter).encode("utf-8"), 1)
        except PacketTooLarge:  # (the payload in base64 is more than the broker takes): its size and SHA-256
            import hashlib

            letter.update(payload_base64=None, size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
            return protocol.publish(self.dead_letter_topic, json.dumps(letter).encode("utf-8"), 1)

    async def _settle(self, protocol, flight: _Flight, progress: set) -> None:
        """Wait for one publication's PUBACK, then count it and put its keys into the batch's progress (a retry
        of the batch does not publish it again); a refused message goes to the dead-letter topic (MQTT 5)."""
        ack = await flight.d
        reason = getattr(ack, "reason", 0)
        if reason < 0x80:
            progress.update(flight.keys)
            setattr(self, flight.counter, getattr(self, flight.counter) + 1)
            return
        from lorrygate.mqtt.protocol import REASON_CODES

        why = f"the broker refused it: {REASON_CODES.get(reason, 'reason')} (PUBACK reason code 0x{reason:02x})"
        if flight.dead:
            raise StorageError(f"MQTT sink {self.name}: {why} for the dead letter to {flight.topic!r}; let the "
                               f"sink's client publish to dead_letter_topic = {flight.topic}")
        if reason in TRY_AGAIN:
            raise StorageError(f"MQTT sink {self.name}: publishing to {flight.topic!r:.300}: {why}; the batch is "
                               "tried again")
        await self._settle(protocol, _Flight(self._set_aside(protocol, flight.source, flight.topic, flight.payload,
                                                             why), flight.source, self.dead_letter_topic, b"", True,
                                             flight.keys, "refused"), progress)

    async def _publish(self, protocol, items: list, progress: set) -> None:
        from lorrygate.mqtt.protocol import PacketTooLarge

        pending: deque = deque()  # the `_Flight` of each publication not yet settled, in order
        # the messages that were in flight when the broker last closed the connection go one at a time
        suspect, alone = self._suspect, 0
        try:
            for source, topic, payload, keys, beside in items:
                dead = topic == self.dead_letter_topic
                key = (topic, len(payload), hash(payload)) if suspect is not None or self._strikes else None
                if suspect is not None and key == suspect[0]:
                    alone, suspect = suspect[1], None
                while len(pending) >= (1 if alone else WINDOW):
                    await self._settle(protocol, pending[0], progress)
                    pending.popleft()
                alone = max(alone - 1, 0)
                why = None if dead else topic_problem(topic)
                if why is None and key is not None and self._strikes.get(key, 0) >= STRIKES:
                    why = (f"the broker closed the connection each time this message was the only one in flight "
                           f"({STRIKES} times): it refuses it (Mosquitto does so for a topic of more than 200 levels)")
                if why is not None:
                    pending.append(_Flight(self._set_aside(protocol, source, topic, payload, why), source,
                                           self.dead_letter_topic, b"", True, keys, "refused"))
                    continue
                try:
                    pending.append(_Flight(protocol.publish(topic, payload, 1, properties=mqtt_properties(beside)),
                                           source, topic, payload, dead, keys, "published"))
                except PacketTooLarge as exc:
                    # The broker would never take it, and failing the batch for it would stop the sink for good:
                    # a reference to it goes to the dead-letter topic instead, as a message over max_payload is kept.
                    self.log.error("MQTT sink {sink}: a message to {topic} not published: {error}; a reference to it "
                                   "goes to {dead}", sink=self.name, topic=topic, error=str(exc),
                                   dead=self.dead_letter_topic)
                    pending.append(_Flight(protocol.publish(self.dead_letter_topic, too_large_reference(
                        topic, payload, f"more than the broker takes: {exc}"), 1), source, self.dead_letter_topic,
                        b"", True, keys, "too_large"))
            while pending:
                await self._settle(protocol, pending[0], progress)
                pending.popleft()
        except StorageError:
            self._acknowledged(pending, progress)
            raise
        except Exception as exc:
            self._suspected(self._acknowledged(pending, progress), alone)
            raise StorageError(f"MQTT sink {self.name}: publishing to {self.broker.host}:{self.broker.port} "
                               f"failed ({exc}); what the broker did not acknowledge is published again") from None
        self._suspect = None
        self._strikes.clear()

    def _acknowledged(self, pending: deque, progress: set) -> deque:
        """The batch failed with ``pending`` not yet settled: those whose PUBACK came (and took them) count as
        published and go into the progress, so that the next try does not send them again. Returns the rest,
        the messages the next try sends again (their Deferreds fail with the lost connection)."""
        rest: deque = deque()
        for flight in pending:
            if flight.taken:
                progress.update(flight.keys)
                setattr(self, flight.counter, getattr(self, flight.counter) + 1)
            else:
                rest.append(flight)
            flight.d.addErrback(lambda failure: None)
        return rest

    def _suspected(self, pending: deque, alone: int) -> None:
        """The connection was lost with ``pending`` in flight: the next try sends those messages one at a time
        (and those that were to go alone after them), and a message that was the only one in flight gets a
        strike; with `STRIKES` it is set aside."""
        outstanding = [flight for flight in pending if not flight.dead]
        if not outstanding:
            return
        topic, payload = outstanding[0].topic, outstanding[0].payload
        key = (topic, len(payload), hash(payload))
        if len(pending) == 1:
            if len(self._strikes) >= 1000:
                self._strikes.clear()
            self._strikes[key] = self._strikes.get(key, 0) + 1
        self._suspect = (key, len(outstanding) + alone)

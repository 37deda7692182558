"""
The Kafka sink: a producer with ``acks = all`` and idempotence
(``url = kafka://HOST:9092/``).

``topic`` is the Kafka topic (a template like the MQTT sink's, default
``lorrygate``; characters Kafka does not take become ``_``); the message key
is the MQTT-style topic, so that a Kafka source reads it back as the same
topic. ``payload = message`` produces each payload as it came, ``records``
each record as JSON. Dead letters go to ``dead_letter_topic``
(``lorrygate-dead-letters``).

Delivery: a batch counts as written once librdkafka reported every message
of it delivered (``flush`` and the delivery reports, in the reactor's thread
pool); only then is the source acknowledged: at least once end to end. A
failed delivery fails the batch, which is tried again (or spooled): the
messages already delivered are not produced again (the batch's progress),
those whose delivery was not reported are.

A message larger than Kafka takes (the producer's ``message.max.bytes``,
1,000,000 bytes, or the topic's ``max.message.bytes``) can never be
delivered: it was produced again and again, and the sink wrote nothing more.
In its place a reference goes to the dead-letter topic (its MQTT topic, size
and SHA-256, and why), counted as ``too_large``. A message whose topic Kafka
does not take (more than 249 characters, or ``.``), or one whose delivery
the cluster refuses for its topic (not authorized for this client; unknown,
where topics are not created on first use) goes there as a dead letter with
its payload and the reason, counted as ``refused``: it was produced again
for ever, and no later message got through. A dead-letter topic that
refuses the dead letters fails the batch.
"""

import json
import re
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.sources.headers import CONTENT_TYPE
from lorrygate.storage.mqtt_sink import outgoing, refused_letter, too_large_reference, topic_for

_NOT_KAFKA = re.compile(r"[^A-Za-z0-9._-]")

#: the longest topic name Kafka takes (org.apache.kafka.common.internals.Topic.MAX_NAME_LENGTH)
MAX_TOPIC = 249


#: delivery errors that say the cluster will not take the message's topic, however often it is produced: a
#: topic the client is not authorized for, one that does not exist where topics are not created on first use,
#: a name the cluster refuses
_REFUSING = frozenset({29, 3, -188, 17})  # TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC,
#                                            TOPIC_EXCEPTION (confluent_kafka.KafkaError; not imported at start)


def kafka_headers(beside) -> list | None:
    """The record headers of what goes beside the payload of an item of `outgoing`: its Content Type as ``content-type`` (which
    the Kafka source reads back as the Content Type) and its headers, in the order sent, their texts in UTF-8."""
    if beside is None:
        return None
    content_type, headers = beside
    out = [(CONTENT_TYPE, content_type.encode("utf-8"))] if content_type else []
    out += [(name, text.encode("utf-8", "backslashreplace")) for name, text in headers
            if not (content_type and name.lower() == CONTENT_TYPE)]
    return out or None


def topic_problem(topic: str) -> str | None:
    """Why Kafka refuses ``topic`` (of its legal characters already) as a topic name, or None."""
    if topic in (".", ".."):
        return f"Kafka takes no topic named {topic!r}"
    if len(topic) > MAX_TOPIC:
        return f"the topic is {len(topic)} characters long, more than Kafka's {MAX_TOPIC}"
    return None


@implementer(IStorage)
@attrs.define(eq=False)
class KafkaSink:
    name: str
    broker: Any
    reactor: Any
    topic: str = "lorrygate"
    payload: str = "message"
    dead_letter_topic: str = "lorrygate-dead-letters"
    timeout: float = 30.0
    published: int = 0
    #: messages too large for Kafka, a reference to each produced to the dead-letter topic instead
    too_large: int = 0
    #: messages whose topic Kafka refuses (`topic_problem`), each produced to the dead-letter topic instead
    refused: int = 0
    _producer: Any = None

    log = Logger()

    def start(self) -> Deferred:
        from confluent_kafka import Producer

        from lorrygate.sources.kafka import client_config

        self._producer = Producer(dict(client_config(self.broker), **{
            "acks": "all", "enable.idempotence": True, "client.id": f"lorrygate-{self.name}",
            "linger.ms": 5, "message.timeout.ms": int(self.timeout * 1000)}))
        return succeed(None)

    def stop(self) -> Deferred:
        producer, self._producer = self._producer, None
        if producer is None:
            return succeed(None)
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), producer.flush, 10)

    def details(self) -> dict:
        return {"published": self.published, "too_large": self.too_large, "refused": self.refused}

    def write(self, batch) -> Deferred:
        # the same items as the MQTT sink; the key is the message's own topic
        items = []
        dead_topic = _NOT_KAFKA.sub("_", self.dead_letter_topic) or "lorrygate-dead-letters"
        for key, target, payload, keys, beside in outgoing(batch, lambda entry: topic_for(self.topic, entry),
                                                         self.payload, self.dead_letter_topic):
            topic = _NOT_KAFKA.sub("_", target) or "lorrygate"
            why = topic_problem(topic)
            counter = "published"
            if why is not None:  # Kafka would refuse it each time the batch is produced: a dead letter instead
                counter = "refused"
                self.log.error("Kafka sink {sink}: a message from {key!r:.300} not produced: {why}; it goes to {dead} "
                               "as a dead letter", sink=self.name, key=key, why=why, dead=dead_topic)
                topic, payload = dead_topic, json.dumps(refused_letter(key, topic, why, payload)).encode("utf-8")
                beside = None
            items.append((topic, key, payload, keys, counter, kafka_headers(beside)))
        counts = {"published": 0, "refused": 0, "too_large": 0}
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._produce, items, batch.progress,
                                 counts).addBoth(self._counted, counts)

    def _counted(self, result, counts: dict):
        """In the reactor thread: count what was delivered, also of a try that failed (it is not produced again),
        and log the messages set aside (``result``: those too large for Kafka, ``[(key, size)]``, and those whose
        topic Kafka refused, ``[(key, topic, why)]``)."""
        self.published += counts["published"]
        self.refused += counts["refused"]
        self.too_large += counts["too_large"]
        if isinstance(result, tuple):
            large, aside = result
            for key, size in large:
                self.log.error("Kafka sink {sink}: a message of {size} bytes from {topic} is larger than Kafka takes "
                               "(message.max.bytes); a reference to it went to the dead-letter topic {dead}",
                               sink=self.name, size=size, topic=key, dead=self.dead_letter_topic)
            for key, topic, why in aside:
                self.log.error("Kafka sink {sink}: a message from {key!r:.300} to {topic!r} not produced: {why}; it "
                               "went to the dead-letter topic {dead}", sink=self.name, key=key, topic=topic, why=why,
                               dead=self.dead_letter_topic)
            return None
        return result

    def _produce(self, items, progress: set, counts: dict) -> tuple:
        """In a pool thread: produce everything, wait for every delivery report; a message too large for Kafka
        is a reference in the dead-letter topic instead (`reference`), one whose topic the cluster refuses a
        dead letter there (`refused_letter`). Returns those, ``([(key, size)], [(key, topic, why)])``. Each
        message delivered puts its keys into the batch's ``progress`` (a retry of the batch, or the spool,
        leaves it out) and is counted in ``counts``."""
        from confluent_kafka import KafkaError, KafkaException

        producer = self._producer
        if producer is None:
            raise StorageError(f"Kafka sink {self.name}: stopped")
        failures: list = []
        too_large: list = []  # (Kafka topic, key, payload, keys)
        refused: list = []  # (Kafka topic, key, payload, keys, why): a topic the cluster will not take
        dead_topic = _NOT_KAFKA.sub("_", self.dead_letter_topic) or "lorrygate-dead-letters"

        def report(error, message, keys, counter):
            if error is None:
                progress.update(keys)
                counts[counter] += 1
                return
            code, topic = error.code(), message.topic()
            item = (topic, (message.key() or b"").decode("utf-8", "replace"), message.value() or b"", keys)
            if code == KafkaError.MSG_SIZE_TOO_LARGE:  # (the broker's limit, below the producer's)
                too_large.append(item)
            elif code in _REFUSING and topic != dead_topic:
                refused.append((*item, f"Kafka refused it: {error.str()} (the topic is not authorized for this "
                                       "client, or does not exist and the cluster does not create topics)"))
            else:
                failures.append(error.str() + (f" (dead_letter_topic = {dead_topic})" if topic == dead_topic else ""))

        def produce(topic, key, payload, keys, counter, headers=None) -> None:
            while True:
                try:
                    producer.produce(topic, payload, key.encode("utf-8"), headers=headers,
                                     on_delivery=lambda error, message: report(error, message, keys, counter))
                    return
                except BufferError:
                    producer.poll(0.1)  # the local queue is full: let deliveries drain it
                except KafkaException as exc:
                    if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                        too_large.append((topic, key, payload, keys))
                        return
                    raise

        referred: list = []
        set_aside: list = []
        try:
            for item in items:
                produce(*item)
            left = producer.flush(self.timeout)
            if (too_large or refused) and not left and not failures:
                large, too_large[:] = list(too_large), []
                for topic, key, payload, keys in large:
                    produce(dead_topic, key, reference(topic, key, payload, dead_topic), keys, "too_large")
                    referred.append((key, len(payload)))
                aside, refused[:] = list(refused), []
                for topic, key, payload, keys, why in aside:
                    letter = json.dumps(refused_letter(key, topic, why, payload)).encode("utf-8")
                    produce(dead_topic, key, letter, keys, "refused")
                    set_aside.append((key, topic, why))
                left = producer.flush(self.timeout)
        except KafkaException as exc:
            raise StorageError(f"Kafka sink {self.name}: {exc}") from None
        if left or failures or too_large or refused:
            raise StorageError(f"Kafka sink {self.name}: {left or len(failures) or len(too_large) or len(refused)} "
                               "message(s) not delivered" + (
                                   f" ({failures[0]})" if failures else " within the timeout" if left else
                                   " (their dead letters too large for the dead-letter topic)" if too_large else
                                   " (the dead-letter topic refused their dead letters)")
                               + "; what was not delivered is produced again")
        return referred, set_aside


def reference(topic: str, key: str, payload: bytes, dead_topic: str) -> bytes:
    """The dead letter that stands for a message too large for Kafka (`too_large_reference`)."""
    return too_large_reference(key, payload, (
        f"more than Kafka takes (the producer's message.max.bytes, 1,000,000 by default, or the topic's "
        f"max.message.bytes); not produced to {topic}, this reference is in {dead_topic}. Raise both limits to "
        "carry such messages, or lower max_payload"))

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
failed delivery fails the batch, which is produced again (or spooled).
"""

import re
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.storage.mqtt_sink import outgoing, topic_for

_NOT_KAFKA = re.compile(r"[^A-Za-z0-9._-]")


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
        return {"published": self.published}

    def write(self, batch) -> Deferred:
        # the same items as the MQTT sink; the key is the message's own topic
        items = [(_NOT_KAFKA.sub("_", target) or "lorrygate", key, payload) for key, target, payload in
                 outgoing(batch, lambda entry: topic_for(self.topic, entry), self.payload, self.dead_letter_topic)]
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._produce, items)

    def _produce(self, items) -> None:
        """In a pool thread: produce everything, wait for every delivery report."""
        from confluent_kafka import KafkaException

        producer = self._producer
        if producer is None:
            raise StorageError(f"Kafka sink {self.name}: stopped")
        failures = []

        def report(error, message):
            if error is not None:
                failures.append(error.str())

        try:
            for topic, key, payload in items:
                while True:
                    try:
                        producer.produce(topic, payload, key.encode("utf-8"), on_delivery=report)
                        break
                    except BufferError:
                        producer.poll(0.1)  # the local queue is full: let deliveries drain it
            left = producer.flush(self.timeout)
        except KafkaException as exc:
            raise StorageError(f"Kafka sink {self.name}: {exc}") from None
        if left or failures:
            raise StorageError(f"Kafka sink {self.name}: {left or len(failures)} message(s) not delivered"
                               + (f" ({failures[0]})" if failures else " within the timeout")
                               + "; the batch is produced again")
        self.published += len(items)

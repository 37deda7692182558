"""The Kafka sink tries again only what librdkafka did not report delivered (our side: librdkafka's mock
cluster fails no single delivery; its producer here is a stand-in that reports as librdkafka does, from
``flush``). A failed delivery made the whole batch produced again: every message delivered before it came
twice."""

import pytest
from twisted.internet.task import Clock

from lorrygate.errors import StorageError
from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.kafka_sink import KafkaSink

kafka = pytest.importorskip("confluent_kafka")


class Pool:
    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except Exception:
            from twisted.python.failure import Failure

            on_result(False, Failure())
        else:
            on_result(True, result)


class Reactor(Clock):
    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)

    def getThreadPool(self):
        return Pool()


class Delivered:
    def __init__(self, topic, key, value):
        self._topic, self._key, self._value = topic, key, value

    def topic(self):
        return self._topic

    def key(self):
        return self._key

    def value(self):
        return self._value


class Producer:
    """Reports each message from ``flush``; the keys in ``failing`` fail once (a delivery timed out)."""

    def __init__(self, failing: set):
        self.failing = failing
        self.produced: list = []
        self._queued: list = []

    def produce(self, topic, value, key, on_delivery):
        self.produced.append(key.decode())
        self._queued.append((Delivered(topic, key, value), on_delivery))

    def flush(self, timeout):
        queued, self._queued = self._queued, []
        for message, report in queued:
            key = message.key().decode()
            if key in self.failing:
                self.failing.discard(key)
                report(kafka.KafkaError(kafka.KafkaError._MSG_TIMED_OUT), message)
            else:
                report(None, message)
        return 0


def test_a_failed_delivery_produces_again_only_what_was_not_delivered():
    sink = KafkaSink("stream", "127.0.0.1:9092", Reactor(), topic="out")
    sink._producer = producer = Producer({"dev/3"})
    batch = Batch()
    for n in range(5):
        batch.add(Entry(TableName("s", "t"), [Record(n, {"n": n})], "main", Message(f"dev/{n}", b"%d" % n), "raw"))
    failures: list = []
    sink.write(batch).addErrback(failures.append)
    (failure,) = failures
    assert failure.check(StorageError) and "produced again" in str(failure.value)
    assert sink.published == 4
    producer.produced.clear()
    done: list = []
    sink.write(batch).addCallback(done.append)
    assert done and producer.produced == ["dev/3"]
    assert sink.published == 5

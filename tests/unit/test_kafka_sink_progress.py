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
    """Reports each message from ``flush``; the keys in ``failing`` fail once (a delivery timed out), the
    topics in ``refusing`` always, with that error."""

    def __init__(self, failing: set, refusing: dict | None = None):
        self.failing = failing
        self.refusing = refusing or {}
        self.produced: list = []
        self.values: list = []
        self._queued: list = []

    def produce(self, topic, value, key, on_delivery, headers=None):
        self.produced.append((topic, key.decode()))
        self.values.append(value)
        self._queued.append((Delivered(topic, key, value), on_delivery))

    def flush(self, timeout):
        queued, self._queued = self._queued, []
        for message, report in queued:
            key = message.key().decode()
            if message.topic() in self.refusing:
                report(kafka.KafkaError(self.refusing[message.topic()]), message)
            elif key in self.failing:
                self.failing.discard(key)
                report(kafka.KafkaError(kafka.KafkaError._MSG_TIMED_OUT), message)
            else:
                report(None, message)
        return 0


def batch_of(count: int) -> Batch:
    batch = Batch()
    for n in range(count):
        batch.add(Entry(TableName("s", "t"), [Record(n, {"n": n})], "main", Message(f"dev/{n}", b"%d" % n), "raw"))
    return batch


def test_a_failed_delivery_produces_again_only_what_was_not_delivered():
    sink = KafkaSink("stream", "127.0.0.1:9092", Reactor(), topic="out")
    sink._producer = producer = Producer({"dev/3"})
    batch = batch_of(5)
    failures: list = []
    sink.write(batch).addErrback(failures.append)
    (failure,) = failures
    assert failure.check(StorageError) and "produced again" in str(failure.value)
    assert sink.published == 4
    producer.produced.clear()
    done: list = []
    sink.write(batch).addCallback(done.append)
    assert done and producer.produced == [("out", "dev/3")]
    assert sink.published == 5


@pytest.mark.parametrize("code", [kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, kafka.KafkaError._UNKNOWN_TOPIC])
def test_a_topic_the_cluster_refuses_is_a_dead_letter_not_a_batch_produced_for_ever(code):
    """A topic this client may not write (an ACL), or one that does not exist where the cluster creates none
    (``{node}`` in the topic template, a new node): its messages failed the batch at every try, and no later
    message got through. Each is a dead letter in the dead-letter topic, with its payload and the reason; the
    rest is produced. A dead-letter topic that refuses too fails the batch, naming it."""
    import base64
    import json

    sink = KafkaSink("stream", "127.0.0.1:9092", Reactor(), topic="t-{topic}")
    sink._producer = producer = Producer(set(), {"t-dev_1": code})
    done: list = []
    sink.write(batch_of(3)).addCallback(done.append)
    assert done, "the batch failed"
    letters = [json.loads(value) for (topic, _), value in zip(producer.produced, producer.values)
               if topic == "lorrygate-dead-letters"]
    assert [(letter["topic"], letter["target"]) for letter in letters] == [("dev/1", "t-dev_1")]
    assert base64.b64decode(letters[0]["payload_base64"]) == b"1" and "Kafka refused it" in letters[0]["error"]
    assert (sink.published, sink.refused) == (2, 1)
    producer.refusing["lorrygate-dead-letters"] = code
    failures: list = []
    sink.write(batch_of(3)).addErrback(failures.append)
    (failure,) = failures
    assert "dead_letter_topic = lorrygate-dead-letters" in str(failure.value)

"""
A rebalance that takes partitions away waits for their messages in flight and commits them, so that the
new owner does not read them again; what is still in flight after `REVOKE_WAIT_S` is counted and left to
the new owner. On a stand-in consumer (the commit it is asked for) and the consumer thread's callback run
in a thread, as librdkafka runs it. librdkafka's mock cluster refuses commits while a group is joining,
where Kafka accepts them from the current generation: the whole path runs against a real Kafka in
tests/integration/test_kafka.py (LORRYGATE_KAFKA_BOOTSTRAP).
"""

import threading
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")


class Consumer:
    def __init__(self):
        self.commits = []

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        self.commits.append(sorted((p.topic, p.partition, p.offset) for p in offsets))


class Reactor:
    """Runs what the consumer thread hands to the reactor thread at once (the test acks from its own thread)."""

    def __init__(self):
        self.calls = []

    def callFromThread(self, function, *args):
        self.calls.append((function.__name__, args))


def source_with(delivered):
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.kafka import KafkaSource

    messages = []
    source = KafkaSource("k", BrokerSettings(name="k", host="127.0.0.1:9092", type="kafka"), ("t",), messages.append,
                         Reactor())
    source._deliver([("t", partition, offset, b"a/b/c/d/data.json", b"{}", None, (0, -1)) for partition, offset in delivered], 0,
                    time.time())
    return source, messages


def revoke_in_thread(source, consumer, partitions):
    thread = threading.Thread(target=source._revoked,
                              args=(consumer, [confluent_kafka.TopicPartition("t", p) for p in partitions]))
    thread.start()
    deadline = time.monotonic() + 10
    while not source._revoking:
        assert time.monotonic() < deadline, "the rebalance did not start waiting"
        time.sleep(0.005)
    return thread


def test_a_rebalance_waits_for_the_messages_in_flight_and_commits_them():
    source, messages = source_with([(0, 5), (0, 6), (1, 9)])
    consumer = Consumer()
    thread = revoke_in_thread(source, consumer, [0])
    messages[0].ack.ack()
    assert thread.is_alive(), "offset 6 of partition 0 is still in flight"
    messages[1].ack.ack()
    thread.join(10)
    assert not thread.is_alive()
    assert consumer.commits == [[("t", 0, 7)]]
    assert ("_rebalanced", (1, 0)) in source._reactor.calls
    messages[2].ack.ack()  # partition 1 went through the same rebalance: its acks are void now
    assert source._to_commit == {}


def test_what_is_still_in_flight_after_the_wait_is_left_to_the_new_owner(monkeypatch):
    from lorrygate.sources import kafka

    monkeypatch.setattr(kafka, "REVOKE_WAIT_S", 0.3)
    source, messages = source_with([(0, 5), (0, 6)])
    consumer = Consumer()
    thread = revoke_in_thread(source, consumer, [0])
    messages[0].ack.ack()
    thread.join(10)
    assert consumer.commits == [[("t", 0, 6)]], "what was done is committed"
    assert ("_rebalanced", (1, 1)) in source._reactor.calls
    source._rebalanced(1, 1)
    assert (source.status()["rebalances"], source.status()["redelivered_after_rebalance"]) == (1, 1)
    messages[1].ack.ack()
    assert source._to_commit == {}, "a late ack is void: the partition is another member's now"

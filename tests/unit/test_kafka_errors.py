"""
What the Kafka source says about librdkafka's errors (our side of the
wrong-password case: librdkafka's mock cluster accepts any credentials; a
real broker with SASL is tested in tests/integration/test_kafka.py when
LORRYGATE_KAFKA_SASL_BOOTSTRAP is set).
"""

import attrs
import pytest
from twisted.internet.task import Clock

from lorrygate.config.settings import kafka_broker

kafka = pytest.importorskip("confluent_kafka")

from lorrygate.sources.kafka import KafkaSource  # noqa: E402


class Reactor(Clock):
    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


def source():
    broker = attrs.evolve(kafka_broker("bus", "kafka://meter:s3cret@k1:9092/"), name="bus")
    return KafkaSource("main", broker, ("readings",), lambda message: None, Reactor())


def test_a_refused_login_is_one_line_that_names_the_user_and_the_broker():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        reader = source()
        for after in (3, 17, 250):  # librdkafka retries, each report with its own timing
            reader._error(kafka.KafkaError(
                kafka.KafkaError._AUTHENTICATION,
                f"SASL authentication error: Authentication failed: Invalid username or password (after {after}ms "
                "in state AUTH_REQ)"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if e.get("log_namespace", "").endswith("KafkaSource") and e.get("log_level").name == "error"]
    assert len(lines) == 1
    assert "user 'meter'" in reader.last_error and "broker bus" in reader.last_error
    assert "s3cret" not in reader.last_error and "after" not in reader.last_error
    assert not reader.connected


def test_a_broker_away_keeps_librdkafkas_reason():
    reader = source()
    reader._error(kafka.KafkaError(kafka.KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert reader.last_error == "1/1 brokers are down"

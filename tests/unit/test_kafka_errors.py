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


STATISTICS = """{"name": "rdkafka#consumer-1", "type": "consumer", "topics": {"readings": {"topic": "readings",
 "partitions": {
  "0": {"partition": 0, "fetch_state": "active", "hi_offset": 10, "lo_offset": 0, "committed_offset": 3},
  "1": {"partition": 1, "fetch_state": "active", "hi_offset": 5, "lo_offset": 2, "committed_offset": -1001},
  "2": {"partition": 2, "fetch_state": "none", "hi_offset": 90, "lo_offset": 0, "committed_offset": 10},
  "3": {"partition": 3, "fetch_state": "offset-query", "hi_offset": -1001, "lo_offset": -1001,
        "committed_offset": -1001},
  "-1": {"partition": -1, "fetch_state": "none", "hi_offset": -1001, "lo_offset": -1001,
         "committed_offset": -1001}}}}}"""


def test_the_lag_is_what_the_brokers_hold_beyond_the_groups_committed_offsets():
    """Per partition assigned here (fetching): the high watermark less the committed offset, or less the start of
    the log where the group committed nothing yet (what start = earliest reads); a partition another member has,
    one whose offsets are not known yet and librdkafka's internal one are left out. The status and the text of
    ``lorrygate status`` tell the sum."""
    from lorrygate.control_client import render_status
    from lorrygate.sources.kafka import lag_of

    assert lag_of(STATISTICS) == {"readings[0]": 7, "readings[1]": 3}
    assert lag_of("not json") == {}
    reader = source()
    reader._lagged(lag_of(STATISTICS))
    assert (reader.status()["lag"], reader.status()["lag_by_partition"]) == (10, {"readings[0]": 7, "readings[1]": 3})
    text = render_status({"config": "gw.ini", "sources": [{"name": "main", "connected": True, "broker": "bus",
                                                           "client_id": "c", "group": "g", "details": reader.status()}],
                          "storages": [], "channels": []})
    assert "source main: connected to bus as c, in group g, lag 10 messages" in text

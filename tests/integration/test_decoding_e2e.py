"""Decoding end to end: malformed payloads are kept and reported; runaway codecs are stopped."""

import json
import threading
import uuid

import paho.mqtt.client as paho

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, last_stats, query, tables, write_config
from tests.servers import wait_until


class ErrorTopicListener:
    """Counts the reports published to error topics."""

    def __init__(self, port: int, pattern: str):
        self.reports = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(pattern, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.reports.append((message.topic, json.loads(message.payload)))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


MALFORMED = [b"\xff\xfe\x00 binary junk", b'{"temperature": 21.5', b"[1, 2, 3]", b'{"time": "yesterday", "v": 1}', b"{}{}"]


def test_thousand_messages_with_ten_percent_malformed(tmp_path, mosquitto):
    """1,000 messages, 10% malformed: 900 rows, 100 readable dead letters, error-topic reports (at most 10 a
    second, the rest counted), nothing missing."""
    realm = f"dec-{uuid.uuid4().hex[:8]}"
    listener = ErrorTopicListener(mosquitto.port, f"{realm}/+/+/+/error.json")
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    publisher = Publisher(mosquitto.port)
    messages = []
    for seq in range(1000):
        topic = f"{realm}/net/gw/node-{seq % 7}/data.json"
        if seq % 10 == 3:
            messages.append((topic, MALFORMED[seq // 10 % len(MALFORMED)]))
        else:
            messages.append((topic, json.dumps({"seq": seq, "value": seq / 2}).encode()))
    publisher.publish_many(messages)
    schema = realm.replace("-", "_")
    wait_until(lambda: count_rows(db, schema) >= 900
               and query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0] >= 100, 60, "900 rows and 100 dead letters")
    wait_until(lambda: len(listener.reports) >= 10, 30, "the first error reports")
    assert gateway.stop() == 0
    stats = last_stats(gateway.events())
    assert stats["error_reports"] + stats["reports_limited"] == 100 and stats["error_reports"] >= 10
    listener.close()
    publisher.close()

    stored = sorted(row[0] for table in tables(db) if table.startswith(schema)
                    for row in query(db, f'SELECT seq FROM "{table}"'))
    assert stored == [seq for seq in range(1000) if seq % 10 != 3]
    dead = query(db, "SELECT topic, payload, stage, error, decoder FROM lorrygate_dead_letter")
    assert len(dead) == 100
    assert sorted(bytes(row[1]) for row in dead) == sorted(payload for _, payload in messages if not payload.startswith(b'{"seq"'))
    errors = {row[3] for row in dead}
    assert any("not JSON" in error for error in errors)
    assert any("field 'time': not an ISO 8601 time: 'yesterday'" in error for error in errors)
    assert {row[2] for row in dead} == {"decode"} and {row[4] for row in dead} <= {"json", "ttn,json,value"}
    wait_until(lambda: len(listener.reports) == stats["error_reports"], 30, "every report published")
    topic, report = listener.reports[0]
    assert topic.endswith("/error.json") and set(report) >= {"type", "message", "description", "timestamp"}


LOOPING_CODEC = """
function decode(payload, topic) {
  if (payload[0] === 0x21) { while (true) {} }   // "!" makes this codec hang
  return {size: payload.length};
}
"""


def test_runaway_javascript_codec_is_stopped_and_the_stream_flows(tmp_path, mosquitto):
    """A codec stuck in a loop hits its time limit: that message is a dead letter, the next ones are stored."""
    realm = f"js-{uuid.uuid4().hex[:8]}"
    (tmp_path / "loop.js").write_text(LOOPING_CODEC)
    extra = f"\n[decoder:loop]\ntype = javascript\nfile = {tmp_path / 'loop.js'}\ntimeout = 200ms\n"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#", extra=extra)
    text = open(config).read().replace("storage = db\n", "storage = db\ndecoders = loop\n", 1)
    # the replace above hit the [channel:main] storage line only if it comes after [storage:db]; check it did
    assert "decoders = loop" in text.split("[channel:main]")[1]
    open(config, "w").write(text)
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    publisher = Publisher(mosquitto.port)
    topic = f"{realm}/net/gw/node/data.json"
    publisher.publish_many([(topic, b"abc"), (topic, b"!hang"), (topic, b"abcdef"), (topic, b"xy")])
    schema = realm.replace("-", "_")
    wait_until(lambda: count_rows(db, schema) >= 3, 30, "3 rows")
    assert gateway.stop() == 0
    publisher.close()
    assert sorted(row[0] for row in query(db, f'SELECT size FROM "{schema}_net__gw_node_sensors"')) == [2, 3, 6]
    ((payload, error),) = query(db, "SELECT payload, error FROM lorrygate_dead_letter")
    assert bytes(payload) == b"!hang" and "exceeded its time limit of 0.2 s" in error

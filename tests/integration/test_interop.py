"""
The MQTT client against brokers that others wrote: Eclipse Paho's strict
interoperability broker (MQTT 3.1.1 and 5), and Mosquitto with a window of
one message. Each run: QoS 1 messages with undecodable ones among them are
all stored or dead-lettered, reports stay few, the connection never drops and
the broker logs no protocol violation.
"""

import json
import os
import uuid

import pytest

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, last_stats, query, write_config
from tests.servers import (
    NODE_PREFIX,
    PAHO_TESTING,
    RABBITMQ_SERVER,
    Mosquitto,
    aedes_broker,
    paho_broker,
    rabbitmq_broker,
    stop_epmd,
    wait_until,
)

needs_rabbitmq = pytest.mark.skipif(not os.path.exists(RABBITMQ_SERVER),
                                    reason="rabbitmq-server is not installed (make test installs it)")
needs_aedes = pytest.mark.skipif(not os.path.isdir(os.path.join(NODE_PREFIX, "node_modules", "aedes")),
                                 reason=f"aedes is not installed in {NODE_PREFIX} (make test installs it with npm)")
needs_paho = pytest.mark.skipif(not os.path.isdir(PAHO_TESTING),
                                reason=f"Paho's interoperability broker is not at {PAHO_TESTING} (../shared/third_party)")


def dead_letters(db):
    try:
        return query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0]
    except Exception:
        return 0


#: RabbitMQ turns the dots of a topic into levels (a/data.json arrives as a/data/json): a strategy for that
DOTS_AS_LEVELS = """strategy = dots
error_topic = true

[strategy:dots]
topic = {realm}/{network}/{gateway}/{node}/{kind:data}/json
schema = {realm}_{network}
table = {gateway}_{node}
"""


def run_stream(tmp_path, port, protocol, count=2_000, bad_every=200, timeout=120, extra=""):
    """Publish ``count`` QoS 1 messages, every ``bad_every``-th undecodable; wait until all are stored or dead."""
    realm = f"io{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    config = write_config(str(tmp_path), port, client_id=f"gw-{realm}", topics=f"{realm}/#", extra=extra)
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:
        handle.write(text.replace("keepalive = 10", f"keepalive = 10\nprotocol = {protocol}"))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(port)
    messages = [(f"{realm}/net/gw/node-{n % 5}/data.json",
                 "not json {" if n % bad_every == 0 else json.dumps({"seq": n}))
                for n in range(count)]
    publisher.publish_many(messages, timeout=120)
    bad = count // bad_every
    wait_until(lambda: count_rows(db, realm) == count - bad and dead_letters(db) == bad, timeout,
               f"{count - bad} rows and {bad} dead letters", interval=0.2)
    publisher.close()
    assert gateway.stop() == 0
    events = gateway.events()
    lost = [e for e in events if "connection to" in e.get("message", "") and "lost" in e.get("message", "")]
    assert lost == [], "the broker dropped the connection"
    stats = last_stats(events)
    assert stats["error_reports"] <= bad
    return stats


@needs_paho
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_paho_interoperability_broker(tmp_path, protocol):
    """Against Paho's strict broker: every message stored or dead-lettered, no disconnect, no violation logged."""
    broker = paho_broker(str(tmp_path)).start()
    try:
        run_stream(tmp_path, broker.port, protocol)
    finally:
        broker.stop()
    violations = [line for line in broker.text().splitlines() if line.startswith("ERROR")]
    assert violations == []


@pytest.mark.parametrize("kind", ["mosquitto", pytest.param("rabbitmq", marks=needs_rabbitmq)])
def test_a_window_of_one_never_stalls(tmp_path, kind):
    """A broker that sends one unacknowledged message at a time (Mosquitto max_inflight_messages 1, RabbitMQ
    mqtt.prefetch 1): an undecodable message, then 20 good ones, all stored at once."""
    (tmp_path / "broker").mkdir()
    protocol, extra = "3.1.1", ""
    if kind == "mosquitto":
        broker = Mosquitto(str(tmp_path / "broker"), max_inflight=1)
    else:
        broker, extra = rabbitmq_broker(str(tmp_path / "broker"), settings="mqtt.prefetch = 1\n"), DOTS_AS_LEVELS
    broker.start()
    try:
        run_stream(tmp_path, broker.port, protocol, count=21, bad_every=21, timeout=5 if kind != "rabbitmq" else 15,
                   extra=extra)
    finally:
        broker.stop()
        if kind == "rabbitmq":
            stop_epmd(broker)


@needs_aedes
def test_aedes(tmp_path):
    """Against aedes (Node.js): every message stored or dead-lettered, no disconnect."""
    broker = aedes_broker(str(tmp_path)).start()
    try:
        run_stream(tmp_path, broker.port, "3.1.1")
    finally:
        broker.stop()


@needs_rabbitmq
def test_rabbitmq_mqtt_plugin(tmp_path):
    """Against RabbitMQ's MQTT plugin, which rewrites the dots of topics: no report loop, nothing lost."""
    broker = rabbitmq_broker(str(tmp_path)).start()
    try:
        stats = run_stream(tmp_path, broker.port, "3.1.1", extra=DOTS_AS_LEVELS)
        assert stats["own_reports"] <= stats["error_reports"]
    finally:
        broker.stop()
        stop_epmd(broker)


def refused_version(tmp_path, port) -> str:
    """Start a gateway with protocol = 5 against a 3.1.1-only broker; return its log once it retried."""
    import subprocess
    import sys

    from tests.gatewayproc import RUNNING

    config = write_config(str(tmp_path), port, client_id=f"gw-v5-{uuid.uuid4().hex[:6]}", topics="v5/#")
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:
        handle.write(text.replace("keepalive = 10", "keepalive = 10\nprotocol = 5"))
    log = tmp_path / "gw.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", config], stdout=out,
                                   stderr=subprocess.STDOUT)
    RUNNING.append(process)
    wait_until(lambda: log.read_text().count("set protocol = 3.1.1") >= 2, 60, "two refusals naming the fix")
    process.terminate()
    assert process.wait(30) == 0
    return log.read_text()


@needs_aedes
def test_protocol_5_against_aedes_names_the_fix(tmp_path):
    """protocol = 5 against 3.1.1-only aedes: a log line naming the version and the fix, then retries."""
    broker = aedes_broker(str(tmp_path)).start()
    try:
        text = refused_version(tmp_path, broker.port)
    finally:
        broker.stop()
    assert "malformed" not in text and "TLS" not in text.split("set protocol = 3.1.1")[0][-300:]


@needs_rabbitmq
def test_protocol_5_against_rabbitmq_names_the_fix(tmp_path):
    """protocol = 5 against RabbitMQ 3.10: a log line naming the version and the fix, then retries."""
    broker = rabbitmq_broker(str(tmp_path)).start()
    try:
        text = refused_version(tmp_path, broker.port)
    finally:
        broker.stop()
        stop_epmd(broker)
    assert "malformed" not in text


def seqs_of(db, prefix):
    from tests.gatewayproc import tables

    return [row[0] for table in tables(db) if table.startswith(prefix)
            for row in query(db, f'SELECT seq FROM "{table}"')]


def broker_of(kind, directory):
    if kind == "paho":
        return paho_broker(directory)
    if kind == "aedes":
        return aedes_broker(directory)
    return rabbitmq_broker(directory)


@pytest.mark.parametrize("kind, protocol", [
    pytest.param("paho", "3.1.1", marks=needs_paho), pytest.param("paho", "5", marks=needs_paho),
    pytest.param("aedes", "3.1.1", marks=needs_aedes), pytest.param("rabbitmq", "3.1.1", marks=needs_rabbitmq),
])
def test_every_qos_and_a_sigkill(tmp_path, kind, protocol):
    """QoS 0, 1 and 2 are stored; after SIGKILL the persistent session resumes and no QoS 1/2 message is lost."""
    import signal
    import time

    from tests.faults import report

    started = time.monotonic()
    broker = broker_of(kind, str(tmp_path)).start()
    try:
        realm = f"kq{uuid.uuid4().hex[:8]}"
        db = str(tmp_path / "gateway.sqlite")
        level = "data/json" if kind == "rabbitmq" else "data.json"
        extra = DOTS_AS_LEVELS if kind == "rabbitmq" else ""
        config = write_config(str(tmp_path), broker.port, client_id=f"gw-{realm}", topics=f"{realm}/#", extra=extra)
        with open(config) as handle:
            text = handle.read()
        with open(config, "w") as handle:
            handle.write(text.replace("keepalive = 10", f"keepalive = 10\nprotocol = {protocol}")
                         .replace("qos = 1", "qos = 2"))
        gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
        publisher = Publisher(broker.port)
        for qos in (0, 1, 2):
            infos = [publisher.client.publish(f"{realm}/net/gw/q{qos}/{level}", json.dumps({"seq": n}), qos=qos)
                     for n in range(20)]
            for info in infos:
                info.wait_for_publish(30)
        wait_until(lambda: count_rows(db, realm) == 60, 60, "20 messages of each QoS")
        messages = [(f"{realm}/net/gw/kill/{level}", json.dumps({"seq": n})) for n in range(600)]
        infos = publisher.start_publishing(messages)
        wait_until(lambda: count_rows(db, f"{realm}_net__gw_kill") >= 100, 60, "the first rows")
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
        Publisher.wait(infos, 60)
        gateway.start()
        wait_until(lambda: len(set(seqs_of(db, f"{realm}_net__gw_kill"))) == 600, 60,
                   "every message after the restart", interval=0.2)
        seqs = seqs_of(db, f"{realm}_net__gw_kill")
        report(f"{kind} MQTT {protocol} SIGKILL", 600, seqs, started)
        publisher.close()
        assert gateway.stop() == 0
    finally:
        broker.stop()
        if kind == "rabbitmq":
            stop_epmd(broker)

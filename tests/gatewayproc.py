"""
The gateway as a child process, and an in-process MQTT publisher, for the
integration tests.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from typing import Any

import attrs
import paho.mqtt.client as paho

from tests.servers import wait_until


def write_config(directory: str, broker_port: int, *, client_id: str, topics: str = "itest/#", extra: str = "") -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(
            textwrap.dedent(
                f"""
                [lorrygate]
                data_dir = {directory}
                log_format = json
                stats_interval = 1s

                [broker:test]
                host = 127.0.0.1
                port = {broker_port}
                client_id = {client_id}
                keepalive = 10

                [storage:db]
                url = sqlite:///{directory}/gateway.sqlite
                synchronous = NORMAL

                [channel:main]
                source = test
                topics = {topics}
                qos = 1
                storage = db
                """
            )
            + extra
        )
    return path


#: every gateway process the tests started, so that none outlives its test
RUNNING = []


@attrs.define
class GatewayProcess:
    config: str
    log_path: str
    process: subprocess.Popen | None = None
    db: str = ""
    _offset: int = 0
    #: the module that runs the gateway (``tests.steppedclock``: under a system clock the test steps)
    module: str = "lorrygate.cli"
    #: the environment of the process (None: the test's)
    env: dict | None = None
    #: called in the child before the gateway runs (limits, say)
    preexec: Any = None

    def start(self, ready: str | None = "connected to") -> "GatewayProcess":
        """Start the gateway and wait for a log message with ``ready`` in it (None: do not wait)."""
        log = open(self.log_path, "ab")
        self._offset = log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "-c", self.config],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=self.preexec,
        )
        log.close()
        RUNNING.append(self.process)
        if ready is None:
            return self
        wait_until(lambda: self.connected(ready) or self.process.poll() is not None, 20, "the gateway to connect")
        assert self.process.poll() is None, self.text()
        return self

    def events(self) -> list:
        """Every JSON log event this process wrote so far."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self._offset)
            lines = handle.read().decode("utf-8", "replace").splitlines()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"message": line, "unparsed": True})
        return events

    def text(self) -> str:
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def connected(self, ready: str = "connected to") -> bool:
        return any(ready in event.get("message", "") for event in self.events())

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def last_stats(events) -> dict:
    """The last stats line of the (only) channel, with the last stats line of its storage."""
    stats = [event for event in events if event.get("event") == "stats"]
    assert stats, "the gateway logged no stats"
    storage = [event for event in events if event.get("event") == "storage_stats"
               and event.get("storage") == stats[-1]["storage"]]
    return {**(storage[-1] if storage else {}), **stats[-1]}


class Publisher:
    """paho-mqtt, an independent MQTT implementation, publishing QoS 1."""

    def __init__(self, port: int):
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        # publish only after the CONNACK: aedes drops a client that sends more than 42 packets before its session
        # is set up ("Client queue limit reached"), as a loaded machine makes it happen
        if not connected.wait(30):
            raise AssertionError(f"no CONNACK from the broker on port {port} within 30 s")

    def publish_many(self, messages, timeout: float = 60) -> None:
        """Publish and wait for every PUBACK, in chunks (paho's ids wrap at 65535)."""
        chunk = []
        for message in messages:
            chunk.append(message)
            if len(chunk) == 20_000:
                self.wait(self.start_publishing(chunk), timeout)
                chunk = []
        self.wait(self.start_publishing(chunk), timeout)

    def start_publishing(self, messages) -> list:
        """Queue publications without waiting (fewer than 65535 at a time)."""
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        assert len(infos) < 65535, "paho reuses message ids past 65535 outstanding publications"
        return infos

    @staticmethod
    def wait(infos, timeout: float = 60) -> None:
        for info in infos:
            info.wait_for_publish(timeout)
            assert info.is_published(), "the broker did not acknowledge a publication"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def query(path: str, sql: str, params=()):
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def tables(path: str) -> set:
    if not os.path.exists(path):
        return set()
    return {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def count_rows(path: str, prefix: str) -> int:
    total = 0
    for table in tables(path):
        if table.startswith(prefix):
            total += query(path, f'SELECT count(*) FROM "{table}"')[0][0]
    return total


def store_through_gateway(directory, broker_port: int, *, topics: str, strategy: str, messages: list, tables_: set,
                          table: str, rows: int, sections: str = "", decoders: str = "") -> str:
    """Run a gateway of ``strategy`` on ``topics`` into SQLite, publish ``messages`` (QoS 1, acknowledged by the
    broker), wait until ``tables_`` exist and ``table`` has ``rows`` rows (the committed rows: the signal), stop it
    cleanly; the database's path. ``decoders``: the channel's chain (default the strategy's); ``sections``: more
    of the configuration (a ``[strategy:NAME]``)."""
    directory = str(directory)
    name = topics.split("/#")[0].replace("/", "-")
    config = write_config(directory, broker_port, client_id=f"gw-{name}", topics=topics,
                          extra=f"strategy = {strategy}\n" + (f"decoders = {decoders}\n" if decoders else "")
                          + f"\n{sections}")
    db = os.path.join(directory, "gateway.sqlite")
    gateway = GatewayProcess(config, os.path.join(directory, "gw.log"))
    gateway.start(ready="subscribed")
    try:
        publisher = Publisher(broker_port)
        publisher.publish_many(messages)
        publisher.close()
        wait_until(lambda: tables_ <= tables(db) and query(db, f'SELECT count(*) FROM "{table}"') == [(rows,)], 30,
                   f"{rows} rows in {table}")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    return db


def no_dead_letters(db: str) -> bool:
    return "lorrygate_dead_letter" not in tables(db) or query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]

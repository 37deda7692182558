"""A step of the system clock (NTP at boot, date -s) holds no timer of a running gateway and stamps as the clock says."""

import json
import os
import signal
import socket
import time
import uuid
from datetime import datetime

from lorrygate.control_client import request
from tests.gatewayproc import GatewayProcess, Publisher, query, tables, write_config
from tests.servers import wait_until

HOUR = 3600.0


def notify_socket(tmp_path):
    """A stand-in for systemd's notify socket: the datagrams a Type=notify unit's process sends."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock, path


def received(sock) -> list:
    states = []
    while True:
        try:
            states.append(sock.recv(4096).decode())
        except BlockingIOError:
            return states


def rows(db: str, prefix: str) -> list:
    found = [table for table in tables(db) if table.startswith(prefix)]
    return [row for table in found for row in query(db, f'SELECT "time", n FROM "{table}" ORDER BY n')]


def seconds_of(iso: str) -> float:
    return datetime.fromisoformat(iso[:26] + "+00:00").timestamp()


def test_a_step_back_of_the_system_clock_holds_no_timer(tmp_path, mosquitto):
    """The clock steps back an hour while a batch lingers: the batch commits after its linger (not an hour
    later), the watchdog keep-alive keeps coming (systemd would kill the gateway), and a message received after
    the step is stamped an hour earlier, as the corrected clock says."""
    realm = f"clk-{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("synchronous = NORMAL", "synchronous = NORMAL\nlinger = 10s")
    open(config, "w").write(text)
    sock, path = notify_socket(tmp_path)
    stepped = tmp_path / "stepped"
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000", LORRYGATE_TEST_CLOCK_STEP=str(-HOUR),
               LORRYGATE_TEST_CLOCK_STEPPED=str(stepped))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"), module="tests.steppedclock", env=env).start()
    publisher = Publisher(mosquitto.port)
    try:
        wait_until(lambda: "WATCHDOG=1" in received(sock), 20, "a watchdog keep-alive")
        endpoint = f"unix:{tmp_path}/lorrygate.sock"
        topic = f"{realm}/net/gw/node/data.json"
        publisher.publish_many([(topic, json.dumps({"n": 1}))])
        wait_until(lambda: request(endpoint, "GET", "/status")["storages"][0]["pending"] == 1, 20,
                   "the message waiting for its commit (linger)")

        gateway.process.send_signal(signal.SIGUSR2)
        wait_until(stepped.exists, 20, "the gateway's clock to step back")
        assert request(endpoint, "GET", "/status")["storages"][0]["pending"] == 1, "committed before the step"
        received(sock)
        wait_until(lambda: "WATCHDOG=1" in received(sock), 20, "a watchdog keep-alive after the step")
        db = str(tmp_path / "gateway.sqlite")
        prefix = realm.replace("-", "_")
        wait_until(lambda: len(rows(db, prefix)) == 1, 60, "the lingering batch committed after the step")

        publisher.publish_many([(topic, json.dumps({"n": 2}))])
        stored = wait_until(lambda: len(rows(db, prefix)) == 2 and rows(db, prefix), 60, "the second message")
        now = time.time()
        first, second = (seconds_of(iso) for iso, _ in stored)
        assert abs(first - now) < 120, stored  # received before the step
        assert abs(second - (now - HOUR)) < 120, stored  # after it: the time of day the stepped clock tells
        assert gateway.stop() == 0
    finally:
        publisher.close()
        sock.close()
        if gateway.process.poll() is None:
            gateway.kill()


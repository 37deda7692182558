"""
The ZeroMQ source with its peers in the test process (pyzmq): a SUB socket
connected to a PUB peer, and a PULL socket bound for PUSH peers, into SQLite.
At most once by nature: the test checks what arrives while connected is
stored, every message of a PUSH peer (which blocks rather than drops), and
multipart and single-frame messages.
"""

import json
import os
import textwrap
import time
import uuid

import pytest

from tests.gatewayproc import GatewayProcess, count_rows
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.integration

zmq = pytest.importorskip("zmq")


def config(directory, host, port, realm, mode) -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s
            control = off

            [broker:peer]
            type = zmq
            host = {host}
            port = {port}

            [storage:db]
            url = sqlite:///{directory}/gateway.sqlite

            [channel:main]
            topics = {realm}/#
            mode = {mode}
            """))
    return path


def test_sub_socket_stores_what_the_publisher_sends_while_connected(tmp_path):
    realm = f"z{uuid.uuid4().hex[:8]}"
    port = free_port()
    context = zmq.Context.instance()
    publisher = context.socket(zmq.PUB)
    publisher.bind(f"tcp://127.0.0.1:{port}")
    gateway = GatewayProcess(config(str(tmp_path), "127.0.0.1", port, realm, "sub"), str(tmp_path / "gw.log")).start()
    db = str(tmp_path / "gateway.sqlite")
    try:
        # ZeroMQ's slow joiner: a SUB socket misses what is published before its subscription reaches the
        # publisher. Probe until one arrives, then send the messages that count.
        probe = 0
        while count_rows(db, realm) == 0:
            publisher.send_multipart([f"{realm}/probe/gw/n/data.json".encode(), json.dumps({"probe": probe}).encode()])
            probe += 1
            time.sleep(0.05)
            assert probe < 400, "the SUB socket never received a probe"
        before = count_rows(db, realm)
        for seq in range(500):
            publisher.send_multipart([f"{realm}/net/gw/node-{seq % 5}/data.json".encode(),
                                      json.dumps({"seq": seq}).encode()])
        publisher.send(f"{realm}/net/gw/single/data.json {json.dumps({'seq': 500})}".encode())  # one frame
        publisher.send_multipart([b"other/net/gw/n/data.json", b'{"seq": -1}'])  # not subscribed
        wait_until(lambda: count_rows(db, realm) >= before + 501, 30, "501 rows")
        assert count_rows(db, realm) - before == 501
        assert gateway.stop() == 0
    finally:
        publisher.close()


def bound(socket, port: int) -> bool:
    try:
        socket.bind(f"tcp://127.0.0.1:{port}")
    except zmq.ZMQError:
        return False
    return True


def test_a_sub_socket_connects_again_when_its_peer_is_gone_without_a_word(tmp_path):
    """The publisher's host loses power, or a NAT forgets the connection: nothing tells the SUB socket, which
    never sends. The ZMTP heartbeats of the broker's keepalive do: it connects again and takes the messages of
    the publisher that replaced the old one (before them it waited on the dead connection for good)."""
    from tests.tcpforward import Forgetful

    realm = f"h{uuid.uuid4().hex[:8]}"
    port = free_port()
    context = zmq.Context.instance()
    publisher = context.socket(zmq.PUB)
    publisher.bind(f"tcp://127.0.0.1:{port}")
    forwarder = Forgetful(("127.0.0.1", port))
    path = config(str(tmp_path), "127.0.0.1", forwarder.port, realm, "sub")
    text = open(path).read().replace("port = ", "keepalive = 1\nport = ", 1)
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start()
    db = str(tmp_path / "gateway.sqlite")

    def probe_until_stored(node: str) -> None:
        from tests.gatewayproc import tables

        probe = 0
        while not any(table.startswith(realm) and node in table for table in tables(db)):
            publisher.send_multipart([f"{realm}/net/gw/{node}/data.json".encode(), json.dumps({"n": probe}).encode()])
            probe += 1
            time.sleep(0.05)
            assert probe < 1200, f"no message of {node} stored within a minute"

    try:
        probe_until_stored("before")
        assert forwarder.forget() == 1
        publisher.close(linger=0)
        publisher = context.socket(zmq.PUB)  # the peer's replacement, on the same address
        wait_until(lambda: bound(publisher, port), 30, "the port free again (ZeroMQ closes in its own thread)")
        probe_until_stored("after")
        assert gateway.stop() == 0
        lost = [e["message"] for e in gateway.events() if "lost the peer" in e.get("message", "")]
        assert lost == [f"ZeroMQ source main: lost the peer at tcp://127.0.0.1:{forwarder.port} (it closed the "
                        "connection, or answered nothing for 1.5 x keepalive; a peer that comes back each time and "
                        "goes again every 1.5 s answers no heartbeat: one older than ZMTP 3.1 (libzmq 4.2) needs "
                        "keepalive = 0); ZeroMQ connects again"]
    finally:
        publisher.close(linger=0)
        forwarder.close()


def test_pull_socket_bound_takes_every_message_of_a_push_peer(tmp_path):
    realm = f"y{uuid.uuid4().hex[:8]}"
    port = free_port()
    gateway = GatewayProcess(config(str(tmp_path), "*", port, realm, "pull"), str(tmp_path / "gw.log"))
    gateway.start(ready="PULL socket bound to")
    context = zmq.Context.instance()
    pusher = context.socket(zmq.PUSH)
    pusher.connect(f"tcp://127.0.0.1:{port}")
    try:
        for seq in range(2000):
            pusher.send_multipart([f"{realm}/net/gw/node-{seq % 4}/data.json".encode(), json.dumps({"seq": seq}).encode()])
        db = str(tmp_path / "gateway.sqlite")
        wait_until(lambda: count_rows(db, realm) == 2000, 30, "2,000 rows")
        assert gateway.stop() == 0
    finally:
        pusher.close(linger=0)


def test_a_message_over_max_payload_disconnects_its_peer_and_the_rest_flows(tmp_path):
    """A bound PULL socket takes what reaches its port: a peer's message over max_payload is refused by ZeroMQ
    (the peer is disconnected and connects again), never stored nor held; the peer's next message and another
    peer's are stored."""
    realm = f"m{uuid.uuid4().hex[:8]}"
    port = free_port()
    path = config(str(tmp_path), "*", port, realm, "pull")
    text = open(path).read().replace("port = ", "max_payload = 64kB\nport = ", 1)
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="PULL socket bound to")
    context = zmq.Context.instance()
    hostile, good = context.socket(zmq.PUSH), context.socket(zmq.PUSH)
    monitor = hostile.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    hostile.connect(f"tcp://127.0.0.1:{port}")
    good.connect(f"tcp://127.0.0.1:{port}")
    db = str(tmp_path / "gateway.sqlite")

    def next_event():
        from zmq.utils.monitor import recv_monitor_message

        assert monitor.poll(30_000), "no connection event of the hostile peer within 30 s"
        return recv_monitor_message(monitor)["event"]

    try:
        topic = f"{realm}/net/gw/node/data.json".encode()
        assert next_event() == zmq.EVENT_CONNECTED
        hostile.send_multipart([topic, json.dumps({"seq": 0, "big": "x" * 1_000_000}).encode()])
        assert next_event() == zmq.EVENT_DISCONNECTED  # the gateway's end refused it
        assert next_event() == zmq.EVENT_CONNECTED
        hostile.send_multipart([topic, json.dumps({"seq": 1}).encode()])
        for seq in range(2, 12):
            good.send_multipart([topic, json.dumps({"seq": seq}).encode()])
        wait_until(lambda: count_rows(db, realm) == 11, 60, "the eleven messages under the limit")
        assert gateway.stop() == 0
    finally:
        hostile.disable_monitor()
        monitor.close(linger=0)
        hostile.close(linger=0)
        good.close(linger=0)
    from tests.gatewayproc import query, tables

    table = next(t for t in tables(db) if t.startswith(realm))
    assert sorted(row[0] for row in query(db, f'SELECT seq FROM "{table}"')) == list(range(1, 12))


def test_pull_with_the_database_away_for_20_seconds(tmp_path):
    """What the gateway receives while PostgreSQL is away is spooled and stored after: nothing it received is lost."""
    from tests.faults import wait_for_rows
    from tests.integration.test_faults import pg_count, pg_seqs
    from tests.servers import PostgreSQL

    database = PostgreSQL().start()
    realm = f"x{uuid.uuid4().hex[:8]}"
    port = free_port()
    path = config(str(tmp_path), "*", port, realm, "pull")
    text = open(path).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite", f"url = {database.url}")
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="PULL socket bound to")
    pusher = zmq.Context.instance().socket(zmq.PUSH)
    pusher.connect(f"tcp://127.0.0.1:{port}")
    try:
        def send(first, count):
            for seq in range(first, first + count):
                pusher.send_multipart([f"{realm}/net/gw/node-{seq % 4}/data.json".encode(),
                                       json.dumps({"seq": seq}).encode()])
                time.sleep(1 / 300)

        send(0, 600)
        wait_for_rows(lambda: pg_count(database.url, realm), 600, 30, "the first rows")
        database.halt()
        send(600, 3000)  # 10 s of messages while the database is away
        time.sleep(10)
        database.resume()
        wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), 3600, 120, "all 3,600 messages")
        assert gateway.stop() == 0
        assert set(pg_seqs(database.url, realm)) == set(range(3600))
        assert max(e.get("spooled", 0) for e in gateway.events() if e.get("event") == "storage_stats") >= 1
    finally:
        pusher.close(linger=0)
        database.stop()


def test_an_unreachable_peer_is_one_clear_line_and_a_status_entry(tmp_path):
    import subprocess
    import sys

    from lorrygate.control_client import request

    realm = f"v{uuid.uuid4().hex[:8]}"
    control = free_port()
    path = config(str(tmp_path), "127.0.0.1", free_port(), realm, "sub")
    text = open(path).read().replace("control = off", f"control = tcp:{control}:interface=127.0.0.1")
    open(path, "w").write(text)
    log = open(tmp_path / "gw.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", path], stdout=log, stderr=subprocess.STDOUT)
    try:
        def errors():
            lines = (tmp_path / "gw.log").read_text().splitlines()
            return [json.loads(line) for line in lines if "ZeroMQ source" in line and "cannot reach" in line]

        wait_until(errors, 30, "the unreachable peer logged")
        source = request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")["sources"][0]
        assert not source["connected"] and "cannot reach tcp://127.0.0.1" in source["last_error"]
        assert len(errors()) == 1, "one line, not one per retry"
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()

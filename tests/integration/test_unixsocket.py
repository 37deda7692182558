"""The Unix socket source: local writers, lines, length-prefixed frames and datagrams, into SQLite."""

import json
import os
import socket
import stat
import struct
import textwrap
import uuid

import pytest

from tests.gatewayproc import GatewayProcess, count_rows, query, tables
from tests.servers import wait_until

pytestmark = pytest.mark.integration


def config(directory, realm, framing) -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            control = off

            [source:local]
            type = socket
            path = run/sensors.sock
            framing = {framing}
            mode = 600
            topic = {realm}/net/gw/local/data.json

            [storage:db]
            url = sqlite:///{directory}/gateway.sqlite

            [channel:main]
            source = local
            topics = {realm}/#
            """))
    return path


@pytest.mark.parametrize("framing", ["lines", "length", "datagram"])
def test_local_writers_are_stored(tmp_path, framing):
    realm = f"u{uuid.uuid4().hex[:8]}"
    # a stale socket file from a gateway that died is replaced
    (tmp_path / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "run" / "sensors.sock"))
    stale.close()
    gateway = GatewayProcess(config(str(tmp_path), realm, framing), str(tmp_path / "gw.log"))
    gateway.start(ready="listening on")
    path = str(tmp_path / "run" / "sensors.sock")  # relative to the config's folder
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    documents = [json.dumps({"seq": n, "temperature": 20 + n % 7}).encode() for n in range(1000)]
    if framing == "datagram":
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for document in documents:
            client.sendto(document, path)
    else:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        if framing == "lines":
            client.sendall(b"".join(document + b"\n" for document in documents))
        else:
            client.sendall(b"".join(struct.pack(">I", len(document)) + document for document in documents))
    client.close()
    db = str(tmp_path / "gateway.sqlite")
    wait_until(lambda: count_rows(db, realm) == 1000, 30, "1,000 rows")
    assert gateway.stop() == 0


def test_a_last_line_without_its_newline_is_a_message_and_a_frame_cut_short_is_said(tmp_path):
    """A writer whose last line has no newline (printf '%s' "$json" | socat - UNIX-CONNECT:...) ends it by
    closing: that line is stored. A writer that closes inside a length-prefixed frame: the part is no message,
    and the log says so."""
    realm = f"n{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(config(str(tmp_path), realm, "lines"), str(tmp_path / "gw.log"))
    gateway.start(ready="listening on")
    path = str(tmp_path / "run" / "sensors.sock")
    for payload in (b'{"seq": 1}\n{"seq": 2}\r\n{"seq": 3}', b'{"seq": 4}\r'):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.sendall(payload)
        client.close()
    db = str(tmp_path / "gateway.sqlite")
    wait_until(lambda: count_rows(db, realm) == 4, 30, "4 rows")
    assert gateway.stop() == 0
    table = next(t for t in tables(db) if t.startswith(realm))
    assert sorted(row[0] for row in query(db, f'SELECT seq FROM "{table}"')) == [1, 2, 3, 4]

    framed = tmp_path / "framed"
    framed.mkdir()
    gateway = GatewayProcess(config(str(framed), realm, "length"), str(framed / "gw.log"))
    gateway.start(ready="listening on")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(framed / "run" / "sensors.sock"))
    client.sendall(struct.pack(">I", 10) + b'{"seq": 5}' + struct.pack(">I", 10) + b'{"se')
    client.close()
    wait_until(lambda: any("into a message" in e.get("message", "") for e in gateway.events()), 30, "the warning")
    assert gateway.stop() == 0
    assert count_rows(str(framed / "gateway.sqlite"), realm) == 1
    said = next(e["message"] for e in gateway.events() if "into a message" in e.get("message", ""))
    assert "a client closed its connection 8 byte(s) into a message" in said, said


def test_three_writers_at_once_and_one_that_sends_a_10_mb_line(tmp_path):
    import threading

    realm = f"m{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(config(str(tmp_path), realm, "lines"), str(tmp_path / "gw.log"))
    gateway.start(ready="listening on")
    path = str(tmp_path / "run" / "sensors.sock")
    answers = {}

    def writer(n):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.sendall(b"".join(json.dumps({"writer": n, "seq": i}).encode() + b"\n" for i in range(10_000)))
        client.close()

    def flooder():
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        try:
            client.sendall(b"x" * (10 << 20) + b"\n")
        except OSError:
            pass  # the gateway closed the connection
        client.settimeout(10)
        try:
            answers["flooder"] = client.recv(200)
        except OSError as exc:
            answers["flooder"] = repr(exc).encode()
        client.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [threading.Thread(target=flooder)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    db = str(tmp_path / "gateway.sqlite")
    wait_until(lambda: count_rows(db, realm) == 30_000, 60, "30,000 rows")
    assert gateway.stop() == 0
    assert answers["flooder"].startswith(b"error: a line longer than 8388608 bytes; closing"), answers
    assert any("over 8388608 bytes; its connection is closed" in e.get("message", "") for e in gateway.events())

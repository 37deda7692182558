"""
PostgreSQL behind a black hole: its packets dropped without an answer, as when its host dies or a NAT or
firewall on the way forgets the connection. A write then waited for an answer for good (no TCP keepalives,
and ~15 minutes before the kernel gives up on data sent): the storage said nothing, its rows pending, no
spool, the sources paused and the broker's queue filling. The server sits in a network namespace of its own
behind a veth link that the test takes down (it needs root, for ``ip netns``; it is skipped without).
"""

import json
import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from tests.gatewayproc import GatewayProcess, Publisher, write_config
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.integration


def _ip(*words: str) -> None:
    subprocess.run(["ip", *words], check=True, capture_output=True, timeout=30)


@pytest.fixture
def black_hole(postgres):
    """(the address of a PostgreSQL that a link stands before, a function that takes the link down or up)."""
    tag = uuid.uuid4().hex[:6]
    namespace, outside, inside = f"lg-{tag}", f"lgo{tag}", f"lgi{tag}"
    subnet = f"10.{int(tag[:2], 16)}.{int(tag[2:4], 16)}"
    try:
        _ip("netns", "add", namespace)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no network namespace here (ip netns needs root): {exc}")
    forwarders = []
    try:
        try:
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("addr", "add", f"{subnet}.1/24", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.2/24", "dev", inside)
            _ip("netns", "exec", namespace, "ip", "link", "set", inside, "up")
            _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"no veth link into a network namespace here: {exc.stderr.strip()}")
        # the server listens on loopback: a forwarder outside on the link's address, one inside before it
        port = free_port()
        for command in ([sys.executable, "-m", "tests.tcpforward", f"{subnet}.1", str(port), "127.0.0.1",
                         str(postgres.port)],
                        ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.tcpforward", f"{subnet}.2",
                         "5432", f"{subnet}.1", str(port)]):
            forwarder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            forwarders.append(forwarder)
            assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "listening"

        def link(up: bool) -> None:
            _ip("link", "set", outside, "up" if up else "down")

        yield f"{subnet}.2", link
    finally:
        for forwarder in forwarders:
            forwarder.kill()
            forwarder.wait()
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "delete", outside], capture_output=True, timeout=30)


def _seqs(url: str, schema: str) -> list:
    try:
        with psycopg.connect(url) as conn:
            return [seq for (seq,) in conn.execute(f'SELECT seq FROM "{schema}"."gw_n_sensors" ORDER BY seq')]
    except psycopg.Error:
        return []


def test_a_write_into_a_black_hole_fails_is_spooled_and_drains_when_the_server_is_back(tmp_path, mosquitto,
                                                                                       postgres, black_hole):
    """The connection's TCP keepalives and user timeout, lorrygate's defaults (about 25 s waiting for an answer, 30
    s of data sent unanswered), end the write; the batch goes to the spool, and into the database once the link is
    back: every message stored. Before, the write waited, and nothing was spooled."""
    host, link = black_hole
    realm = f"b{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    url = f"postgresql://{postgres.user}@{host}:5432/postgres?connect_timeout=3"
    text = open(config).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite", f"url = {url}")
    open(config, "w").write(text.replace("synchronous = NORMAL\n", ""))
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    topic = f"{realm}/net/gw/n/data.json"
    publisher.publish_many([(topic, json.dumps({"seq": n})) for n in range(10)])
    wait_until(lambda: len(_seqs(postgres.url, f"{realm}_net")) == 10, 30, "the first rows")
    link(False)
    publisher.publish_many([(topic, json.dumps({"seq": n})) for n in range(10, 20)])
    wait_until(lambda: "spooling to disk while it is down" in gateway.text(), 90, "the write to fail and be spooled")
    # (what the gateway acknowledged to the broker meanwhile: on disk, not in memory)
    wait_until(lambda: any(name.endswith(".batch") for name in os.listdir(tmp_path / "spool" / "db")), 30,
               "a batch in the spool")
    link(True)
    wait_until(lambda: len(_seqs(postgres.url, f"{realm}_net")) >= 20, 60, "the spooled rows")
    publisher.close()
    assert gateway.stop() == 0
    assert sorted(set(_seqs(postgres.url, f"{realm}_net"))) == list(range(20))

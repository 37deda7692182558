"""
Peers behind a black hole: their packets dropped without an answer, as when a host dies or a NAT or firewall
on the way forgets the connection (`tests.blackhole`: a network namespace behind a veth link that the test
takes down; it needs root, for ``ip netns``, and is skipped without). Without TCP keepalives, and ~15 minutes
before the kernel gives up on data sent, nothing told lorrygate:

- PostgreSQL: a write waited for an answer for good: the storage said nothing, its rows pending, no spool,
  the sources paused and the broker's queue filling;
- a Redis pub/sub source: its status said connected, and it took no message, for a quarter of an hour.
"""

import json
import os
import uuid

import psycopg
import pytest

from tests.blackhole import black_hole as black_hole_before
from tests.gatewayproc import GatewayProcess, Publisher, tables, write_config
from tests.integration.test_redis import config as redis_config
from tests.integration.test_redis import redis_server  # noqa: F401 - the fixture
from tests.servers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def black_hole(postgres):
    """(the address of a PostgreSQL that a link stands before, a function that takes the link down or up)."""
    with black_hole_before(postgres.port, 5432) as (host, link):
        yield host, link


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


def test_a_redis_pubsub_source_behind_a_black_hole_says_so_and_subscribes_again(tmp_path, redis_server):  # noqa: F811
    """Pub/sub sends nothing but its health check's PING, which waited unanswered; now its TCP keepalives and user
    timeout end the connection within about half a minute: the source says it cannot reach Redis and tries
    again, and once the link is back it subscribes again and stores what is published."""
    with black_hole_before(redis_server.port, 6379) as (host, link):
        realm = f"p{uuid.uuid4().hex[:8]}"
        db = str(tmp_path / "gateway.sqlite")
        path = redis_config(str(tmp_path), redis_server.port, realm, f"sqlite:///{db}", channel="mode = pubsub\n")
        text = open(path).read().replace(f"topics = {realm}-stream", f"topics = {realm}/#")
        text = text.replace("host = 127.0.0.1", f"host = {host}").replace(f"port = {redis_server.port}", "port = 6379")
        open(path, "w").write(text.replace("reconnect_max_delay = 1s", "reconnect_max_delay = 2s\nconnect_timeout = 2s"))
        gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start()
        client = redis_server.client()

        def stored(node: str) -> bool:
            client.publish(f"{realm}/net/gw/{node}/data.json", '{"n": 1}')  # (until one arrives: at most once)
            return any(table.startswith(realm) and node in table for table in tables(db))

        wait_until(lambda: stored("before"), 60, "a message stored", interval=0.2)
        link(False)
        wait_until(lambda: any(e.get("level") == "error" and "Redis source main" in e.get("message", "")
                               for e in gateway.events()), 90, "the source to find the connection dead")
        link(True)
        wait_until(lambda: stored("after"), 90, "a message stored after the link is back", interval=0.2)
        assert gateway.stop() == 0

"""The CrateDB writer over real HTTP sockets, against the fake that follows CrateDB's documented
responses (tests/fakecrate.py); and, when LORRYGATE_CRATEDB_URL is set, against a real CrateDB."""

import json
import os
import urllib.request
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.server import Site

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.cratedb import CrateStorage, make_client
from tests.doubles import Ack, Source
from tests.fakecrate import FakeCrate
from tests.gatewayproc import GatewayProcess, Publisher, write_config
from tests.servers import free_port, wait_until


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_retried_with_backoff_under_backpressure():
    """With nothing listening, writes fail and are retried with growing delays while the source stays
    paused; once the endpoint answers, every row is stored once and acknowledged."""
    port = free_port()
    store = CrateStorage("crate", f"http://127.0.0.1:{port}", reactor, http=make_client(reactor, False, ""))
    batcher = Batcher(store, reactor, max_rows=10, max_pending=10, retry_initial=0.2, retry_max=1.0)
    source = Source()
    batcher.attach(source)
    acks = [Ack() for _ in range(10)]
    table = TableName("crate_test", "refused_sensors")
    for n, ack in enumerate(acks):
        message = Message("t", b"{}", 1, False, 1.0, "#", ack)
        batcher.add(Entry(table, [Record(1_717_243_200_000_000_000 + n, {"n": n})], "main", message))
    await deferLater(reactor, 2.5, lambda: None)
    # backoff 0.2, 0.4, 0.8 s: three or four attempts in 2.5 s, not dozens
    assert 3 <= batcher.stats.failures <= 5 and "unreachable" in batcher.stats.last_error
    assert source.paused and sum(a.count for a in acks) == 0
    fake = FakeCrate()
    listening = reactor.listenTCP(port, Site(fake), interface="127.0.0.1")
    try:
        for _ in range(40):
            if all(a.count for a in acks):
                break
            await deferLater(reactor, 0.1, lambda: None)
    finally:
        await listening.stopListening()
    assert [a.count for a in acks] == [1] * 10
    assert sorted(row["fields"]["n"] for row in fake.rows("crate_test", "refused_sensors")) == list(range(10))
    assert not source.paused


CRATE_URL = os.environ.get("LORRYGATE_CRATEDB_URL")


def crate_sql(statement):
    request = urllib.request.Request(f"{CRATE_URL.rstrip('/')}/_sql", data=json.dumps({"stmt": statement}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.skipif(not CRATE_URL, reason="LORRYGATE_CRATEDB_URL is not set (see docs/storage.rst: docker compose up)")
def test_real_cratedb_end_to_end(tmp_path, mosquitto):
    """Against a real CrateDB: 1,000 messages over 10 addresses land in 10 tables; a type conflict is a dead letter."""
    realm = f"crate{uuid.uuid4().hex[:6]}"
    url = CRATE_URL.replace("http://", "crate://").replace("https://", "crate+https://")
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                                       f"url = {url}\nreplicas = 0")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node-{n % 10}/data.json", json.dumps({"n": n, "t": n * 0.5}))
                           for n in range(1000))
    publisher.publish_many([(f"{realm}/net/gw/node-0/data.json", json.dumps({"n": "not a number"}))])

    def stored():
        total = 0
        for n in range(10):
            try:
                crate_sql(f'REFRESH TABLE "{realm}_net"."gw_node_{n}_sensors"')
                total += crate_sql(f'SELECT count(*) FROM "{realm}_net"."gw_node_{n}_sensors"')["rows"][0][0]
            except Exception:
                pass
        return total >= 1000

    wait_until(stored, 120, "1,000 rows in CrateDB", interval=1)
    assert gateway.stop() == 0
    crate_sql('REFRESH TABLE "doc"."lorrygate_dead_letter"')
    rows = crate_sql(f"SELECT error FROM doc.lorrygate_dead_letter WHERE topic LIKE '{realm}/%'")["rows"]
    assert rows and "4000" in rows[0][0]  # a value that cannot be cast to the DOUBLE column: the whole request, bisected


@pytest_twisted.ensureDeferred
async def test_gateway_writes_to_the_crate_fake_over_http(tmp_path, mosquitto):
    """The gateway process, configured with a crate:// URL, writes each address into its own table of the
    fake (which checks every statement against CrateDB's grammar), and a type conflict becomes a dead letter."""
    fake = FakeCrate()
    port = free_port()
    listening = reactor.listenTCP(port, Site(fake), interface="127.0.0.1")
    realm = f"cr{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                                       f"url = crate://127.0.0.1:{port}/\nreplicas = 0-1\nidempotent = true")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    await reactor_thread(gateway.start)
    publisher = Publisher(mosquitto.port)
    messages = [(f"{realm}/net/gw/node-{n % 3}/data.json", json.dumps({"n": n, "time": 1_717_243_200_000 + n}))
                for n in range(30)]
    messages.append((f"{realm}/net/gw/node-0/data.json", json.dumps({"n": "text", "time": 1_717_243_300_000})))
    await reactor_thread(publisher.publish_many, messages)
    for _ in range(100):
        stored = sum(len(t["rows"]) for (s, _), t in fake.tables.items() if s == f"{realm}_net")
        dead = len(fake.tables.get(("doc", "lorrygate_dead_letter"), {"rows": []})["rows"])
        if stored >= 30 and dead >= 1:
            break
        await deferLater(reactor, 0.1, lambda: None)
    assert await reactor_thread(gateway.stop) == 0
    publisher.close()
    await listening.stopListening()
    assert sorted(t for s, t in fake.tables if s == f"{realm}_net") == [f"gw_node_{n}_sensors" for n in range(3)]
    assert stored == 30 and dead == 1
    assert "PRIMARY KEY" in fake.tables[(f"{realm}_net", "gw_node_0_sensors")]["ddl"]


def reactor_thread(function, *args):
    from twisted.internet.threads import deferToThread

    return deferToThread(function, *args)

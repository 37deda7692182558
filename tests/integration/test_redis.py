"""
The Redis source against a real Redis (Debian's redis-server, on its own
port): Streams with a consumer group into PostgreSQL and SQLite, XACK only
after commit, so a SIGKILL mid-stream and a database away for 20 s lose
nothing; entries a crashed consumer left pending are claimed; pub/sub is at
most once; a wrong password and an unreachable host are one clear line each.
"""

import collections
import json
import os
import signal
import textwrap
import threading
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from tests.faults import report, wait_for_rows
from tests.gatewayproc import GatewayProcess, count_rows, query, tables
from tests.integration.test_amqp import postgres_per_test, until  # noqa: F401 - the fixture
from tests.servers import Redis, free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path):
    (tmp_path / "redis").mkdir()
    server = Redis(str(tmp_path / "redis")).start()
    yield server
    server.stop()


class StreamWriter:
    """XADDs ``count`` entries {topic, payload {"seq": n}} to a stream from a thread, 500 a pipeline."""

    def __init__(self, server, stream: str, topics, count: int, rate: float):
        self.server, self.stream, self.topics, self.count, self.rate = server, stream, topics, count, rate
        self.written = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = self.server.client()
        start = time.monotonic()
        pipe = client.pipeline(transaction=False)
        for seq in range(self.count):
            delay = start + seq / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = json.dumps({"seq": seq, "time": 1_717_243_200_000 + seq, "value": seq * 0.25})
            pipe.xadd(self.stream, {"topic": self.topics[seq % len(self.topics)], "payload": body})
            if seq % 500 == 499 or seq == self.count - 1:
                pipe.execute()
                self.written = seq + 1
        client.close()

    def start(self) -> "StreamWriter":
        self._thread.start()
        return self

    def finish(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert self.written == self.count


def config(directory, port, realm, url, channel="", storage="") -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            stats_interval = 1s
            control = tcp:{free_port()}:interface=127.0.0.1

            [broker:redis]
            type = redis
            host = 127.0.0.1
            port = {port}
            password = secret
            reconnect_max_delay = 1s

            [storage:db]
            url = {url}
            """) + textwrap.dedent(storage) + textwrap.dedent(f"""
            [channel:main]
            topics = {realm}-stream
            """) + textwrap.dedent(channel))
    return path


def topics(realm, nodes=10):
    return [f"{realm}/net/gw/node-{n}/data.json" for n in range(nodes)]


def sqlite_seqs(db, prefix):
    return [row[0] for table in tables(db) if table.startswith(prefix) for row in query(db, f'SELECT seq FROM "{table}"')]


def test_redis_streams_into_postgresql_survive_a_sigkill(tmp_path, redis_server, postgres):
    from tests.integration.test_faults import pg_seqs

    started = time.monotonic()
    realm = f"s{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(config(str(tmp_path), redis_server.port, realm, postgres.url),
                             str(tmp_path / "gw.log")).start()
    writer = StreamWriter(redis_server, f"{realm}-stream", topics(realm), 20_000, rate=4000).start()
    wait_until(lambda: len(pg_seqs(postgres.url, realm)) >= 5_000, 60, "5,000 rows", interval=0.1)
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    gateway.start()
    writer.finish()
    wait_for_rows(lambda: len(set(pg_seqs(postgres.url, realm))), 20_000, 120, "all 20,000 entries")
    assert gateway.stop() == 0
    seqs = pg_seqs(postgres.url, realm)
    report("Redis Streams, SIGKILL", 20_000, seqs, started)
    assert set(seqs) == set(range(20_000))
    client = redis_server.client()
    assert client.xpending(f"{realm}-stream", "lorrygate")["pending"] == 0, "every entry acknowledged"


def test_redis_streams_with_the_database_away_for_20_seconds(tmp_path, redis_server, postgres_per_test):  # noqa: F811
    from tests.integration.test_faults import pg_count, pg_seqs

    database = postgres_per_test
    started = time.monotonic()
    realm = f"d{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(config(str(tmp_path), redis_server.port, realm, database.url),
                             str(tmp_path / "gw.log")).start()
    writer = StreamWriter(redis_server, f"{realm}-stream", topics(realm), 8_000, rate=300).start()
    wait_for_rows(lambda: pg_count(database.url, realm), 500, 30, "the first rows")
    database.halt()
    time.sleep(20)
    database.resume()
    writer.finish()
    wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), 8_000, 120, "all 8,000 entries")
    assert gateway.stop() == 0
    seqs = pg_seqs(database.url, realm)
    report("Redis Streams, PostgreSQL down 20 s", 8_000, seqs, started)
    assert set(seqs) == set(range(8_000))
    assert max(e.get("spooled", 0) for e in gateway.events() if e.get("event") == "storage_stats") >= 1


def test_entries_a_crashed_consumer_left_pending_are_claimed(tmp_path, redis_server):
    realm = f"p{uuid.uuid4().hex[:8]}"
    stream = f"{realm}-stream"
    client = redis_server.client()
    client.xgroup_create(stream, "lorrygate", id="0", mkstream=True)
    for seq in range(50):
        client.xadd(stream, {"topic": f"{realm}/net/gw/n/data.json", "payload": json.dumps({"seq": seq})})
    # Another gateway read them and died before acknowledging.
    client.xreadgroup("lorrygate", "crashed-gateway", {stream: ">"}, count=100)
    assert client.xpending(stream, "lorrygate")["pending"] == 50
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), redis_server.port, realm, f"sqlite:///{db}",
                                    channel="claim_idle = 1s\n"), str(tmp_path / "gw.log")).start()
    wait_until(lambda: count_rows(db, realm) == 50, 30, "the claimed entries stored")
    wait_until(lambda: client.xpending(stream, "lorrygate")["pending"] == 0, 30, "the claimed entries acknowledged")
    assert gateway.stop() == 0
    assert any("claimed 50 entries" in e.get("message", "") for e in gateway.events())


def test_pubsub_is_at_most_once_and_stores_what_arrives(tmp_path, redis_server):
    realm = f"u{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    path = config(str(tmp_path), redis_server.port, realm, f"sqlite:///{db}", channel="mode = pubsub\n")
    text = open(path).read().replace(f"topics = {realm}-stream", f"topics = {realm}/#")
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log")).start()
    wait_until(lambda: any("at most once" in e.get("message", "") for e in gateway.events()), 30, "the subscription")
    client = redis_server.client()
    wait_until(lambda: client.pubsub_numpat() >= 1, 30, "the pattern subscription on the server")
    for seq in range(100):
        client.publish(f"{realm}/net/gw/node-{seq % 3}/data.json", json.dumps({"seq": seq}))
    wait_until(lambda: count_rows(db, realm) == 100, 30, "100 rows")
    assert gateway.stop() == 0


@pytest.mark.parametrize("problem", ["password", "host"])
def test_a_wrong_password_or_host_is_one_clear_line_and_a_status_entry(tmp_path, redis_server, problem):
    import subprocess
    import sys

    from lorrygate.control_client import request

    realm = f"w{uuid.uuid4().hex[:8]}"
    port = redis_server.port if problem == "password" else free_port()
    path = config(str(tmp_path), port, realm, f"sqlite:///{tmp_path}/x.sqlite")
    text = open(path).read()
    if problem == "password":
        text = text.replace("password = secret", "password = wrong")
    open(path, "w").write(text)
    control = int(text.split("control = tcp:")[1].split(":")[0])
    log = open(tmp_path / "gw.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", path], stdout=log,
                               stderr=subprocess.STDOUT)
    expected = "refused the credentials" if problem == "password" else "cannot reach redis"
    try:
        def failures():
            lines = (tmp_path / "gw.log").read_text().splitlines()
            return [json.loads(line) for line in lines if "Redis source" in line and "next try" in line]

        wait_until(lambda: len(failures()) >= 3, 60, "three failed attempts")
        assert all(expected in e["message"].lower() for e in failures()), failures()
        assert "Traceback" not in (tmp_path / "gw.log").read_text()
        source = request(f"tcp:{control}:interface=127.0.0.1", "GET", "/status")["sources"][0]
        assert not source["connected"] and expected in source["last_error"].lower(), source
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()


@pytest_twisted.ensureDeferred
async def test_entries_in_flight_are_handed_over_once_across_a_lost_connection_and_a_claiming_peer(redis_server):
    """Entries held longer than ``claim_idle`` (a storage paused or slow) while the connection is killed and a
    second consumer of the group claims what is idle: each is handed over once. The source used to hand them
    over again to itself (its own claim, and the reading of its pending entries after the reconnection), and
    the peer took them too: every entry stored up to four times."""
    from twisted.internet import reactor

    from lorrygate.config import values as v
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.redis import RedisSource

    stream = f"f{uuid.uuid4().hex[:8]}-stream"
    client = redis_server.client()
    for seq in range(200):
        client.xadd(stream, {"topic": "r/net/gw/n/data.json", "payload": json.dumps({"seq": seq})})
    broker = BrokerSettings(name="redis", host="127.0.0.1", port=redis_server.port, type="redis",
                            password=v.Secret(redis_server.password), reconnect_max_delay=0.2)
    held, seen = [], []

    def hold(message):
        held.append(message)
        seen.append(message.ack.entry)

    def store(message):
        seen.append(message.ack.entry)
        message.ack.ack()

    # Both claim what is idle for 2 s; the first keeps what it holds under 1 s idle (a margin of 1 s).
    ours = RedisSource("held", broker, (stream,), hold, reactor, consumer="ours", claim_idle=2.0)
    peer = RedisSource("peer", broker, (stream,), store, reactor, consumer="peer", claim_idle=2.0)
    ours.startService()
    try:
        await until(lambda: len(held) == 200, "the first consumer to read the 200 entries")
        peer.startService()
        await until(lambda: peer.connected, "the peer to connect")
        for entry in client.client_list():
            if entry.get("name") == "lorrygate-held":
                client.client_kill_filter(_id=entry["id"])
        for seq in range(200, 250):
            client.xadd(stream, {"topic": "r/net/gw/n/data.json", "payload": json.dumps({"seq": seq})})
        await until(lambda: len(seen) >= 250, "the 50 entries written after the kill")
        # Held past claim_idle twice over: the peer claims every 2 s, and so does the first consumer itself.
        await deferLater(reactor, 4.5, lambda: None)
        for message in held:
            message.ack.ack()
        await until(lambda: client.xpending(stream, "lorrygate")["pending"] == 0, "every entry acknowledged")
    finally:
        await ours.stopService()
        if peer.running:
            await peer.stopService()
    repeated = {entry: count for entry, count in collections.Counter(seen).items() if count > 1}
    assert len(seen) == 250 and not repeated, f"{len(repeated)} entries handed over more than once"


@pytest_twisted.ensureDeferred
async def test_entries_held_across_a_redis_restart_are_not_handed_over_again(redis_server):
    """Redis restarted (append-only file) while entries are in flight: after the reconnection the consumer
    reads its pending entries again, and those it still holds are not handed over a second time (they
    were: every held entry stored twice after a broker restart)."""
    from twisted.internet import reactor

    from lorrygate.config import values as v
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.redis import RedisSource

    stream = f"r{uuid.uuid4().hex[:8]}-stream"
    client = redis_server.client()
    for seq in range(100):
        client.xadd(stream, {"topic": "r/net/gw/n/data.json", "payload": json.dumps({"seq": seq})})
    broker = BrokerSettings(name="redis", host="127.0.0.1", port=redis_server.port, type="redis",
                            password=v.Secret(redis_server.password), reconnect_max_delay=0.2, connect_timeout=1)
    held, seen = [], []

    def hold(message):
        held.append(message)
        seen.append(message.ack.entry)

    source = RedisSource("restart", broker, (stream,), hold, reactor, consumer="ours")
    source.startService()
    try:
        await until(lambda: len(held) == 100, "the 100 entries read")
        redis_server.stop()
        await until(lambda: not source.connected, "the source to see Redis gone")
        redis_server.start()
        client = redis_server.client()
        for seq in range(100, 120):
            client.xadd(stream, {"topic": "r/net/gw/n/data.json", "payload": json.dumps({"seq": seq})})
        # New entries come after the consumer's own pending ones: once they are here, those were read.
        await until(lambda: len(set(seen)) >= 120, "the 20 entries written after the restart")
        for message in held:
            message.ack.ack()
        await until(lambda: client.xpending(stream, "lorrygate")["pending"] == 0, "every entry acknowledged")
    finally:
        await source.stopService()
    assert len(seen) == len(set(seen)) == 120, f"{len(seen) - len(set(seen))} entries handed over twice"


def test_the_groups_lag_is_in_the_status_and_goes_back_to_zero(tmp_path, redis_server, postgres_per_test):  # noqa: F811
    """While the database is away (no spool), the entries the group has not acknowledged (pending here, or not
    read yet) show in the status and in lorrygate_source_lag; once stored, none."""
    from tests.faults import lag_held_and_released
    from tests.integration.test_faults import pg_seqs

    database = postgres_per_test
    realm = f"g{uuid.uuid4().hex[:8]}"
    path = config(str(tmp_path), redis_server.port, realm, database.url, storage="spool = false\n")
    writer = StreamWriter(redis_server, f"{realm}-stream", topics(realm), 300, rate=1000)
    lag_held_and_released(path, str(tmp_path / "gw.log"), database, lambda: writer.start().finish(), 300,
                          lambda: pg_seqs(database.url, realm))


def test_an_entrys_fields_beside_its_payload_are_the_headers_the_channel_stores_as_tags(tmp_path, redis_server):
    """A stream entry's fields other than its topic and payload were dropped; they are its headers, stored as
    the tags the channel's ``headers`` names. An entry without a payload field is its fields as JSON, as before."""
    realm = f"rh{uuid.uuid4().hex[:8]}"
    stream = f"{realm}-stream"
    client = redis_server.client()
    client.xgroup_create(stream, "lorrygate", id="0", mkstream=True)
    topic = f"{realm}/net/gw/n/data.json"
    client.xadd(stream, {"topic": topic, "payload": json.dumps({"seq": 1}), "device-id": "d-17", "zone": "a"})
    client.xadd(stream, {"topic": topic, "seq": "2", "device-id": "d-18"})
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), redis_server.port, realm, f"sqlite:///{db}",
                                    channel="headers = device-id:device, zone\n"), str(tmp_path / "gw.log")).start()
    try:
        wait_until(lambda: count_rows(db, realm) == 2, 30, "both entries stored")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    table = f"{realm}_net__gw_n_sensors"
    assert query(db, f'SELECT seq, device, zone FROM "{table}" ORDER BY seq') == [
        (1, "d-17", "a"), (2, None, None)]
    assert query(db, f'SELECT "device-id" FROM "{table}" WHERE seq = 2') == [("d-18",)]


def test_an_entrys_rows_without_a_time_are_stored_at_the_time_of_its_id(tmp_path, redis_server):
    """A stream entry's id is the time Redis added it: a row whose payload has no time is stored at it (a
    backlog was stored at the drain's minutes); an id its writer gave as a sequence number (``5-0``) is no
    time, and the row has the receive time."""
    realm = f"rt{uuid.uuid4().hex[:8]}"
    stream = f"{realm}-stream"
    client = redis_server.client()
    client.xgroup_create(stream, "lorrygate", id="0", mkstream=True)
    topic = f"{realm}/net/gw/n/data.json"
    client.xadd(stream, {"topic": topic, "payload": json.dumps({"seq": 1})}, id="5-0")
    client.xadd(stream, {"topic": topic, "payload": json.dumps({"seq": 2})}, id="1717243200123-0")
    before = time.time()
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config(str(tmp_path), redis_server.port, realm, f"sqlite:///{db}"),
                             str(tmp_path / "gw.log")).start()
    try:
        wait_until(lambda: count_rows(db, realm) == 2, 30, "both entries stored")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    rows = dict(query(db, f'SELECT seq, "time" FROM "{realm}_net__gw_n_sensors"'))
    assert rows[2] == "2024-06-01T12:00:00.123000000Z"
    assert rows[1] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1)), rows

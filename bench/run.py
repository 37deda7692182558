"""
lorrygate's benchmark: ratios measured in one run against references
measured in the same run, so that a noisy machine does not matter.

    python bench/run.py [--quick] [--runs 3] [--out bench/results]

Scenarios (each run three times; the report gives median and min-max):

1. drain: N messages queued in the broker for persistent sessions while
   nothing reads them; then time until all N rows are committed (SQLite,
   PostgreSQL). Reference: mosquitto_sub draining the same queue for its own
   session. Reports lorrygate / mosquitto_sub.
2. live: steady 2,000, 10,000 and 20,000 msg/s for 20 s each, after one
   warm-up message per node (the tables exist, as in a running fleet);
   publish-to-commit latency p50/p99 (the payload carries the publish time,
   the table a commit-time default) and whether the gateway kept up (its
   last commit within a second of the last publication); then
   10,000 msg/s over 10,000 existing tables (a fleet's case, reported), into
   a gateway started after the one that created them.
3. tables: the drain over 1, 100 and 10,000 nodes (tables); rate and the
   gateway's peak RSS (VmHWM); and 10,000 nodes in SQLite's per-network
   layout (one table, a view per node; reported).
4. peer: LorryStream (``lorry relay``, in its own virtualenv) storing the
   same kind of stream into SQLite; reports lorrygate / LorryStream.
5. amqp: N messages queued in a RabbitMQ (a node of its own) for three
   queues bound to the same exchange; then drained by a minimal consumer
   written with pika (prefetch 2000, one ``basic.ack`` with ``multiple`` per
   1,000; there is no RabbitMQ perf-test here), by lorrygate into SQLite,
   and by ``lorrygate relay`` into Mosquitto (until mosquitto_sub has them
   all). Reports lorrygate / the pika consumer for both.
6. buses: N messages in a Redis stream, a Kafka topic (librdkafka's mock
   cluster) and from a ZeroMQ PUSH peer, drained into SQLite by lorrygate and
   by a minimal consumer written with the same library (acks or commits per
   1,000, the payload parsed). Reports lorrygate / the minimal consumer.

Every scenario counts the rows it finds and fails loudly if one is missing.
The end of a lorrygate drain is the commit that brings its rows to N, as the
gateway's log says right after each commit (`CommitLog`); the database is
counted once afterwards. (Counting every table every 20 ms instead took 4 ms
of CPU a time with 100 tables and 205 ms with 10,000, on the machine under
test, so that the count itself held back the drain.)
Results: a JSON file, a Markdown table and a PNG plot in ``--out``.
"""

import argparse
import atexit
import datetime
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.publisher import Publisher, telemetry  # noqa: E402
from tests.servers import Mosquitto, PostgreSQL, Redis, free_port, rabbitmq_broker, stop_epmd, wait_until  # noqa: E402

PYTHON = sys.executable
LORRY_VENV = os.path.abspath(os.environ.get("LORRYSTREAM_VENV", os.path.join(ROOT, ".venv-lorrystream")))


class BenchError(Exception):
    """The benchmark caught itself being wrong (a missing row, a stalled run)."""


def topics(nodes: int, n: int) -> str:
    return f"mqttkit-1/bench/area-{n % nodes // 100}/node-{n % nodes}/data.json"


def gateway_config(directory: str, port: int, name: str, url: str, extra: str = "", channel: str = "") -> str:
    path = os.path.join(directory, f"{name}.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}/{name}-data
            log_format = json
            log_level = debug
            stats_interval = 60s
            control = off

            [broker:bench]
            host = 127.0.0.1
            port = {port}
            client_id = bench-{name}

            [storage:db]
            url = {url}
            """) + textwrap.dedent(extra) + "\n[channel:main]\ntopics = mqttkit-1/bench/#\n" + channel)
    return path


#: every gateway process the benchmark started: a scenario that fails half-way leaves none running
_STARTED: list = []


def _stop_leftovers() -> None:
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    _STARTED.clear()


# at the interpreter's exit, however the module is used (a scenario called from a script of one's own left
# its gateway running when it failed)
atexit.register(_stop_leftovers)


class Gateway:
    def __init__(self, config: str, log: str, profile: str | None = None):
        command = [PYTHON, "-m", "lorrygate.cli", "-c", config]
        self.sampler = None
        # where this process's lines start: a log a gateway before it wrote to says "connected to" already
        self.start = os.path.getsize(log) if os.path.exists(log) else 0
        if profile and profile.endswith(".txt"):
            # py-spy samples every thread (the writer's too) at little cost; collapsed stacks
            spy = os.path.join(os.path.dirname(PYTHON), "py-spy")
            if not os.access(spy, os.X_OK):
                # said before the gateway starts: it would outlive a failed sampler
                raise BenchError(f"--profile {profile}: no py-spy at {spy} (pip install -e '.[bench]')")
            self.log = log
            self.process = subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
            _STARTED.append(self.process)
            self.sampler = subprocess.Popen([spy, "record", "--pid",
                                             str(self.process.pid), "-f", "raw", "-o", profile, "-r", "250",
                                             "--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return
        if profile:
            command = [PYTHON, "-m", "cProfile", "-o", profile, "-m", "lorrygate.cli", "-c", config]
        self.log = log
        self.process = subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        _STARTED.append(self.process)

    def own_log(self) -> str:
        """What this process wrote to its log (the file is appended to by each gateway of a scenario)."""
        with open(self.log, "rb") as handle:
            handle.seek(self.start)
            return handle.read().decode(errors="replace")

    def wait_connected(self) -> None:
        wait_until(lambda: "connected to" in self.own_log() or self.process.poll() is not None,
                   30, "the gateway to connect", interval=0.02)
        if self.process.poll() is not None:
            raise BenchError(f"the gateway exited: {open(self.log).read()[-2000:]}")

    def cpu_seconds(self) -> float:
        """User and system CPU of the gateway process so far (all its threads), from /proc."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def peak_rss_mb(self) -> float:
        try:
            for line in open(f"/proc/{self.process.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        if self.sampler:
            self.sampler.wait(60)


def sqlite_rows(path: str) -> int:
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'mqttkit_1_bench%'")]
        return sum(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names)
    finally:
        conn.close()


def pg_rows(url: str) -> int:
    import psycopg

    # a transaction a table: one over 10,000 tables runs out of PostgreSQL's lock table
    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_schema = 'mqttkit_1_bench' AND table_type = 'BASE TABLE'").fetchall()
        return sum(conn.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in names)


def pg_views(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM information_schema.views WHERE table_schema = 'mqttkit_1_bench'"
                            ).fetchone()[0]


def wait_rows(count_rows, total: int, timeout: float, what: str) -> float:
    """Wait until ``total`` rows are there; return when they were (monotonic); fail loudly otherwise."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        rows = count_rows()
        if rows >= total:
            if rows > total:
                print(f"  note: {what}: {rows - total} duplicate rows")
            return time.monotonic()
        last = rows
        time.sleep(0.02)
    raise BenchError(f"{what}: {last} of {total} rows after {timeout} s: messages are missing")


class CommitLog:
    """The rows a gateway committed since it was made, read from the debug line of its JSON log that each
    commit writes once the rows are in the database; reading the new part of the file costs next to nothing."""

    def __init__(self, path: str):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.rows = 0
        self._partial = b""

    def __call__(self) -> int:
        if not os.path.exists(self.path):
            return 0
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b'"event": "batch_committed"' in line:
                self.rows += json.loads(line)["rows"]
        return self.rows


def wait_committed(logs: list, count_rows, total: int, timeout: float, what: str) -> float:
    """Wait until the gateways' logs (`CommitLog`) say ``total`` rows are committed; return when (monotonic),
    after checking the database holds them all."""
    deadline = time.monotonic() + timeout
    while sum(log() for log in logs) < total:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {sum(log.rows for log in logs)} of {total} rows committed after {timeout} s")
        time.sleep(0.02)
    done = time.monotonic()
    found = count_rows()
    if found < total:
        raise BenchError(f"{what}: the gateway logged {total} rows committed, the database holds {found}")
    if found > total:
        print(f"  note: {what}: {found - total} duplicate rows")
    return done


def register_session(port: int, client_id: str) -> None:
    """Make the broker keep a persistent session (and so a queue) for a client id."""
    subprocess.run(["mosquitto_sub", "-p", str(port), "-c", "-i", client_id, "-q", "1", "-t", "mqttkit-1/bench/#",
                    "-W", "1"], capture_output=True)


def mosquitto_sub_drain(port: int, client_id: str, count: int, cpu: dict | None = None) -> float:
    """The reference drain's rate; with ``cpu``, its CPU seconds per 100,000 messages go into cpu["reference"]."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(["mosquitto_sub", "-p", str(port), "-c", "-i", client_id, "-q", "1", "-t", "mqttkit-1/bench/#",
                    "-C", str(count)], stdout=subprocess.DEVNULL, check=True, timeout=600)
    rate = count / (time.monotonic() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        cpu["reference"] = used / count * 100_000
    return rate


def drain_scenario(work: str, count: int, nodes: int = 100, with_pg: bool = True, profile: str | None = None,
                   existing: bool = False, layout: str = "per-address", existing_profile: str | None = None) -> dict:
    """One drain run: returns rates (msg/s) of mosquitto_sub, lorrygate/SQLite (and /PostgreSQL), peak RSS;
    ``layout``: the SQLite storage's (per-network: one shared table and a view per node); ``profile`` and
    ``existing_profile``: of the first SQLite drain, and of the one into the tables it made."""
    directory = tempfile.mkdtemp(dir=work)
    os.makedirs(f"{directory}/broker")
    broker = Mosquitto(f"{directory}/broker").start()
    postgres = PostgreSQL().start() if with_pg else None
    try:
        db = f"{directory}/bench.sqlite"
        lite = gateway_config(directory, broker.port, "sqlite", f"sqlite:///{db}", f"layout = {layout}\n")
        configs = {"sqlite": lite}
        if postgres:
            configs["postgresql"] = gateway_config(directory, broker.port, "postgresql", postgres.url)
        # register every session, then fill all the queues with one publication run
        for name, config in configs.items():
            gateway = Gateway(config, f"{directory}/{name}.log")
            gateway.wait_connected()
            gateway.stop()
        register_session(broker.port, "bench-reference")
        publisher = Publisher(broker.port)
        publisher.publish_all(telemetry(topics(nodes, n), n) for n in range(count))
        publisher.close()
        cpu: dict = {}
        result = {"count": count, "nodes": nodes,
                  "mosquitto_sub": mosquitto_sub_drain(broker.port, "bench-reference", count, cpu)}
        result["mosquitto_sub_cpu"] = cpu["reference"]
        for name, config in configs.items():
            counter = (lambda: sqlite_rows(db)) if name == "sqlite" else (lambda: pg_rows(postgres.url))
            start = time.monotonic()
            log = CommitLog(f"{directory}/{name}.log")
            gateway = Gateway(config, f"{directory}/{name}.log", profile if name == "sqlite" else None)
            gateway.wait_connected()
            connected = time.monotonic()
            started_cpu = gateway.cpu_seconds()  # start-up (imports, config) left out of the CPU figure
            done = wait_committed([log], counter, count, 600, f"drain into {name}")
            result[name] = count / (done - start)
            # the rate counts the start-up (the process started, a queue waiting); this says how much of it was
            result[f"{name}_startup_s"] = connected - start
            result[f"{name}_peak_rss_mb"] = gateway.peak_rss_mb()
            result[f"{name}_cpu"] = (gateway.cpu_seconds() - started_cpu) / count * 100_000
            gateway.stop()
        if existing:
            # the same stream again into the tables the first drain created: a running fleet's case
            publisher = Publisher(broker.port)
            publisher.publish_all(telemetry(topics(nodes, n), n) for n in range(count))
            publisher.close()
            start = time.monotonic()
            log = CommitLog(f"{directory}/sqlite.log")
            gateway = Gateway(lite, f"{directory}/sqlite.log", existing_profile)
            done = wait_committed([log], lambda: sqlite_rows(db) - count, count, 600, "drain into existing tables")
            result["sqlite_existing"] = count / (done - start)
            result["sqlite_existing_peak_rss_mb"] = gateway.peak_rss_mb()
            gateway.stop()
        return result
    finally:
        broker.stop()
        if postgres:
            postgres.stop()
        shutil.rmtree(directory, ignore_errors=True)


def group_scenario(work: str, count: int, members: int) -> dict:
    """A gateway group (shared subscriptions) of ``members`` processes draining one queued stream,
    each into its own SQLite file: the aggregate rate."""
    directory = tempfile.mkdtemp(dir=work)
    os.makedirs(f"{directory}/broker")
    broker = Mosquitto(f"{directory}/broker").start()
    try:
        names = [f"member{i}" for i in range(members)]
        configs = {name: gateway_config(directory, broker.port, name, f"sqlite:///{directory}/{name}.sqlite",
                                        channel="group = bench\n")
                   for name in names}
        for name, config in configs.items():  # each member's session and shared subscription
            gateway = Gateway(config, f"{directory}/{name}.log")
            gateway.wait_connected()
            gateway.stop()
        publisher = Publisher(broker.port)
        publisher.publish_all(telemetry(topics(100, n), n) for n in range(count))
        publisher.close()
        start = time.monotonic()
        logs = [CommitLog(f"{directory}/{name}.log") for name in names]
        gateways = [Gateway(config, f"{directory}/{name}.log") for name, config in configs.items()]
        done = wait_committed(logs, lambda: sum(sqlite_rows(f"{directory}/{name}.sqlite") for name in names), count,
                              600, f"a group of {members} draining")
        shares = [sqlite_rows(f"{directory}/{name}.sqlite") for name in names]
        if members > 1 and not all(0 < share < count for share in shares):
            raise BenchError(f"the group did not split the stream: rows per member {shares}")
        for gateway in gateways:
            gateway.stop()
        return {"members": members, "rate": count / (done - start)}
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


AMQP_QUEUES = ("bench-reference", "bench-sqlite", "bench-relay")


def amqp_fill(port: int, count: int) -> None:
    """Declare the three queues, bound to amq.topic, and publish ``count`` telemetry messages (one transaction
    per 1,000)."""
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("lorrygate", "secret")))
    channel = connection.channel()
    for queue in AMQP_QUEUES:
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "amq.topic", "mqttkit-1.bench.#")
    channel.tx_select()
    for n in range(count):
        topic, payload = telemetry(topics(100, n), n)
        channel.basic_publish("amq.topic", topic.translate(str.maketrans("./", "/.")), payload.encode()
                              if isinstance(payload, str) else payload)
        if n % 1000 == 999:
            channel.tx_commit()
    channel.tx_commit()
    connection.close()


def amqp_reference_drain(port: int, count: int) -> float:
    """The reference: a minimal pika consumer with manual acks, as a gateway would need them."""
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("lorrygate", "secret")))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=2000)
    start = time.monotonic()
    received = 0
    for method, _, _ in channel.consume("bench-reference", auto_ack=False):
        received += 1
        if received % 1000 == 0 or received == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if received == count:
            break
    rate = count / (time.monotonic() - start)
    channel.cancel()
    connection.close()
    return rate


def amqp_scenario(work: str, count: int) -> dict:
    directory = tempfile.mkdtemp(dir=work)
    os.makedirs(f"{directory}/rabbitmq")
    os.makedirs(f"{directory}/broker")
    rabbit = rabbitmq_broker(f"{directory}/rabbitmq", mqtt=False).start()
    broker = Mosquitto(f"{directory}/broker").start()
    try:
        amqp_fill(rabbit.port, count)
        result = {"count": count, "pika": amqp_reference_drain(rabbit.port, count)}
        db = f"{directory}/amqp.sqlite"
        config = os.path.join(directory, "amqp.ini")
        with open(config, "w") as handle:
            handle.write(textwrap.dedent(f"""
                [lorrygate]
                data_dir = {directory}/amqp-data
                log_format = json
                log_level = debug
                stats_interval = 60s
                control = off

                [broker:rabbit]
                type = amqp
                host = 127.0.0.1
                port = {rabbit.port}
                username = lorrygate
                password = secret

                [storage:db]
                url = sqlite:///{db}

                [channel:main]
                topics = mqttkit-1/bench/#
                queue = bench-sqlite
                """))
        start = time.monotonic()
        log = CommitLog(f"{directory}/amqp.log")
        gateway = Gateway(config, f"{directory}/amqp.log")
        done = wait_committed([log], lambda: sqlite_rows(db), count, 600, "the AMQP drain into SQLite")
        result["sqlite"] = count / (done - start)
        gateway.stop()
        subscriber = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-t", "relayed/#",
                                       "-C", str(count)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)  # mosquitto_sub has no readiness signal; it subscribes well within this
        start = time.monotonic()
        relay = subprocess.Popen(
            [PYTHON, "-m", "lorrygate.cli", "relay",
             f"amqp://lorrygate:secret@127.0.0.1:{rabbit.port}/%2F?topic=mqttkit-1/bench/%23&queue=bench-relay",
             f"mqtt://127.0.0.1:{broker.port}/relayed/{{topic}}", "--data-dir", f"{directory}/relay-data"],
            stdout=open(f"{directory}/relay.log", "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            subscriber.wait(600)
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
        if subscriber.returncode != 0:
            raise BenchError("mosquitto_sub did not receive every relayed message")
        result["relay"] = count / (time.monotonic() - start)
        return result
    finally:
        broker.stop()
        rabbit.stop()
        stop_epmd(rabbit)
        shutil.rmtree(directory, ignore_errors=True)


def bus_gateway(directory: str, name: str, broker: str, channel: str):
    """A gateway from a bus into SQLite: (database path, process, its `CommitLog`)."""
    db = f"{directory}/{name}.sqlite"
    config = os.path.join(directory, f"{name}.ini")
    with open(config, "w") as handle:
        handle.write(f"[lorrygate]\ndata_dir = {directory}/{name}-data\ncontrol = off\nstats_interval = 60s\n"
                     "log_format = json\nlog_level = debug\n\n"
                     f"{broker}\n[storage:db]\nurl = sqlite:///{db}\n\n[channel:main]\n{channel}")
    log = CommitLog(f"{directory}/{name}.log")
    process = subprocess.Popen([PYTHON, "-m", "lorrygate.cli", "-c", config],
                               stdout=open(f"{directory}/{name}.log", "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    return db, process, log


def _stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def bus_scenario(work: str, count: int) -> dict:
    """Redis Streams, Kafka (mock cluster) and ZeroMQ PULL into SQLite, each against a minimal consumer."""
    import threading

    import confluent_kafka
    import zmq

    directory = tempfile.mkdtemp(dir=work)
    result = {"count": count}
    payloads = [telemetry(topics(100, n), n) for n in range(count)]
    # Redis Streams
    os.makedirs(f"{directory}/redis")
    redis = Redis(f"{directory}/redis").start()
    try:
        client = redis.client()
        pipe = client.pipeline(transaction=False)
        for n, (topic, payload) in enumerate(payloads):
            pipe.xadd("bench", {"topic": topic, "payload": payload})
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
        client.xgroup_create("bench", "reference", id="0")
        start, got = time.monotonic(), 0
        while got < count:
            answer = client.xreadgroup("reference", "c", {"bench": ">"}, count=1000, block=1000)
            ids = [entry_id for _, entries in answer for entry_id, _ in entries]
            for _, entries in answer:
                for _, fields in entries:
                    json.loads(fields[b"payload"])
            client.xack("bench", "reference", *ids)
            got += len(ids)
        result["redis_reference"] = count / (time.monotonic() - start)
        start = time.monotonic()
        db, process, log = bus_gateway(directory, "redis",
                                       f"[broker:r]\ntype = redis\nhost = 127.0.0.1\nport = {redis.port}\n"
                                       "password = secret\n", "topics = bench\n")
        result["redis"] = count / (wait_committed([log], lambda: sqlite_rows(db), count, 600, "Redis into SQLite")
                                   - start)
        _stop(process)
    finally:
        redis.stop()
    # Kafka: librdkafka's mock cluster, held by this process
    holder = confluent_kafka.Producer({"test.mock.num.brokers": 1})
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in holder.list_topics(timeout=10).brokers.values())
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for topic, payload in payloads:
        while True:
            try:
                producer.produce("bench", payload, topic.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "reference",
                                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe(["bench"])
    got, start = 0, None
    while got < count:
        messages = consumer.consume(1000, 1.0)
        if messages and start is None:
            start = time.monotonic()  # after the group join, as the gateway's figure is not
        for message in messages:
            json.loads(message.value())
        got += len(messages)
        if messages:
            consumer.commit(asynchronous=False)
    result["kafka_reference"] = count / (time.monotonic() - start)
    consumer.close()
    start = time.monotonic()
    db, process, log = bus_gateway(directory, "kafka", f"[broker:k]\ntype = kafka\nhost = {bootstrap}\n",
                                   "topics = bench\ngroup = lorrygate\n")
    result["kafka"] = count / (wait_committed([log], lambda: sqlite_rows(db), count, 600, "Kafka into SQLite") - start)
    _stop(process)
    # ZeroMQ PULL
    context = zmq.Context.instance()

    def push_all(port):
        pusher = context.socket(zmq.PUSH)
        pusher.connect(f"tcp://127.0.0.1:{port}")
        for topic, payload in payloads:
            pusher.send_multipart([topic.encode(), payload])
        pusher.close(linger=10_000)

    port = free_port()
    pull = context.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    sender = threading.Thread(target=push_all, args=(port,))
    start = time.monotonic()
    sender.start()
    for _ in range(count):
        json.loads(pull.recv_multipart()[1])
    result["zmq_reference"] = count / (time.monotonic() - start)
    sender.join()
    pull.close()
    port = free_port()
    db, process, log = bus_gateway(directory, "zmq", f"[broker:z]\ntype = zmq\nhost = *\nport = {port}\n",
                                   "topics = mqttkit-1/#\nmode = pull\n")
    wait_until(lambda: "PULL socket bound" in open(f"{directory}/zmq.log", errors="replace").read(), 30, "the bind")
    sender = threading.Thread(target=push_all, args=(port,))
    start = time.monotonic()
    sender.start()
    result["zmq"] = count / (wait_committed([log], lambda: sqlite_rows(db), count, 600, "ZeroMQ into SQLite") - start)
    sender.join()
    _stop(process)
    shutil.rmtree(directory, ignore_errors=True)
    return result


LATENCY_DDL = {
    "sqlite": ("CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, "
               "committed REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"),
    "postgresql": ('CREATE TABLE IF NOT EXISTS {qualified} ("time" TIMESTAMPTZ NOT NULL, '
                   "committed DOUBLE PRECISION DEFAULT extract(epoch FROM clock_timestamp()))"),
}


def latency_rows(storage: str, where, since: float) -> list:
    """(committed, sent) of the rows sent since ``since``, from every node table."""
    if storage == "sqlite":
        conn = sqlite3.connect(where)
        try:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                                "AND name LIKE 'mqttkit_1_bench%'")]
            return [row for name in names
                    for row in conn.execute(f'SELECT committed, sent FROM "{name}" WHERE sent >= ?', (since,))]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(where, autocommit=True) as conn:
        names = conn.execute("SELECT table_name FROM information_schema.tables "
                             "WHERE table_schema = 'mqttkit_1_bench' AND table_type = 'BASE TABLE'").fetchall()
        return [row for (name,) in names
                for row in conn.execute(f'SELECT committed, sent FROM mqttkit_1_bench."{name}" WHERE sent >= %s',
                                        (since,))]


class DiskWatch:
    """An fsync of 4 KiB every 50 ms beside a live run, in its directory: a latency tail that
    follows the disk's own stalls (this machine's fsync stalls up to ~130 ms now and then) shows
    as ``worst_ms`` and ``slow`` (fsyncs over 50 ms)."""

    def __init__(self, directory: str):
        import threading

        self.path = os.path.join(directory, "disk-watch")
        self.worst_ms = 0.0
        self.slow = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while not self._stop.wait(0.05):
                os.pwrite(fd, b"x" * 4096, 0)
                start = time.perf_counter()
                os.fsync(fd)
                took = (time.perf_counter() - start) * 1000
                self.worst_ms = max(self.worst_ms, took)
                self.slow += took > 50
        finally:
            os.close(fd)


def live_scenario(work: str, rate: int, seconds: float, storage: str = "sqlite", nodes: int = 100,
                  restart: bool = False, layout: str = "per-address") -> dict:
    """Publish-to-commit latency of a steady stream over ``nodes`` tables; with ``restart``, the gateway that
    created them is stopped and a new one measured, as for a running fleet whose tables exist (the gateway's
    first write after creating 10,000 tables gathers as for a backlog). ``layout = per-network``: one
    shared table and a view per node instead (the views made during the warm-up)."""
    directory = tempfile.mkdtemp(dir=work)
    os.makedirs(f"{directory}/broker")
    broker = Mosquitto(f"{directory}/broker").start()
    postgres = PostgreSQL().start() if storage == "postgresql" else None
    try:
        db = f"{directory}/live.sqlite"
        url = postgres.url if postgres else f"sqlite:///{db}"
        config = gateway_config(directory, broker.port, "live", url,
                                f"ddl = {LATENCY_DDL[storage]}\nlayout = {layout}\n")
        count_rows = (lambda: pg_rows(postgres.url)) if postgres else (lambda: sqlite_rows(db))
        gateway = Gateway(config, f"{directory}/live.log")
        gateway.wait_connected()
        publisher = Publisher(broker.port)
        # warm-up: one message per node creates the tables (a running fleet's tables exist; the
        # creation's latency is the tables scenario's business), then the measured stream
        publisher.publish_all(telemetry(topics(nodes, n), n, time.time()) for n in range(nodes))
        wait_rows(count_rows, nodes, 120, "the warm-up rows")
        if layout == "per-network" and postgres:
            wait_rows(lambda: pg_views(postgres.url), nodes, 120, "the views of the warm-up")
        if restart:
            gateway.stop()
            gateway = Gateway(config, f"{directory}/live-restarted.log")
            gateway.wait_connected()
        measured_from = time.time()
        with DiskWatch(directory) as disk:
            sent = publisher.publish_steady(lambda n: telemetry(topics(nodes, n), n, time.time()), rate, seconds)
        publisher.close()
        finished = time.time()
        wait_rows(count_rows, sent + nodes, 120, f"live at {rate} msg/s into {storage}")
        gateway.stop()
        stored = count_rows() - nodes
        rows = latency_rows(storage, postgres.url if postgres else db, measured_from)
        if len(rows) != sent:
            raise BenchError(f"live at {rate} msg/s: {len(rows)} measured rows for {sent} sent")
        latencies = sorted((c - s) * 1000 for c, s in rows)
        # from the last publication to the last commit, by the rows' own times (counting the rows of 10,000
        # tables to see them there took ~1.4 s of its own)
        caught_up = max(0.0, max(c for c, _ in rows) - finished)
        return {"storage": storage, "rate": rate, "sent": sent, "p50_ms": latencies[len(latencies) // 2],
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1], "max_ms": latencies[-1],
                "catch_up_s": caught_up, "fsync_max_ms": disk.worst_ms, "fsync_slow": disk.slow, "kept_up": caught_up < 1.0, "stored": stored}
    finally:
        broker.stop()
        if postgres:
            postgres.stop()
        shutil.rmtree(directory, ignore_errors=True)


def peer_scenario(work: str, count: int) -> dict | None:
    """LorryStream's relay into SQLite on a live stream of ``count`` messages, against lorrygate's."""
    lorry = os.path.join(LORRY_VENV, "bin", "lorry")
    if not os.path.exists(lorry):
        return None
    directory = tempfile.mkdtemp(dir=work)
    os.makedirs(f"{directory}/broker")
    broker = Mosquitto(f"{directory}/broker").start()
    relay = None
    try:
        db = f"{directory}/lorrystream.sqlite"
        # LorryStream mangles absolute sqlite://// URLs: give it a relative path from its working directory.
        relay = subprocess.Popen(
            [lorry, "relay", f"mqtt://127.0.0.1:{broker.port}/mqttkit-1/bench/%23?content-type=json",
             "sqlite:///lorrystream.sqlite?table=bench"], stdout=open(f"{directory}/lorry.log", "wb"),
            stderr=subprocess.STDOUT, cwd=directory)
        def rows():
            if not os.path.exists(db):
                return 0
            try:
                conn = sqlite3.connect(db, timeout=5)
                return conn.execute("SELECT count(*) FROM bench").fetchone()[0]
            except sqlite3.Error:
                return 0

        # LorryStream has no readiness signal (it took over 3 s to import and subscribe on a slow host, and
        # missed the stream): a probe message a second until one is stored says it is subscribed
        publisher = Publisher(broker.port)
        probes = 0
        deadline = time.monotonic() + 60
        while rows() == 0:
            if relay.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"LorryStream stored no probe: {open(f'{directory}/lorry.log').read()[-1500:]}")
            publisher.publish_all([telemetry(topics(100, probes), probes)])
            probes += 1
            time.sleep(1)
        stored = rows()  # (the probes before it subscribed are lost: no session)
        start = time.monotonic()
        publisher.publish_all(telemetry(topics(100, n), n) for n in range(count))
        publisher.close()
        # LorryStream stores a few hundred messages a second: a stall, not its pace, fails this
        done = wait_rows(rows, count + stored, max(60, count / 20), "LorryStream relay into SQLite")
        return {"count": count, "lorrystream": count / (done - start)}
    finally:
        if relay is not None and relay.poll() is None:  # never left running, whatever failed
            relay.send_signal(signal.SIGINT)
            try:
                relay.wait(10)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


def live_row(storage: str, rate: int, nodes: int, results: list, layout: str = "per-address") -> dict:
    return {"storage": storage, "rate": rate, "nodes": nodes, "layout": layout, "p50_ms": summary([r["p50_ms"] for r in results]),
            "p99_ms": summary([r["p99_ms"] for r in results]), "kept_up": all(r["kept_up"] for r in results),
            "fsync_max_ms": summary([r["fsync_max_ms"] for r in results]), "sent": sum(r["sent"] for r in results),
            "stored": sum(r["stored"] for r in results)}


def summary(values) -> dict:
    values = [v for v in values if v == v]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def profile_summary(path: str, lines: int = 15) -> str:
    import io
    import pstats

    stream = io.StringIO()
    pstats.Stats(path, stream=stream).sort_stats("tottime").print_stats(lines)
    return stream.getvalue()


def tables_figures(work: str, quick: bool, runs: int) -> list:
    """1, 100 and 10,000 tables: the drain that creates them, and the same stream again into them."""
    table_count = 2_000 if quick else 100_000
    print(f"tables: {table_count} messages over 1, 100, 10,000 nodes, then again into the existing tables")
    rows = []
    for nodes in (1, 100) if quick else (1, 100, 10_000):
        results = [drain_scenario(work, table_count, nodes=nodes, with_pg=False, existing=True) for _ in range(runs)]
        rows.append({"nodes": nodes, "rate": summary([r["sqlite"] for r in results]),
                     "peak_rss_mb": summary([r["sqlite_peak_rss_mb"] for r in results]),
                     "existing": summary([r["sqlite_existing"] for r in results]),
                     "existing_peak_rss_mb": summary([r["sqlite_existing_peak_rss_mb"] for r in results])})
    if not quick:
        # the same fleet in SQLite's per-network layout: one shared table and 10,000 views
        results = [drain_scenario(work, table_count, nodes=10_000, with_pg=False, existing=True, layout="per-network")
                   for _ in range(runs)]
        rows.append({"nodes": 10_000, "layout": "per-network", "rate": summary([r["sqlite"] for r in results]),
                     "peak_rss_mb": summary([r["sqlite_peak_rss_mb"] for r in results]),
                     "existing": summary([r["sqlite_existing"] for r in results]),
                     "existing_peak_rss_mb": summary([r["sqlite_existing_peak_rss_mb"] for r in results])})
    single, single_existing = rows[0]["rate"]["median"], rows[0]["existing"]["median"]
    for row in rows:
        row["ratio_to_single"] = row["rate"]["median"] / single
        row["existing_ratio"] = row["existing"]["median"] / single_existing
    return rows


def group_figures(work: str, count: int, runs: int) -> dict:
    ones = [group_scenario(work, count, 1)["rate"] for _ in range(runs)]
    twos = [group_scenario(work, count, 2)["rate"] for _ in range(runs)]
    return {"one": summary(ones), "two": summary(twos), "ratio": summary([b / a for a, b in zip(ones, twos)])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2,000 messages, one run)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--only", choices=("drain", "group", "live", "tables"),
                        help="run one scenario and print its figures")
    parser.add_argument("--profile", help="with --only drain: write the SQLite gateway's cProfile data here")
    args = parser.parse_args(argv)
    # SIGTERM (a `timeout`, a CI job cancelled) ends the run through its `finally` blocks, as Ctrl-C does: the
    # brokers and PostgreSQL servers of the scenario stop too (they were left running, one per killed run)
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    # Byte-compiled as an installed package is (pip compiles at install time): with
    # PYTHONDONTWRITEBYTECODE set, every gateway start compiled the package again (0.47 -> 0.35 s
    # to connect, measured), and the drain's rate counts the start.
    import compileall

    compileall.compile_dir(os.path.join(ROOT, "lorrygate"), quiet=1)
    if args.only:
        work = tempfile.mkdtemp(prefix="lorrygate-bench-")
        runs = 1 if args.quick else args.runs
        try:
            if args.only == "group":
                figures = group_figures(work, 2_000 if args.quick else 200_000, runs)
            elif args.only == "drain":
                count = 2_000 if args.quick else 200_000
                figures = [drain_scenario(work, count, profile=args.profile) for _ in range(runs)]
                for run in figures:
                    run["ratio_sqlite"] = run["sqlite"] / run["mosquitto_sub"]
                    run["ratio_postgresql"] = run["postgresql"] / run["mosquitto_sub"]
                if args.profile and not args.profile.endswith(".txt"):
                    print(profile_summary(args.profile, 30))
            elif args.only == "live":
                figures = [live_scenario(work, rate, 2 if args.quick else 20, storage)
                           for storage in ("sqlite", "postgresql") for rate in (2_000, 10_000, 20_000)
                           for _ in range(runs)]
            else:
                figures = tables_figures(work, args.quick, runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(figures, indent=1))
        return 0
    quick = args.quick
    runs = 1 if quick else args.runs
    count = 2_000 if quick else 200_000
    work = tempfile.mkdtemp(prefix="lorrygate-bench-")
    started = time.monotonic()
    report = {"machine": machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(), "quick": quick,
              "tree": tree()}
    try:
        report["calibration_ms"] = calibration()
        report["fsync"] = fsync_latency(work)
        report["syscall_us"] = syscall_cost()
        print(f"machine: {report['machine']}; calibration {report['calibration_ms']:.0f} ms; "
              f"fsync median {report['fsync']['median_us']:.0f} us; send+recv {report['syscall_us']:.1f} us")
        print(f"drain: {count} queued messages, {runs} run(s)")
        drains = [drain_scenario(work, count, with_pg=True) for _ in range(runs)]
        report["drain"] = {key: summary([d[key] for d in drains])
                           for key in ("mosquitto_sub", "sqlite", "postgresql", "mosquitto_sub_cpu", "sqlite_cpu",
                                       "postgresql_cpu", "sqlite_startup_s", "postgresql_startup_s")}
        report["drain"]["ratio_sqlite"] = summary([d["sqlite"] / d["mosquitto_sub"] for d in drains])
        report["drain"]["ratio_postgresql"] = summary([d["postgresql"] / d["mosquitto_sub"] for d in drains])
        rates = (2_000, 10_000, 20_000)
        seconds = 2 if quick else 20
        print(f"live: {rates} msg/s for {seconds} s each")
        report["live"] = []
        for storage, rate in [(storage, rate) for storage in ("sqlite", "postgresql")
                              for rate in (rates[:1] if quick else rates)]:
            results = [live_scenario(work, rate, seconds, storage) for _ in range(runs)]
            report["live"].append(live_row(storage, rate, 100, results))
        # a fleet's case: 10,000 tables that exist (a gateway started after the one that created them), one run
        # each; reported beside the targets, which the 100-node rows above carry
        # (and PostgreSQL's per-network layout: one table, a view per node)
        fleet = ([("sqlite", 2_000, 200, "per-address"), ("postgresql", 2_000, 200, "per-network")] if quick else
                 [("sqlite", 10_000, 10_000, "per-address"), ("postgresql", 10_000, 10_000, "per-address"),
                  ("postgresql", 10_000, 10_000, "per-network")])
        for storage, rate, nodes, layout in fleet:
            print(f"live: {rate} msg/s into {storage} over {nodes} tables ({layout})")
            report["live"].append(live_row(storage, rate, nodes, [
                live_scenario(work, rate, seconds, storage, nodes=nodes, restart=True, layout=layout)], layout))
        report["tables"] = tables_figures(work, quick, runs)

        peer_count = 500 if quick else 3_000
        print(f"peer: LorryStream on {peer_count} messages")
        try:
            peers = [peer_scenario(work, peer_count) for _ in range(1 if quick else min(runs, 2))]
        except BenchError as exc:
            # The peer is another program (it has no readiness signal): its failure must not cost the
            # figures of lorrygate measured above.
            peers = []
            report["peer"] = {"skipped": f"LorryStream failed: {exc}"}
        if peers and peers[0] is not None:
            report["peer"] = {"lorrystream": summary([p["lorrystream"] for p in peers])}
            report["peer"]["ratio"] = report["drain"]["sqlite"]["median"] / report["peer"]["lorrystream"]["median"]
        elif "peer" not in report:
            report["peer"] = {"skipped": f"no LorryStream in {LORRY_VENV} (make bench installs it)"}
        amqp_count = 2_000 if quick else 100_000
        print(f"amqp: {amqp_count} queued messages, {runs} run(s)")
        amqps = [amqp_scenario(work, amqp_count) for _ in range(runs)]
        report["amqp"] = {key: summary([a[key] for a in amqps]) for key in ("pika", "sqlite", "relay")}
        report["amqp"]["ratio_sqlite"] = summary([a["sqlite"] / a["pika"] for a in amqps])
        report["amqp"]["ratio_relay"] = summary([a["relay"] / a["pika"] for a in amqps])
        bus_count = 2_000 if quick else 100_000
        print(f"buses: {bus_count} messages each from Redis, Kafka (mock cluster), ZeroMQ")
        buses = [bus_scenario(work, bus_count) for _ in range(runs)]
        report["buses"] = {}
        for bus in ("redis", "kafka", "zmq"):
            report["buses"][bus] = summary([b[bus] for b in buses])
            report["buses"][f"{bus}_reference"] = summary([b[f"{bus}_reference"] for b in buses])
            report["buses"][f"{bus}_ratio"] = summary([b[bus] / b[f"{bus}_reference"] for b in buses])
        group_count = 2_000 if quick else 200_000
        print(f"group: {group_count} queued messages drained by a gateway group of 1 and of 2 processes")
        report["group"] = group_figures(work, group_count, runs)
        if not quick and report["drain"]["ratio_sqlite"]["median"] < 0.5:
            profile = os.path.join(work, "drain.prof")
            drain_scenario(work, count, with_pg=False, profile=profile)
            report["profile"] = profile_summary(profile) if os.path.exists(profile) else "no profile written"
        report["seconds"] = time.monotonic() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(report, args.out)
    return 0


def tree() -> str:
    """The commit the benchmark measures, and whether the working tree differed from it ("+ changes"): which
    code a results file is of (the committed files did not say, and finding it took their commits' dates)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "lorrygate", "bench").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return head.stdout.strip() + (" + changes to lorrygate/ or bench/" if changed else "")


def machine() -> str:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({cpu}), {platform.python_implementation()} {platform.python_version()}"


def calibration(rounds: int = 5) -> float:
    """Milliseconds one core takes for a fixed piece of pure Python (dicts, strings, floats, calls: the
    kind of work the gateway does per message), the best of ``rounds``: rates of machines of
    different speed compare after dividing by it."""
    def work():
        total = 0.0
        for n in range(100_000):
            record = {"temperature": 20 + n % 100 / 10, "seq": n, "sensor": "bme280"}
            total += len(repr(record["temperature"])) + len(str(record["seq"]))
        return total

    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def fsync_latency(directory: str, count: int = 200) -> dict:
    """Microseconds of a 4 KiB write + fsync in ``directory`` (where the databases live): median, p99."""
    path = os.path.join(directory, "fsync-probe")
    block = os.urandom(4096)
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for n in range(count):
            os.pwrite(fd, block, (n % 16) * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - start) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return {"median_us": times[len(times) // 2], "p99_us": times[int(len(times) * 0.99) - 1]}


def syscall_cost(count: int = 20_000, rounds: int = 3) -> float:
    """Microseconds of a 64-byte send and its recv over TCP on 127.0.0.1 (two system calls, best of
    ``rounds``): what the broker and `mosquitto_sub` spend per message, so that the drain's reference, which
    is cheap where system calls are, can be compared across machines."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * 64
    best = float("inf")
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(count):
                sender.send(payload)
                receiver.recv(64)
            best = min(best, time.perf_counter() - start)
    finally:
        for one in (sender, receiver, server):
            one.close()
    return best / count * 1e6


def write_results(report: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if report["quick"] else "")
    with open(os.path.join(out, f"{stamp}.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    table = render_table(report)
    with open(os.path.join(out, f"{stamp}.md"), "w") as handle:
        handle.write(table)
    print(table)
    try:
        plot(report, os.path.join(out, f"{stamp}.png"))
    except ImportError:
        print("(no plot: matplotlib is not installed; make bench installs it)")


def fmt(s: dict, unit: str = "", digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f}{unit} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def render_table(report: dict) -> str:
    d = report["drain"]

    def startup(name: str) -> str:
        """The gateway's start-up (the process started to connected), which the drain's time includes."""
        figure = d.get(f"{name}_startup_s")
        return f"; its time includes a start-up of {fmt(figure, ' s', 2)}" if figure else ""

    lines = [f"# lorrygate benchmark, {report['date'][:19]}Z", "", f"Machine: {report['machine']}", "",
             f"Tree: {report.get('tree', 'unknown')}", ""]
    if "calibration_ms" in report:
        lines += [f"Single-core Python calibration (`bench/run.py` calibration(), best of 5; lower is faster): "
                  f"{report['calibration_ms']:.0f} ms. fsync of 4 KiB in the work directory: median "
                  f"{report['fsync']['median_us']:.0f} us, p99 {report['fsync']['p99_us']:.0f} us."
                  + (f" A 64-byte send and its recv over TCP on 127.0.0.1 (`syscall_cost()`, best of 3): "
                     f"{report['syscall_us']:.1f} us; the drain's reference is mostly such calls."
                     if "syscall_us" in report else ""), ""]
    lines += [
             "Median of the runs (min-max).", "",
             "| scenario | lorrygate | reference | ratio | target |", "|---|---|---|---|---|",
             f"| drain into SQLite | {fmt(d['sqlite'], ' msg/s')}, CPU {fmt(d['sqlite_cpu'], ' s', 2)} per 100k"
             f"{startup('sqlite')} | "
             f"mosquitto_sub {fmt(d['mosquitto_sub'], ' msg/s')}, CPU {fmt(d['mosquitto_sub_cpu'], ' s', 2)} per 100k | "
             f"{fmt(d['ratio_sqlite'], '', 2)} | >= 0.55 |",
             f"| drain into PostgreSQL | {fmt(d['postgresql'], ' msg/s')}, CPU {fmt(d['postgresql_cpu'], ' s', 2)} "
             f"per 100k{startup('postgresql')} | mosquitto_sub | {fmt(d['ratio_postgresql'], '', 2)} | >= 0.5 |"]
    for row in report["live"]:
        nodes = row.get("nodes", 100)
        over = ("" if nodes == 100 else f" over {nodes:,} existing tables" if row.get("layout") != "per-network"
                else f", per-network layout: {nodes:,} nodes in 1 table with {nodes:,} views")
        target = ("reported: a fleet's tables (the targets are the 100-node rows)" if nodes != 100 else 'p99 < 100 ms' if row['rate'] <= 10_000 else
                  'p99 < 500 ms, keeps up')
        lines.append(f"| live {row['rate']:,} msg/s into {row.get('storage', 'sqlite')}{over} | p50 {fmt(row['p50_ms'], ' ms')}, p99 {fmt(row['p99_ms'], ' ms')} | "
                     f"kept up: {'yes' if row['kept_up'] else 'NO'} | "
                     f"slowest fsync beside it {fmt(row['fsync_max_ms'], ' ms')} | {target} |")
    for row in report["tables"]:
        if row.get("layout") == "per-network":
            name = f"{row['nodes']:,} nodes, per-network layout (1 table, {row['nodes']:,} views)"
            lines.append(f"| {name}, created in the run | {fmt(row['rate'], ' msg/s')}, peak RSS {fmt(row['peak_rss_mb'], ' MB')} | "
                         f"1 table | {row['ratio_to_single']:.2f} | reported |")
            lines.append(f"| {name}, existing | {fmt(row['existing'], ' msg/s')}, peak RSS {fmt(row['existing_peak_rss_mb'], ' MB')} | "
                         f"1 existing table | {row['existing_ratio']:.2f} | reported |")
            continue
        lines.append(f"| {row['nodes']:,} table{'s' if row['nodes'] > 1 else ''}, created in the run | {fmt(row['rate'], ' msg/s')}, peak RSS {fmt(row['peak_rss_mb'], ' MB')} | "
                     f"1 table | {row['ratio_to_single']:.2f} | RSS < 200 MB; rate reported (CREATE TABLE grows with the "
                     "schema in SQLite, bench/README.md); the rate target is the existing tables' row |")
        if "existing" in row:
            lines.append(f"| {row['nodes']:,} table{'s' if row['nodes'] > 1 else ''}, existing | {fmt(row['existing'], ' msg/s')}, peak RSS {fmt(row['existing_peak_rss_mb'], ' MB')} | "
                         f"1 existing table | {row['existing_ratio']:.2f} | >= 0.5, RSS < 200 MB |")
    a = report.get("amqp")
    if a:
        lines.append(f"| AMQP drain into SQLite | {fmt(a['sqlite'], ' msg/s')} | pika consumer {fmt(a['pika'], ' msg/s')} | "
                     f"{fmt(a['ratio_sqlite'], '', 2)} | |")
        lines.append(f"| AMQP -> MQTT relay | {fmt(a['relay'], ' msg/s')} | pika consumer | "
                     f"{fmt(a['ratio_relay'], '', 2)} | |")
    for bus, reference in (("redis", "redis-py consumer"), ("kafka", "confluent-kafka consumer (mock cluster)"),
                           ("zmq", "pyzmq PULL")):
        b = report.get("buses", {})
        if bus in b:
            lines.append(f"| {bus} into SQLite | {fmt(b[bus], ' msg/s')} | {reference} {fmt(b[bus + '_reference'], ' msg/s')} | "
                         f"{fmt(b[bus + '_ratio'], '', 2)} | |")
    g = report.get("group")
    if g:
        lines.append(f"| gateway group of 2 (shared subscriptions) | {fmt(g['two'], ' msg/s')} | one gateway "
                     f"{fmt(g['one'], ' msg/s')} | {fmt(g['ratio'], '', 2)} | reported, not asserted (2 cores: the "
                     "broker competes) |")
    peer = report["peer"]
    if "ratio" in peer:
        lines.append(f"| LorryStream peer | drain {d['sqlite']['median']:,.0f} msg/s | "
                     f"LorryStream {fmt(peer['lorrystream'], ' msg/s', 1)} | {peer['ratio']:,.0f} | >= 100 |")
    else:
        lines.append(f"| LorryStream peer | | {peer['skipped']} | | |")
    if "profile" in report:
        lines += ["", "Drain below target: where the time goes (cProfile, top functions by own time)", "", "```",
                  report["profile"].strip(), "```"]
    lines += ["", f"Took {report.get('seconds', 0):.0f} s."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels, values = ["mosquitto_sub", "lorrygate SQLite", "lorrygate PostgreSQL"], [
        report["drain"]["mosquitto_sub"]["median"], report["drain"]["sqlite"]["median"],
        report["drain"]["postgresql"]["median"]]
    for row in report["tables"]:
        labels.append(f"{row['nodes']:,} table" + ("s" if row["nodes"] > 1 else "")
                      if row.get("layout") != "per-network" else f"{row['nodes']:,} nodes, 1 table")
        values.append(row["rate"]["median"])
    if "ratio" in report["peer"]:
        labels.append("LorryStream")
        values.append(report["peer"]["lorrystream"]["median"])
    left.barh(labels, values, color="#3b7dd8")
    left.set_xscale("log")
    left.set_xlabel("messages/s (drain, log scale)")
    left.set_title("Throughput")
    for storage in ("sqlite", "postgresql"):
        rows = [row for row in report["live"] if row.get("storage", "sqlite") == storage and row.get("nodes", 100) == 100]
        if rows:
            rates = [row["rate"] for row in rows]
            right.plot(rates, [row["p50_ms"]["median"] for row in rows], "o-", label=f"p50 {storage}")
            right.plot(rates, [row["p99_ms"]["median"] for row in rows], "o-", label=f"p99 {storage}")
    right.axhline(100, color="grey", linestyle="--", label="p99 target at 10,000")
    right.set_xlabel("published messages/s")
    right.set_ylabel("publish-to-commit latency, ms")
    right.set_title("Live latency")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())

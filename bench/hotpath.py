"""
The reactor thread's path of a message, in-process: PUBLISH frames fed to the
MQTT protocol of a real channel (its source, router, decoder chain and
batcher, built from a configuration as the gateway builds them) in socket-sized
reads, into a storage that commits at once and keeps nothing. No broker, no
database, no second thread: what it reports is the Python cost a message of
the reactor thread, the part of the drain `make bench` cannot split out.

    python -m bench.hotpath [--messages 200000] [--nodes 100] [--rounds 5] [--profile out.prof] [--writer]

Prints microseconds a message (best and median of the rounds) as JSON. With ``--writer``, the rounds time
the SQLite writer instead: the batches of the path committed one after the other into the tables of a
first, untimed round, on this thread (the writer thread's part of a drain, its Python and SQLite's;
``synchronous = OFF``, so that the disk does not count), or with ``--postgresql URL`` the PostgreSQL
writer into that database (its client side: callgrind does not count the server's time).
"""

import argparse
import cProfile
import gc
import json
import shutil
import statistics
import sys
import tempfile
import textwrap
import time

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bench.publisher import telemetry
from lorrygate.config.loader import loads
from lorrygate.mqtt import codec
from lorrygate.service.channel_service import make_router
from lorrygate.sources.mqtt import MQTTSource, _ProtocolFactory
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.postgresql import PostgresStorage
from lorrygate.storage.sqlite import SQLiteStorage

READ = 65536


class NullStorage:
    """Commits every batch at once and keeps nothing (``keep``: but the batches)."""

    name = "null"

    def __init__(self, keep: bool = False):
        self.rows = 0
        self.batches: list | None = [] if keep else None

    def write(self, batch):
        self.rows += sum(len(entry.records) for entry in batch.entries)
        if self.batches is not None:
            self.batches.append(batch)
        return succeed(None)


def frames(count: int, nodes: int) -> list:
    """The stream as the socket would hand it over: 64 KiB reads of QoS 1 PUBLISH frames."""
    stream = b"".join(
        codec.encode(codec.Publish(topic, payload, 1, packet_id=n % 65535 + 1))
        for n, (topic, payload) in enumerate(telemetry(f"mqttkit-1/bench/area-{n % nodes // 100}/node-{n % nodes}"
                                                       "/data.json", n) for n in range(count)))
    return [stream[i:i + READ] for i in range(0, len(stream), READ)]


def settings(directory: str):
    return loads(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {directory}
        [broker:bench]
        host = 127.0.0.1
        [storage:db]
        url = sqlite:///{directory}/x.sqlite
        [channel:main]
        topics = mqttkit-1/bench/#
        """))


def channel(clock, settings, keep: bool = False):
    (spec,) = settings.channels
    storage = NullStorage(keep)
    batcher = Batcher(storage, clock, max_rows=5000)
    router, _ = make_router(settings, spec, (batcher,), clock)
    source = MQTTSource(spec.name, settings.brokers[spec.source], spec.topics, spec.qos, router.deliver, clock, clock)
    protocol = _ProtocolFactory(source).buildProtocol(None)
    protocol.makeConnection(StringTransport())
    source._protocol = protocol
    return protocol, storage, batcher


def one_round(reads: list, count: int, config) -> float:
    clock = Clock()
    protocol, storage, batcher = channel(clock, config)
    started = time.perf_counter()
    for data in reads:
        protocol.dataReceived(data)
    batcher.flush()
    clock.advance(1)
    took = time.perf_counter() - started
    if storage.rows != count:
        raise SystemExit(f"{storage.rows} rows of {count}: the path lost messages")
    return took / count * 1e6


def writer_round(storage, batches: list, count: int) -> float:
    """The SQLite writer's time for the batches (into the tables of the rounds before, but the first)."""
    started = time.perf_counter()
    for batch in batches:
        storage._commit(batch)
    return (time.perf_counter() - started) / count * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", help="write a cProfile of one more round here")
    parser.add_argument("--writer", action="store_true", help="time the SQLite writer, not the reactor's path")
    parser.add_argument("--postgresql", metavar="URL", help="with --writer: the PostgreSQL writer, into this database")
    parser.add_argument("--time-index", action="store_true", help="with --writer: SQLite's time_index = true")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="lorrygate-hotpath-")  # (removed at the end, whatever ends the run)
    try:
        return _measure(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _measure(args, directory: str) -> int:
    reads = frames(args.messages, args.nodes)
    config = settings(directory)
    gc.freeze()
    gc.set_threshold(200_000, 20, 100)  # as the gateway runs (lorrygate/cli.py)
    if args.writer:
        clock = Clock()
        protocol, storage, batcher = channel(clock, config, keep=True)
        for data in reads:
            protocol.dataReceived(data)
        batcher.flush()
        writer = (PostgresStorage("bench", args.postgresql, Clock()) if args.postgresql else
                  SQLiteStorage("bench", f"{directory}/bench.sqlite", Clock(), synchronous="OFF"))
        writer.time_index = args.time_index
        writer._connect()
        writer_round(writer, storage.batches, args.messages)  # the tables made, the statements prepared
        run, arguments = writer_round, (writer, storage.batches, args.messages)
    else:
        run, arguments = one_round, (reads, args.messages, config)
    figures = [run(*arguments) for _ in range(args.rounds)]
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, *arguments)
        profiler.dump_stats(args.profile)
    if args.writer:
        if not args.postgresql:
            # every round's rows are in the database (the untimed first round's too), else the figure is a lie
            conn = writer._conn
            tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                        "AND name NOT LIKE 'lorrygate%'")]
            rows = sum(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in tables)
            wanted = args.messages * (1 + args.rounds + (1 if args.profile else 0))
            if rows != wanted:
                raise SystemExit(f"{rows} rows in the database, {wanted} written: the writer lost rows")
        writer._close()
    print(json.dumps({"messages": args.messages, "nodes": args.nodes, "us_per_message_best": round(min(figures), 3),
                      "us_per_message_median": round(statistics.median(figures), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

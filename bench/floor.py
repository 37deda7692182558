"""
The floor of a drain in Python: the same queue drained by ``mosquitto_sub``,
by lorrygate's MQTT protocol on the reactor alone (each PUBLISH acknowledged
as it comes, nothing else), by that protocol with ``orjson.loads`` of each
payload, and by the gateway into SQLite. It says what the protocol and the
reactor cost against what the rest of the gateway (routing, decoding, the
value policy, records, batches, the SQLite writer) does, which the drain of
`make bench` cannot split.

    python -m bench.floor [--messages 200000] [--rounds 3]

Prints a line a round: each rate in messages a second and as a ratio to
``mosquitto_sub`` in the same round; the bare clients' rate both with their
start-up (as the drain counts it) and from their connection on, and their
CPU seconds per 100,000 messages (start-up included).

    python -m bench.floor --client PORT CLIENT_ID COUNT bare|json

is one bare client (a persistent session the broker holds a queue for); it
prints its rate from the connection on and its CPU seconds.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def client(port: int, client_id: str, count: int, mode: str) -> None:
    import orjson
    from twisted.internet import protocol, reactor

    from lorrygate.mqtt import codec
    from lorrygate.mqtt.protocol import MQTTClientProtocol

    state = {"seen": 0, "start": 0.0}

    def on_publish(packet, delivery) -> None:
        if mode == "json":
            orjson.loads(packet.payload)
        state["seen"] += 1
        if delivery is not None:
            delivery.ack()
        if state["seen"] == count:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(f"{count / (time.monotonic() - state['start']):.0f} {usage.ru_utime + usage.ru_stime:.3f}",
                  flush=True)
            reactor.stop()

    class Factory(protocol.ClientFactory):
        def buildProtocol(self, addr):
            mqtt = MQTTClientProtocol(on_publish, reactor)

            def made() -> None:
                state["start"] = time.monotonic()
                mqtt.connect(codec.Connect(client_id, clean_start=False, keepalive=60))

            mqtt.connectionMade = made
            return mqtt

    reactor.connectTCP("127.0.0.1", port, Factory())
    reactor.run()


def rounds(count: int, runs: int, nodes: int = 100) -> None:
    from bench.publisher import Publisher, telemetry
    from bench.run import (
        CommitLog,
        Gateway,
        gateway_config,
        mosquitto_sub_drain,
        register_session,
        sqlite_rows,
        topics,
        wait_committed,
    )
    from tests.servers import Mosquitto

    work = tempfile.mkdtemp(prefix="lorrygate-floor-")
    os.makedirs(f"{work}/broker")
    broker = Mosquitto(f"{work}/broker").start()
    try:
        for run in range(runs):
            directory = f"{work}/run{run}"
            os.makedirs(directory)
            db = f"{directory}/bench.sqlite"
            config = gateway_config(directory, broker.port, f"sqlite{run}", f"sqlite:///{db}")
            gateway = Gateway(config, f"{directory}/gateway.log")
            gateway.wait_connected()
            gateway.stop()
            for name in ("reference", "bare", "json"):
                register_session(broker.port, f"{name}{run}")
            publisher = Publisher(broker.port, f"publisher{run}")
            publisher.publish_all(telemetry(topics(nodes, n), n) for n in range(count))
            publisher.close()
            cpu: dict = {}
            reference = mosquitto_sub_drain(broker.port, f"reference{run}", count, cpu)
            parts = [f"mosquitto_sub {reference:,.0f} msg/s, CPU {cpu['reference']:.2f} s per 100k"]
            for mode in ("bare", "json"):
                start = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "bench.floor", "--client", str(broker.port),
                                       f"{mode}{run}", str(count), mode], capture_output=True, text=True,
                                      timeout=600, check=True)
                whole = count / (time.monotonic() - start)
                connected, seconds = (float(x) for x in done.stdout.split())
                parts.append(f"{mode} {whole:,.0f} ({whole / reference:.2f}), from the connection "
                             f"{connected:,.0f} ({connected / reference:.2f}), CPU {seconds / count * 1e5:.2f} s")
            start = time.monotonic()
            log = CommitLog(f"{directory}/gateway.log")
            gateway = Gateway(config, f"{directory}/gateway.log")
            gateway.wait_connected()
            done_at = wait_committed([log], lambda db=db: sqlite_rows(db), count, 600, "the drain into SQLite")
            gateway.stop()
            rate = count / (done_at - start)
            parts.append(f"gateway into SQLite {rate:,.0f} ({rate / reference:.2f})")
            print(f"round {run + 1}: " + " | ".join(parts), flush=True)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", nargs=4, metavar=("PORT", "CLIENT_ID", "COUNT", "MODE"))
    args = parser.parse_args(argv)
    if args.client:
        port, client_id, count, mode = args.client
        client(int(port), client_id, int(count), mode)
    else:
        rounds(args.messages, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Soak runs (`make test-soak`; not part of `make test`): one gateway for minutes
under a steady QoS 1 stream while its database, its broker and the gateway
itself fail or change and come back, one after the other, round after round.
Every message must be stored once, and the gateway's memory must stay bounded.
``LORRYGATE_SOAK_SECONDS`` sets the length of the stream (300 by default; at least ~70 for every
kind of fault to come round once, which the test asserts).
"""

import itertools
import os
import re
import signal
import time
import uuid

import pytest

from tests.faults import Stream, report, wait_for_rows
from tests.gatewayproc import GatewayProcess
from tests.integration.test_faults import broker, database, gateway_config, pg_seqs, topics  # noqa: F401 (fixtures)
from tests.integration.test_hostile import rss_peak_kb
from tests.servers import wait_until

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("LORRYGATE_SOAK_SECONDS", "300"))
RATE = 1_000
#: the gateway's resident memory may not grow past this (MB): a leak over rounds of faults shows here
RSS_LIMIT_MB = 250


def reloaded(gateway) -> int:
    """Reloads the gateway applied since it started: "reloaded" comes once the restarted channels subscribed."""
    return sum(event.get("message", "").startswith("reloaded:") for event in gateway.events())


@pytest.mark.timeout(int(SECONDS) + 900)  # the stream, then its last backlog and the checks
def test_a_stream_through_rounds_of_faults_is_stored_once(tmp_path, broker, database):  # noqa: F811
    """In turn, every ~10 s: PostgreSQL stops for 5 s (the spool takes the batches), the gateway stops
    gracefully and starts again, Mosquitto restarts (persistence keeps the queue), and the channel's
    configuration changes under a SIGHUP reload (the channel stops as SIGTERM would and starts again).
    ``idempotent = true``: neither a restarted broker's copies nor the publisher's own resends of
    messages whose PUBACK a broker restart cut may become second rows."""
    started = time.monotonic()
    realm = f"s{uuid.uuid4().hex[:8]}"
    count = int(SECONDS * RATE)
    config = gateway_config(str(tmp_path), broker.port, realm, database.url, "idempotent = true\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm), count, rate=RATE).start()
    faults = itertools.cycle(("database", "gateway", "broker", "reload"))
    done: list = []
    peak = 0.0
    reloads = 0
    while time.monotonic() < started + SECONDS - 15:
        # the pace of the rounds, not a wait for an event: the stream flows on between them
        time.sleep(10)
        fault = next(faults)
        if fault == "database":
            database.halt()
            time.sleep(5)
            database.resume()
        elif fault == "gateway":
            peak = max(peak, rss_peak_kb(gateway.process.pid) / 1024)  # (this process's high-water mark)
            assert gateway.stop() == 0, gateway.text()[-2000:]
            gateway.start()
        elif fault == "broker":
            broker.stop()
            broker.start()
        else:
            reloads += 1
            with open(config) as handle:
                text = handle.read()
            with open(config, "w") as handle:
                handle.write(re.sub(r"\ndecode_timeout = .*|$", f"\ndecode_timeout = {10 + reloads}s\n", text, count=1))
            before = reloaded(gateway)
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: reloaded(gateway) > before, 60, "the reloaded channel to subscribe again")
        done.append(fault)
    stream.finish(timeout=300)
    wait_for_rows(lambda: len(set(pg_seqs(database.url, realm))), count, 300, f"all {count} messages")
    peak = max(peak, rss_peak_kb(gateway.process.pid) / 1024)
    assert gateway.stop() == 0
    seqs = pg_seqs(database.url, realm)
    duplicates = report(f"soak, {len(done)} faults ({', '.join(done)})", count, seqs, started)
    print(f"peak RSS {peak:.0f} MB")
    assert set(seqs) == set(range(count))
    assert duplicates == 0
    assert peak < RSS_LIMIT_MB
    assert {"database", "gateway", "broker", "reload"} <= set(done), "every kind of fault came round at least once"

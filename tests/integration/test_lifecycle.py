"""
The gateway's life at its edges, with a real Mosquitto: stops, restarts and
reloads mid-stream write nothing twice and lose nothing; a tee's slow storage
bounds memory; a second instance is refused; a spool never drains into a
storage it was not written for.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.spool import encode, write_identity
from tests.faults import Stream, report, wait_for_rows
from tests.gatewayproc import GatewayProcess, Publisher, count_rows, query
from tests.integration.test_faults import broker, database, gateway_config, pg_seqs, sqlite_seqs, topics  # noqa: F401
from tests.servers import wait_until

ROWS = 20_000


def reloaded(gateway) -> int:
    return sum(1 for e in gateway.events() if e.get("message", "").startswith("reloaded"))


@pytest.mark.parametrize("how", ["sigterm", "sighup", "sigkill"])
def test_ten_stops_or_reloads_mid_stream(tmp_path, broker, how):  # noqa: F811
    """20,000 QoS 1 messages, the gateway stopped (or reloaded with a changed config) 10 times mid-stream,
    without idempotent rows: nothing lost; nothing written twice, except after SIGKILL (reported)."""
    started = time.monotonic()
    realm = f"lc{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "gateway.sqlite")
    config = gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{db}", "synchronous = NORMAL\n")
    text = open(config).read()
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    stream = Stream(broker.port, topics(realm, 4), ROWS, rate=600).start()
    for round in range(10):
        threshold = (round + 1) * 1_500
        wait_until(lambda: count_rows(db, realm) >= threshold, 60, f"{threshold} rows", interval=0.05)
        if how == "sighup":
            # Alternately a storage change (storage and channel restart) and a channel change.
            edit = (f"linger = {0.001 * (round + 1):.3f}s\n" if round % 2 == 0
                    else f"retained = {'never' if round % 4 == 1 else 'always'}\n")
            section = "[storage:db]\n" if round % 2 == 0 else "[channel:main]\n"
            with open(config, "w") as handle:
                handle.write(text.replace(section, section + edit))
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: reloaded(gateway) == round + 1, 30, f"reload {round + 1}")
        else:
            gateway.process.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
            assert gateway.process.wait(30) in (0, -signal.SIGKILL), gateway.text()[-2000:]
            gateway.start()
    stream.finish()
    wait_for_rows(lambda: len(set(sqlite_seqs(db, realm))), ROWS, 90, f"all {ROWS} messages")
    assert gateway.stop() == 0
    seqs = sqlite_seqs(db, realm)
    duplicates = report(f"{how} x10", ROWS, seqs, started)
    assert set(seqs) == set(range(ROWS))
    if how != "sigkill":
        assert duplicates == 0


def rss_peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1))


def test_a_slow_tee_branch_bounds_memory(tmp_path, broker, database):  # noqa: F811
    """A channel teeing to SQLite and to a PostgreSQL held up by a lock for 20 s, and until 50,000 messages are
    published: memory stays bounded by max_pending, and every message ends in both stores."""
    realm = f"tee{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "fast.sqlite")
    max_pending = 1000
    config = gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{db}",
                            f"synchronous = NORMAL\nmax_pending = {max_pending}\n"
                            f"[storage:slow]\nurl = {database.url}\nmax_pending = {max_pending}\n")
    with open(config, "a") as handle:
        handle.write("storage = db, slow\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    topic = f"{realm}/net/gw/node/data.json"
    publisher = Publisher(broker.port)
    publisher.publish_many([(topic, json.dumps({"seq": -1}))])
    wait_until(lambda: count_rows(db, realm) == 1 and len(pg_seqs(database.url, realm)) == 1, 30, "the first row")
    base = rss_peak_kb(gateway.process.pid)
    with psycopg.connect(database.url) as conn:
        (schema, table), = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                                        "WHERE table_schema LIKE %s", (realm + "%",)).fetchall()
    locked, published = threading.Event(), threading.Event()

    def hold_lock():
        with psycopg.connect(database.url) as conn:
            conn.execute(f'LOCK TABLE "{schema}"."{table}" IN ACCESS EXCLUSIVE MODE')
            locked.set()
            time.sleep(20)  # the slow storage's outage: 20 s at least,
            published.wait(300)  # and while the stream is published (longer on a slow, loaded machine)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(10)
    padding = "x" * 1000
    count = 50_000
    publisher.publish_many([(topic, json.dumps({"seq": n, "pad": padding})) for n in range(count)], timeout=120)
    published.set()
    holder.join()
    wait_until(lambda: len(set(pg_seqs(database.url, realm))) == count + 1, 120, "every message in PostgreSQL",
               interval=0.5)
    wait_until(lambda: count_rows(db, realm) >= count + 1, 60, "every message in SQLite", interval=0.5)
    peak = rss_peak_kb(gateway.process.pid)
    publisher.close()
    assert gateway.stop() == 0
    growth_mb = (peak - base) / 1024
    # Measured: 6 MB growth; with one pause flag shared by both storages (the fast one
    # resuming what the slow one paused) 121 MB.
    bound_mb = 10 + max_pending * 8 / 1024
    print(f"\ntee: peak RSS growth {growth_mb:.1f} MB with the slow storage locked (bound {bound_mb:.1f} MB)")
    assert growth_mb < bound_mb
    assert count_rows(db, realm) == count + 1 and len(pg_seqs(database.url, realm)) == count + 1


def start_process(config, *extra, timeout=30):
    return subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", config, *extra], capture_output=True,
                          text=True, timeout=timeout)


def test_a_second_instance_is_refused(tmp_path, broker):  # noqa: F811
    """A second gateway with the same data directory, or with the same client id, exits non-zero naming the first."""
    realm = f"two{uuid.uuid4().hex[:8]}"
    config = gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{tmp_path}/gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    second = start_process(config)
    assert second.returncode != 0
    assert f"PID {gateway.process.pid}" in second.stdout + second.stderr
    assert "data directory" in second.stdout + second.stderr
    other = tmp_path / "other"
    other.mkdir()
    same_client = gateway_config(str(other), broker.port, realm, f"sqlite:///{other}/gateway.sqlite")
    third = start_process(same_client)
    assert third.returncode != 0
    assert f"PID {gateway.process.pid}" in third.stdout + third.stderr and f"gw-{realm}" in third.stdout + third.stderr
    assert gateway.stop() == 0


def spool_batch(directory, realm, seq):
    table = TableName("", f"{realm}_adopted")
    batch = Batch()
    batch.add(Entry(table, [Record(1_717_243_200_000_000_000, {"seq": seq}, {})], "main",
                    Message(f"{realm}/net/gw/node/data.json", b"{}", 1, False, time.time(), "x")))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{seq:020d}.batch"), "wb") as handle:
        handle.write(encode(batch))


def test_a_spool_for_another_target_is_refused(tmp_path, broker):  # noqa: F811
    """A spool written for another database stops start-up with both targets named; spool list shows it,
    spool drain --adopt writes it into the configured storage, and then the gateway starts."""
    realm = f"sp{uuid.uuid4().hex[:8]}"
    db = tmp_path / "gateway.sqlite"
    config = gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{db}")
    spool = tmp_path / "spool" / "db"
    spool_batch(str(spool), realm, 7)
    write_identity(str(spool), "postgresql", "postgresql://elsewhere:5432/other")
    refused = start_process(config)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert str(spool) in said and "postgresql://elsewhere:5432/other" in said and f"sqlite:///{db}" in said
    listed = subprocess.run([sys.executable, "-m", "lorrygate.cli", "spool", "list", "-c", config],
                            capture_output=True, text=True)
    assert "1 batch(es)" in listed.stdout and "DIFFERS" in listed.stdout
    drain = subprocess.run([sys.executable, "-m", "lorrygate.cli", "spool", "drain", "db", "-c", config],
                           capture_output=True, text=True)
    assert drain.returncode == 2 and "--adopt" in drain.stderr
    drain = subprocess.run([sys.executable, "-m", "lorrygate.cli", "spool", "drain", "db", "-c", config, "--adopt"],
                           capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stderr
    assert query(str(db), f'SELECT seq FROM "{realm}_adopted"') == [(7,)]
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    assert gateway.stop() == 0


def test_launch_dry_run_writes_nothing(tmp_path):
    """launch --dry-run prints the rows of recorded messages and creates no database, whatever the option's place."""
    messages = tmp_path / "recorded.ndjson"
    messages.write_text(json.dumps({"topic": "dr/net/gw/node/data.json", "payload": '{"x": 1.5}'}) + "\n")
    db = tmp_path / "never.sqlite"
    for place in ("before", "after"):
        pipeline = f"mqtt://127.0.0.1:1/dr/%23 ! sqlite:///{db}"
        args = (["--dry-run", "--messages", str(messages), pipeline] if place == "before"
                else [pipeline, "--dry-run", "--messages", str(messages)])
        result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "launch", *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.splitlines()[0])["fields"] == {"x": 1.5}
        assert not db.exists()


def test_dry_run_takes_what_mosquitto_sub_recorded(tmp_path, mosquitto):
    """``mosquitto_sub -v`` (a topic, a space, the payload: how people record a broker's traffic) and
    ``-F %j`` recordings go into ``--dry-run --messages`` as they are; the -v lines were refused as no JSON."""
    realm = f"rec{uuid.uuid4().hex[:6]}"
    port = str(mosquitto.port)
    for node, payload in (("a", '{"v": 1.5}'), ("b", "21.5")):  # retained: mosquitto_sub gets them at once
        subprocess.run(["mosquitto_pub", "-p", port, "-r", "-q", "1", "-t", f"{realm}/n/g/{node}/data/t",
                        "-m", payload], check=True, timeout=30)
    recorded = {}
    for form, args in (("v", ["-v"]), ("j", ["-F", "%j"])):
        recorded[form] = subprocess.run(["mosquitto_sub", "-p", port, *args, "-C", "2", "-t", f"{realm}/#"],
                                        capture_output=True, text=True, check=True, timeout=30).stdout
    config = tmp_path / "gw.ini"
    config.write_text(f"[broker:b]\nhost = 127.0.0.1\nport = {port}\n[storage:s]\nurl = sqlite:///{tmp_path}/x.sqlite\n"
                      f"[channel:c]\ntopics = {realm}/#\n")
    for form, text in recorded.items():
        (tmp_path / f"{form}.txt").write_text(text)
        result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", str(config), "--dry-run", "--messages",
                                 str(tmp_path / f"{form}.txt")], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (form, text, result.stderr)
        rows = sorted((json.loads(line)["table"], json.loads(line)["fields"]) for line in result.stdout.splitlines())
        assert rows == [("g_a_sensors", {"v": 1.5}), ("g_b_sensors", {"t": 21.5})], (form, rows)
    assert not (tmp_path / "x.sqlite").exists()
    for node in ("a", "b"):  # (the retained messages cleared)
        subprocess.run(["mosquitto_pub", "-p", port, "-r", "-n", "-t", f"{realm}/n/g/{node}/data/t"], check=True,
                       timeout=30)


def test_sigint_stops_the_gateway_when_the_parent_ignored_it(tmp_path, broker):  # noqa: F811
    """A gateway started as a shell's background job (SIGINT ignored) still stops cleanly on SIGINT."""
    realm = f"int{uuid.uuid4().hex[:8]}"
    config = gateway_config(str(tmp_path), broker.port, realm, f"sqlite:///{tmp_path}/gateway.sqlite")
    log = open(tmp_path / "gw.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", config], stdout=log,
                               stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log.close()
    from tests.gatewayproc import RUNNING

    RUNNING.append(process)
    wait_until(lambda: "every subscription acknowledged" in (tmp_path / "gw.log").read_text(), 30, "the gateway")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0


def test_a_second_sigterm_while_stopping_is_harmless(tmp_path, mosquitto):
    """SIGTERM again while the gateway is stopping (an impatient operator, a supervisor's retry): it stops
    once, with exit code 0 and no traceback. The stop is kept busy by a storage that is down, without a
    spool, so that the second signal arrives while the first is being handled."""
    from tests.servers import free_port

    realm = f"ds{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    config = gateway_config(str(tmp_path), mosquitto.port, realm, url, "spool = false\n")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    wait_until(lambda: "lorrygate is running" in gateway.text(), 30, "the gateway to run")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"v": 1}))])
    publisher.close()
    wait_until(lambda: "failed" in gateway.text() and "writing" in gateway.text(), 30, "a failed write")
    gateway.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in gateway.text() or "shutting down" in gateway.text(), 30, "the stop to begin")
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(60) == 0
    text = gateway.text()
    assert "Traceback" not in text and "ReactorNotRunning" not in text and '"level": "critical"' not in text, text[-2000:]


class SilentServer:
    """A "PostgreSQL server" that takes the connection and says nothing: a storage's connect waits in the start
    until `answer` (its connection closed: the connect fails, and the storage starts without its server, as it
    does when one is away)."""

    def __init__(self):
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(4)
        self.socket.settimeout(30)
        self.url = f"postgresql://postgres@127.0.0.1:{self.socket.getsockname()[1]}/postgres"
        self.held = None

    def connected(self) -> None:
        """Wait for the gateway's storage to connect: the gateway is inside its start."""
        self.held, _ = self.socket.accept()

    def answer(self) -> None:
        if self.held is not None:
            self.held.close()

    def close(self) -> None:
        self.answer()
        self.socket.close()


def starting(tmp_path, port, prefix, **options) -> tuple:
    """A gateway whose start waits in its PostgreSQL storage's connect, and the silent server it waits for."""
    server = SilentServer()
    config = gateway_config(str(tmp_path), port, f"{prefix}{uuid.uuid4().hex[:8]}", server.url)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"), **options).start(ready=None)
    server.connected()
    return gateway, server


def test_sigterm_while_starting_stops_gracefully_once_started(tmp_path, mosquitto):
    """SIGTERM while the gateway is still starting (`systemctl stop` while a storage connects) stops it the
    graceful way once the start has finished: exit code 0 and the final statistics, not "stopped without its
    graceful stop" and exit code 1. The PostgreSQL server here is a socket that takes the connection and says
    nothing, so the start waits in the storage's connect until the test lets it go on."""
    gateway, server = starting(tmp_path, mosquitto.port, "st")
    try:
        gateway.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping once the gateway has started" in gateway.text(), 30, "the signal to be handled")
        server.answer()
        assert gateway.process.wait(60) == 0, gateway.text()[-3000:]
    finally:
        server.close()
    finals = [e for e in gateway.events() if e.get("event") == "storage_stats" and e.get("final")]
    assert finals, gateway.text()[-3000:]
    text = gateway.text()
    assert "without its graceful stop" not in text and "Traceback" not in text, text[-3000:]
    assert '"level": "critical"' not in text, text[-3000:]


def test_sighup_while_starting_reloads_once_started(tmp_path, mosquitto):
    """SIGHUP while the gateway is still starting (`kill -HUP` right after the start) did what SIGHUP does to a
    process that has not asked for it: ended it, without the graceful stop. It is a reload once started."""
    gateway, server = starting(tmp_path, mosquitto.port, "sh")
    try:
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloading once started" in gateway.text() or gateway.process.poll() is not None, 30,
                   "the signal to be handled")
        server.answer()
        wait_until(lambda: reloaded(gateway) or gateway.process.poll() is not None, 60, "the reload")
        assert gateway.process.poll() is None, gateway.text()[-3000:]
        assert gateway.stop() == 0, gateway.text()[-3000:]
    finally:
        server.close()


def test_a_start_that_does_not_finish_after_sigterm_is_given_up(tmp_path, mosquitto):
    """A start still running START_WAIT seconds after SIGTERM (a database server that takes the connection and
    never answers) is not waited for longer: the gateway says so and exits 1, without its graceful stop (nothing
    had been acknowledged). The wait is 1 s here (tests/shortstart.py), 60 s in the product."""
    gateway, server = starting(tmp_path, mosquitto.port, "gu", module="tests.shortstart",
                               env={**os.environ, "LORRYGATE_TEST_START_WAIT": "1"})
    try:
        gateway.process.send_signal(signal.SIGTERM)  # (the connect would wait for its 10 s timeout)
        assert gateway.process.wait(30) == 1, gateway.text()[-3000:]
    finally:
        server.close()
    text = gateway.text()
    assert "the start has not finished in 1 s; stopping without it" in text, text[-3000:]
    assert "stopped without its graceful stop" in text, text[-3000:]

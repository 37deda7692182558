"""
The files source through SIGKILLs: 100,000 NDJSON lines appended by a
writer that rotates the file twice (logrotate's rename: the glob names the
live file only, so the rotated parts are read through the kept file or, after
a restart, found again by inode); the gateway is SIGKILLed twice in the
middle. Every line is stored exactly once: what the offsets file had not yet
noted is read again, and SQLite, holding the byte ranges it stored in the
same transaction as the rows, leaves it out.
"""

import json
import os
import signal
import textwrap
import threading
import time

import pytest

from tests.gatewayproc import GatewayProcess, query
from tests.servers import wait_until

pytestmark = pytest.mark.integration

LINES = 100_000


def writer(live: str, stop: threading.Event, running: threading.Event) -> None:
    """Append the lines in bursts, rotating at a third and at two thirds, each while the gateway runs: a file
    created and rotated away while it is down is outside a glob that names the live file only
    (docs/sources.rst), and on a slow machine a restart took longer than a third of the lines."""
    handle = open(live, "a")
    for n in range(LINES):
        if n in (LINES // 3, 2 * LINES // 3):
            running.wait(120)
            handle.close()
            if os.path.exists(live + ".1"):
                os.rename(live + ".1", live + ".2")
            os.rename(live, live + ".1")
            handle = open(live, "a")
        handle.write(json.dumps({"n": n, "value": n * 0.5, "note": "x" * (n % 7)}) + "\n")
        if n % 500 == 499:
            handle.flush()
            time.sleep(0.02)  # about 25,000 lines a second
        if stop.is_set():
            break
    handle.close()


def test_every_line_stored_exactly_once_through_rotations_and_two_sigkills(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    live = str(logs / "readings.ndjson")
    open(live, "w").close()
    config = tmp_path / "gateway.ini"
    config.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {tmp_path}/var
        log_format = json
        control = off
        stats_interval = 1s

        [source:logs]
        type = files
        path = {live}
        topic = lab/{{stem}}

        [storage:db]
        url = sqlite:///{tmp_path}/gateway.sqlite
        synchronous = NORMAL

        [channel:main]
        source = logs
        strategy = topic
        topics = #
        """))
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(str(config), str(tmp_path / "gw.log"))
    gateway.start(ready="following")
    stop, running = threading.Event(), threading.Event()
    running.set()
    thread = threading.Thread(target=writer, args=(live, stop, running), daemon=True)
    thread.start()

    def stored() -> int:
        try:
            return query(db, 'SELECT count(*) FROM "lab__readings"')[0][0]
        except Exception:
            return 0

    try:
        for at in (LINES // 4, 3 * LINES // 5):
            wait_until(lambda: stored() >= at, 120, f"{at} lines stored")
            running.clear()
            gateway.process.send_signal(signal.SIGKILL)
            gateway.process.wait()
            assert stored() < LINES, "the gateway was killed after the end, not in the middle"
            gateway.start(ready="following")
            running.set()
        thread.join(120)
        assert not thread.is_alive()
        wait_until(lambda: stored() >= LINES, 120, "every line stored")
        assert gateway.stop() == 0
    finally:
        stop.set()
        if gateway.process.poll() is None:
            gateway.process.kill()
    (count, distinct, low, high), = query(db, 'SELECT count(*), count(DISTINCT n), min(n), max(n) FROM "lab__readings"')
    assert (count, distinct, low, high) == (LINES, LINES, 0, LINES - 1)
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]
    # the storage's count of messages read again after each SIGKILL (its last stats line before the kill)
    again = max((event.get("held_already", 0) for event in gateway.events()), default=0)
    print(f"files through two SIGKILLs and two rotations: {count} rows for {LINES} lines; "
          f"positions: {query(db, 'SELECT count(*) FROM lorrygate_positions')[0][0]} streams; read again: {again}")


def test_csv_into_postgresql_exactly_once_through_a_sigkill_and_a_copytruncate(tmp_path, postgres):
    """CSV with a header into a real PostgreSQL: the gateway SIGKILLed while
    reading, then the file truncated in place (copytruncate, the copy not in
    the glob) and written on: each row once."""
    import uuid

    import psycopg

    realm = f"f{uuid.uuid4().hex[:6]}"
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "meter.csv"
    config = tmp_path / "gateway.ini"
    config.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {tmp_path}/var
        log_format = json
        control = off

        [source:meters]
        type = files
        path = {logs}/*.csv
        header = true
        topic = {realm}/{{stem}}

        [storage:pg]
        url = {postgres.url}

        [channel:main]
        source = meters
        strategy = topic
        decoders = csv
        topics = #
        storage = pg
        """))

    def append(start, end):
        with open(live, "a") as handle:
            if start == 0 or live.stat().st_size == 0:
                handle.write("n,kwh\n")
            handle.writelines(f"{n},{n * 0.25}\n" for n in range(start, end))

    def rows():
        with psycopg.connect(postgres.url) as conn:
            found = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                                 "WHERE table_schema = %s", [realm]).fetchall()
            if not found:
                return []
            schema, table = found[0]
            return conn.execute(f'SELECT n FROM "{schema}"."{table}"').fetchall()

    append(0, 10_000)
    gateway = GatewayProcess(str(config), str(tmp_path / "gw.log"))
    gateway.start(ready="following")
    try:
        wait_until(lambda: len(rows()) >= 3_000, 60, "3,000 rows")
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
        append(10_000, 15_000)
        gateway.start(ready="following")
        wait_until(lambda: len(rows()) >= 15_000, 60, "15,000 rows")
        os.link(live, logs / "meter.csv.1")  # copytruncate: the copy (here a link) is not in the glob
        os.truncate(live, 0)
        append(15_000, 20_000)
        wait_until(lambda: len(rows()) >= 20_000, 60, "20,000 rows")
        assert gateway.stop() == 0
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    found = [n for (n,) in rows()]
    assert len(found) == 20_000 and set(found) == set(range(20_000))

"""
``lorrygate backfill`` on a real dask.distributed LocalCluster with two
worker processes: 200,000 recorded lines in 8 files (two of them gzipped)
into a real PostgreSQL; one worker process is SIGKILLed in the middle, Dask
runs its task again elsewhere, and every line is stored exactly once (count
and distinct keys). SQLite is refused with a reason.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

from tests.servers import wait_until

pytestmark = pytest.mark.integration
distributed = pytest.importorskip("distributed")

FILES, PER_FILE = 8, 25_000


def config(path, storage_url, realm) -> str:
    path.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {path.parent}/var

        [source:recorded]
        type = files
        path = {path.parent}/recordings/*
        topic = {realm}/{{stem}}

        [storage:db]
        url = {storage_url}

        [channel:archive]
        source = recorded
        strategy = topic
        topics = #
        """))
    return str(path)


def record(directory, realm):
    directory.mkdir()
    for f in range(FILES):
        lines = "".join(json.dumps({"n": f * PER_FILE + i, "time": 1_717_243_200_000 + i, "v": i * 0.5}) + "\n"
                        for i in range(PER_FILE))
        if f < 2:
            with gzip.open(directory / f"node-{f}.ndjson.gz", "wt") as handle:
                handle.write(lines)
        else:
            (directory / f"node-{f}.ndjson").write_text(lines)


def test_200000_lines_on_two_workers_through_a_killed_worker(tmp_path, postgres):
    realm = f"b{os.getpid()}{int(time.time()) % 100000}"
    record(tmp_path / "recordings", realm)
    path = config(tmp_path / "gateway.ini", postgres.url, realm)

    def stored():
        with psycopg.connect(postgres.url) as conn:
            tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                  [realm]).fetchall()
            return [n for (table,) in tables for (n,) in conn.execute(f'SELECT n FROM "{realm}"."{table}"')]

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        pids = sorted(client.run(os.getpid).values())
        run = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "backfill", "-c", path, "--source",
                                str(tmp_path / "recordings" / "*"), "--scheduler", cluster.scheduler_address],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: len(stored()) >= 40_000 or run.poll() is not None, 120, "40,000 rows")
            assert run.poll() is None, "the run ended before a worker could be killed"
            os.kill(pids[0], signal.SIGKILL)
            output, _ = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, output
    found = stored()
    assert len(found) == FILES * PER_FILE and len(set(found)) == FILES * PER_FILE, output
    assert f"{FILES * PER_FILE:,} lines" in output and "Dask dashboard: http" in output
    print(output.splitlines()[-1], f"(a worker killed at >= 40,000 rows; {len(found)} rows, {len(set(found))} distinct)")


def test_sqlite_is_refused_for_a_distributed_backfill(tmp_path):
    path = config(tmp_path / "gateway.ini", f"sqlite:///{tmp_path}/x.sqlite", "r")
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "backfill", "-c", path, "--source",
                           str(tmp_path / "*.ndjson")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "SQLite, which takes one writer" in done.stderr


def test_a_backfill_into_cratedb_with_idempotent_rows(tmp_path):
    """Into CrateDB (the fake of CrateDB's documented HTTP answers, in a process of its own, since the
    workers are other processes), which needs idempotent rows; without them it is refused."""
    import json as json_
    import urllib.request

    from tests.servers import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.fakecrate", str(port)])
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), 30, "the CrateDB fake")
        realm = "bcrate"
        (tmp_path / "recordings").mkdir()
        for f in range(2):
            (tmp_path / "recordings" / f"node-{f}.ndjson").write_text(
                "".join(json.dumps({"n": f * 2_000 + i, "time": 1_717_243_200_000 + i}) + "\n" for i in range(2_000)))
        path = config(tmp_path / "gateway.ini", f"crate://127.0.0.1:{port}/", realm)
        refused = subprocess.run([sys.executable, "-m", "lorrygate.cli", "backfill", "-c", path, "--source",
                                  str(tmp_path / "recordings" / "*")], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "idempotent = true" in refused.stderr
        text = open(path).read().replace(f"url = crate://127.0.0.1:{port}/", f"url = crate://127.0.0.1:{port}/\n"
                                         "idempotent = true\nreplicas = 0")
        open(path, "w").write(text)
        done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "backfill", "-c", path, "--source",
                               str(tmp_path / "recordings" / "*"), "--workers", "1"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        numbers = []
        for f in range(2):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/rows?schema={realm}&table=node_{f}") as answer:
                numbers += [row["n"] for row in json_.loads(answer.read())]
        assert sorted(numbers) == list(range(4_000))
    finally:
        server.terminate()
        server.wait(10)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False

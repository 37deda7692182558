"""A 2,000-message run of the benchmark, so that it cannot rot (no timing is asserted,
but every row is counted and the latency figures must be consistent)."""

import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_benchmark_smoke_run(tmp_path):
    """bench/run.py --quick runs every scenario, counts every row and writes its JSON and table."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = glob.glob(str(tmp_path / "*-quick.json"))
    report = json.load(open(path))
    assert report["drain"]["sqlite"]["median"] > 0 and report["drain"]["postgresql"]["median"] > 0
    live = report["live"][0]
    assert live["stored"] == live["sent"] > 0, "every live message stored exactly once (after a graceful stop)"
    assert 0 < live["p50_ms"]["median"] <= live["p99_ms"]["median"]
    fleet = report["live"][-1]
    assert fleet["nodes"] == 200 and fleet["stored"] == fleet["sent"] > 0, "a fleet's tables, restarted gateway"
    assert [row["nodes"] for row in report["tables"]] == [1, 100]
    assert report["amqp"]["sqlite"]["median"] > 0 and report["amqp"]["relay"]["median"] > 0
    assert all(report["buses"][bus]["median"] > 0 for bus in ("redis", "kafka", "zmq"))
    assert report["syscall_us"] > 0, "the machine's system-call cost, beside the Python calibration"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert report["tree"].split()[0] == (head or "unknown"), "which commit the run measured"
    (table,) = glob.glob(str(tmp_path / "*-quick.md"))
    text = open(table).read()
    assert "A 64-byte send and its recv over TCP" in text and f"Tree: {report['tree']}" in text


def test_hotpath_harness_runs(tmp_path):
    """bench/hotpath.py (the reactor thread's path in-process, and the SQLite writer) runs and reports."""
    for extra in ([], ["--writer"]):
        result = subprocess.run([sys.executable, "-m", "bench.hotpath", "--messages", "2000", "--rounds", "1", *extra],
                                capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        figures = json.loads(result.stdout)
        assert figures["messages"] == 2000 and figures["us_per_message_best"] > 0

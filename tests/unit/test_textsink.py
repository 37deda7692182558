"""
The text sink when the disk fills up mid-batch: the file is cut back to where
the batch began, so that the retry appends whole lines and a reader loses
nothing. A real write error of the kernel, not a double: a child process
with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) gets EFBIG in the
middle of the batch, as a full disk gives ENOSPC. And what a dead-letter line keeps.
"""

import csv
import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import resource, signal, sys
    from lorrygate.model import Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.sinks import TextSink

    path, form, first = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def batch(start, count):
        made = Batch()
        for seq in range(start, start + count):
            made.add(Entry(TableName("r_net", "gw_n1_sensors"), [Record(seq, {"seq": seq, "pad": "x" * 40})],
                           "main", Message("r/net/gw/n1/data.json", b"{}", 1, False, 1.0, "#"), "json"))
        return made

    def write(made):
        failures = []
        TextSink("file", path, None, format=form).write(made).addErrback(failures.append)
        return failures[0].getErrorMessage() if failures else None

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if first:
        assert write(batch(0, first)) is None
    with open(path, "rb") as handle:
        size = len(handle.read())
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, resource.RLIM_INFINITY))
    error = write(batch(first, 100))  # ~8 KB: cut off after 1,000 bytes
    print(error)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert write(batch(first, 100)) is None  # the retry
""")


@pytest.mark.parametrize("form,first", [("ndjson", 5), ("ndjson", 0), ("csv", 5), ("csv", 0)])
def test_a_batch_cut_short_by_a_full_disk_leaves_no_torn_line(tmp_path, form, first):
    """NDJSON and CSV, into a file with rows and into a new one (whose CSV header must come back): after a write
    that failed part way and its retry, every line is whole and every row is there once, in order."""
    path = tmp_path / f"rows.{form}"
    path.touch()
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), form, str(first)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cannot append to" in done.stdout and "File too large" in done.stdout, done.stdout
    text = path.read_text()
    if form == "ndjson":
        seqs = [json.loads(line)["fields"]["seq"] for line in text.splitlines()]
    else:
        rows = list(csv.reader(text.splitlines()))
        assert rows[0] == ["time", "schema", "table", "topic", "fields", "tags", "error"]
        seqs = [json.loads(row[4])["seq"] for row in rows[1:]]
    assert seqs == list(range(first + 100))


def test_a_dead_letter_line_keeps_the_content_type_and_the_headers(tmp_path):
    """An NDJSON dead-letter line has its message's MQTT 5 Content Type (what a replay would decode it by) and
    its headers (MQTT 5 user properties, ...), in the order sent."""
    from lorrygate.model import Message
    from lorrygate.storage.batch import Batch, DeadLetter
    from lorrygate.storage.sinks import TextSink

    path = tmp_path / "rows.ndjson"
    batch = Batch()
    batch.add_dead_letter(DeadLetter("main", Message("t/a", b"\xa1", 1, False, 1.0, "#", content_type="application/cbor"),
                                     "topology", "bad"))
    batch.add_dead_letter(DeadLetter("main", Message("t/b", b"x", 1, False, 1.0, "#", headers=(("z", "1"), ("a", "2"))),
                                     "topology", "bad"))
    failures: list = []
    TextSink("file", str(path), None, format="ndjson").write(batch).addErrback(failures.append)
    assert failures == []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row.get("content_type") for row in rows] == ["application/cbor", None]
    assert [row.get("headers") for row in rows] == [None, [["z", "1"], ["a", "2"]]]
    assert rows[0]["payload_base64"]

"""
Kotori's data export on the HTTP source (``export = yes``), in a running gateway: what was posted comes back
as CSV, JSON and NDJSON from SQLite and from a real PostgreSQL, within Kotori's ``from``/``to`` and with its
``include``/``exclude``; a client that goes away mid-export ends the read; the export wants its own token.
"""

import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import uuid

from tests.gatewayproc import GatewayProcess
from tests.integration.test_http_source import config, post, started
from tests.servers import wait_until

NODE = "/api/mqttkit-1/testdrive/area-42/node-1/data"


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def with_storage(tmp_path, url: str) -> tuple:
    """A gateway of `config` whose storage is the PostgreSQL at ``url``, and its port."""
    gateway = GatewayProcess(config(str(tmp_path), extra_source="export = yes\n"), str(tmp_path / "gw.log"))
    with open(gateway.config) as handle:
        text = handle.read().replace(f"url = sqlite:///{tmp_path}/http.sqlite\nsynchronous = NORMAL", f"url = {url}")
    with open(gateway.config, "w") as handle:
        handle.write(text)
    gateway.start(ready="listening on http://")
    line = next(e["message"] for e in gateway.events() if "listening on http://" in e.get("message", ""))
    return gateway, int(line.split("127.0.0.1:")[1].split("/")[0])


def test_what_was_posted_comes_back_as_csv_json_and_ndjson_within_from_and_to(tmp_path):
    gateway, port = started(tmp_path, extra_source="export = yes\n")
    try:
        for n, when in enumerate(["2024-06-01T12:00:00Z", "2024-06-01T13:00:00Z", "2024-06-02T09:30:00.25Z"]):
            body = json.dumps({"time": when, "temperature": 21.5 + n, "humidity": 40 + n, "weight": 10000,
                               "label": f"a,\"b\" {n}"}).encode()
            assert post(port, NODE, body)[0] == 200
        status, text, headers = get(port, f"{NODE}.csv?from=2024-06-01&to=2024-06-30")
        assert status == 200 and headers["Content-Type"].startswith("text/csv"), text
        assert text.splitlines() == [
            "time,temperature,humidity,weight,label",
            '2024-06-01T12:00:00.000000000Z,21.5,40,10000,"a,""b"" 0"',
            '2024-06-01T13:00:00.000000000Z,22.5,41,10000,"a,""b"" 1"',
            '2024-06-02T09:30:00.250000000Z,23.5,42,10000,"a,""b"" 2"',
        ]
        # Kotori's exclude, and a "to" of a date alone is the end of that day
        status, text, headers = get(port, f"{NODE}.json?from=20240601&to=2024-06-01&exclude=weight,label")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(text) == [{"time": "2024-06-01T12:00:00.000000000Z", "temperature": 21.5, "humidity": 40},
                                    {"time": "2024-06-01T13:00:00.000000000Z", "temperature": 22.5, "humidity": 41}]
        # an offset ("+" sent as %2B, or as a space as a query string makes it), include
        status, text, _ = get(port, f"{NODE}.ndjson?from=2024-06-01T14:30:00%2B02:00&include=humidity")
        assert status == 200
        assert [json.loads(line) for line in text.splitlines()] == [
            {"time": "2024-06-01T13:00:00.000000000Z", "humidity": 41},
            {"time": "2024-06-02T09:30:00.250000000Z", "humidity": 42}]
        status, text, _ = get(port, f"{NODE}.txt?from=2024-06-01T14:30:00+02:00&include=humidity")
        assert status == 200 and len(text.splitlines()) == 3
        # the default range is the last ten days: rows of 2024 are not in it; now-<span>
        assert get(port, f"{NODE}.csv")[1].splitlines() == ["time,temperature,humidity,weight,label"]
        assert post(port, NODE, b'{"temperature": 30.5}')[0] == 200
        status, text, _ = get(port, f"{NODE}.csv?from=now-5m&include=temperature")
        assert status == 200 and text.splitlines()[1:] and text.splitlines()[1].endswith(",30.5"), text

        # what cannot be answered says why
        status, text, _ = get(port, f"{NODE}.xlsx")
        assert status == 400 and ".csv, .txt, .tsv, .json, .ndjson" in json.loads(text)["error"]
        status, text, _ = get(port, f"{NODE}.csv?from=yesterday")
        assert status == 400 and "time 'yesterday'" in json.loads(text)["error"]
        status, text, _ = get(port, "/api/mqttkit-1/testdrive/area-42/node-9/data.csv")
        assert status == 404 and "does not exist" in json.loads(text)["error"]
        status, text, _ = get(port, "/api/nothing.csv")
        assert status == 404 and "the topic 'nothing.csv' (it does not fit the topology)" in json.loads(text)["error"]
        kotoris_query_options(port, "/api/mqttkit-1/testdrive/area-42/node-2/data")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_an_export_from_postgresql(tmp_path, postgres):
    realm = f"ex{uuid.uuid4().hex[:8]}"
    node = f"/api/{realm}/testdrive/area-42/node-1/data"
    gateway, port = with_storage(tmp_path, postgres.url)
    try:
        body = {"time": "2024-06-01T12:00:00.123456Z", "temperature": 21.5, "wifi": {"rssi": -60}, "on": True}
        assert post(port, node, json.dumps(body).encode())[0] == 200
        assert post(port, node, json.dumps({**body, "time": "2024-06-01T12:00:01Z"}).encode())[0] == 200
        status, text, _ = get(port, f"{node}.json?from=2024-06-01T12:00:00.5Z&to=2024-06-02")
        assert status == 200, text
        [row] = json.loads(text)
        assert row == {"time": "2024-06-01T12:00:01.000000Z", "temperature": 21.5, "wifi.rssi": -60, "on": True}
        status, text, _ = get(port, f"{node}.csv?from=2024-06-01&to=2024-06-01")
        assert text.splitlines() == ["time,temperature,wifi.rssi,on",
                                     "2024-06-01T12:00:00.123456Z,21.5,-60,True",
                                     "2024-06-01T12:00:01.000000Z,21.5,-60,True"], text
        kotoris_query_options(port, f"/api/{realm}/testdrive/area-42/node-2/data")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def kotoris_query_options(port, node, sql: bool = True) -> None:
    """Kotori's sort, direction, limit, scalar and pad, and the .tsv format, on four rows posted to ``node``; what
    is not offered (backfill, interpolate; a sort by other columns than the time from CrateDB) is a 400."""
    for n, (temperature, humidity) in enumerate([(20.5, 40), (21.5, None), (19.5, 42), (22.5, None)]):
        body = {"time": f"2024-06-01T12:00:0{n}Z", "temperature": temperature}
        if humidity is not None:
            body["humidity"] = humidity
        assert post(port, node, json.dumps(body).encode())[0] == 200
    day = "from=2024-06-01&to=2024-06-01"

    def column(query: str) -> list:
        status, text, _ = get(port, f"{node}.csv?{day}&{query}")
        assert status == 200, text
        return [float(line.split(",")[1]) if line.split(",")[1] else None for line in text.splitlines()[1:]]

    assert column("include=temperature&direction=descending&limit=2") == [22.5, 19.5]
    status, text, _ = get(port, f"{node}.json?{day}&exclude=time,humidity&limit=2")  # Kotori's exclude of the time
    assert status == 200 and json.loads(text) == [{"temperature": 20.5}, {"temperature": 21.5}], text
    assert column("include=temperature&limit=0") == []
    assert column("include=humidity") == [40, None, 42, None]
    assert column("include=humidity&pad=true") == [40, 40, 42, 42]  # the last known value
    status, text, headers = get(port, f"{node}.csv?{day}&scalar=temperature&direction=desc")
    assert (status, text) == (200, "22.5") and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert get(port, f"{node}.csv?{day}&scalar=temperature")[1] == "20.5"
    status, text, _ = get(port, f"{node}.tsv?{day}&include=temperature&limit=1")
    assert status == 200 and text.splitlines()[0] == "time\ttemperature" and text.splitlines()[1].endswith("\t20.5")
    if sql:
        assert column("include=temperature&sort=temperature") == [19.5, 20.5, 21.5, 22.5]
        assert column("include=temperature&sort=temperature&direction=desc&limit=1") == [22.5]
        status, text, _ = get(port, f"{node}.csv?{day}&sort=nope")
        assert status == 400 and "sort=nope: no such column" in json.loads(text)["error"]
    else:
        status, text, _ = get(port, f"{node}.csv?{day}&sort=temperature")
        assert status == 400 and "sorted by time only" in json.loads(text)["error"]
    for query, why in [("limit=ten", "limit=ten: a count of rows"), ("backfill=true", "backfill=true is not offered"),
                       ("interpolate=yes", "interpolate=true is not offered"), ("direction=up", "direction=up"),
                       ("scalar=nope", "scalar=nope: no such column exported")]:
        status, text, _ = get(port, f"{node}.csv?{day}&{query}")
        assert status == 400 and why in json.loads(text)["error"], (query, text)
    status, text, _ = get(port, f"{node}.csv?from=2020-01-01&to=2020-01-02&scalar=temperature")
    assert status == 404 and "no data in the range" in json.loads(text)["error"]


def post_20_mb(port, headers) -> None:
    """20,000 rows of ~1 kB (more than the sockets' buffers hold) into the node's table."""
    pad = "x" * 1000
    for part in range(4):
        rows = "\n".join(f"2024-06-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z,{n},{pad}"
                         for n in range(part * 5000, part * 5000 + 5000))
        status, body, _ = post(port, NODE, ("time,value,pad\n" + rows + "\n").encode(), "text/csv", headers=headers)
        assert status == 200, body


def reading_slowly(port, token: str | None) -> socket.socket:
    """A client of the node's export that has its answer's status line and reads no more."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    client.sendall(f"GET {NODE}.csv?from=2024-06-01 HTTP/1.1\r\nHost: x\r\n{authorization}\r\n".encode())
    assert client.recv(1024).startswith(b"HTTP/1.1 200")
    return client


def export_status(gateway) -> dict:
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", gateway.config, "status", "--json"],
                            capture_output=True, text=True, timeout=30)
    [source] = json.loads(result.stdout)["sources"]
    return source["details"]


def test_a_client_that_goes_away_ends_its_export_and_the_export_wants_its_token(tmp_path):
    """An export of 20 MB to a client that reads a little and closes: the export waits for the client meanwhile
    (the status says one runs), and ends once it is gone; the gateway keeps storing. The devices' token does not export; the export's does."""
    extra = "export = yes\ntoken = device-secret\nexport_token = reader-secret\n"
    gateway, port = started(tmp_path, extra_source=extra)
    device = {"Authorization": "Bearer device-secret"}
    reader = {"Authorization": "Bearer reader-secret"}
    try:
        post_20_mb(port, device)
        assert get(port, f"{NODE}.csv?from=2024-06-01", device)[0] == 401
        assert get(port, f"{NODE}.csv?from=2024-06-01")[0] == 401
        status, text, _ = get(port, f"{NODE}.csv?from=2024-06-01&include=value", reader)
        assert status == 200 and [line.split(",")[1] for line in text.splitlines()[1:]] == [str(n) for n in range(20_000)]

        client = reading_slowly(port, "reader-secret")
        # the client reads nothing more: the export waits for it (20 MB are more than the sockets' buffers hold)
        wait_until(lambda: export_status(gateway)["exports_waiting"] == 1, 30, "the export to wait for its client")
        assert export_status(gateway)["exporting"] == 1
        client.close()
        wait_until(lambda: export_status(gateway)["exporting"] == 0, 30, "the export to end after its client went away")
        assert export_status(gateway)["exports_stalled"] == 0
        assert post(port, NODE, b'{"temperature": 1.5}', headers=device)[0] == 200
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_a_client_that_stops_reading_is_cut_after_export_stall_and_the_wal_checkpoints_again(tmp_path):
    """A client that takes none of its export for ``export_stall`` while keeping its connection: the export is
    cut (a warning, the status counts it), its read of SQLite ends, and the WAL, written meanwhile, can be
    checkpointed to nothing again. Without the cut, the read would hold the WAL for as long as the client lives."""
    gateway, port = started(tmp_path, extra_source="export = yes\nexport_stall = 2\n")
    try:
        post_20_mb(port, {})
        client = reading_slowly(port, None)
        wait_until(lambda: export_status(gateway)["exports_stalled"] == 1, 60, "the stalled export to be cut")
        wait_until(lambda: export_status(gateway)["exporting"] == 0, 30, "the cut export's read to end")
        assert post(port, NODE, b'{"temperature": 1.5}')[0] == 200  # (written after the export's snapshot)
        with sqlite3.connect(tmp_path / "http.sqlite", timeout=30) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0  # (1 while a read holds the WAL)
        client.settimeout(30)
        taken = 0
        try:
            while chunk := client.recv(1 << 16):
                taken += len(chunk)
        except ConnectionResetError:
            pass  # (the gateway aborts the connection: what the client's buffers held may be dropped)
        client.close()
        assert taken < 20_000_000  # a cut answer, not a whole one
        assert any("read nothing for 2 s" in event.get("message", "") for event in gateway.events())
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_an_export_while_postgresql_is_away_is_a_503_to_send_again(tmp_path):
    from tests.servers import free_port

    gateway, port = with_storage(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        status, text, headers = get(port, f"{NODE}.csv")
        assert status == 503 and headers.get("Retry-After") == "1", (status, text)
        assert "reading the storage failed" in json.loads(text)["error"]
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def _crate_export(tmp_path, url: str) -> None:
    """What was posted comes back from CrateDB: its objects' leaves as columns (``wifi.rssi``; numbers as the
    writer sent them, floats under values = kotori), the time in milliseconds as CrateDB keeps it."""
    realm = f"ex{uuid.uuid4().hex[:8]}"
    node = f"/api/{realm}/testdrive/area-42/node-1/data"
    gateway, port = with_storage(tmp_path, url)  # (any storage URL)
    try:
        for n in range(3):
            body = {"time": f"2024-06-01T12:00:0{n}.250Z", "temperature": 21.5 + n, "wifi": {"rssi": -60 - n},
                    "label": f"it's {n}"}
            assert post(port, node, json.dumps(body).encode())[0] == 200
        status, text, _ = get(port, f"{node}.csv?from=2024-06-01&to=2024-06-01")
        assert status == 200, text
        assert text.splitlines() == ["time,label,temperature,wifi.rssi",
                                     "2024-06-01T12:00:00.250Z,it's 0,21.5,-60.0",
                                     "2024-06-01T12:00:01.250Z,it's 1,22.5,-61.0",
                                     "2024-06-01T12:00:02.250Z,it's 2,23.5,-62.0"], text
        status, text, _ = get(port, f"{node}.json?from=2024-06-01T12:00:01Z&to=2024-06-02&include=wifi.rssi")
        assert status == 200 and json.loads(text) == [{"time": "2024-06-01T12:00:01.250Z", "wifi.rssi": -61.0},
                                                      {"time": "2024-06-01T12:00:02.250Z", "wifi.rssi": -62.0}], text
        # a text too long for CrateDB to index is kept in extra_fields, and exported with it
        snapshot = "A" * 40_000
        body = {"time": "2024-06-01T12:00:03.250Z", "temperature": 20.5, "snapshot": snapshot}
        assert post(port, node, json.dumps(body).encode())[0] == 200
        status, text, _ = get(port, f"{node}.json?from=2024-06-01T12:00:03Z&to=2024-06-02")
        assert status == 200, text
        (row,) = json.loads(text)
        assert row["temperature"] == 20.5 and row["extra_fields"] == {"snapshot": snapshot}, text[:500]
        kotoris_query_options(port, f"/api/{realm}/testdrive/area-42/node-2/data", sql=False)
        # a realm whose schema CrateDB creates no table in (_...): stored in lg__..., and exported from there
        odd = f"/api/_{realm}/testdrive/area-42/node-1/data"
        assert post(port, odd, json.dumps({"time": "2024-06-01T12:00:00Z", "temperature": 19.5}).encode())[0] == 200
        status, text, _ = get(port, f"{odd}.csv?from=2024-06-01&to=2024-06-02")
        assert status == 200 and text.splitlines() == ["time,temperature", "2024-06-01T12:00:00.000Z,19.5"], text
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_an_export_from_cratedb_of_the_fake(tmp_path):
    """Against the fake that follows CrateDB's documented answers (tests/fakecrate.py), in a process of its own."""
    import urllib.request

    from tests.servers import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.fakecrate", str(port)])

    def answers():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, 30, "the CrateDB fake")
        _crate_export(tmp_path, f"crate://127.0.0.1:{port}/\nreplicas = 0")
    finally:
        server.terminate()
        server.wait(30)


def test_an_export_from_a_real_cratedb(tmp_path):
    import os

    import pytest

    url = os.environ.get("LORRYGATE_CRATEDB_URL")
    if not url:
        pytest.skip("LORRYGATE_CRATEDB_URL is not set: no real CrateDB to export from")
    _crate_export(tmp_path, url.replace("http://", "crate://").replace("https://", "crate://") + "\nreplicas = 0")


async def crate_export_in_pages(monkeypatch, millis: list, page: int, meanwhile=None, args=None) -> tuple:
    """Rows ``n`` at ``millis[n]`` (ms after 2024-06-01T12:00Z) in CrateDB's fake, exported as CSV in pages of
    ``page`` rows, in-process against the fake's documented answers over a real socket, the export's request
    a real twisted.web one: the CSV's ``n`` column and the fake's SELECT statements. ``meanwhile(rows)`` is
    called after each page the fake answers, with the table's rows (to write into the range while it runs)."""
    import treq
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET, Site

    from lorrygate.model import Message, Record, TableName
    from lorrygate.sources import export
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.cratedb import CrateStorage, make_client
    from tests.fakecrate import FakeCrate
    from tests.servers import free_port

    monkeypatch.setattr(export, "PAGE", page)
    fake = FakeCrate()
    if meanwhile is not None:
        read = fake._read

        def reading(request, statement, args):
            try:
                return read(request, statement, args)
            finally:
                meanwhile(fake.tables["paged", "node_sensors"]["rows"])

        fake._read = reading
    crate_port = free_port()
    crate = reactor.listenTCP(crate_port, Site(fake), interface="127.0.0.1")
    store = CrateStorage("crate", f"http://127.0.0.1:{crate_port}", reactor, http=make_client(reactor, False, ""),
                         replicas="0")
    table = TableName("paged", "node_sensors")
    batch = Batch()
    for n, at in enumerate(millis):
        batch.add(Entry(table, [Record(1_717_243_200_000_000_000 + at * 1_000_000, {"n": n})], "main",
                        Message("t", b"{}", 1)))
    await store.start()
    await store.write(batch)

    class Topics:
        @staticmethod
        def table_for_topic(topic):
            return None, table, None

    exporter = export.Exporter(reactor, Topics(), store, "web")

    class Export(Resource):
        isLeaf = True

        def render_GET(self, request):
            exporter.begin(request, "paged/node/data.csv", "csv", {"from": "2024-06-01", **(args or {})},
                           1_717_300_000.0)
            return NOT_DONE_YET

    site = reactor.listenTCP(0, Site(Export()), interface="127.0.0.1")
    try:
        response = await treq.get(f"http://127.0.0.1:{site.getHost().port}/")
        text = (await treq.content(response)).decode()
    finally:
        await site.stopListening()
        await crate.stopListening()
        await store.stop()
    assert response.code == 200, text
    assert text.splitlines()[0] == "time,n"
    numbers = [int(float(line.split(",")[1])) for line in text.splitlines()[1:]]
    return numbers, [s for s in fake.statements if s.startswith('SELECT "time"')]


@__import__("pytest_twisted").ensureDeferred
async def test_a_cratedb_export_goes_a_page_at_a_time(monkeypatch):
    """25 rows of their own times in pages of 10: every row once, oldest first; each page starts past the last
    time of the one before (no OFFSET over the range), and the rows of a page's last time are read whole."""
    numbers, pages = await crate_export_in_pages(monkeypatch, list(range(25)), 10)
    assert numbers == list(range(25))
    assert len(pages) == 5 and '"time" >= ?' in pages[0] and '"time" = ?' in pages[1] and '"time" > ?' in pages[2]


@__import__("pytest_twisted").ensureDeferred
async def test_rows_that_share_a_time_across_pages_come_once_each(monkeypatch):
    """12 rows at one millisecond across the boundaries of pages of 5 (and more of them than a page): each of
    the 25 rows exactly once, in time order."""
    millis = [0, 1, 2] + [3] * 12 + list(range(4, 14))
    numbers, pages = await crate_export_in_pages(monkeypatch, millis, 5)
    assert sorted(numbers) == list(range(25)) and len(numbers) == 25
    assert [millis[n] for n in numbers] == sorted(millis)



@__import__("pytest_twisted").ensureDeferred
async def test_rows_written_into_the_range_while_an_export_runs_shift_no_page(monkeypatch):
    """A row written before the exported part while the export runs (a late device, a spool draining): no page
    shifts, so no row comes twice and none is skipped (pages by OFFSET over the range repeated one)."""

    def late_row(rows):
        if len(rows) == 25:
            rows.append({**rows[0], "fields": {"n": 99}})  # (at the first row's time)

    numbers, _ = await crate_export_in_pages(monkeypatch, list(range(25)), 10, late_row)
    assert [n for n in numbers if n != 99] == list(range(25))


@__import__("pytest_twisted").ensureDeferred
async def test_a_descending_cratedb_export_with_a_limit_goes_a_page_at_a_time(monkeypatch):
    """Newest first (direction=descending), in pages of 5, rows sharing a time across the pages' boundaries:
    each row once, newest first; with limit=17 the first 17 of them, and no page read past them."""
    millis = [0, 1, 2] + [3] * 12 + list(range(4, 14))
    numbers, pages = await crate_export_in_pages(monkeypatch, millis, 5, args={"direction": "desc"})
    assert sorted(numbers) == list(range(25)) and [millis[n] for n in numbers] == sorted(millis, reverse=True)
    assert '"time" < ?' in pages[-1] and all('ORDER BY "time" DESC' in p for p in pages)
    limited, fewer = await crate_export_in_pages(monkeypatch, millis, 5, args={"direction": "desc", "limit": "17"})
    assert limited == numbers[:17] and len(fewer) < len(pages)


def test_kotoris_test_export_sorting_limit_scalar(tmp_path):
    """Kotori's own test_export_sorting_limit_scalar (test/test_export.py), its requests and answers as they are."""
    gateway, port = started(tmp_path, extra_source="export = yes\n")
    try:
        for data in ({"time": 1583810982, "temperature": 25.26, "humidity": 51.8},
                     {"time": 1583810993, "temperature": 32.26, "humidity": 64.8}):
            assert post(port, NODE, json.dumps(data).encode())[0] == 200
        span = "from=2020-03-10&to=2020-03-10"
        status, text, _ = get(port, f"{NODE}.json?{span}&exclude=time,humidity&sort=temperature&direction=descending")
        assert status == 200 and json.loads(text) == [{"temperature": 32.26}, {"temperature": 25.26}], text
        status, text, _ = get(port, f"{NODE}.json?{span}&exclude=time,humidity&sort=temperature&direction=descending"
                                    f"&limit=1")
        assert json.loads(text) == [{"temperature": 32.26}]
        status, text, _ = get(port, f"{NODE}.txt?{span}&sort=temperature&direction=descending&scalar=temperature")
        assert (status, text) == (200, "32.26")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]

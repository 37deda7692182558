"""
Periodic sources against real peers: a local HTTP server (started by the
test) that answers JSON, then 500s for 5 s, then JSON again, and one that
takes 2 s to answer; a command; and Linux IIO read from a sysfs tree built
like the kernel's.
"""

import base64
import json
import os
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.gatewayproc import GatewayProcess, count_rows, query, tables
from tests.servers import wait_until

pytestmark = pytest.mark.integration


class Weather:
    """An HTTP server whose answers the test switches: ok (JSON with a new ETag), fail (500), slow (2 s),
    endless (a body that never ends), big (a body of 2 MB)."""

    def __init__(self):
        self.mode = "ok"
        self.answered = 0
        self.failed = 0
        self.not_modified = 0
        self.active = 0
        self.most_at_once = 0
        self.requests = 0
        self.cut = 0  # endless bodies whose client closed the connection
        self.authorization = None  # the Authorization header the server asks for (401 without), or None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with server._lock:
                    server.active += 1
                    server.requests += 1
                    server.most_at_once = max(server.most_at_once, server.active)
                try:
                    if server.authorization and self.headers.get("Authorization") != server.authorization:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="weather"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if server.mode == "endless":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/x-ndjson")
                        self.end_headers()
                        try:
                            while True:
                                self.wfile.write(b'{"x": 1}\n' * 1000)
                        except OSError:
                            with server._lock:
                                server.cut += 1
                        return
                    if server.mode == "big":
                        body = b"[" + b"1," * 1_000_000 + b"1]"
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    if server.mode == "slow":
                        time.sleep(2)
                    if server.mode == "fail":
                        server.failed += 1
                        self.send_response(500)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if server.mode == "same" and self.headers.get("If-None-Match") == f'"v{server.answered}"':
                        server.not_modified += 1  # nothing changed since the ETag the client sent
                        self.send_response(304)
                        self.end_headers()
                        return
                    with server._lock:
                        server.answered += 1
                        n = server.answered
                    body = json.dumps({"temperature": 20 + n / 10, "n": n}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("ETag", f'"v{n}"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with server._lock:
                        server.active -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a poll cut short by the gateway's stop
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/current.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def config(directory, source: str, realm: str) -> str:
    path = os.path.join(directory, "gateway.ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json
            control = off

            [source:weather]
            """) + textwrap.dedent(source) + textwrap.dedent(f"""
            topic = {realm}/net/gw/station/data.json

            [storage:db]
            url = sqlite:///{directory}/gateway.sqlite

            [channel:main]
            source = weather
            topics = {realm}/#
            """))
    return path


def polling(tmp_path, source: str, realm: str) -> tuple:
    """A gateway of ``source`` (the lines of its section) into SQLite, running; (gateway, its database)."""
    gateway = GatewayProcess(config(str(tmp_path), source, realm), str(tmp_path / "gw.log"))
    gateway.start(ready="lorrygate is running")
    return gateway, str(tmp_path / "gateway.sqlite")


def polled(tmp_path, weather, source: str, realm: str, what: str):
    """A gateway of ``source`` run until three of its polls are stored, then stopped (and ``weather`` with it)."""
    gateway, db = polling(tmp_path, source, realm)
    try:
        wait_until(lambda: count_rows(db, realm) >= 3, 30, what)
        assert gateway.stop() == 0
    finally:
        weather.stop()
    return gateway


def test_http_polls_a_row_per_answer_failures_logged_then_again(tmp_path):
    weather = Weather()
    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway, db = polling(tmp_path, f"type = poll\nurl = {weather.url}\ninterval = 250ms\n", realm)
    try:
        wait_until(lambda: count_rows(db, realm) >= 5, 30, "five polls stored")
        weather.mode = "fail"
        failed_from = time.monotonic()
        wait_until(lambda: time.monotonic() - failed_from >= 5, 10, "5 s of 500s", interval=0.1)
        weather.mode = "ok"
        stored_during_failure = count_rows(db, realm)
        wait_until(lambda: count_rows(db, realm) >= stored_during_failure + 5, 30, "polls stored again")
        weather.mode = "same"  # from now on the server answers 304 to the ETag it gave last
        wait_until(lambda: weather.not_modified >= 4, 30, "four polls answered 304")
        assert gateway.stop() == 0
    finally:
        weather.stop()
    rows = count_rows(db, realm)
    assert rows == weather.answered, "a row for every successful answer, none for a failure"
    # The first failure is logged with its reason; its repeats are counted (a line a minute at most), and the
    # first success says how many there were.
    failures = [e["message"] for e in gateway.events() if "polling failed" in e.get("message", "")]
    assert len(failures) == 1 and "answered 500" in failures[0], failures[:3]
    again = [e["message"] for e in gateway.events() if "polling works again" in e.get("message", "")]
    assert weather.failed >= 10 and again == [f"source main: polling works again after {weather.failed} failed "
                                              "poll(s)"], (weather.failed, again)


def test_a_url_with_a_user_and_password_polls_with_http_basic_authentication(tmp_path):
    """``http://user:password@host/...`` (an inverter's or a router's page behind a password): Twisted's agent took
    ``user:password@host`` for the host, and every poll failed with "invalid hostname". The user information goes
    as HTTP Basic authentication (percent-escapes undone), and the password never into the log."""
    weather = Weather()
    weather.authorization = "Basic " + base64.b64encode(b"station:p@ss:w0rd").decode()
    realm = f"h{uuid.uuid4().hex[:8]}"
    url = weather.url.replace("http://", "http://station:p%40ss%3Aw0rd@")
    polled(tmp_path, weather, f"type = poll\nurl = {url}\ninterval = 250ms\n", realm, "three polls stored")
    log = open(tmp_path / "gw.log").read()
    assert "polling failed" not in log and "w0rd" not in log


def test_an_endless_body_is_cut_at_the_timeout_and_a_big_one_is_a_dead_letter_by_reference(tmp_path):
    """A URL that streams without end (a camera, an event stream) is read until the poll's timeout, then its
    connection is closed and the next tick polls again; an answer over max_line is a dead letter by its size and
    SHA-256, never held; good answers are stored before and after."""
    import hashlib

    weather = Weather()
    realm = f"e{uuid.uuid4().hex[:8]}"
    gateway, db = polling(tmp_path, f"type = poll\nurl = {weather.url}\ninterval = 100ms\ntimeout = 1s\n"
                                    "max_line = 1MB\n", realm)
    try:
        wait_until(lambda: count_rows(db, realm) >= 1, 30, "a poll stored")
        weather.mode = "endless"
        wait_until(lambda: weather.cut >= 2, 30, "two endless bodies cut by the gateway")
        weather.mode = "big"
        wait_until(lambda: query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0] >= 1, 30, "a dead letter")
        weather.mode = "ok"
        stored = count_rows(db, realm)
        wait_until(lambda: count_rows(db, realm) > stored, 30, "polls stored again")
        assert gateway.stop() == 0
    finally:
        weather.stop()
    failures = [e["message"] for e in gateway.events() if "polling failed" in e.get("message", "")]
    assert failures and "no complete answer within timeout = 1.0 s; the connection was closed" in failures[0]
    stage, error, payload = query(db, "SELECT stage, error, payload FROM lorrygate_dead_letter LIMIT 1")[0]
    body = b"[" + b"1," * 1_000_000 + b"1]"
    assert stage == "size" and not payload
    assert f"a payload of {len(body)} bytes is larger than the source's max_line" in error, error
    assert hashlib.sha256(body).hexdigest() in error


def test_a_command_past_its_timeout_is_stopped_and_its_output_bounded(tmp_path):
    """A command that hangs is stopped at the poll's timeout (SIGTERM; its process is gone) and polled again;
    one whose output is over max_line is a dead letter by reference; at the gateway's stop a running command is
    stopped, and that is no failure."""
    realm = f"k{uuid.uuid4().hex[:8]}"
    pids = tmp_path / "pids"
    mode = tmp_path / "mode"
    mode.write_text("hang")
    script = tmp_path / "poll.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        with open({str(pids)!r}, "a") as handle:
            handle.write(f"{{os.getpid()}}\\n")
        mode = open({str(mode)!r}).read()
        if mode == "big":
            sys.stdout.write("7" * 2_000_000)
        elif mode == "ok":
            print('{{"load": 0.5}}')
        else:
            time.sleep(600)
        """))
    gateway, db = polling(tmp_path, f"type = poll\ncommand = {sys.executable} {script}\ninterval = 100ms\n"
                                    "timeout = 1s\nmax_line = 1MB\n", realm)

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # (a zombie is gone but for its exit status)
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"

    try:
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) >= 2, 30, "a second run after a timeout")
        first = int(pids.read_text().split()[0])
        wait_until(lambda: not alive(first), 30, "the timed-out command stopped")
        mode.write_text("big")
        wait_until(lambda: query(db, "SELECT count(*) FROM lorrygate_dead_letter")[0][0] >= 1, 30, "a dead letter")
        mode.write_text("ok")
        wait_until(lambda: count_rows(db, realm) >= 1, 30, "a row")
        mode.write_text("hang")
        runs = len(pids.read_text().split())
        wait_until(lambda: len(pids.read_text().split()) > runs, 30, "a hanging run started")
        last = int(pids.read_text().split()[-1])
        assert gateway.stop() == 0
    except Exception:
        gateway.stop()
        raise
    wait_until(lambda: not alive(last), 30, "the command running at the stop stopped")
    failures = [e["message"] for e in gateway.events() if "polling failed" in e.get("message", "")]
    assert failures and "no complete answer within timeout = 1.0 s; the command was stopped" in failures[0], failures
    assert not any("ended by signal" in line or "with_traceback" in line for line in failures), failures
    stage, error = query(db, "SELECT stage, error FROM lorrygate_dead_letter LIMIT 1")[0]
    assert stage == "size" and "a payload of 2000000 bytes is larger than the source's max_line" in error


def test_a_slow_server_never_sees_two_polls_at_once(tmp_path):
    weather = Weather()
    weather.mode = "slow"
    realm = f"l{uuid.uuid4().hex[:8]}"
    gateway = polled(tmp_path, weather, f"type = poll\nurl = {weather.url}\ninterval = 250ms\ntimeout = 10s\n", realm,
                     "three slow polls stored")
    assert weather.most_at_once == 1
    assert any("this tick is skipped" in e.get("message", "") for e in gateway.events())


def test_a_command_and_linux_iio(tmp_path):
    realm = f"c{uuid.uuid4().hex[:8]}"
    command = f"{sys.executable} -c \"print('{{\\\"load\\\": 0.5}}')\""
    gateway, db = polling(tmp_path, f"type = poll\ncommand = {command}\ninterval = 200ms\n", realm)
    wait_until(lambda: count_rows(db, realm) >= 2, 30, "two command polls")
    assert gateway.stop() == 0
    table = next(t for t in tables(db) if t.startswith(realm))
    assert query(db, f'SELECT load FROM "{table}" LIMIT 1')[0][0] == 0.5

    # A sysfs tree as the kernel builds it: per-channel scale/offset, and a scale shared by a channel type.
    root = tmp_path / "iio"
    bme = root / "iio:device0"
    ads = root / "iio:device1"
    for directory, files in ((bme, {"name": "bme280", "in_temp_raw": "2150", "in_temp_scale": "10",
                                    "in_humidityrelative_raw": "48123", "in_humidityrelative_scale": "0.001"}),
                             (ads, {"name": "ads1015", "in_voltage0_raw": "1000", "in_voltage1_raw": "-20",
                                    "in_voltage_scale": "3.0", "in_voltage_offset": "10"})):
        directory.mkdir(parents=True)
        for name, text in files.items():
            (directory / name).write_text(text + "\n")
    (tmp_path / "iio-data").mkdir()
    path = config(str(tmp_path / "iio-data"), f"type = iio\nroot = {root}\ninterval = 200ms\n", realm + "i")
    text = open(path).read().replace(f"topic = {realm}i/net/gw/station/data.json", f"topic = {realm}i/net/board")
    text = text.replace("topics = ", "strategy = topic\ntopics = ")
    open(path, "w").write(text)
    db = str(tmp_path / "iio-data" / "gateway.sqlite")
    gateway = GatewayProcess(path, str(tmp_path / "iio.log"))
    gateway.start(ready="lorrygate is running")
    wait_until(lambda: len([t for t in tables(db) if "board" in t]) == 2, 30, "both devices stored")
    assert gateway.stop() == 0
    values = {t: query(db, f'SELECT * FROM "{t}" LIMIT 1') for t in tables(db) if "board" in t}
    bme_row = next(v for t, v in values.items() if t.endswith("bme280"))
    ads_row = next(v for t, v in values.items() if t.endswith("ads1015"))
    assert 21500.0 in bme_row[0] and pytest.approx(48.123) in bme_row[0]
    assert 3030.0 in ads_row[0] and -30.0 in ads_row[0]


def test_iio_an_accelerometer_and_a_temperature_sensor_one_going_away_and_back(tmp_path):
    import shutil

    realm = f"i{uuid.uuid4().hex[:8]}"
    root = tmp_path / "iio"
    accel = root / "iio:device0"
    temp = root / "iio:device1"
    for directory, files in ((accel, {"name": "adxl345", "in_accel_x_raw": "100", "in_accel_y_raw": "-50",
                                      "in_accel_z_raw": "256", "in_accel_scale": "0.038307"}),
                             (temp, {"name": "tmp117", "in_temp_raw": "3200", "in_temp_scale": "7.8125",
                                     "in_temp_offset": "0"})):
        directory.mkdir(parents=True)
        for name, text in files.items():
            (directory / name).write_text(text + "\n")
    path = config(str(tmp_path), f"type = iio\nroot = {root}\ninterval = 100ms\n", realm)
    text = open(path).read().replace(f"topic = {realm}/net/gw/station/data.json", f"topic = {realm}/net/board")
    open(path, "w").write(text.replace("topics = ", "strategy = topic\ntopics = "))
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="lorrygate is running")
    wait_until(lambda: len([t for t in tables(db) if t.startswith(realm)]) == 2, 30, "a table per device")
    saved = tmp_path / "saved"
    shutil.move(str(temp), str(saved))
    wait_until(lambda: any("tmp117 disappeared" in e.get("message", "") for e in gateway.events()), 30, "logged")
    before = query(db, f'SELECT count(*) FROM "{realm}__net_board_tmp117"')[0][0]
    shutil.move(str(saved), str(temp))
    wait_until(lambda: query(db, f'SELECT count(*) FROM "{realm}__net_board_tmp117"')[0][0] > before, 30,
               "read again once back")
    assert gateway.stop() == 0
    assert any("tmp117 is there (again)" in e.get("message", "") for e in gateway.events())
    x, y, z = query(db, f'SELECT accel_x, accel_y, accel_z FROM "{realm}__net_board_adxl345" LIMIT 1')[0]
    assert (round(x, 4), round(y, 4), round(z, 4)) == (3.8307, -1.9154, 9.8066)
    assert query(db, f'SELECT temp FROM "{realm}__net_board_tmp117" LIMIT 1')[0][0] == 25000.0

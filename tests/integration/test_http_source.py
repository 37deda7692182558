"""
The HTTP source (Kotori's HTTP API) in a running gateway: each answer comes
after the message's commit (its row is there when the 200 is), a dead
letter is a 422 that says why, a storage that cannot take the message is a
503 and never a 200, and the client's retry stores it.
"""

import http.client
import json
import re
import sqlite3
import subprocess
import sys
import textwrap

from tests.gatewayproc import GatewayProcess, query
from tests.servers import wait_until

NODE = "/api/mqttkit-1/testdrive/area-42/node-1/data"
TABLE = "mqttkit_1_testdrive__area_42_node_1_sensors"


def config(directory, extra_source="", extra_storage="") -> str:
    path = f"{directory}/http.ini"
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""
            [lorrygate]
            data_dir = {directory}
            log_format = json

            [source:web]
            type = http
            listen = 127.0.0.1:0
            """) + extra_source + textwrap.dedent(f"""
            [storage:db]
            url = sqlite:///{directory}/http.sqlite
            synchronous = NORMAL
            """) + extra_storage + textwrap.dedent("""
            [channel:api]
            source = web
            storage = db
            """))
    return path


def started(tmp_path, **extra) -> tuple:
    gateway = GatewayProcess(config(str(tmp_path), **extra), str(tmp_path / "gw.log"))
    gateway.start(ready="listening on http://")
    line = next(e["message"] for e in gateway.events() if "listening on http://" in e.get("message", ""))
    return gateway, int(re.search(r"127\.0\.0\.1:(\d+)/api/", line).group(1))


def status_line(port, path, body: bytes) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, response.reason
    finally:
        conn.close()


def post(port, path, body: bytes, content_type="application/json", headers=None, method="POST", timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, {"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        text = response.read()
        return response.status, json.loads(text) if text.strip() else None, dict(response.getheaders())
    finally:
        conn.close()


def test_kotoris_http_api_stores_json_csv_and_forms_and_answers_after_the_commit(tmp_path):
    gateway, port = started(tmp_path)
    db = str(tmp_path / "http.sqlite")
    try:
        status, body, _ = post(port, NODE, b'{"temperature": 21.5, "humidity": 48}')
        assert (status, body) == (200, {"stored": True})
        # answered after the commit: the row is there when the answer is
        assert query(db, f'SELECT temperature, humidity FROM "{TABLE}"') == [(21.5, 48)]
        status, _, _ = post(port, NODE, b"time,temperature\n2024-06-01T12:00:00Z,22.5\n", "text/csv")
        assert status == 200
        status, _, _ = post(port, NODE, b"temperature=23.5&humidity=47", "application/x-www-form-urlencoded")
        assert status == 200
        assert sorted(query(db, f'SELECT temperature FROM "{TABLE}"')) == [(21.5,), (22.5,), (23.5,)]

        # a dead letter: 422, with the reason; the message kept with its payload
        status, body, _ = post(port, NODE, b'{"time": "garbage", "temperature": 1}')
        assert status == 422 and body["dead_letter"] and "not an ISO 8601 time: 'garbage'" in body["error"], body
        assert query(db, "SELECT topic, payload FROM lorrygate_dead_letter") == [
            ("mqttkit-1/testdrive/area-42/node-1/data.json", b'{"time": "garbage", "temperature": 1}')]
        # (its status line says what 422 is: Twisted knows no reason for it, it was "422 Unknown Status")
        assert status_line(port, NODE, b'{"time": "garbage"}') == (422, "Unprocessable Content")

        # the airrohr firmware's "send to own API", as Kotori's airrohr forwarder takes it
        airrohr = (b'{"esp8266id": "12345678", "software_version": "NRZ-2020-129", "sensordatavalues": '
                   b'[{"value_type": "SDS_P1", "value": "12.30"}, {"value_type": "temperature", "value": "21.50"}]}')
        assert post(port, "/api/luftdaten/testdrive/area-42/node-1/custom/airrohr", airrohr)[0] == 200
        assert query(db, 'SELECT "SDS_P1", temperature FROM "luftdaten_testdrive__area_42_node_1_sensors"') == [
            (12.3, 21.5)]

        # a Fine Offset weather station's "customized upload" to .../data, as Kotori takes it: its PASSKEY is
        # never stored, its dateutc is the row's time
        station = (b"PASSKEY=B950C0FFEE&stationtype=EasyWeatherPro_V5.0.6&dateutc=2023-02-20+16%3A02%3A19&"
                   b"tempf=48.4&humidity=80&freq=868M&model=HP1000SE-PRO_Pro_V1.8.5")
        assert post(port, "/api/mqttkit-1/testdrive/area-42/station-1/data", station,
                    "application/x-www-form-urlencoded")[:2] == (200, {"stored": True})
        weather = "mqttkit_1_testdrive__area_42_station_1_sensors"
        columns = [row[1] for row in query(db, f'PRAGMA table_info("{weather}")')]
        assert "PASSKEY" not in columns and "B950C0FFEE" not in repr(query(db, f'SELECT * FROM "{weather}"'))
        assert query(db, f'SELECT "time", tempf, humidity, model FROM "{weather}"') == [
            ("2023-02-20T16:02:19.000000000Z", 48.4, 80, "HP1000SE-PRO_Pro_V1.8.5")]

        # an empty body: 400, as Kotori answers, saying how to send a payload (200 "ignored" was taken for stored)
        status, body, _ = post(port, NODE, b"")
        assert status == 400 and body["error"].startswith("an empty body: the payload is the request's body"), body

        # a path that is no topic: not UTF-8, or with NUL (MQTT forbids both)
        status, body, _ = post(port, "/api/%ff%fe/data", b"{}")
        assert status == 400 and "not UTF-8" in body["error"]
        assert post(port, "/api/a%00b/data", b"{}")[0] == 400
        assert post(port, "/elsewhere", b"{}")[0] == 404
        assert post(port, NODE, b"", method="GET")[0] == 405
        assert "POST /api" not in gateway.text()  # no access log: a line a request filled the log
        status = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", gateway.config, "status"],
                                capture_output=True, text=True, timeout=60).stdout
        assert f"source web (channel api): listening on http://127.0.0.1:{port}/api/ (7 received, 5 refused, 0 answered 503 after " \
               "timeout)" in status, status
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_a_body_stored_in_part_is_a_200_that_names_the_bad_lines_kept_as_a_dead_letter(tmp_path):
    """A CSV with a line cut short: its good lines are rows when the answer comes, the bad line (with the header)
    is a dead letter, and the answer says so with a 200: sent again, the good lines would be stored twice."""
    gateway, port = started(tmp_path)
    db = str(tmp_path / "http.sqlite")
    try:
        status, body, _ = post(port, NODE, b"time,temperature\n2024-06-01T12:00:00Z,22.5\n2024-06-01T12:01:00Z\n"
                                           b"2024-06-01T12:02:00Z,22.9\n", "text/csv")
        assert (status, body) == (200, {"stored": True, "dead_letter": True, "error": "decode: line 3 has 1 value "
                                                                                       "for 2 columns (time, temperature)"})
        assert query(db, f'SELECT temperature FROM "{TABLE}" ORDER BY time') == [(22.5,), (22.9,)]
        assert query(db, "SELECT payload FROM lorrygate_dead_letter") == [
            (b"time,temperature\n2024-06-01T12:01:00Z\n",)]
        status = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", gateway.config, "status"],
                                capture_output=True, text=True, timeout=60).stdout
        assert "channel api: 1 received, 1 routed (1 but for bad lines, kept as dead letters), 0 unmatched, " \
               "0 undecodable" in status, status
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_a_token_and_a_body_limit_are_enforced_and_the_token_is_never_logged(tmp_path):
    gateway, port = started(tmp_path, extra_source="token = s3cret-t0ken\nmax_line = 1KB\n")
    try:
        status, body, headers = post(port, NODE, b'{"temperature": 21.5}')
        assert status == 401 and "Bearer" in headers.get("WWW-Authenticate", ""), (status, body)
        assert post(port, NODE, b'{"temperature": 21.5}', headers={"Authorization": "Bearer wrong"})[0] == 401
        good = {"Authorization": "Bearer s3cret-t0ken"}
        assert post(port, NODE, b'{"temperature": 21.5}', headers=good)[0] == 200
        status, body, _ = post(port, NODE, b'{"x": "' + b"a" * 5000 + b'"}', headers=good)
        assert status == 413 and "max_line" in body["error"]
        assert post(port, NODE, b'{"temperature": 22.5}', headers=good)[0] == 200
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert "s3cret-t0ken" not in gateway.text()


def test_https_with_the_servers_certificate_and_the_token(tmp_path):
    import ssl

    from tests.certs import write_tls_files

    tls = write_tls_files(str(tmp_path))
    gateway = GatewayProcess(config(str(tmp_path), extra_source=f"token = t0ken\ntls_cert = {tls['server.pem']}\n"
                                    f"tls_key = {tls['server.key']}\n"), str(tmp_path / "gw.log"))
    gateway.start(ready="listening on https://")
    line = next(e["message"] for e in gateway.events() if "listening on https://" in e.get("message", ""))
    port = int(re.search(r"127\.0\.0\.1:(\d+)/api/", line).group(1))
    try:
        context = ssl.create_default_context(cafile=tls["ca.pem"])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        conn.request("POST", NODE, b'{"temperature": 21.5}', {"Content-Type": "application/json",
                                                                "Authorization": "Bearer t0ken"})
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"stored": True})
        conn.close()
        assert query(str(tmp_path / "http.sqlite"), f'SELECT temperature FROM "{TABLE}"') == [(21.5,)]
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_a_key_that_is_not_the_certificates_is_said_at_the_start(tmp_path):
    from tests.certs import write_tls_files

    tls = write_tls_files(str(tmp_path))
    gateway = GatewayProcess(config(str(tmp_path), extra_source=f"tls_cert = {tls['server.pem']}\n"
                                    f"tls_key = {tls['client.key']}\n"), str(tmp_path / "gw.log"))
    gateway.start(ready="cannot listen on 127.0.0.1:0")
    try:
        assert "source web: cannot listen on 127.0.0.1:0:" in gateway.text()
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_no_200_before_the_commit_a_503_while_the_database_is_held_and_the_retry_stores_it(tmp_path):
    """At least once for a client that sends again until a 2xx: with the SQLite file's write lock held by
    another connection (and no spool), the request is answered 503 after the source's timeout, never 200;
    once the lock is let go, the client's retry is stored (the first copy too: idempotent rows make it one)."""
    gateway, port = started(tmp_path, extra_source="timeout = 1s\n", extra_storage="spool = false\nidempotent = true\n")
    db = str(tmp_path / "http.sqlite")
    try:
        assert post(port, NODE, b'{"temperature": 20.5, "time": "2024-06-01T12:00:00Z"}')[0] == 200
        holder = sqlite3.connect(db, isolation_level=None, timeout=10)
        holder.execute("BEGIN IMMEDIATE")
        try:
            payload = b'{"temperature": 21.5, "time": "2024-06-01T12:00:01Z"}'
            status, body, headers = post(port, NODE, payload)
            assert status == 503 and headers.get("Retry-After") == "1" and "send it again" in body["error"], body
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # the client sends again until it gets a 2xx
        wait_until(lambda: post(port, NODE, payload)[0] == 200, 60, "a 200 for the retry")
        rows = query(db, f'SELECT time, temperature FROM "{TABLE}" ORDER BY time')
        assert rows == [("2024-06-01T12:00:00.000000000Z", 20.5), ("2024-06-01T12:00:01.000000000Z", 21.5)]
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_clients_that_hold_connections_open_cannot_take_the_gateways_file_descriptors(tmp_path, mosquitto):
    """Past max_connections one more connection is closed at once and the MQTT channel goes on; a POST gets
    through once a connection is free; and the gateway raised its soft limit of open files (systemd gives a
    service 1,024) to the hard one."""
    import resource
    import socket

    from tests.gatewayproc import Publisher, count_rows

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    path = config(str(tmp_path), extra_source="max_connections = 20\n")
    text = open(path).read() + textwrap.dedent(f"""
        [broker:b]
        host = 127.0.0.1
        port = {mosquitto.port}
        client_id = fds-{tmp_path.name}

        [channel:mqtt]
        source = b
        topics = fds/#
        qos = 1
        storage = db
        """)
    open(path, "w").write(text)
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"),
                             preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    gateway.start(ready="lorrygate is running")
    line = next(e["message"] for e in gateway.events() if "listening on http://" in e.get("message", ""))
    port = int(re.search(r"127\.0\.0\.1:(\d+)/api/", line).group(1))
    held = []
    try:
        limits = open(f"/proc/{gateway.process.pid}/limits").read()
        soft = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
        assert soft and int(soft.group(1)) == min(hard, 1 << 20) > 256, limits

        held = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(20)]
        one_more = socket.create_connection(("127.0.0.1", port), timeout=20)
        try:
            assert one_more.recv(1) == b""  # closed as soon as it was accepted
        except ConnectionResetError:
            pass
        one_more.close()

        publisher = Publisher(mosquitto.port)
        publisher.publish_many([("fds/net/gw/node/data.json", json.dumps({"v": 1}))])
        publisher.close()
        wait_until(lambda: count_rows(str(tmp_path / "http.sqlite"), "fds_") == 1, 30, "the MQTT message stored")

        held.pop().close()

        def posted():
            try:
                return post(port, NODE, b'{"temperature": 21.5}', timeout=5)[:2] == (200, {"stored": True})
            except (ConnectionError, http.client.HTTPException, OSError):
                return False  # (turned away before the freed connection was let go)

        wait_until(posted, 30, "a POST once a connection is free")
        status = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", path, "status"],
                                capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"source web \(channel api\): listening on .*\d+ connections closed past max_connections\)", status), status
    finally:
        for sock in held:
            sock.close()
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_clients_sending_bodies_slowly_cannot_fill_the_disk_one_more_gets_a_503(tmp_path):
    """Eight clients declare 8 MiB bodies and send them slowly (a few bytes): together they hold the 64 MiB that
    bodies arriving at once may take, so the next POST is read, dropped and answered 503 (before, a thousand such
    clients had twisted.web keep 8 GB in temporary files); once one of them gives up, a POST is stored."""
    import socket

    gateway, port = started(tmp_path)
    slow = []
    try:
        for _ in range(8):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(f"POST {NODE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {8 << 20}\r\n\r\n{{".encode())
            slow.append(client)

        def reading():
            result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", gateway.config, "status", "--json"],
                                    capture_output=True, text=True, timeout=30)
            return json.loads(result.stdout)["sources"][0]["details"]["reading"]

        wait_until(lambda: reading() == 64 << 20, 30, "the eight bodies to hold the budget")
        status, body, headers = post(port, NODE, b'{"temperature": 21.5}')
        assert (status, headers.get("Retry-After")) == (503, "1") and "send it again" in body["error"], body
        slow.pop().close()
        wait_until(lambda: reading() == 56 << 20, 30, "the bytes of the client gone to be given back")
        assert post(port, NODE, b'{"temperature": 21.5}')[:2] == (200, {"stored": True})
    finally:
        for client in slow:
            client.close()
        assert gateway.stop() == 0, gateway.text()[-3000:]


def test_a_csv_header_announced_once_holds_after_a_restart_and_for_a_replay(tmp_path):
    """Kotori's header-once CSV: readings before any header are a 422 dead letter that says how to announce
    one; ``## temperature,humidity`` alone is a 200 that stores nothing; later readings are stored by it, after
    a restart too, and the early readings by ``dead-letters replay``."""
    db = str(tmp_path / "http.sqlite")
    gateway, port = started(tmp_path)
    try:
        status, body, _ = post(port, NODE, b"25.26,51.8\n", "text/csv")
        assert status == 422 and "no header was announced" in body["error"] and "'## name,name'" in body["error"], body
        assert post(port, NODE, b"## temperature,humidity\n", "text/csv")[:2] == (
            200, {"stored": False, "ignored": "ignored: CSV header announced: temperature, humidity"})
        assert post(port, NODE, b"25.3,51.9\n", "text/csv")[:2] == (200, {"stored": True})
        assert query(db, f'SELECT temperature, humidity FROM "{TABLE}"') == [(25.3, 51.9)]
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    gateway, port = started(tmp_path)
    try:
        assert post(port, NODE, b"25.4,52.0\n25.5,52.1\n", "text/csv")[:2] == (200, {"stored": True})
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "replay", "-c", gateway.config],
                          capture_output=True, text=True, timeout=120)
    assert "1 replayed (1 rows), 0 still failing" in done.stdout, done.stdout + done.stderr
    assert sorted(query(db, f'SELECT temperature, humidity FROM "{TABLE}"')) == [
        (25.26, 51.8), (25.3, 51.9), (25.4, 52.0), (25.5, 52.1)]


def test_the_request_headers_the_channel_names_are_tags_and_a_content_type_picks_the_decoder(tmp_path):
    """``headers = X-Sensor:sensor`` (sensor.community's devices name themselves so): the header is a tag of the
    rows, whatever its case; only the named headers are kept with a dead letter (never Authorization); a
    CBOR body with its Content Type is decoded on a path whose suffix says JSON."""
    import cbor2

    path = config(str(tmp_path))
    with open(path, "a") as handle:
        handle.write("headers = X-Sensor:sensor, x-pin\n")
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="listening on http://")
    line = next(e["message"] for e in gateway.events() if "listening on http://" in e.get("message", ""))
    port = int(re.search(r"127\.0\.0\.1:(\d+)/api/", line).group(1))
    db = str(tmp_path / "http.sqlite")
    secret = {"Authorization": "Bearer s3cret", "X-Sensor": "esp8266-1", "X-PIN": "1"}
    try:
        assert post(port, NODE, b'{"temperature": 21.5}', headers=secret)[:2] == (200, {"stored": True})
        assert post(port, NODE + ".json", cbor2.dumps({"temperature": 22.5}), "application/cbor",
                    headers={"x-sensor": "esp8266-2"})[:2] == (200, {"stored": True})
        status, body, _ = post(port, NODE, b'{"temperature": "noon", "time": "noon"}', headers=secret)
        assert status == 422, body
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT temperature, sensor, "x-pin" FROM "{TABLE}" ORDER BY temperature') == [
        (21.5, "esp8266-1", "1"), (22.5, "esp8266-2", None)]
    assert query(db, "SELECT headers FROM lorrygate_dead_letter") == [('[["x-sensor","esp8266-1"],["x-pin","1"]]',)]
    assert "s3cret" not in open(db, "rb").read().decode("latin-1")


def test_a_certificate_renewed_on_disk_is_served_after_a_reload(tmp_path):
    """certbot renews the certificate under the same name and reloads the gateway: the settings were equal, so
    the listener was kept, and it served the old certificate until it expired. It listens again with the new."""
    import os
    import shutil
    import signal
    import ssl

    from tests.certs import write_tls_files

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = write_tls_files(str(tmp_path / "old")), write_tls_files(str(tmp_path / "new"))
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(old["server.pem"], cert)
    shutil.copy(old["server.key"], key)
    gateway = GatewayProcess(config(str(tmp_path), extra_source=f"tls_cert = {cert}\ntls_key = {key}\n"),
                             str(tmp_path / "gw.log"))
    gateway.start(ready="listening on https://")

    def served(number: int) -> bytes:
        lines = [e["message"] for e in gateway.events() if "listening on https://" in e.get("message", "")]
        port = int(re.search(r"127\.0\.0\.1:(\d+)/api/", lines[number]).group(1))
        return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port), timeout=30))

    def der(path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(open(path).read())

    try:
        assert served(0) == der(old["server.pem"])
        for source, target in ((new["server.pem"], cert), (new["server.key"], key)):
            shutil.copy(source, f"{target}.new")
            os.replace(f"{target}.new", target)
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: sum("listening on https://" in e.get("message", "") for e in gateway.events()) == 2, 30,
                   "the listener of the reload")
        assert served(1) == der(new["server.pem"])
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]

"""
/health and /ready against real services: /ready is 503 before the SUBACK and
while the storage is down beyond its spool bound, 200 otherwise; every JSON
log line is one flat object a shipper can read.
"""

import http.client
import json
import subprocess
import sys
import uuid

from tests.gatewayproc import Publisher, write_config
from tests.servers import Mosquitto, PostgreSQL, free_port, wait_until


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError as exc:
        return None, str(exc)
    finally:
        conn.close()


def test_ready_follows_the_subscription_and_the_spool(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker"))
    (tmp_path / "broker").mkdir()
    database = PostgreSQL().start()
    control = free_port()
    realm = f"rd{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), broker.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read()
    text = text.replace("[lorrygate]\n", f"[lorrygate]\ncontrol = tcp:{control}:interface=127.0.0.1\n")
    text = text.replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL",
                        f"url = {database.url}\nspool_max = 64KB")
    open(config, "w").write(text)
    log = open(tmp_path / "gw.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", config], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        # The broker is not there: alive, not ready, and why.
        wait_until(lambda: get(control, "/health")[0] == 200, 30, "/health")
        status, body = get(control, "/ready")
        assert status == 503 and "source main: not subscribed yet" in body, body
        broker.start()
        wait_until(lambda: get(control, "/ready")[0] == 200, 60, "/ready after the SUBACK")

        # The database goes away: spooling within bounds is ready; a spool nearly full is not.
        database.halt()
        publisher = Publisher(broker.port)
        payload = json.dumps({"pad": "x" * 900})
        publisher.publish_many([(f"{realm}/net/gw/n/data.json", payload)])
        wait_until(lambda: "down" in get(control, "/status")[1] and get(control, "/ready")[0] == 200, 30,
                   "the storage down, spooling, still ready")
        publisher.publish_many([(f"{realm}/net/gw/n/data.json", payload) for _ in range(80)])
        wait_until(lambda: get(control, "/ready")[0] == 503, 60, "/ready 503 with the spool nearly full")
        status, body = get(control, "/ready")
        assert "storage db: down and its spool" in body, body
        database.resume()
        wait_until(lambda: get(control, "/ready")[0] == 200, 90, "/ready once the spool drained")
        publisher.close()
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()
        broker.stop()
        database.stop()
    lines = (tmp_path / "gw.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
    assert not any(isinstance(v, dict) and "__class_uuid__" in v for e in events for v in e.values())
    refused = [e["message"] for e in events if "connecting to" in e["message"] and "failed" in e["message"]]
    assert refused and "refused" in refused[0].lower(), refused[:1]

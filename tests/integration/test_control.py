"""lorrygate status and flush against a running gateway."""

import json
import subprocess
import sys
import uuid

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, write_config
from tests.servers import wait_until


def lorrygate(config, *args):
    return subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", config, *args],
                          capture_output=True, text=True, timeout=60)


def test_status_shows_buffered_rows_and_flush_commits_them(tmp_path, mosquitto):
    """status lists the rows buffered per table; flush commits them now."""
    realm = f"ctl-{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace(
        "synchronous = NORMAL", "synchronous = NORMAL\nbatch_size = 100000\nlinger = 60s")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node-{n % 2}/data.json", json.dumps({"n": n})) for n in range(100))

    def pending():
        result = lorrygate(config, "status", "--json")
        return result.returncode == 0 and json.loads(result.stdout)["storages"][0]["pending"] == 100 and result

    result = wait_until(pending, 30, "100 rows pending")
    storage = json.loads(result.stdout)["storages"][0]
    schema = realm.replace("-", "_")
    assert sorted((t["table"], t["rows"]) for t in storage["tables"]) == [
        (f"{schema}_net.gw_node_0_sensors", 50), (f"{schema}_net.gw_node_1_sensors", 50)]
    text_status = lorrygate(config, "status")
    assert "100 rows pending" in text_status.stdout and "50 rows buffered" in text_status.stdout
    assert count_rows(str(tmp_path / "gateway.sqlite"), schema) == 0

    flushed = lorrygate(config, "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.startswith("flushed: everything buffered is committed")
    assert count_rows(str(tmp_path / "gateway.sqlite"), schema) == 100
    assert json.loads(lorrygate(config, "status", "--json").stdout)["storages"][0]["pending"] == 0
    assert gateway.stop() == 0
    publisher.close()


def test_status_without_a_gateway_says_so(tmp_path):
    """status with no gateway running explains what it tried."""
    config = write_config(str(tmp_path), 1, client_id="nobody")
    result = lorrygate(config, "status")
    assert result.returncode == 1 and "no gateway answers at unix:" in result.stderr


def test_a_tcp_control_endpoint_wants_its_token(tmp_path, mosquitto):
    """A control endpoint bound beyond loopback answers 401 without its token, and status with it."""
    import http.client

    from tests.gatewayproc import GatewayProcess, write_config
    from tests.servers import free_port

    port = free_port()
    (tmp_path / "token").write_text("s3cret-token\n")
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-ctl-{tmp_path.name}", topics="ctl/#")
    text = open(config).read().replace("stats_interval = 1s",
                                       f"stats_interval = 1s\ncontrol = tcp:{port}:interface=0.0.0.0\n"
                                       f"control_token = ${{FILE:{tmp_path}/token}}")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/status")
    assert connection.getresponse().status == 401
    connection.close()
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "status", "-c", config, "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sources"][0]["connected"] is True
    assert "s3cret-token" not in gateway.text()
    assert gateway.stop() == 0

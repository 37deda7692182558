"""lorrygate launch and relay against a real broker: the same rows as an ini channel; a tee feeds every sink."""

import json
import signal
import subprocess
import sys
import uuid

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, query, tables, write_config
from tests.servers import wait_until


class LaunchProcess(GatewayProcess):
    def __init__(self, arguments, log_path, hangup=signal.SIG_DFL):
        super().__init__("", log_path)
        self.arguments = arguments
        #: SIGHUP's disposition in the child: the default, as in a terminal, whatever the test's was (a test run
        #: under nohup has it ignored); SIG_IGN: as under nohup
        self.preexec = lambda: signal.signal(signal.SIGHUP, hangup)

    def start(self):
        from tests.gatewayproc import RUNNING

        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", *self.arguments], stdout=log,
                                        stderr=subprocess.STDOUT, preexec_fn=self.preexec)
        log.close()
        RUNNING.append(self.process)
        wait_until(lambda: "connected to" in self.text() or self.process.poll() is not None, 20, "launch to connect")
        assert self.process.poll() is None, self.text()
        return self


def dump(db, prefix):
    return sorted(row for table in tables(db) if table.startswith(prefix)
                  for row in query(db, f'SELECT "{table}", time, seq, value FROM "{table}"'))


def test_ini_channel_and_launch_string_write_identical_rows(tmp_path, mosquitto):
    """The same MQTT -> SQLite route as an ini channel and as a launch string gives identical rows."""
    realm = f"same-{uuid.uuid4().hex[:8]}"
    ini_dir, launch_dir = tmp_path / "ini", tmp_path / "launch"
    ini_dir.mkdir(), launch_dir.mkdir()
    ini = GatewayProcess(write_config(str(ini_dir), mosquitto.port, client_id=f"ini-{realm}", topics=f"{realm}/#"),
                         str(tmp_path / "ini.log")).start()
    launch_db = launch_dir / "gateway.sqlite"
    launch = LaunchProcess(["launch", f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23?client-id=launch-{realm} ! "
                                      f"strategy name=wan ! decode chain=json ! sqlite location={launch_db}",
                            "--data-dir", str(launch_dir)], str(tmp_path / "launch.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node-{n % 5}/data.json",
                            json.dumps({"seq": n, "value": n / 4, "time": 1_717_243_200_000 + n})) for n in range(500))
    schema = realm.replace("-", "_")
    wait_until(lambda: count_rows(str(ini_dir / "gateway.sqlite"), schema) >= 500
               and count_rows(str(launch_db), schema) >= 500, 30, "500 rows in both")
    assert ini.stop() == 0 and launch.stop() == 0
    publisher.close()
    assert dump(str(ini_dir / "gateway.sqlite"), schema) == dump(str(launch_db), schema)
    assert len(dump(str(launch_db), schema)) == 500


def test_tee_writes_every_message_to_both_sinks(tmp_path, mosquitto):
    """launch "mqtt://... ! tee name=t t. ! sqlite://... t. ! textsink location=out.ndjson" fills both."""
    realm = f"tee-{uuid.uuid4().hex[:8]}"
    db, out = tmp_path / "tee.sqlite", tmp_path / "out.ndjson"
    launch = LaunchProcess(["launch", f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23 ! tee name=t "
                                      f"t. ! sqlite:///{db} t. ! textsink location={out}",
                            "--data-dir", str(tmp_path)], str(tmp_path / "launch.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node/data.json", json.dumps({"seq": n})) for n in range(300))
    schema = realm.replace("-", "_")

    def lines():
        return open(out).read().splitlines() if out.exists() else []

    wait_until(lambda: count_rows(str(db), schema) >= 300 and len(lines()) >= 300, 30, "300 rows in both sinks")
    assert launch.stop() == 0
    publisher.close()
    assert sorted(json.loads(line)["fields"]["seq"] for line in lines()) == list(range(300))
    assert sorted(r[0] for r in query(str(db), f'SELECT seq FROM "{schema}_net__gw_node_sensors"')) == list(range(300))


def test_a_hangup_stops_a_launched_pipeline_gracefully(tmp_path, mosquitto):
    """The terminal of `lorrygate launch` closes (SIGHUP): the pipeline commits, acknowledges and exits 0, as on
    SIGTERM; before, SIGHUP's default action ended it without the graceful stop."""
    realm = f"hup-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "hup.sqlite"
    launch = LaunchProcess(["launch", f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23 ! sqlite:///{db}",
                            "--data-dir", str(tmp_path)], str(tmp_path / "launch.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node/data.json", json.dumps({"seq": n})) for n in range(100))
    publisher.close()
    wait_until(lambda: count_rows(str(db), realm.replace("-", "_")) >= 100, 30, "100 rows")
    assert launch.stop(signal.SIGHUP) == 0, launch.text()[-3000:]
    assert "100 rows and 0 dead letters committed" in launch.text(), launch.text()[-3000:]  # (the final statistics)


def test_under_nohup_a_hangup_leaves_a_launched_pipeline_running(tmp_path, mosquitto):
    """With SIGHUP ignored (``nohup lorrygate launch ...``) the pipeline does not take it over: a hang-up changes
    nothing, SIGTERM later stops it (and the log shows no stop for signal 1)."""
    realm = f"nohup-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "nohup.sqlite"
    launch = LaunchProcess(["launch", f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23 ! sqlite:///{db}",
                            "--data-dir", str(tmp_path)], str(tmp_path / "launch.log"), hangup=signal.SIG_IGN).start()
    launch.process.send_signal(signal.SIGHUP)
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/net/gw/node/data.json", json.dumps({"seq": n})) for n in range(10))
    publisher.close()
    wait_until(lambda: count_rows(str(db), realm.replace("-", "_")) >= 10, 30, "10 rows after the hang-up")
    assert launch.stop() == 0, launch.text()[-3000:]
    assert "signal 1:" not in launch.text() and "signal 15: stopping" in launch.text(), launch.text()[-3000:]


def test_relay_lorrystream_urls(tmp_path, mosquitto):
    """relay with LorryStream's URLs (%23 and ?table=) writes every message into that one table."""
    realm = f"relay-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "relay.sqlite"
    relay = LaunchProcess(["relay", f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23?content-type=json",
                           f"sqlite:///{db}?table=testdrive", "--data-dir", str(tmp_path)],
                          str(tmp_path / "relay.log")).start()
    publisher = Publisher(mosquitto.port)
    publisher.publish_many((f"{realm}/sensor-{n % 3}", json.dumps({"seq": n})) for n in range(100))
    wait_until(lambda: count_rows(str(db), "testdrive") >= 100, 30, "100 rows")
    relay.process.send_signal(signal.SIGINT)
    assert relay.process.wait(30) == 0
    publisher.close()
    assert sorted(r[0] for r in query(str(db), "SELECT seq FROM testdrive")) == list(range(100))


def test_describe_on_the_command_line(tmp_path):
    """lorrygate -c FILE --describe --topic T prints schema, table and DDL without connecting."""
    config = write_config(str(tmp_path), 1, client_id="describe")
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", config, "--describe", "--topic",
                             "itest/testdrive/area-42/node-1/data.json"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "schema itest_testdrive, table area_42_node_1_sensors" in result.stdout
    assert 'CREATE TABLE IF NOT EXISTS "itest_testdrive__area_42_node_1_sensors"' in result.stdout

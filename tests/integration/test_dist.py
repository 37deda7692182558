"""
The release: the wheel built from this tree, installed into a clean venv
without extras, prints its version, checks the shipped config, and runs the
README example (MQTT into SQLite) against a real Mosquitto. The systemd unit
passes `systemd-analyze verify`.
"""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.gatewayproc import Publisher, count_rows
from tests.servers import wait_until

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory):
    """A clean venv with the wheel and the core dependencies only."""
    from lorrygate import __version__

    base = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), ROOT],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = base / "dist" / f"lorrygate-{__version__}-py3-none-any.whl"
    assert wheel.exists(), os.listdir(base / "dist")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True,
                               text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_wheel_installs_small_and_runs_the_readme_example(core_venv, tmp_path, mosquitto):
    from lorrygate import __version__

    lorrygate = str(core_venv / "bin" / "lorrygate")
    version = subprocess.run([lorrygate, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"lorrygate {__version__}"
    check = subprocess.run([lorrygate, "check", "-c", os.path.join(ROOT, "etc", "gateway.ini")], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    # The core is small: none of the extras came with it.
    listed = subprocess.run([str(core_venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True,
                            text=True, timeout=60).stdout.lower()
    for extra in ("psycopg", "mini-racer", "cratedb-sqlparse", "watchdog", "prometheus-client", "argcomplete",
                  "line-protocol-parser"):
        assert f"{extra}==" not in listed, f"{extra} is installed without its extra"
    # An extra that is missing is a clear configuration problem, not a traceback.
    (tmp_path / "pg.ini").write_text("[broker:b]\nhost = localhost\n[storage:s]\nurl = postgresql://u@h/db\n"
                                     "[channel:c]\ntopics = a/#\n")
    missing = subprocess.run([lorrygate, "check", "-c", str(tmp_path / "pg.ini")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2
    assert "a postgresql storage needs the psycopg package: pip install 'lorrygate[postgresql]'" in missing.stderr

    # The README example, from the shipped config with this test's broker and directories.
    realm = f"mqttkit-{uuid.uuid4().hex[:6]}"
    config = open(os.path.join(ROOT, "etc", "gateway.ini")).read()
    config = config.replace("port = 1883", f"port = {mosquitto.port}").replace("mqttkit-1/#", f"{realm}/#")
    config = config.replace("data_dir = ../var", "data_dir = state").replace("sqlite:///../var/", "sqlite:///")
    config = config.replace("strategies = ../strategies\n", "")
    config = config.replace("client_id =\n", f"client_id = wheel-{realm}\n")
    (tmp_path / "gateway.ini").write_text(config)
    log = open(tmp_path / "gw.log", "wb")
    process = subprocess.Popen([lorrygate, "-c", str(tmp_path / "gateway.ini")], stdout=log, stderr=subprocess.STDOUT,
                               cwd="/")
    try:
        wait_until(lambda: b"every subscription acknowledged" in (tmp_path / "gw.log").read_bytes()
                   or process.poll() is not None, 60, "the gateway to subscribe")
        assert process.poll() is None, (tmp_path / "gw.log").read_text()
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([(f"{realm}/testdrive/area-42/node-1/data.json",
                                 '{"temperature": 21.5, "humidity": 48}')])
        publisher.close()
        database = str(tmp_path / "lorrygate.sqlite")
        wait_until(lambda: count_rows(database, realm.replace("-", "_")) == 1, 30, "the README's row")
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_verifies(tmp_path, core_venv):
    unit = open(os.path.join(ROOT, "etc", "lorrygate.service")).read()
    assert "Type=notify" in unit and "User=lorrygate" in unit and "StateDirectory=lorrygate" in unit
    # verify checks that ExecStart names an executable: the wheel's, here
    path = tmp_path / "lorrygate.service"
    path.write_text(unit.replace("/usr/local/bin/lorrygate", str(core_venv / "bin" / "lorrygate")))
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr

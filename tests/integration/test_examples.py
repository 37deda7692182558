"""Every file in examples/ runs, against a real broker."""

import glob
import os
import subprocess
import sys

import pytest

from tests.integration.test_amqp import rabbitmq  # noqa: F401 - the fixture, for the AMQP example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "*.py")) if not os.path.basename(p).startswith("_"))
EXPECTED = {
    "appsink.py": ["gw_pump_1_sensors {'rpm': 1200, 'temperature': 61.5}"],
    "manipulate.py": ["fields: {'humidity': 40, 'temperature': 22.0}",
                      "tags: {'site': 'berlin', 'station': 'station-1'}"],
    "relay.py": ["rows in table testdrive: 5"],
    "amqp_to_mqtt.py": ["relayed 5 messages to MQTT: relayed/example-amqp/sensor-0/data.json"],
}


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path, mosquitto, tmp_path, request):
    """The example runs to its end and prints what its docstring promises."""
    env = dict(os.environ, LORRYGATE_EXAMPLE_PORT=str(mosquitto.port))
    if "amqp" in os.path.basename(path):
        rabbitmq = request.getfixturevalue("rabbitmq")
        env.update(LORRYGATE_EXAMPLE_AMQP_PORT=str(rabbitmq.port), LORRYGATE_EXAMPLE_AMQP_USER="lorrygate",
                   LORRYGATE_EXAMPLE_AMQP_PASSWORD="secret")
    result = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in EXPECTED[os.path.basename(path)]:
        assert line in result.stdout, result.stdout


def test_every_example_is_checked():
    """A new example needs its expected output here."""
    assert {os.path.basename(p) for p in EXAMPLES} == set(EXPECTED)

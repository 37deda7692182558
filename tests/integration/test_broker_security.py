"""TLS and passwords against a real Mosquitto with a TLS-only, password-protected listener."""

import json
import os
import shutil
import subprocess

import pytest

from tests.certs import write_tls_files
from tests.gatewayproc import RUNNING, GatewayProcess, count_rows, write_config
from tests.servers import Mosquitto, wait_until

PASSWORD = "correct horse battery staple"


def mosquitto_passwd() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("mosquitto_passwd is missing: the mosquitto package provides it")


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("secure-mosquitto"))
    tls = write_tls_files(directory)
    passwords = os.path.join(directory, "passwords")
    subprocess.run([mosquitto_passwd(), "-b", "-c", passwords, "gateway", PASSWORD], check=True, capture_output=True)
    broker = Mosquitto(
        directory,
        extra=(
            f"cafile {tls['ca.pem']}\ncertfile {tls['server.pem']}\nkeyfile {tls['server.key']}\n"
            f"allow_anonymous false\npassword_file {passwords}\n"
        ),
    ).start()
    broker.tls = tls
    yield broker
    broker.stop()


def secure_config(tmp_path, broker, ca: str, password_ref: str, tls: bool = True) -> str:
    config = write_config(str(tmp_path), broker.port, client_id=f"gw-tls-{tmp_path.name}", topics="secure/#")
    text = open(config).read().replace(
        "host = 127.0.0.1",
        f"host = localhost\ntls = {'true' if tls else 'false'}\n" + (f"tls_ca = {ca}\n" if tls else "")
        + f"username = gateway\npassword = {password_ref}",
    )
    open(config, "w").write(text)
    return config


def publish_tls(broker, topic, payload):
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.tls_set(ca_certs=broker.tls["ca.pem"])
    client.username_pw_set("gateway", PASSWORD)
    client.connect("localhost", broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("bundle", [False, True], ids=["ca", "ca-second-in-a-bundle"])
def test_tls_with_password_stores_messages(tmp_path, secure_broker, monkeypatch, bundle):
    """Over TLS with a verified server certificate and a password from the environment, messages are stored;
    tls_ca may be a bundle whose signing CA is not the first certificate."""
    from cryptography.hazmat.primitives import serialization

    from tests.certs import make_ca

    monkeypatch.setenv("LORRYGATE_TEST_MQTT_PASSWORD", PASSWORD)
    ca = secure_broker.tls["ca.pem"]
    if bundle:
        other = make_ca("another CA")[1].public_bytes(serialization.Encoding.PEM)
        (tmp_path / "bundle.pem").write_bytes(other + open(ca, "rb").read())
        ca = str(tmp_path / "bundle.pem")
    config = secure_config(tmp_path, secure_broker, ca, "${ENV:LORRYGATE_TEST_MQTT_PASSWORD}")
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log")).start()
    publish_tls(secure_broker, "secure/n/g/node/data.json", json.dumps({"v": 1}))
    wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), "secure_n") == 1, 30, "the row")
    assert gateway.stop() == 0
    assert PASSWORD not in gateway.text()


def failing_gateway(tmp_path, config):
    gateway = GatewayProcess(config, str(tmp_path / "gateway.log"))
    gateway.process = subprocess.Popen(
        [__import__("sys").executable, "-m", "lorrygate.cli", "-c", config],
        stdout=open(gateway.log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    RUNNING.append(gateway.process)
    return gateway


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong-ca", "TLS handshake failed: certificate verify failed; check that tls_ca"),
        ("wrong-password", "broker refused the connection: not authorized"),
        ("plain-to-tls", "closed the connection before answering CONNECT (a TLS-only listener? then set tls = true)"),
    ],
    ids=["wrong-ca", "wrong-password", "plain-to-tls"],
)
def test_refused_connections_say_why(tmp_path, secure_broker, monkeypatch, case, expected):
    """A wrong CA, a wrong password or plain text to a TLS listener give a log line that says so, and retries."""
    monkeypatch.setenv("LORRYGATE_TEST_MQTT_PASSWORD", "wrong" if case == "wrong-password" else PASSWORD)
    ca = secure_broker.tls["other-ca.pem" if case == "wrong-ca" else "ca.pem"]
    config = secure_config(
        tmp_path, secure_broker, ca, "${ENV:LORRYGATE_TEST_MQTT_PASSWORD}", tls=case != "plain-to-tls"
    )
    gateway = failing_gateway(tmp_path, config)
    try:
        wait_until(lambda: expected in gateway.text(), 30, f"a log line saying {expected!r}")
        assert "retrying" in gateway.text()
        assert PASSWORD not in gateway.text()
    finally:
        gateway.stop()


def test_client_certificate_and_host_name_checks(tmp_path):
    """A broker that requires client certificates accepts tls_cert/tls_key; a certificate for another
    host name is refused with a message that says to check the host."""
    directory = str(tmp_path)
    tls = write_tls_files(directory)
    strict = Mosquitto(directory, extra=(
        f"cafile {tls['ca.pem']}\ncertfile {tls['server.pem']}\nkeyfile {tls['server.key']}\n"
        "require_certificate true\nallow_anonymous true\n")).start()
    try:
        config = write_config(directory, strict.port, client_id="gw-mtls", topics="mtls/#")
        text = open(config).read().replace(
            "host = 127.0.0.1",
            f"host = localhost\ntls = true\ntls_ca = {tls['ca.pem']}\ntls_cert = {tls['client.pem']}\n"
            f"tls_key = {tls['client.key']}")
        open(config, "w").write(text)
        gateway = GatewayProcess(config, str(tmp_path / "mtls.log")).start()
        assert gateway.stop() == 0
    finally:
        strict.stop()
    (tmp_path / "other").mkdir()
    other = Mosquitto(str(tmp_path / "other"), extra=(
        f"cafile {tls['ca.pem']}\ncertfile {tls['otherhost.pem']}\nkeyfile {tls['otherhost.key']}\n"
        "allow_anonymous true\n")).start()
    try:
        config = write_config(str(tmp_path / "other"), other.port, client_id="gw-host", topics="host/#")
        text = open(config).read().replace("host = 127.0.0.1", f"host = localhost\ntls = true\ntls_ca = {tls['ca.pem']}")
        open(config, "w").write(text)
        gateway = failing_gateway(tmp_path / "other", config)
        wait_until(lambda: "TLS handshake failed" in gateway.text(), 30, "the TLS failure")
        assert "is a name in that certificate" in gateway.text()
        gateway.stop()
    finally:
        other.stop()


def test_a_relay_reads_from_and_publishes_to_a_broker_of_a_private_ca_with_client_certificates(tmp_path):
    """A broker whose certificate a private CA signed and that requires client certificates: an mqtts:// URL
    of ``lorrygate relay`` takes ``?tls_ca=``, ``?tls_cert=`` and ``?tls_key=`` as a [broker:NAME] section
    takes its keys, for its source and for its sink (the sink's could not be given at all, in a launch or in a
    [storage:NAME] section: an MQTT sink spoke TLS only to brokers of a CA the system trusts)."""
    import subprocess
    import sys
    import threading

    import paho.mqtt.client as paho

    directory = str(tmp_path)
    tls = write_tls_files(directory)
    strict = Mosquitto(directory, extra=(
        f"cafile {tls['ca.pem']}\ncertfile {tls['server.pem']}\nkeyfile {tls['server.key']}\n"
        "require_certificate true\nallow_anonymous true\n")).start()
    files = f"tls_ca={tls['ca.pem']}&tls_cert={tls['client.pem']}&tls_key={tls['client.key']}"
    received: list = []
    subscribed = threading.Event()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2)
    watcher.tls_set(ca_certs=tls["ca.pem"], certfile=tls["client.pem"], keyfile=tls["client.key"])
    watcher.on_message = lambda client, userdata, message: received.append((message.topic, message.payload))
    watcher.on_connect = lambda client, userdata, flags, rc, properties: client.subscribe("out/#", qos=1)
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.connect("localhost", strict.port)
    watcher.loop_start()
    log = tmp_path / "relay.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "lorrygate.cli", "relay", f"mqtts://localhost:{strict.port}/in/%23?{files}",
         f"mqtts://localhost:{strict.port}/out/{{topic}}?{files}", "--data-dir", str(tmp_path / "state")],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        assert subscribed.wait(10), "no SUBACK for the watcher"
        wait_until(lambda: "every subscription acknowledged" in log.read_text() or process.poll() is not None, 60,
                   "the relay's subscription")
        assert process.poll() is None, log.read_text()
        publisher = paho.Client(paho.CallbackAPIVersion.VERSION2)
        publisher.tls_set(ca_certs=tls["ca.pem"], certfile=tls["client.pem"], keyfile=tls["client.key"])
        publisher.connect("localhost", strict.port)
        publisher.loop_start()
        for n in range(20):
            publisher.publish(f"in/dev{n}", b'{"n": %d}' % n, qos=1).wait_for_publish(10)
        publisher.disconnect()
        publisher.loop_stop()
        wait_until(lambda: len({topic for topic, _ in received}) == 20, 30, "the 20 messages relayed")
    finally:
        process.terminate()
        process.wait(30)
        watcher.loop_stop()
        strict.stop()
    assert sorted(received) == sorted((f"out/in/dev{n}", b'{"n": %d}' % n) for n in range(20))


def test_a_ca_file_renewed_on_disk_is_read_again_at_the_next_connection_attempt(tmp_path, secure_broker, monkeypatch):
    """The TLS files were read once, at the start: a CA bundle (or a client certificate) renewed on disk was not
    used, and the connection attempts failed until the gateway restarted. Each attempt reads them again."""
    monkeypatch.setenv("LORRYGATE_TEST_MQTT_PASSWORD", PASSWORD)
    ca = tmp_path / "ca.pem"
    shutil.copy(secure_broker.tls["other-ca.pem"], ca)  # (not the CA that signed the broker's certificate)
    config = secure_config(tmp_path, secure_broker, str(ca), "${ENV:LORRYGATE_TEST_MQTT_PASSWORD}")
    gateway = failing_gateway(tmp_path, config)
    try:
        wait_until(lambda: "TLS handshake failed: certificate verify failed" in gateway.text(), 30,
                   "an attempt with the old CA")
        renewed = tmp_path / "ca.pem.new"
        shutil.copy(secure_broker.tls["ca.pem"], renewed)
        os.replace(renewed, ca)
        wait_until(lambda: "subscribed to secure/#" in gateway.text(), 60, "a connection with the renewed CA")
        publish_tls(secure_broker, "secure/n/g/node/data.json", json.dumps({"v": 1}))
        wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), "secure_n") == 1, 30, "the row")
    finally:
        assert gateway.stop() == 0, gateway.text()[-2000:]

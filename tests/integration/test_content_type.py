"""
MQTT 5's Content Type through a real Mosquitto: a CBOR payload on a topic tree without a convention (the
``topic`` strategy, whose chain has no cbor) is stored when its publisher says ``application/cbor``, and a
dead letter without it, as before. A dead letter keeps its message's Content Type, and a replay decodes by it,
in SQLite and in PostgreSQL.
"""

import subprocess
import sys
import uuid

import cbor2
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.gatewayproc import GatewayProcess, query, tables, write_config
from tests.servers import wait_until


def mqtt5_config(tmp_path, port, realm, strategy, storage=None) -> str:
    path = write_config(str(tmp_path), port, client_id=f"gw-{realm}", topics=f"{realm}/#",
                        extra=f"strategy = {strategy}\n")
    with open(path) as handle:
        text = handle.read()
    text = text.replace("keepalive = 10", "keepalive = 10\nprotocol = 5")
    if storage is not None:
        text = text.replace(f"url = sqlite:///{tmp_path}/gateway.sqlite\nsynchronous = NORMAL", f"url = {storage}")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def publish(port, messages) -> None:
    """MQTT 5 publications of ``(topic, payload, content type[, user properties])``, QoS 1, each acknowledged."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    for topic, payload, content_type, *user in messages:
        properties = None
        if content_type is not None or any(user):
            properties = Properties(PacketTypes.PUBLISH)
            if content_type is not None:
                properties.ContentType = content_type
            if any(user):
                properties.UserProperty = user[0]
        infos.append(client.publish(topic, payload, qos=1, properties=properties))
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def test_a_content_type_picks_the_decoder(tmp_path, mosquitto):
    realm = f"ct{uuid.uuid4().hex[:6]}"
    path = mqtt5_config(tmp_path, mosquitto.port, realm, "topic")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    try:
        publish(mosquitto.port, [(f"{realm}/kitchen", cbor2.dumps({"temperature": 21.5}), "application/cbor"),
                                 (f"{realm}/kitchen", cbor2.dumps({"temperature": 22.5}), None)])
        table = f"{realm}__kitchen"
        wait_until(lambda: {table, "lorrygate_dead_letter"} <= tables(db)
                   and query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(1,)], 30,
                   "the typed payload stored and the other kept as a dead letter")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT temperature FROM "{realm}__kitchen"') == [(21.5,)]


def dead_letter_rows(storage, db: str, realm: str, columns: str) -> list:
    """``columns`` of the dead letters of ``realm``'s topics, oldest first, in PostgreSQL (``storage``, a URL)
    or else in the SQLite file ``db``."""
    sql = f"SELECT {columns} FROM lorrygate_dead_letter WHERE topic LIKE '" + realm + "/%' ORDER BY id"
    if storage is not None:
        with psycopg.connect(storage) as conn:
            return conn.execute(sql.replace("%", "%%")).fetchall()
    return query(db, sql) if "lorrygate_dead_letter" in tables(db) else []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_dead_letter_keeps_its_content_type_for_the_replay(tmp_path, mosquitto, kind, request):
    """A typed CBOR payload that the strategy refused (the ``wan`` strategy on a topic of two levels) is a dead
    letter; after the strategy is fixed, its replay decodes it by its Content Type (without it, the ``topic``
    chain has no cbor and it stayed a dead letter for good)."""
    realm = f"cr{uuid.uuid4().hex[:6]}"
    storage = None
    if kind == "postgresql":
        storage = request.getfixturevalue("postgres").url
    path = mqtt5_config(tmp_path, mosquitto.port, realm, "wan", storage)
    db = str(tmp_path / "gateway.sqlite")

    def dead_letters() -> list:
        return dead_letter_rows(storage, db, realm, "content_type, stage")

    gateway = GatewayProcess(path, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    try:
        publish(mosquitto.port, [(f"{realm}/kitchen", cbor2.dumps({"temperature": 21.5}), "application/cbor"),
                                 (f"{realm}/hall", cbor2.dumps({"temperature": 19.0}), None)])
        wait_until(lambda: len(dead_letters()) == 2, 30, "both messages kept as dead letters")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert dead_letters() == [("application/cbor", "topology"), (None, "topology")]
    listed = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "list", "-c", path, "--topic",
                             f"{realm}/#"],
                            capture_output=True, text=True, timeout=120)
    assert "(application/cbor)" in listed.stdout, listed.stdout + listed.stderr

    mqtt5_config(tmp_path, mosquitto.port, realm, "topic", storage)
    done = subprocess.run([sys.executable, "-m", "lorrygate.cli", "dead-letters", "replay", "-c", path, "--topic",
                           f"{realm}/#"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 replayed (1 rows), 1 still failing" in done.stdout, done.stdout
    if storage is None:
        assert query(db, f'SELECT temperature FROM "{realm}__kitchen"') == [(21.5,)]
    else:
        with psycopg.connect(storage) as conn:
            assert conn.execute(f'SELECT temperature FROM "{realm}"."kitchen"').fetchall() == [(21.5,)]

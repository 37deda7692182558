"""
``lorrygate dead-letters list|replay|purge`` on a CrateDB storage, against
the fake that follows CrateDB's source (tests/fakecrate.py) and, with
LORRYGATE_CRATEDB_URL set, the same case against a real CrateDB: dead
letters written by the CrateDB writer are listed, replayed once the decoder
is configured (rows in their table, dead letters marked, a second replay
does nothing, what still fails stays) and purged.
"""

import os
import sys
import textwrap
import uuid

import cbor2
import pytest
import pytest_twisted
from twisted.internet import reactor, utils

from lorrygate.model import Message
from lorrygate.storage.batch import Batch, DeadLetter
from lorrygate.storage.cratedb import DEAD_LETTER_INSERT, CrateStorage, dead_letter_row, make_client
from tests.doubles import Ack

pytestmark = pytest.mark.integration

RECEIVED = 1_717_243_200.125  # 2024-06-01T12:00:00.125Z


async def lorrygate(*args) -> tuple:
    """The command line in a process of its own, while this reactor serves the fake: (exit code, stdout, stderr)."""
    out, err, code = await utils.getProcessOutputAndValue(sys.executable, ["-m", "lorrygate.cli", *args],
                                                          env=dict(os.environ), reactor=reactor)
    return code, out.decode(), err.decode()


def write_config(tmp_path, url: str, realm: str, channel: str, decoders: str) -> str:
    path = tmp_path / f"{decoders.replace(', ', '-')}.ini"
    path.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {tmp_path}/var
        control = off

        [broker:test]
        host = 127.0.0.1
        port = 1

        [storage:db]
        url = {url.replace("http://", "crate://").replace("https://", "crate+https://")}
        replicas = 0

        [storage:local]
        url = sqlite:///{tmp_path}/local.sqlite

        [channel:{channel}]
        source = test
        topics = {realm}/#
        decoders = {decoders}
        storage = db
        """))
    return str(path)


@pytest_twisted.ensureDeferred
async def test_dead_letters_of_cratedb_are_listed_replayed_once_and_purged(server, tmp_path):
    """CrateDB is the first storage, and its dead letters could only be read with SQL by hand: a decoder fixed in
    the config left them dead, and the writer's own hint to run ``lorrygate dead-letters replay`` was refused. A
    message that decodes now but whose row CrateDB refuses keeps its one dead letter, with the new reason."""
    realm = f"lgd{uuid.uuid4().hex[:8]}"
    channel = f"main{uuid.uuid4().hex[:6]}"
    topic = f"{realm}/net/gw/node-1/data.json"
    store = CrateStorage("db", server.url, reactor, http=make_client(reactor, False, ""), replicas="0")
    batch = Batch()
    for seq in range(3):
        message = Message(topic, f"seq={seq} t=21.5".encode(), 1, False, RECEIVED + seq, "#", Ack())
        batch.add_dead_letter(DeadLetter(channel, message, "decode", "no decoder took it: json", "json"))
    text = Message(topic, b"seq=abc", 1, False, RECEIVED + 5, "#", Ack())  # decodes, but seq is a DOUBLE column
    batch.add_dead_letter(DeadLetter(channel, text, "decode", "no decoder took it: json", "json"))
    garbage = Message(topic, b"\xff\xfe garbage", 1, False, RECEIVED, "#", Ack())
    batch.add_dead_letter(DeadLetter(channel, garbage, "decode", "no decoder took it: json", "json"))
    # a CBOR payload its publisher typed (MQTT 5's Content Type): a replay decodes it by its type
    typed = Message(topic, cbor2.dumps({"seq": 4}), 1, False, RECEIVED + 4, "#", Ack(), content_type="application/cbor")
    batch.add_dead_letter(DeadLetter(channel, typed, "decode", "no decoder took it: json", "json"))
    other = Message(topic, b"seq=9", 1, False, RECEIVED, "#", Ack())
    batch.add_dead_letter(DeadLetter(f"gone{channel}", other, "decode", "no decoder took it", "json"))
    await store.write(batch)
    # one kept without its payload, as the writer keeps one too large for a request
    large = DeadLetter(channel, Message(topic, b"seq=7", 1, False, RECEIVED, "#", Ack()), "store",
                       "the row is 200,000,000 bytes of JSON; the payload could not be stored", "json")
    await store.query(DEAD_LETTER_INSERT, dead_letter_row(large, with_payload=False))
    try:
        json_only = write_config(tmp_path, server.url, realm, channel, "json")
        fixed = write_config(tmp_path, server.url, realm, channel, "json, kv")

        code, out, err = await lorrygate("dead-letters", "list", "-c", json_only, "--channel", channel)
        assert code == 0, err
        assert "storage db: 7 dead letter(s), 7 not replayed" in out
        assert f"6  channel {channel}, decode: no decoder took it: json" in out
        assert f"{topic}' decode (application/cbor): " in out
        code, out, err = await lorrygate("dead-letters", "list", "-c", json_only, "--channel", channel, "--since",
                                         "2024-06-01T12:00:01Z", "--until", "2024-06-01T12:00:03Z")
        assert "storage db: 2 dead letter(s), 2 not replayed" in out, out  # seq=1 and seq=2

        code, out, err = await lorrygate("dead-letters", "replay", "-c", fixed, "--channel", channel)
        assert code == 0, err
        assert "storage db: 4 replayed (4 rows), 3 still failing" in out
        assert "its payload was not kept" in out and "decode:" in out
        assert "1  still failing: store: " in out  # seq=abc decodes now, but CrateDB refuses its text
        rows = await server.rows(f"{realm}_net", "gw_node_1_sensors")
        assert sorted((row["time"], row["fields"]["seq"]) for row in rows) == [
            (1_717_243_200_125, 0.0), (1_717_243_201_125, 1.0), (1_717_243_202_125, 2.0), (1_717_243_204_125, 4)]

        code, out, err = await lorrygate("dead-letters", "replay", "-c", fixed, "--channel", channel)
        assert code == 0, err
        assert "storage db: 0 replayed (0 rows), 3 still failing" in out
        assert len(await server.rows(f"{realm}_net", "gw_node_1_sensors")) == 4

        code, out, err = await lorrygate("dead-letters", "list", "-c", fixed, "--channel", channel)
        assert "7 dead letter(s), 3 not replayed" in out and "decode (replayed)" in out
        assert f"1  channel {channel}, store: " in out  # seq=abc: its dead letter, with CrateDB's reason

        code, out, err = await lorrygate("dead-letters", "purge", "-c", fixed, "--channel", channel, "--replayed",
                                         "--yes")
        assert code == 0, err
        assert "storage db: purged 4 dead letter(s)" in out
        code, out, err = await lorrygate("dead-letters", "list", "-c", fixed, "--channel", channel)
        assert "3 dead letter(s), 3 not replayed" in out
        code, out, err = await lorrygate("dead-letters", "list", "-c", fixed, "--channel", f"gone{channel}")
        assert "1 dead letter(s), 1 not replayed" in out
    finally:
        for name in (channel, f"gone{channel}"):
            await lorrygate("dead-letters", "purge", "-c", write_config(tmp_path, server.url, realm, channel, "json"),
                            "--channel", name, "--yes")
        await server.close(f"{realm}_net")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("action", ["list", "replay"])
async def test_an_unreachable_cratedb_is_one_line_naming_the_storage(tmp_path, action):
    """A CrateDB that is down stopped a replay with a traceback of Twisted's internals; a list goes on with the
    other storages."""
    from twisted.internet.protocol import Factory

    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()  # (a port nothing listens on)
    config = write_config(tmp_path, url, "lgdown", "main", "json")
    code, out, err = await lorrygate("dead-letters", action, "-c", config)
    assert code == 1
    assert f"lorrygate dead-letters {action}: storage db: CrateDB at {url} unreachable" in err
    assert "Traceback" not in err
    if action == "list":  # the other storages are listed all the same
        assert "storage local: no dead letters" in out

"""
Gateway groups on a real Mosquitto (shared subscriptions): three gateways
with ``group = fleet`` split 30,000 QoS 1 messages; one is SIGKILLed in the
middle and restarted with its client id: nothing is lost, and the duplicates
(messages it had committed but not yet acknowledged when it died) are
counted.

What Mosquitto does, found here and written down in docs/scaling.rst: a
member's unacknowledged messages stay in its persistent session while it is
away and come back to it (not to the other members) when it reconnects
with the same client id; new messages go to the members that are connected.
"""

import json
import signal
import textwrap
import uuid

import pytest

from tests.gatewayproc import GatewayProcess, Publisher, query, tables
from tests.servers import wait_until

pytestmark = pytest.mark.integration

TOTAL = 30_000


def member_config(directory, port, realm, member) -> str:
    path = directory / "gateway.ini"
    path.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {directory}
        log_format = json
        control = off
        stats_interval = 1s

        [broker:test]
        host = 127.0.0.1
        port = {port}
        client_id = {realm}-{member}

        [storage:db]
        url = sqlite:///{directory}/gateway.sqlite
        synchronous = NORMAL

        [channel:main]
        source = test
        topics = {realm}/#
        qos = 1
        group = fleet
        """))
    return str(path)


def seqs(db, realm) -> list:
    return [seq for table in tables(db) if table.startswith(realm)
            for (seq,) in query(db, f'SELECT seq FROM "{table}"')]


def test_three_gateways_split_a_stream_and_one_dies_without_loss(tmp_path, mosquitto):
    realm = f"g{uuid.uuid4().hex[:6]}"
    members = []
    for member in ("a", "b", "c"):
        directory = tmp_path / member
        directory.mkdir()
        gateway = GatewayProcess(member_config(directory, mosquitto.port, realm, member), str(directory / "gw.log"))
        gateway.db = str(directory / "gateway.sqlite")
        members.append(gateway.start(ready="subscribed to"))
    assert all(f"$share/fleet/{realm}/#" in g.text() for g in members)
    publisher = Publisher(mosquitto.port)
    messages = [(f"{realm}/net/gw/node-{seq % 10}/data.json", json.dumps({"seq": seq, "value": seq * 0.5}))
                for seq in range(TOTAL)]
    try:
        infos = publisher.start_publishing(messages[:TOTAL // 2])
        victim = members[1]
        wait_until(lambda: len(seqs(victim.db, realm)) >= 2_000, 60, "the second member storing")
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        publisher.wait(infos)
        infos = publisher.start_publishing(messages[TOTAL // 2:])
        victim.start(ready="subscribed to")
        publisher.wait(infos)

        def stored():
            return [s for g in members for s in seqs(g.db, realm)]

        wait_until(lambda: set(stored()) == set(range(TOTAL)), 120, "every message stored by some member")
        for gateway in members:
            assert gateway.stop() == 0
    finally:
        publisher.close()
        for gateway in members:
            if gateway.process.poll() is None:
                gateway.process.kill()
    found = stored()
    shares = [len(seqs(g.db, realm)) for g in members]
    assert set(found) == set(range(TOTAL))
    assert all(share > 0 for share in shares), shares
    print(f"group of 3 through a SIGKILL: shares {shares}, {len(found) - TOTAL} duplicates for {TOTAL} messages")


def test_a_member_away_keeps_its_share_in_its_session_until_it_returns(tmp_path, mosquitto):
    """Mosquitto goes round the members of a share group, connected or not: a
    member that is away (persistent session) gets its turn queued in its
    session, which the other members never see; it arrives when the member
    reconnects with its client id. A member that never comes back holds its
    share until its session expires (docs/scaling.rst)."""
    realm = f"g{uuid.uuid4().hex[:6]}"
    members = []
    for member in ("a", "b"):
        directory = tmp_path / member
        directory.mkdir()
        gateway = GatewayProcess(member_config(directory, mosquitto.port, realm, member), str(directory / "gw.log"))
        gateway.db = str(directory / "gateway.sqlite")
        members.append(gateway.start(ready="subscribed to"))
    first, away = members
    assert away.stop() == 0  # a graceful stop: everything acknowledged, the session stays
    publisher = Publisher(mosquitto.port)
    try:
        publisher.publish_many((f"{realm}/net/gw/node-1/data.json", json.dumps({"seq": seq})) for seq in range(1_000))
        wait_until(lambda: len(seqs(first.db, realm)) >= 500, 60, "the connected member's share")
        assert len(seqs(first.db, realm)) < 1_000  # the other share waits for the member that is away
        away.start(ready="subscribed to")
        wait_until(lambda: len(seqs(first.db, realm)) + len(seqs(away.db, realm)) >= 1_000, 60, "the rest")
        assert sorted(seqs(first.db, realm) + seqs(away.db, realm)) == list(range(1_000))
        for gateway in members:
            assert gateway.stop() == 0
    finally:
        publisher.close()
        for gateway in members:
            if gateway.process.poll() is None:
                gateway.process.kill()

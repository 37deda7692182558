"""
Hostile messages and careless operators against a real Mosquitto, SQLite and
PostgreSQL: after each bad message the stream around it is stored
completely, the storage keeps writing, the connection stays, and the bad
message is a dead letter with its reason (or a counted rejection).
"""

import json
import os
import re
import uuid

import paho.mqtt.client as paho
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, last_stats, query, write_config
from tests.servers import wait_until


def dead_letters(db):
    try:
        return query(db, "SELECT topic, stage, error FROM lorrygate_dead_letter")
    except Exception:
        return []


def pg_dead_letters(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT topic, stage, error FROM lorrygate_dead_letter").fetchall()


def pg_count(url, schema_prefix):
    with psycopg.connect(url) as conn:
        names = conn.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE %s",
                             (schema_prefix + "%",)).fetchall()
        return sum(conn.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in names)


def start(tmp_path, port, realm, url=None, extra="", ddl=""):
    config = write_config(str(tmp_path), port, client_id=f"gw-{realm}", topics=f"{realm}/#", extra=extra)
    wide_budget(config)
    if ddl:
        text = open(config).read().replace("[storage:db]\n", f"[storage:db]\nddl = {ddl}\n")
        open(config, "w").write(text)
    if url is not None:
        text = open(config).read().replace(f"url = sqlite:///{tmp_path}/gateway.sqlite", f"url = {url}").replace(
            "synchronous = NORMAL\n", "")
        open(config, "w").write(text)
    return GatewayProcess(config, str(tmp_path / "gw.log")).start()


def wide_budget(config):
    """A column budget as wide as PostgreSQL's own limit, so that a wide payload reaches the database and its
    refusal (a data error, not an outage) is what the test sees; by default the budget keeps it from there."""
    text = open(config).read().replace("[storage:db]\n", "[storage:db]\nmax_columns = 1600\n")
    open(config, "w").write(text)


def no_connection_lost(gateway):
    lost = [e for e in gateway.events() if "connection to" in e.get("message", "")
            and "lost" in e.get("message", "")]
    assert lost == [], "the connection dropped"


def around(publisher, realm, bad_topic, bad_payload, node="n"):
    """Publish a good message, the bad one, and a good one again."""
    good = f"{realm}/net/gw/{node}/data.json"
    publisher.publish_many([(good, json.dumps({"seq": 1})), (bad_topic, bad_payload), (good, json.dumps({"seq": 2}))])


#: (case id, topic level or None for the standard topic, payload, what the dead letter's reason says); a row the
#: database refuses whose reason names its table, ``..._door_locked_...``, is a data error all the same (its
#: "locked" is no SQLITE_LOCKED): a DDL template's UNIQUE (time), and two records of one time
SQLITE_CASES = [
    ("a-refused-row-on-a-door-locked-topic", "door-locked",
     json.dumps([{"time": "2024-06-01T00:00:00Z", "v": 1}, {"time": "2024-06-01T00:00:00Z", "v": 2}]),
     "UNIQUE constraint failed"),
    ("lone-surrogate", None, '{"s": "\\ud800x"}', "lone UTF-16 surrogate"),
    ("records-per-message", None, json.dumps([{"v": n} for n in range(101)]), "more than max_records = 100"),
    ("not-utf8", None, b"\xff\xfe\x00garbage", "no decoder"),
    ("deep-nesting", None, "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
]


@pytest.mark.parametrize("case, level, payload, reason", SQLITE_CASES, ids=[c[0] for c in SQLITE_CASES])
def test_one_bad_message_into_sqlite(tmp_path, mosquitto, case, level, payload, reason):
    """SQLite: the bad message is a dead letter with its reason; the messages around it are stored, nothing fails."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, mosquitto.port, realm, extra="max_records = 100\n",
                    ddl="CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, UNIQUE (time))")
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    bad_topic = f"{realm}/net/gw/{level or 'n'}/data.json"
    around(publisher, realm, bad_topic, payload)
    wait_until(lambda: count_rows(db, realm) >= 2 and dead_letters(db), 30, "the good rows and the dead letter")
    publisher.close()
    assert gateway.stop() == 0
    ((topic, stage, error),) = dead_letters(db)
    assert topic == bad_topic and reason in error, error
    stats = last_stats(gateway.events())
    assert stats["failures"] == 0, "the storage never failed a write"
    assert count_rows(db, realm) == 2
    no_connection_lost(gateway)


def test_a_topic_too_long_for_its_report_keeps_the_connection(tmp_path, mosquitto):
    """A ~65.5 KB topic whose error report cannot be addressed: a dead letter, no report, the connection stays."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, mosquitto.port, realm)
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    long_topic = f"{realm}/" + "x" * (65_530 - len(realm) - 3) + "/d"  # its error.json sibling: 65,539 bytes
    assert len(long_topic) == 65_530
    around(publisher, realm, long_topic, b"not json")
    wait_until(lambda: count_rows(db, realm) >= 2 and dead_letters(db), 30, "the good rows and the dead letter")
    publisher.close()
    assert gateway.stop() == 0
    stats = last_stats(gateway.events())
    assert stats["reports_skipped"] == 1 and stats["failures"] == 0
    no_connection_lost(gateway)


def test_a_deleted_database_file_loses_nothing_acknowledged(tmp_path, mosquitto):
    """The SQLite file deleted under the gateway: it stops writing into the unlinked file, and every message
    published afterwards is in the new file."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, mosquitto.port, realm)
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"seq": n})) for n in range(10)])
    wait_until(lambda: count_rows(db, realm) == 10, 30, "the first rows")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"seq": n})) for n in range(10, 30)])
    wait_until(lambda: count_rows(db, realm) == 20, 60, "the later rows in the new file", interval=0.2)
    publisher.close()
    assert gateway.stop() == 0
    assert "deleted or replaced while open" in gateway.text()
    assert sorted(r[0] for r in query(db, f'SELECT seq FROM "{realm}_net__gw_n_sensors"')) == list(range(10, 30))


def rss_peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"VmRSS:\s+(\d+) kB", handle.read()).group(1))


def test_a_100_mb_payload_is_a_dead_letter_by_reference(tmp_path, mosquitto):
    """100 MB in one message: a dead letter by size and hash, peak RSS growth under twice the payload."""
    import hashlib

    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, mosquitto.port, realm)
    db = str(tmp_path / "gateway.sqlite")
    base = rss_peak_kb(gateway.process.pid)
    payload = os.urandom(1 << 20) * 100
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    client.publish(f"{realm}/net/gw/big/data.json", payload, qos=1).wait_for_publish(120)
    client.disconnect()
    client.loop_stop()
    wait_until(lambda: dead_letters(db), 120, "the dead letter", interval=0.5)
    growth = (rss_peak_kb(gateway.process.pid) - base) * 1024
    assert gateway.stop() == 0
    ((topic, stage, error),) = dead_letters(db)
    assert stage == "size" and hashlib.sha256(payload).hexdigest() in error
    print(f"\n100 MB payload: peak RSS growth {growth / 2**20:.1f} MB")
    assert growth < 2 * len(payload)


def test_4000_topics_of_60_kb_keep_memory_bounded(tmp_path, mosquitto):
    """4,000 distinct 60 KB topics that fit no route: RSS grows by less than 50 MB (the route cache is bounded
    by bytes, rate-limited complaints leave the topic out of their key)."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, mosquitto.port, realm)
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"seq": 0}))])
    wait_until(lambda: count_rows(db, realm) == 1, 30, "the first row")
    base = rss_kb(gateway.process.pid)
    padding = "p" * 60_000
    # In chunks of 200, each committed before the next: what stays is what the gateway keeps, not the
    # messages in flight (bounded by max_pending rows, a separate matter).
    for start_at in range(0, 4000, 200):
        publisher.publish_many([(f"{realm}/{padding}{n}/data.json", json.dumps({"seq": n}))
                                for n in range(start_at, start_at + 200)], timeout=120)
        wait_until(lambda: len(dead_letters(db)) >= start_at + 200, 60, "the chunk's dead letters", interval=0.1)
    growth = (rss_kb(gateway.process.pid) - base) * 1024
    publisher.close()
    assert gateway.stop() == 0
    print(f"\n4,000 topics of 60 KB: RSS growth {growth / 2**20:.1f} MB")
    assert growth < 50 * 2**20


def test_postgresql_data_errors_isolate_the_entry_and_pg_realms_are_stored(tmp_path, mosquitto, postgres):
    """PostgreSQL: a value its column refuses ("warm" in the BIGINT column of seq: SQLSTATE 22P02) is a dead
    letter, not an outage; a row of 1,700 numbers, beyond the 8 kB a row can have, is stored (the numbers that
    do not fit into extra_fields); a realm "pg-lab" is stored (in schema lg_pg_lab_net); the stream around them
    is stored."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, mosquitto.port, realm, url=postgres.url, extra="")
    text = open(gateway.config).read().replace(f"topics = {realm}/#", f"topics = {realm}/#, pg-{realm}/#")
    open(gateway.config, "w").write(text)
    gateway.stop()
    gateway.start()
    publisher = Publisher(mosquitto.port)
    wide = {f"f{n}": n for n in range(1700)}
    around(publisher, realm, f"{realm}/net/gw/n/data.json", json.dumps({"seq": "warm"}))
    publisher.publish_many([(f"{realm}/net/gw/wide/data.json", json.dumps(wide)),
                            (f"pg-{realm}/net/gw/n/data.json", json.dumps({"seq": 3}))])
    wait_until(lambda: pg_count(postgres.url, realm) >= 3 and pg_count(postgres.url, f"lg_pg_{realm}") == 1
               and any(t == f"{realm}/net/gw/n/data.json" for t, _, _ in pg_dead_letters(postgres.url)),
               60, "the rows and the dead letter", interval=0.3)
    publisher.close()
    assert gateway.stop() == 0
    (error,) = [e for t, _, e in pg_dead_letters(postgres.url) if t.startswith(f"{realm}/")]
    assert "invalid input syntax for type bigint" in error and "seq" in error, error
    with psycopg.connect(postgres.url) as conn:
        cursor = conn.execute(f'SELECT * FROM "{realm}_net"."gw_wide_sensors"')
        (row,) = cursor.fetchall()
        stored = dict(zip([d[0] for d in cursor.description], row))
    extra = stored.pop("extra_fields")
    assert {name: value for name, value in stored.items() if name.startswith("f")} | extra == wide
    assert last_stats(gateway.events())["failures"] == 0
    no_connection_lost(gateway)


def test_a_realm_of_a_name_sqlite_reserves_is_stored(tmp_path, mosquitto):
    """SQLite reserves the names that start with ``sqlite_`` (any case) for its own objects: a realm ``sqlite`` or
    ``SQLite-lab`` made tables that CREATE TABLE refused ("object name reserved for internal use"), and every
    message of the realm was a dead letter. They are stored in ``lg_sqlite_...``, as PostgreSQL's ``pg_`` realms
    are in ``lg_pg_...``; the stream around them too."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}",
                          topics=f"{realm}/#, sqlite/{realm}/#, SQLite-{realm}/#")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    db = str(tmp_path / "gateway.sqlite")
    publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"seq": 1})),
                            (f"sqlite/{realm}/gw/n/data.json", json.dumps({"seq": 2})),
                            (f"SQLite-{realm}/net/gw/n/data.json", json.dumps({"seq": 3})),
                            (f"{realm}/net/gw/n/data.json", json.dumps({"seq": 4}))])
    expected = {f"lg_sqlite_{realm}__gw_n_sensors": [(2,)], f"lg_sqlite_{realm}_net__gw_n_sensors": [(3,)],
                f"{realm}_net__gw_n_sensors": [(1,), (4,)]}
    wait_until(lambda: all(count_rows(db, table) == len(rows) for table, rows in expected.items()), 30, "the rows")
    publisher.close()
    assert gateway.stop() == 0
    assert {table: query(db, f'SELECT seq FROM "{table}" ORDER BY seq') for table in expected} == expected
    assert query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=20),
       levels=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/#+\x00"),
                               min_size=1, max_size=12), min_size=1, max_size=5))
def test_arbitrary_payloads_and_topics_never_stop_the_chain(tmp_path_factory, payloads, levels):
    """Arbitrary bytes on arbitrary valid topics through strategy, decoders and SQLite (in process): the router
    never raises, the storage never fails a write, and every message ends stored or dead-lettered."""
    from twisted.internet.task import Clock

    from lorrygate.config.loader import loads
    from lorrygate.decoding import DecoderChain
    from lorrygate.model import Channel, Message
    from lorrygate.service.channel import ChannelRouter
    from lorrygate.storage.batcher import Batcher
    from lorrygate.storage.sqlite import SQLiteStorage
    from lorrygate.topology import WanStrategy
    from tests.doubles import Ack

    decoders = loads("[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///x\n[channel:c]\ntopics = #\n").decoders
    names = ("json", "ndjson", "csv", "kv", "value", "tasmota", "msgpack", "cbor")
    chain = DecoderChain(tuple(decoders[name](None, None) for name in names if name in decoders))
    directory = tmp_path_factory.mktemp("prop")
    store = SQLiteStorage("db", str(directory / "p.sqlite"), reactor=None)
    store._connect()

    class InThisThread:
        name = "db"

        def write(self, batch):
            from twisted.internet.defer import maybeDeferred

            return maybeDeferred(store._commit, batch)

    clock = Clock()
    batcher = Batcher(InThisThread(), clock)
    channel = Channel("c", "b", ("#",), 1, "wan", names, "db")
    router = ChannelRouter(channel, WanStrategy(), chain, batcher, clock)
    acks = []
    for n, payload in enumerate(payloads):
        topic = "/".join((levels * 5)[:4] + ["data.json" if n % 2 else levels[-1]])
        ack = Ack()
        acks.append(ack)
        router(Message(topic, payload, 1, False, 1.0, "#", ack))
    clock.advance(0)
    clock.advance(1)
    store._close()
    assert batcher.stats.failures == 0 and not batcher.down, batcher.stats.last_error
    assert all(ack.count == 1 for ack in acks), "every message is acknowledged: stored or dead-lettered"
    assert batcher.stats.rows + batcher.stats.dead_letters >= len(payloads) - router.stats.own_reports - router.stats.empty


FAULTY_MODULE = '''
import attrs
from zope.interface import implementer

from lorrygate.decoding import decoder
from lorrygate.decoding.jsonobject import loads
from lorrygate.interfaces import IStrategy
from lorrygate.topology import WanStrategy


@implementer(IStrategy)
@attrs.frozen
class Faulty:
    name: str = "faulty"

    def match(self, topic):
        if "boom-strategy" in topic:
            raise RuntimeError("a bug in the user's strategy")
        return WanStrategy().match(topic)

    def table_for(self, address):
        return WanStrategy().table_for(address)


@decoder("faulty")
def decode(message, address):
    if message.payload == b"boom-decoder":
        raise KeyError("a bug in the user's decoder")
    if message.payload == b"boom-store":
        return {"a": "\\ud800"}  # a lone surrogate: text that no database stores
    return loads(message.payload)


def hook(record, message, address):
    if "boom_hook" in record.fields:
        raise ZeroDivisionError("a bug in the user's hook")
    return record
'''


def with_drop_in(tmp_path, port, realm, filename, module, extra):
    """A config of a channel for ``realm`` whose strategies folder holds the drop-in ``module``."""
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / filename).write_text(module)
    config = write_config(str(tmp_path), port, client_id=f"gw-{realm}", topics=f"{realm}/#", extra=extra)
    text = open(config).read().replace("[lorrygate]\n", f"[lorrygate]\nstrategies = {tmp_path}/strategies\n")
    open(config, "w").write(text)
    return config


def test_a_failure_at_every_stage_keeps_the_connection_and_the_stream(tmp_path, mosquitto):
    """A strategy, a decoder, a hook and the database failing on single messages: each message is a dead letter
    naming its stage, every other message is stored, the connection stays, the storage never fails."""
    realm = f"h{uuid.uuid4().hex[:8]}"
    config = with_drop_in(tmp_path, mosquitto.port, realm, "faulty.py", FAULTY_MODULE,
                          "strategy = faulty\ndecoders = faulty\nhook = faulty:hook\n")
    wide_budget(config)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    db = str(tmp_path / "gateway.sqlite")
    good = f"{realm}/net/gw/n/data.json"
    bad = [
        (f"{realm}/net/gw/boom-strategy/data.json", json.dumps({"seq": -1}), "topology"),
        (good, "boom-decoder", "decode"),
        (good, json.dumps({"seq": -3, "boom_hook": 1}), "transform"),
        (good, "boom-store", "store"),
    ]
    messages = []
    for n, (topic, payload, _) in enumerate(bad):
        messages += [(good, json.dumps({"seq": 2 * n})), (topic, payload), (good, json.dumps({"seq": 2 * n + 1}))]
    publisher = Publisher(mosquitto.port)
    publisher.publish_many(messages)
    wait_until(lambda: count_rows(db, realm) >= 8 and len(dead_letters(db)) >= 4, 30, "the rows and dead letters")
    publisher.close()
    assert gateway.stop() == 0
    assert sorted(r[0] for r in query(db, f'SELECT seq FROM "{realm}_net__gw_n_sensors"')) == list(range(8))
    assert sorted(stage for _, stage, _ in dead_letters(db)) == sorted(stage for _, _, stage in bad)
    assert last_stats(gateway.events())["failures"] == 0
    no_connection_lost(gateway)


BOUNDED_DECODERS = '''
from twisted.internet.defer import Deferred

from lorrygate.decoding import decoder
from lorrygate.errors import Declined


@decoder("hang")
def hang(message, address):
    if message.payload == b"hang":
        return Deferred()  # never fires
    raise Declined("not for this decoder")


@decoder("spin")
def spin(message, address):
    while message.payload == b"spin":  # never returns, on the reactor thread
        pass
    raise Declined("not for this decoder")
'''

HUNGRY_CODEC = """
function decode(payload, topic) {
  if (payload[0] === 0x78) {  // "x": hold 700 MB of ArrayBuffers
    var keep = [];
    for (var i = 0; i < 7; i++) { keep.push(new Uint8Array(100 * 1024 * 1024)); }
  }
  return {size: payload.length};
}
"""


def test_decoders_that_hang_or_hoard_memory_are_bounded(tmp_path, mosquitto):
    """A Python decoder that never answers, one that never returns (on the reactor thread) and a JavaScript codec
    that hoards ArrayBuffers each cost one dead letter; the messages around them are stored; the gateway's memory
    stays far below what the codec asked for."""
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "bounded.py").write_text(BOUNDED_DECODERS)
    (tmp_path / "hungry.js").write_text(HUNGRY_CODEC)
    realm = f"h{uuid.uuid4().hex[:8]}"
    extra = ("decoders = hang, spin, json\ndecode_timeout = 1s\n\n"
             f"[decoder:hungry]\ntype = javascript\nfile = {tmp_path}/hungry.js\nmemory = 32\ntimeout = 5s\n\n"
             f"[channel:js]\nsource = test\ntopics = {realm}-js/#\nstorage = db\ndecoders = hungry\n")
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#", extra=extra)
    text = open(config).read().replace("[lorrygate]\n", f"[lorrygate]\nstrategies = {tmp_path}/strategies\n"
                                                          "code_time_limit = 500ms\n")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    db = str(tmp_path / "gateway.sqlite")
    publisher = Publisher(mosquitto.port)
    around(publisher, realm, f"{realm}/net/gw/n/data.json", b"hang")
    around(publisher, realm, f"{realm}/net/gw/n/data.json", b"spin")
    around(publisher, f"{realm}-js", f"{realm}-js/net/gw/n/data.json", b"x hoard")
    wait_until(lambda: count_rows(db, f"{realm}_net") >= 4 and count_rows(db, f"{realm}_js") >= 2
               and len(dead_letters(db)) >= 3,
               60, "the rows and the three dead letters", interval=0.2)
    peak_mb = rss_peak_kb(gateway.process.pid) / 1024
    publisher.close()
    assert gateway.stop() == 0
    errors = sorted(error for _, _, error in dead_letters(db))
    assert any("no decoder answered within decode_timeout = 1.0 s" in error for error in errors), errors
    assert any(re.search(r"decoder 'spin' still ran after 0.5 s at bounded.py:\d+ in \w+ on the reactor thread", error)
               for error in errors), errors
    assert any("memory limit of 32 MiB (ArrayBuffers)" in error for error in errors), errors
    assert peak_mb < 400, f"the gateway peaked at {peak_mb:.0f} MB"
    no_connection_lost(gateway)


QUITTING_DECODER = '''
import sys

from lorrygate.decoding import decoder
from lorrygate.errors import Declined


@decoder("quitting")
def quitting(message, address):
    if message.payload == b"quit":
        sys.exit(1)  # a script's habit: went through every ``except Exception`` to the reactor's read
    raise Declined("not for this decoder")
'''


def test_a_decoder_that_calls_sys_exit_costs_one_dead_letter_and_holds_back_no_acknowledgement(tmp_path, mosquitto):
    """SystemExit from a decoder ended the reactor's read of the connection: the connection was lost, and the
    message was held as on its way for good, never acknowledged, and the acknowledgements of every later message
    behind it (delivered again at the next start, each stored twice). It is a dead letter now; after a restart
    nothing comes again."""
    realm = f"q{uuid.uuid4().hex[:8]}"
    config = with_drop_in(tmp_path, mosquitto.port, realm, "quitting.py", QUITTING_DECODER,
                          "decoders = quitting, json\n")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    publisher = Publisher(mosquitto.port)
    around(publisher, realm, f"{realm}/net/gw/n/data.json", b"quit")
    wait_until(lambda: count_rows(db, f"{realm}_net") >= 2 and len(dead_letters(db)) >= 1, 30,
               "the two rows and the dead letter", interval=0.2)
    assert gateway.stop() == 0
    no_connection_lost(gateway)
    ((_, stage, error),) = dead_letters(db)
    assert stage == "decode" and re.search(r"decoder 'quitting' called sys.exit\(1\) at quitting.py:\d+ in quitting, "
                                           "which ends a program", error), error
    # every message was acknowledged: after a restart, only the new one comes
    gateway = GatewayProcess(config, str(tmp_path / "gw2.log")).start()
    publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"seq": 3}))])
    publisher.close()
    wait_until(lambda: count_rows(db, f"{realm}_net") >= 3, 30, "the new message's row", interval=0.2)
    assert gateway.stop() == 0
    assert count_rows(db, f"{realm}_net") == 3 and len(dead_letters(db)) == 1


def test_a_lone_surrogate_during_an_outage_neither_wedges_the_spool_nor_the_storage(tmp_path, mosquitto):
    """PostgreSQL down: good messages and one with a lone surrogate are spooled (the bad one as a dead letter);
    once it is back everything drains: the good rows stored, the bad one a dead letter, the storage up."""
    from tests.servers import PostgreSQL

    database = PostgreSQL().start()
    try:
        realm = f"h{uuid.uuid4().hex[:8]}"
        gateway = start(tmp_path, mosquitto.port, realm, url=database.url)
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([(f"{realm}/net/gw/n/data.json", json.dumps({"seq": 0}))])
        wait_until(lambda: pg_count(database.url, realm) == 1, 30, "the first row")
        database.halt()
        around(publisher, realm, f"{realm}/net/gw/n/data.json", '{"s": "\\ud800x"}')
        wait_until(lambda: any(e.get("event") == "storage_stats" and e.get("spooled", 0) >= 1 for e in gateway.events()),
                   60, "batches in the spool")
        database.resume()
        wait_until(lambda: pg_count(database.url, realm) == 3 and len(pg_dead_letters(database.url)) == 1, 120,
                   "the drained rows and the dead letter", interval=0.5)
        publisher.close()
        assert gateway.stop() == 0
        ((_, stage, error),) = pg_dead_letters(database.url)
        assert stage == "decode" and "lone UTF-16 surrogate" in error
        assert not any("cannot spool" in e.get("message", "") for e in gateway.events())
    finally:
        database.stop()

"""The CrateDB writer's side of the protocol, against a fake that follows CrateDB's documented
responses (tests/fakecrate.py), and every generated statement against CrateDB's grammar."""

import pytest
from cratedb_sqlparse import sqlparse
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.crate_extra import EXTRA_DDL
from lorrygate.storage.crate_moved_keys import KEYS_SINCE, KEYS_TABLE, READ_EVERY
from lorrygate.storage.cratedb import (
    DEAD_LETTER_DDL,
    DEAD_LETTER_INSERT,
    DEAD_LETTER_INSERT_TYPED,
    DEAD_LETTER_TYPED,
    CrateStorage,
    default_ddl,
    insert_statement,
    merge_key,
)
from lorrygate.storage.ddl import DdlTemplate, crate_validator
from lorrygate.storage.shared_layout import qualified, view_statement
from tests.doubles import Ack
from tests.fakecrate import FakeCrate

T = 1_717_243_200_123_456_789
TABLE = TableName("mqttkit_1_testdrive", "area_42_node_1_sensors")


def entry(fields, table=TABLE, time=T, ack=None):
    message = Message("mqttkit-1/testdrive/area-42/node-1/data.json", b"{}", 1, False, 1.0, "#", ack or Ack())
    return Entry(table, [Record(time, fields, {"site": "b"})], "main", message, "json")


def storage(fake, **options):
    return CrateStorage("crate", "http://crate.invalid:4200", None, http=StubTreq(fake), **options)


def write(store, *entries, dead=()):
    batch = Batch()
    for item in entries:
        batch.add(item)
    for item in dead:
        batch.add_dead_letter(item)
    failures = []
    store.write(batch).addErrback(failures.append)
    return batch, failures


@pytest.mark.parametrize("partition", ["month", "day", "none"])
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_generated_statements_parse_as_cratedb_sql(partition, idempotent):
    """Every statement the writer generates is valid CrateDB SQL."""
    evil = TableName('we"ird schema', "t; DROP TABLE x")
    for statement in (default_ddl(TABLE, partition, 1, "0-1", idempotent), default_ddl(evil, partition, 3, "1", idempotent),
                      insert_statement(TABLE, idempotent), insert_statement(evil, idempotent), DEAD_LETTER_DDL,
                      DEAD_LETTER_INSERT, DEAD_LETTER_INSERT_TYPED, *DEAD_LETTER_TYPED.values(),
                      default_ddl(evil, partition, 6, "1", idempotent, shared=True),
                      insert_statement(evil, idempotent, shared=True), insert_statement(evil, idempotent, extra=True),
                      insert_statement(evil, idempotent, shared=True, extra=True),
                      insert_statement(evil, True, merge_key=merge_key(partition)),
                      insert_statement(evil, True, extra=True, merge_key=merge_key(partition)),
                      f"ALTER TABLE {qualified(evil)} ADD COLUMN {EXTRA_DDL}",
                      view_statement(TableName("s", "it's -- a \\ view; DROP"), evil),
                      view_statement(TableName("s", "v"), evil, extra=True)):
        sqlparse(statement, raise_exception=True)


def test_a_view_takes_only_its_address_whatever_the_name_holds():
    """The view's filter is one string literal: a quote in the name is doubled, a backslash is no escape."""
    from tests.fakecrate import _VIEW

    name = "it's -- a \\' view"
    statement = view_statement(TableName("s", name), TableName("s", "sensors"))
    assert statement.endswith("WHERE \"address\" = 'it''s -- a \\'' view'")
    assert _VIEW.search(statement).group(6).replace("''", "'") == name


def test_new_table_is_created_with_the_default_layout_and_rows_land():
    """An unknown table (4041/4045) is created with the default layout, and the insert is sent again."""
    fake = FakeCrate()
    store = storage(fake, replicas="0-1")
    _, failures = write(store, entry({"temperature": 21.5, "wifi": {"rssi": -60}}))
    assert failures == []
    ddl = fake.tables[(TABLE.schema, TABLE.table)]["ddl"]
    assert 'OBJECT(DYNAMIC)' in ddl and "PARTITIONED BY (\"year\")" in ddl and "CLUSTERED INTO 1 SHARDS" in ddl
    assert "number_of_replicas = '0-1'" in ddl
    (row,) = fake.rows(TABLE.schema, TABLE.table)
    assert row == {"time": T // 1_000_000, "tags": {"site": "b"}, "fields": {"temperature": 21.5, "wifi": {"rssi": -60}}}
    assert [s.split(" (")[0] for s in fake.statements] == [
        'REFRESH TABLE "doc"."lorrygate_extra_keys"',  # (no such table: no keys moved yet)
        'INSERT INTO "mqttkit_1_testdrive"."area_42_node_1_sensors"',
        "SELECT settings['cluster']['max_shards_per_node'] FROM sys.cluster",
        "SELECT count(*) FROM sys.nodes",
        "SELECT count(*) FROM sys.shards",
        'CREATE TABLE IF NOT EXISTS "mqttkit_1_testdrive"."area_42_node_1_sensors"',
        'INSERT INTO "mqttkit_1_testdrive"."area_42_node_1_sensors"',
    ]


def test_mixed_row_results_in_one_bulk_answer():
    """Stored, duplicate and uncastable rows in one request: stored and duplicate (rowcount 0 of ON CONFLICT
    DO NOTHING) count as stored, the row CrateDB cannot cast goes to the dead-letter table with its message."""
    fake = FakeCrate()
    store = storage(fake, idempotent=True)
    write(store, entry({"temperature": 21.5}, time=T))
    batch, failures = write(store, entry({"temperature": 22.0}, time=T + 10**9),
                            entry({"temperature": 21.5}, time=T), entry({"temperature": "warm"}, time=T + 2 * 10**9))
    assert failures == []
    assert len(fake.rows(TABLE.schema, TABLE.table)) == 2
    (dead,) = batch.extra_dead
    assert dead.stage == "store" and "CrateDB error 4000" in dead.error and "warm" in dead.error
    (dead_row,) = fake.rows("doc", "lorrygate_dead_letter")
    assert dead_row["stage"] == "store" and dead_row["payload"] == "{}" and dead_row["payload_base64"] == "e30="


def test_unavailable_shards_retry_only_the_missing_rows():
    """Rows answered with 5002 fail the write (to be retried); the retry sends only those rows."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"v": 0}))
    fake.row_faults = [5002]
    batch, failures = write(store, entry({"v": 1}, time=T + 1), entry({"v": 2}, time=T + 2))
    assert failures and "retrying" in failures[0].getErrorMessage()
    failures.clear()
    store.write(batch).addErrback(failures.append)
    assert failures == []
    assert sorted(row["fields"]["v"] for row in fake.rows(TABLE.schema, TABLE.table)) == [0, 1, 2]


def test_503_then_success_loses_nothing_and_doubles_nothing():
    """A 503 fails the write; the batcher retries with backoff; every row is stored once and acked after."""
    fake = FakeCrate()
    clock = Clock()
    store = storage(fake)
    write(store, entry({"v": 0}))
    batcher = Batcher(store, clock, max_rows=3)
    fake.fail_next(503, 5030, "ClusterUnavailable")
    acks = [Ack() for _ in range(3)]
    for n, ack in enumerate(acks):
        batcher.add(entry({"v": n + 1}, time=T + n + 1, ack=ack))
    assert batcher.stats.failures == 1 and [a.count for a in acks] == [0, 0, 0]
    clock.advance(0.5)
    assert [a.count for a in acks] == [1, 1, 1]
    assert sorted(row["fields"]["v"] for row in fake.rows(TABLE.schema, TABLE.table)) == [0, 1, 2, 3]


def test_unknown_column_sends_the_request_to_the_dead_letter_table():
    """A request CrateDB refuses as a whole for the data (4043) keeps its messages as dead letters."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"v": 0}))
    fake.fail_next(400, 4043, "ColumnUnknownException[Column fields unknown]")
    batch, failures = write(store, entry({"v": 1}, time=T + 1))
    assert failures == [] and "4043" in batch.extra_dead[0].error


def test_authentication_failure_is_a_clear_storage_error():
    """4010 fails the write with a hint about the user and its privileges."""
    fake = FakeCrate()
    fake.fail_next(401, 4010, "AuthenticationException[authentication failed]", statement="INSERT INTO")
    _, failures = write(storage(fake), entry({"v": 1}))
    assert "check the user and its privileges" in failures[0].getErrorMessage()


def test_dead_letters_from_routing_go_to_cratedb():
    """Dead letters of a batch land in doc.lorrygate_dead_letter, binary payloads as base64."""
    fake = FakeCrate()
    message = Message("a//b", b"\xff\x00", 1, False, 1_717_243_200.0, "#")
    write(storage(fake), dead=[DeadLetter("main", message, "topology", "the gateway level is empty")])
    (row,) = fake.rows("doc", "lorrygate_dead_letter")
    assert (row["topic"], row["payload"], row["payload_base64"], row["error"]) == (
        "a//b", None, "/wA=", "the gateway level is empty")
    assert row["received"] == 1_717_243_200_000


CUSTOM = """CREATE TABLE IF NOT EXISTS {qualified} (
    "time" TIMESTAMP WITH TIME ZONE NOT NULL,
    tags OBJECT(DYNAMIC),
    fields OBJECT(DYNAMIC),
    month TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', "time")
) CLUSTERED INTO 3 SHARDS PARTITIONED BY (month) WITH (number_of_replicas = '0-1')"""


def test_custom_ddl_is_used_for_new_tables():
    """A custom DDL template replaces the default CREATE TABLE for new tables."""
    fake = FakeCrate()
    template = DdlTemplate.parse(CUSTOM, lambda t: f'"{t.schema}"."{t.table}"', crate_validator())
    write(storage(fake, ddl={"": template}), entry({"v": 1}))
    ddl = fake.tables[(TABLE.schema, TABLE.table)]["ddl"]
    assert "CLUSTERED INTO 3 SHARDS PARTITIONED BY (month)" in ddl and '"mqttkit_1_testdrive"."area_42_node_1_sensors"' in ddl


def test_wrong_custom_ddl_is_refused_with_the_parsers_message():
    """A template CrateDB's grammar rejects is refused, with the parser's line and column."""
    with pytest.raises(ValueError, match=r"CrateDB would refuse .*mismatched input 'CLUSTERD'"):
        DdlTemplate.parse(CUSTOM.replace("CLUSTERED", "CLUSTERD"), lambda t: "x", crate_validator())


def test_basic_auth_from_the_url():
    """crate+https://user:password@host sends HTTP basic auth on every request, and the https base URL."""
    import base64

    from lorrygate.config import loads

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=crate+https://admin:s3cret@crate.example:4200/\n"
                     "[channel:c]\ntopics=#\n")
    store = CrateStorage.from_settings(settings.storages["s"], None, {})
    assert store.url == "https://crate.example:4200" and store.username == "admin"
    fake = FakeCrate()
    store.http = StubTreq(fake)
    write(store, entry({"v": 1}))
    assert set(fake.authorizations) == {b"Basic " + base64.b64encode(b"admin:s3cret")}
    assert "s3cret" not in repr(store)


def test_a_flood_stage_block_applies_backpressure_and_loses_nothing():
    """Rows answered 4037 (the disk flood stage's read-only block) or 5000 (rejected execution) are no
    dead letters: the write fails, the source is paused, and once CrateDB takes them every row is stored
    once and acknowledged."""
    from tests.doubles import Source

    fake = FakeCrate()
    clock = Clock()
    store = storage(fake)
    write(store, entry({"v": 0}))
    batcher = Batcher(store, clock, max_rows=3, max_pending=3)
    source = Source()
    batcher.attach(source)
    fake.row_faults = [4037, 5000, 4037]
    acks = [Ack() for _ in range(3)]
    for n, ack in enumerate(acks):
        batcher.add(entry({"v": n + 1}, time=T + n + 1, ack=ack))
    assert batcher.stats.failures == 1 and "could not take 3 row(s)" in batcher.stats.last_error
    assert source.paused and [a.count for a in acks] == [0, 0, 0]
    clock.advance(0.5)
    assert [a.count for a in acks] == [1, 1, 1] and not source.paused
    assert sorted(row["fields"]["v"] for row in fake.rows(TABLE.schema, TABLE.table)) == [0, 1, 2, 3]
    assert batcher.stats.dead_letters == 0


def test_a_row_answered_without_a_reason_again_and_again_is_a_dead_letter_after_three_resends():
    """A bare -2 is sent again, in requests of at most 10 rows; after 3 resends without a reason the row
    is a dead letter saying so, in the same write (no retry loop)."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"v": 0}))
    fake.row_faults = [None, None, None, None]
    requests = fake.requests
    batch, failures = write(store, entry({"v": 1}, time=T + 1))
    assert failures == [] and fake.requests - requests == 4 + 1  # the first send, 3 resends, the dead letter
    (dead,) = batch.extra_dead
    assert "without a reason" in dead.error
    fake.row_faults = [None, None]
    batch, failures = write(store, entry({"v": 2}, time=T + 2))
    assert failures == [] and batch.extra_dead == []
    assert sorted(row["fields"]["v"] for row in fake.rows(TABLE.schema, TABLE.table)) == [0, 2]


def test_a_5002_after_a_partial_write_duplicates_nothing_with_idempotent_rows():
    """CrateDB 5.10.0-6.4.2 answer a failed shard with a whole-request 5002 after other rows were written:
    the retry sends every row again, and ON CONFLICT DO NOTHING keeps one copy of each."""
    fake = FakeCrate()
    store = storage(fake, idempotent=True)
    write(store, entry({"v": 0}))
    fake.partial_failure = True
    batch, failures = write(store, *[entry({"v": n}, time=T + n) for n in range(1, 11)])
    assert failures and "5002" in failures[0].getErrorMessage()
    failures.clear()
    store.write(batch).addErrback(failures.append)
    assert failures == []
    assert sorted(row["fields"]["v"] for row in fake.rows(TABLE.schema, TABLE.table)) == list(range(11))


def test_a_plain_text_401_is_an_authentication_failure():
    """CrateDB answers a failed authentication with 401 in plain text: reported as such, not as 'not JSON'."""
    fake = FakeCrate(users={"crate": "right"})
    _, failures = write(storage(fake, username="crate", password="wrong"), entry({"v": 1}))
    message = failures[0].getErrorMessage()
    assert "refused the authentication (HTTP 401" in message and "not JSON" not in message
    assert "wrong" not in message


def test_percent_encoded_credentials_are_decoded():
    """crate://us%40er:p%3Ass@host sends the user 'us@er' and the password 'p:ss'."""
    import base64

    from lorrygate.config import loads

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=crate://us%40er:p%3Ass@crate.example/\n"
                     "[channel:c]\ntopics=#\n")
    store = CrateStorage.from_settings(settings.storages["s"], None, {})
    fake = FakeCrate(users={"us@er": "p:ss"})
    store.http = StubTreq(fake)
    _, failures = write(store, entry({"v": 1}))
    assert failures == [] and set(fake.authorizations) == {b"Basic " + base64.b64encode(b"us@er:p:ss")}


@pytest.mark.parametrize("version, accepted", [("5.9.3", False), ("5.10.10", False), ("5.10.11", True),
                                               ("6.1.0", True)])
def test_the_server_version_is_checked_at_start(version, accepted):
    """CrateDB older than 5.10.11 is refused at start with a clear error (it fails every row of a request
    for one bad value); at a write, the same reason fails the write."""
    from lorrygate.storage.cratedb import UnsupportedServer

    fake = FakeCrate(version=version)
    store = storage(fake)
    failures = []
    store.start().addErrback(failures.append)
    if accepted:
        assert failures == [] and store.details()["version"] == version
        return
    assert failures[0].check(UnsupportedServer) and f"CrateDB {version}" in failures[0].getErrorMessage()
    _, failures = write(store, entry({"v": 1}))
    assert "upgrade CrateDB" in failures[0].getErrorMessage()
    assert not fake.tables


def test_a_table_beyond_the_shard_budget_is_refused_and_its_messages_kept():
    """Before creating a table the writer reads the cluster's shard budget; a table that does not fit is
    not created: its messages become dead letters with the arithmetic, and the status lists it."""
    fake = FakeCrate(max_shards_per_node=2)
    store = storage(fake, replicas="0")
    write(store, entry({"v": 1}))
    write(store, entry({"v": 1}, table=TableName(TABLE.schema, "second")))
    batch, failures = write(store, entry({"v": 1}, table=TableName(TABLE.schema, "third")),
                            entry({"v": 2}, table=TableName(TABLE.schema, "third"), time=T + 1))
    assert failures == [] and (TABLE.schema, "third") not in fake.tables
    assert batch.refused_rows == 2 and "needs 1 shard copies and the cluster holds 2 of its 2" in batch.extra_dead[0].error
    assert list(store.details()["refused_tables"]) == [f"{TABLE.schema}.third"]


def test_idempotent_on_a_table_created_without_it_adds_the_column():
    """Turning idempotent on for an existing table: the insert's unknown column (4043) is added, and the
    rows are stored, not dead letters."""
    fake = FakeCrate()
    write(storage(fake), entry({"v": 1}))
    batch, failures = write(storage(fake, idempotent=True), entry({"v": 2}, time=T + 1))
    assert failures == [] and batch.extra_dead == []
    assert any(s.startswith("ALTER TABLE") for s in fake.statements)
    assert len(fake.rows(TABLE.schema, TABLE.table)) == 2


def test_a_dead_letter_table_of_old_with_indexed_text_keeps_the_reason_when_the_payload_does_not_fit():
    """A dead-letter table created by an older lorrygate indexes its TEXT columns (32,766 bytes at most):
    a larger payload is refused by its row, and the dead letter is kept without it, the reason saying so;
    the dead letters stored before are not written again."""
    from lorrygate.storage.cratedb import DEAD_LETTER_DDL

    fake = FakeCrate()
    old = DEAD_LETTER_DDL.replace(" INDEX OFF STORAGE WITH (columnstore = false)", "")
    StubTreq(fake).post("http://crate.invalid:4200/_sql", json={"stmt": old})  # as an older lorrygate made it
    small = Message("t/small", b"ok", 1, False, 1.0, "#")
    large = Message("t/large", b"x" * 40_000, 1, False, 1.0, "#")
    batch, failures = write(storage(fake), dead=[DeadLetter("main", small, "decode", "bad"),
                                                 DeadLetter("main", large, "decode", "bad")])
    assert failures == []
    rows = fake.rows("doc", "lorrygate_dead_letter")
    assert [r["topic"] for r in rows] == ["t/small", "t/large"]
    assert rows[1]["payload"] is None and "40000 bytes) could not be stored" in rows[1]["error"]


def without(*columns: str) -> str:
    """The dead-letter table's DDL as an earlier lorrygate made it: without ``columns``."""
    ddl = DEAD_LETTER_DDL
    for column in columns:
        start = ddl.index(f', "{column}" ')
        end = min(i for i in (ddl.find(', "', start + 2), ddl.index(") CLUSTERED")) if i != -1)
        ddl = ddl[:start] + ddl[end:]
    return ddl


@pytest.mark.parametrize("made_without", [("content_type", "headers", "sent"), ("headers", "sent"), ("sent",)])
def test_a_dead_letter_keeps_its_content_type_and_headers_and_an_old_table_gets_the_columns(made_without):
    """A dead letter keeps its message's MQTT 5 Content Type, which a replay decodes by, its headers (a JSON
    array of pairs), which a replay stores as tags again, and the bus's time of it; a dead-letter table an
    earlier lorrygate made (without the columns) gets them before the first dead letter is written."""
    fake = FakeCrate()
    old = without(*made_without)
    assert all(f'"{column}"' not in old for column in made_without)
    StubTreq(fake).post("http://crate.invalid:4200/_sql", json={"stmt": old})  # as an earlier lorrygate made it
    typed = Message("t/cbor", b"\xa1", 1, False, 1.0, "#", content_type="application/cbor",
                    headers=(("device-id", "d-17"), ("zone", "a")), sent=1_717_243_200.25)
    plain = Message("t/plain", b"?", 1, False, 1.0, "#")
    batch, failures = write(storage(fake), dead=[DeadLetter("main", typed, "topology", "bad"),
                                                 DeadLetter("main", plain, "topology", "bad")])
    assert failures == []
    assert [s for s in fake.statements if s in DEAD_LETTER_TYPED.values()] == [
        DEAD_LETTER_TYPED[column] for column in DEAD_LETTER_TYPED if column in made_without]
    rows = fake.rows("doc", "lorrygate_dead_letter")
    assert [(r["topic"], r["content_type"], r["headers"], r["sent"]) for r in rows] == [
        ("t/cbor", "application/cbor", '[["device-id","d-17"],["zone","a"]]', 1_717_243_200_250),
        ("t/plain", None, None, None)]


def test_a_dead_letter_table_that_cannot_get_the_content_type_column_is_written_without_it():
    """A user without the DDL privilege: the column cannot be added, the dead letters are still kept (without
    their Content Type), and one warning says how to add it."""
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        fake = FakeCrate()
        StubTreq(fake).post("http://crate.invalid:4200/_sql", json={"stmt": without("content_type", "headers")})
        fake.fail_next(401, 4011, "MissingPrivilegeException[Missing 'DDL' privilege for user 'writer']",
                       statement=DEAD_LETTER_TYPED["content_type"])
        store = storage(fake)
        typed = Message("t/cbor", b"\xa1", 1, False, 1.0, "#", content_type="application/cbor")
        for _ in range(2):
            batch, failures = write(store, dead=[DeadLetter("main", typed, "topology", "bad")])
            assert failures == []
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [r["topic"] for r in fake.rows("doc", "lorrygate_dead_letter")] == ["t/cbor", "t/cbor"]
    told = [event for event in events if "content_type" in formatEvent(event)]
    assert len(told) == 1 and "4011" in told[0]["error"] and DEAD_LETTER_TYPED["content_type"] in formatEvent(told[0])


def test_dead_letter_errors_are_cut_with_a_marker():
    """An error text of any length is stored, cut at 16 KiB with a marker saying how much was cut."""
    fake = FakeCrate()
    message = Message("t/x", b"x", 1, False, 1.0, "#")
    write(storage(fake), dead=[DeadLetter("main", message, "decode", "e" * 20_000)])
    (row,) = fake.rows("doc", "lorrygate_dead_letter")
    assert len(row["error"]) < 16_500 and row["error"].endswith("[... 3616 more characters cut by lorrygate]")


def test_the_layout_comes_from_the_storage_section_and_a_prometheus_sink_does_not_take_it():
    from lorrygate.config import loads
    from lorrygate.errors import ConfigError
    from lorrygate.service.storage_service import make_backend

    text = "[broker:b]\nhost=h\n[storage:s]\nurl={url}\nlayout=per-network\n[channel:c]\ntopics=#\n"
    settings = loads(text.format(url="crate://localhost:4200/"))
    assert CrateStorage.from_settings(settings.storages["s"], None, {}).layout == "per-network"
    settings = loads(text.format(url="sqlite:///x.sqlite"))
    assert make_backend(settings.storages["s"], None, {}).layout == "per-network"
    settings = loads(text.format(url="postgresql://u:p@h/db"))
    assert make_backend(settings.storages["s"], None, {}).layout == "per-network"
    with pytest.raises(ConfigError) as raised:
        loads(text.format(url="prometheus://"))
    assert "no layout for a prometheus storage (it is for crate, sqlite, postgresql)" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        loads(text.format(url="crate://localhost:4200/").replace("per-network", "per-node"))
    assert "per-address" in str(raised.value)


def test_a_record_nested_too_deeply_for_a_request_is_a_dead_letter_not_a_storage_down():
    """A payload nested 1,000 levels deep (orjson reads 1,024) failed every write of the storage with a
    RecursionError: the storage was down, and every message behind it waited. Now its message is a dead letter
    that says why, and the rows beside it land."""
    deep: dict = {"v": 1}
    for _ in range(1000):
        deep = {"k": deep}
    fake = FakeCrate()
    store = storage(fake)
    batch, failures = write(store, entry({"temperature": 21.5}), entry({"deep": deep}, time=T + 1),
                            entry({"temperature": 22.5}, time=T + 2))
    assert failures == []
    assert sorted(row["fields"]["temperature"] for row in fake.rows(TABLE.schema, TABLE.table)) == [21.5, 22.5]
    (dead,) = batch.extra_dead
    assert dead.stage == "store" and "nested more than 100 levels deep" in dead.error
    assert batch.refused_rows == 1


def bridge_info(devices: int) -> dict:
    """Zigbee2MQTT's bridge/info of a network: four leaves a device, under config.devices."""
    return {"version": "1.35.1", "coordinator": {"type": "zStack3x0"},
            "config": {"devices": {f"0x{n:016x}": {"friendly_name": f"sensor {n}", "retain": False,
                                                   "qos": 1, "optimistic": True} for n in range(devices)}}}


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_a_row_beyond_the_column_limit_keeps_its_fields_in_a_column_cratedb_does_not_index(idempotent):
    """CrateDB holds 1,000 columns a table, sub-columns counted: bridge/info of 300 devices (1,500 of them) was
    a dead letter. The keys that fit stay in fields, the rest goes whole into extra_fields OBJECT(IGNORED),
    added to the table once; a later such row goes there at once; nothing is lost, nothing is a dead letter."""
    fake = FakeCrate()
    store = storage(fake, idempotent=idempotent)
    table = TableName("z2m", "bridge_events")
    document = bridge_info(300)
    batch, failures = write(store, entry(document, table=table))
    assert failures == [] and batch.extra_dead == []
    (row,) = fake.rows("z2m", "bridge_events")
    assert row["fields"] == {"version": "1.35.1", "coordinator": {"type": "zStack3x0"}}
    assert row["extra_fields"]["config"]["devices"]["0x000000000000012b"]["friendly_name"] == "sensor 299"
    assert {**row["fields"], **row["extra_fields"]} == {**document, "config": {"devices": {
        key: {**device, "qos": 1.0} for key, device in
        document["config"]["devices"].items()}}}
    assert fake.tables[("z2m", "bridge_events")]["columns"]["extra_fields"] == "OBJECT(IGNORED)"
    before = len(fake.statements)
    batch, failures = write(store, entry(dict(document, version="1.36.0"), table=table, time=T + 10**9))
    assert failures == [] and batch.extra_dead == []
    assert [s.split(" (")[0] for s in fake.statements[before:]] == ['INSERT INTO "z2m"."bridge_events"']
    assert sorted(row["fields"]["version"] for row in fake.rows("z2m", "bridge_events")) == ["1.35.1", "1.36.0"]
    assert store.rows_with_extra == 2
    for statement in fake.statements:
        sqlparse(statement, raise_exception=True)


def test_a_text_too_long_to_index_goes_into_the_column_cratedb_does_not_index():
    """A text of 40,000 bytes (an image as base64, a log) in a field, nested or not: its key goes into
    extra_fields; the other fields stay columns; rows without such text are written as before."""
    fake = FakeCrate()
    store = storage(fake)
    image = "A" * 40_000
    batch, failures = write(store, entry({"temperature": 21.5}),
                            entry({"temperature": 21.0, "snapshot": {"jpeg": image, "size": 40000}}, time=T + 10**9),
                            entry({"temperature": 20.5}, time=T + 2 * 10**9))
    assert failures == [] and batch.extra_dead == []
    rows = sorted(fake.rows(TABLE.schema, TABLE.table), key=lambda row: row["time"])
    assert [row["fields"] for row in rows] == [{"temperature": 21.5}, {"temperature": 21.0}, {"temperature": 20.5}]
    assert rows[1]["extra_fields"] == {"snapshot": {"jpeg": image, "size": 40000.0}}
    assert rows[0].get("extra_fields") is None and rows[2].get("extra_fields") is None


def test_a_table_that_takes_no_new_column_keeps_the_rows_as_dead_letters_with_both_reasons():
    """A custom table whose ALTER fails (a strict policy, a missing privilege): the row is a dead letter
    saying why CrateDB refused it and why the column could not be added."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"temperature": 21.5}))
    fake.fail_next(403, 4031, "UnauthorizedException[Missing privilege DDL]", statement="ALTER TABLE")
    batch, failures = write(store, entry({"note": "x" * 40_000}, time=T + 1))
    assert failures == []
    (dead,) = batch.extra_dead
    assert "immense term" in dead.error and "adding the column extra_fields" in dead.error and "4031" in dead.error


def test_lists_of_lists_and_of_mixed_types_go_into_the_column_cratedb_does_not_index():
    """A GeoJSON line's coordinates (a list of lists) and a list of a text and a number: CrateDB makes no
    column of them (a dead letter before); their keys go into extra_fields, the rest stays in fields, and the
    next such row of the table goes in one request."""
    fake = FakeCrate()
    store = storage(fake)
    document = {"temperature": 21.5, "track": {"type": "LineString", "coordinates": [[7.1, 50.7], [7.2, 50.8]]},
                "status": ["ok", 3]}
    batch, failures = write(store, entry(document))
    assert failures == [] and batch.extra_dead == []
    (row,) = fake.rows(TABLE.schema, TABLE.table)
    assert row["fields"] == {"temperature": 21.5}
    assert row["extra_fields"] == {"track": document["track"], "status": ["ok", 3.0]}
    before = len(fake.statements)
    batch, failures = write(store, entry(dict(document, temperature=22.0), time=T + 10**9))
    assert failures == [] and batch.extra_dead == [] and len(fake.statements) == before + 1


def big_rows(count: int, numbers: int, table=TABLE) -> list:
    """Rows of ``numbers`` floats each (~5 bytes of JSON a number), a second apart."""
    return [entry({"spectrum": [n + 0.5] * numbers}, table=table, time=T + n * 10**9) for n in range(count)]


def test_a_batch_larger_than_a_request_goes_in_requests_of_bounded_size():
    """40 rows of ~300 KB (a spectrum each): 12 MB, more than a request carries (max_request, 16 MB by default,
    4 MB here): requests of at most that, every row stored once, none a dead letter."""
    fake = FakeCrate()
    store = storage(fake)
    store.max_request = 4 << 20
    batch, failures = write(store, *big_rows(40, 60_000))
    assert failures == [] and batch.extra_dead == []
    assert len(fake.rows(TABLE.schema, TABLE.table)) == 40
    inserts = [size for size, statement in zip(fake.sizes, fake.statements) if statement.startswith("INSERT")]
    assert len(inserts) >= 4 and max(inserts) <= (4 << 20) + 1024


def test_a_request_refused_as_too_large_is_split_and_the_limit_learned_and_a_row_too_large_is_a_dead_letter():
    """CrateDB (or a proxy) takes 1 MB a request: HTTP 413 without a body (a storage error for good before).
    The request is halved until it fits, later requests carry at most half the refused size, and a row
    larger than 1 MB on its own is a dead letter that says which limit to raise."""
    fake = FakeCrate()
    fake.max_content_length = 1 << 20
    store = storage(fake)
    write(store, entry({"spectrum": [0.5]}))  # (the table)
    batch, failures = write(store, *big_rows(10, 60_000)[1:], entry({"spectrum": [0.25] * 300_000}, time=T + 99 * 10**9))
    assert failures == []
    assert len(fake.rows(TABLE.schema, TABLE.table)) == 1 + 9
    (dead,) = batch.extra_dead
    assert "HTTP 413" in dead.error and "http.max_content_length" in dead.error and "replay" in dead.error
    assert store.max_request < 1 << 20
    refused = sum(1 for size in fake.sizes if size > fake.max_content_length)
    batch, failures = write(store, *big_rows(10, 60_000)[1:])
    assert failures == [] and sum(1 for size in fake.sizes if size > fake.max_content_length) == refused


def test_dead_letters_go_in_requests_of_bounded_size_and_one_too_large_keeps_its_reason():
    """Dead letters of 300 KB payloads (text and base64: ~700 KB of JSON each) in requests within the limit;
    one whose payload alone is beyond it is kept without the payload, its reason and size kept."""
    fake = FakeCrate()
    fake.max_content_length = 2 << 20
    store = storage(fake)
    store.max_request = 1 << 20

    def dead(size, n):
        message = Message(f"t/{n}", b"x" * size, 1, False, 1.0, "#", Ack())
        return DeadLetter("main", message, "decode", "no decoder of the chain accepted it", "json")

    batch, failures = write(store, dead=[dead(300_000, n) for n in range(8)] + [dead(1_500_000, 8)])
    assert failures == []
    rows = fake.rows("doc", "lorrygate_dead_letter")
    assert len(rows) == 9
    (large,) = [row for row in rows if row["topic"] == "t/8"]
    assert large["payload"] is None and "1500000 bytes" in large["error"] and "HTTP 413" in large["error"]
    assert all(row["payload"] == "x" * 300_000 for row in rows if row["topic"] != "t/8")


def test_a_text_orjson_does_not_write_goes_as_the_json_module_writes_it():
    """A lone surrogate (a decoder of your own can make one): orjson refuses it, so the request is written by
    the json module, as all were before (a TypeError would have failed every write of the storage)."""
    import json

    from lorrygate.storage.cratedb import bulk_body

    args = [[1, {}, {"label": "\ud800x", "t": 1.5}]]
    assert bulk_body("INSERT", args) == json.dumps({"stmt": "INSERT", "bulk_args": args}).encode()
    assert json.loads(bulk_body("INSERT", [[1, {}, {"t": 1.5, "é": "ü"}]])) == {
        "stmt": "INSERT", "bulk_args": [[1, {}, {"t": 1.5, "é": "ü"}]]}


def test_a_whole_request_refused_for_the_column_limit_is_bisected_and_the_row_mended():
    """Should CrateDB fail the whole request, not the row, for its column limit: the request is halved until
    the row is alone, and then its fields are moved as a refused row's are; the rows beside it are stored."""
    fake = FakeCrate()
    store = storage(fake)
    table = TableName("z2m", "bridge_events")
    write(store, entry({"version": "1"}, table=table))
    fake.limit_fails_request = True
    entries = [entry({"version": str(n)}, table=table, time=T + n * 10**9) for n in range(1, 4)]
    batch, failures = write(store, *entries, entry(bridge_info(300), table=table, time=T + 9 * 10**9))
    assert failures == [] and batch.extra_dead == []
    rows = fake.rows("z2m", "bridge_events")
    assert len(rows) == 5 and sum(1 for row in rows if row.get("extra_fields")) == 1


def test_a_key_moved_into_extra_fields_stays_there_after_a_restart():
    """A key moved for a text too long to index goes into extra_fields for every later row of the table: also
    after the gateway restarts (a new writer), where a short value of it went into fields again, a field then in
    two places. The moved keys are kept in CrateDB, in lorrygate_extra_keys: those moved after a refusal (log)
    and those moved at once, the table having the column (note)."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"temperature": 21.5, "log": "x" * 40_000}))
    write(store, entry({"temperature": 21.0, "note": "y" * 40_000}, time=T + 10**9))
    batch, failures = write(storage(fake), entry({"temperature": 20.5, "log": "short", "note": "brief"},
                                                 time=T + 2 * 10**9))
    assert failures == [] and batch.extra_dead == []
    rows = sorted(fake.rows(TABLE.schema, TABLE.table), key=lambda row: row["time"])
    assert [row["fields"] for row in rows] == [{"temperature": 21.5}, {"temperature": 21.0}, {"temperature": 20.5}]
    assert [row["extra_fields"] for row in rows] == [{"log": "x" * 40_000}, {"note": "y" * 40_000},
                                                     {"log": "short", "note": "brief"}]
    assert sorted(row["key"] for row in fake.rows("doc", "lorrygate_extra_keys")) == ["log", "note"]


def test_a_second_gateway_learns_the_keys_another_moved_within_read_every():
    """Two gateways write one table (MQTT shared subscriptions): the keys one moved reach the other within
    READ_EVERY seconds."""
    fake = FakeCrate()
    clock = Clock()
    clock.advance(1_717_243_200)
    first, second = (CrateStorage("crate", "http://crate.invalid:4200", clock, http=StubTreq(fake)) for _ in "12")
    write(second, entry({"temperature": 20.0}))
    write(first, entry({"temperature": 21.5, "log": "x" * 40_000}, time=T + 10**9))
    write(second, entry({"temperature": 21.0, "log": "before"}, time=T + 2 * 10**9))
    clock.advance(READ_EVERY)
    batch, failures = write(second, entry({"temperature": 22.0, "log": "after"}, time=T + 3 * 10**9))
    assert failures == [] and batch.extra_dead == []
    rows = sorted(fake.rows(TABLE.schema, TABLE.table), key=lambda row: row["time"])
    assert [row.get("extra_fields") for row in rows] == [None, {"log": "x" * 40_000}, None, {"log": "after"}]
    assert rows[2]["fields"] == {"temperature": 21.0, "log": "before"}  # (within READ_EVERY: not known yet)
    # once it read the table, a gateway asks only for what was moved since (less CLOCKS_APART), not all again
    write(first, entry({"temperature": 21.5, "note": "y" * 40_000}, time=T + 4 * 10**9))
    clock.advance(READ_EVERY)
    before = len(fake.statements)
    write(second, entry({"temperature": 22.5, "note": "brief"}, time=T + 5 * 10**9))
    assert fake.statements[before:before + 2] == [f"REFRESH TABLE {KEYS_TABLE}", KEYS_SINCE]
    last = max(fake.rows(TABLE.schema, TABLE.table), key=lambda row: row["time"])
    assert last["extra_fields"] == {"note": "brief"}


def test_a_table_made_anew_forgets_the_keys_moved_for_the_one_before():
    """The table was dropped (and its extra_fields column with it): its rows go into the new table's fields
    again, and the keys kept for it are deleted."""
    fake = FakeCrate()
    write(storage(fake), entry({"temperature": 21.5, "log": "x" * 40_000}))
    fake.drop(TABLE.schema, TABLE.table)
    batch, failures = write(storage(fake), entry({"temperature": 21.0, "log": "short"}, time=T + 10**9))
    assert failures == [] and batch.extra_dead == []
    (row,) = fake.rows(TABLE.schema, TABLE.table)
    assert row["fields"] == {"temperature": 21.0, "log": "short"} and "extra_fields" not in row
    assert "extra_fields" not in fake.tables[(TABLE.schema, TABLE.table)]["columns"]
    assert fake.rows("doc", "lorrygate_extra_keys") == []


def test_keys_that_cannot_be_kept_in_cratedb_are_moved_all_the_same_and_told_once():
    """A user without the privilege to make lorrygate_extra_keys: the rows are stored as before, a key moved
    stays moved in this process (one moved at once, the table having the column, too), and one warning says
    what a restart may then do and which privileges it needs."""
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        fake = FakeCrate()
        store = storage(fake)
        fake.fail_next(401, 4011, "MissingPrivilegeException[Missing 'DDL' privilege for user 'writer']",
                       statement='CREATE TABLE IF NOT EXISTS "doc"."lorrygate_extra_keys"')
        write(store, entry({"temperature": 21.5, "log": "x" * 40_000}))
        write(store, entry({"temperature": 21.0, "log": "short", "note": "y" * 40_000}, time=T + 10**9))
        batch, failures = write(store, entry({"temperature": 20.5, "note": "brief"}, time=T + 2 * 10**9))
        assert failures == [] and batch.extra_dead == []
    finally:
        globalLogPublisher.removeObserver(events.append)
    rows = sorted(fake.rows(TABLE.schema, TABLE.table), key=lambda row: row["time"])
    assert [row["extra_fields"] for row in rows] == [{"log": "x" * 40_000}, {"log": "short", "note": "y" * 40_000},
                                                     {"note": "brief"}]
    told = [event for event in events if "lorrygate_extra_keys" in formatEvent(event)]
    assert len(told) == 1 and "4011" in told[0]["error"] and "DDL" in formatEvent(told[0])


def test_keys_not_kept_for_now_fail_the_write_and_are_kept_when_it_is_retried():
    """CrateDB cannot take the moved keys for now (a node down): the write fails and is retried, as for rows,
    and the retry keeps them, so that a restart still finds them; a read that fails so is made again too."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"temperature": 20.0}))
    fake.fail_next(503, 5030, "ClusterUnavailable", statement='INSERT INTO "doc"."lorrygate_extra_keys"')
    batch, failures = write(store, entry({"temperature": 21.0, "log": "x" * 40_000}, time=T + 10**9))
    assert len(failures) == 1 and "lorrygate_extra_keys\" failed" in failures[0].getErrorMessage()
    again: list = []
    store.write(batch).addErrback(again.append)
    assert again == [] and batch.extra_dead == []
    assert [row["key"] for row in fake.rows("doc", "lorrygate_extra_keys")] == ["log"]
    restarted = storage(fake)
    fake.fail_next(503, 5030, "ClusterUnavailable", statement='REFRESH TABLE "doc"."lorrygate_extra_keys"')
    batch, failures = write(restarted, entry({"temperature": 22.0, "log": "short"}, time=T + 2 * 10**9))
    assert len(failures) == 1 and "retrying" in failures[0].getErrorMessage()
    restarted.write(batch).addErrback(again.append)
    assert again == []
    rows = sorted(fake.rows(TABLE.schema, TABLE.table), key=lambda row: row["time"])
    assert [row.get("extra_fields") for row in rows] == [None, {"log": "x" * 40_000}, {"log": "short"}]


def test_dead_letters_refused_again_by_a_replay_are_updated_in_one_request():
    """The replay's update of the dead letters whose rows CrateDB refused again: one bulk UPDATE for them all,
    not a request each (a chunk of 1,000 such letters was 1,000 requests); each gets its new stage and reason."""
    from lorrygate.storage.crate_dead_letters import CrateTable

    fake = FakeCrate()
    store = storage(fake)
    message = Message("a/b", b"seq=abc", 1, False, 1_717_243_200.0, "#")
    dead = [DeadLetter("main", message, "decode", f"no decoder took it {n}", "json") for n in range(3)]
    write(store, dead=dead)
    table = CrateTable(None, None, crate=store)
    ids = [fake.tables[("doc", "lorrygate_dead_letter")]["ids"][id(row)]
           for row in fake.rows("doc", "lorrygate_dead_letter")]
    again = [DeadLetter("main", message, "store", f"CrateDB error 4000: cannot cast {n}", "json") for n in range(3)]
    before = len(fake.statements)
    done: list = []
    Deferred.fromCoroutine(table.fail_again(list(zip(ids, again)))).addBoth(done.append)
    assert done == [None]
    assert [s.split(" SET")[0] for s in fake.statements[before:]] == ['UPDATE "doc"."lorrygate_dead_letter"']
    assert [(row["stage"], row["error"]) for row in fake.rows("doc", "lorrygate_dead_letter")] == [
        ("store", f"CrateDB error 4000: cannot cast {n}") for n in range(3)]


def test_dead_letters_are_read_a_page_at_a_time_oldest_first():
    """``lorrygate dead-letters`` reads CrateDB's dead letters a page of `CHUNK` rows at a time (their ids first,
    then a request a page), oldest first, the topic filter applied: not all payloads at once."""
    from lorrygate.storage.crate_dead_letters import CrateTable
    from lorrygate.storage.dead_letters import CHUNK, Filters

    fake = FakeCrate()
    store = storage(fake)
    dead = [DeadLetter("main", Message(f"a/{'keep' if n % 2 else 'other'}", f"seq={n}".encode(), 1, False,
                                       1_717_243_200.0 + n, "#"), "decode", "bad", "json") for n in range(2 * CHUNK + 2)]
    write(store, dead=dead)
    table = CrateTable(None, None, crate=store)

    async def read():
        await table.refresh()  # (as the commands' `prepare` does: a search sees what a refresh made visible)
        return [page async for page in table.pages(Filters(topic="a/keep"))]

    done: list = []
    Deferred.fromCoroutine(read()).addBoth(done.append)
    (found,) = done
    assert [len(page) for page in found] == [CHUNK, 1]
    assert [bytes(row[6]) for page in found for row in page] == [f"seq={n}".encode() for n in range(1, 2 * CHUNK + 2, 2)]


def test_merged_rows_of_a_bucket_are_one_row():
    """``merge``: the rows of a table with the same tags in a bucket are one row at the bucket's start, the fields
    of each added to it (a later value of a key wins, a null or NaN leaves it), in one request and across requests;
    other tags and buckets stay apart. The statement names the table's primary key, as CrateDB requires of DO UPDATE."""
    fake = FakeCrate()
    store = storage(fake, merge=10 * 10**9)
    bucket = T - T % (10 * 10**9)
    write(store, entry({"power": 1.5, "yield": 7}), entry({"voltage": 231.0}, time=T + 10**9))
    batch, failures = write(store, entry({"power": 2.5}, time=T + 2 * 10**9), entry({"power": 4.0}, time=bucket + 10**10),
                            entry({"yield": None, "voltage": float("nan")}, time=T + 3 * 10**9))
    other = Entry(TABLE, [Record(T, {"power": 9.0}, {"site": "c"})], "main",
                  Message("t", b"{}", 1, False, 1.0, "#", Ack()), "json")
    write(store, other)
    assert failures == [] and batch.extra_dead == []
    rows = sorted(fake.rows(TABLE.schema, TABLE.table), key=lambda row: (row["time"], row["tags"]["site"]))
    assert [(row["time"], row["tags"], row["fields"]) for row in rows] == [
        (bucket // 10**6, {"site": "b"}, {"power": 2.5, "yield": 7, "voltage": 231.0}),
        (bucket // 10**6, {"site": "c"}, {"power": 9.0}),
        (bucket // 10**6 + 10_000, {"site": "b"}, {"power": 4.0})]
    assert fake.tables[(TABLE.schema, TABLE.table)]["pk"] == ["time", "lorrygate_id", "year"]
    inserts = [s for s in fake.statements if s.startswith("INSERT INTO \"mqttkit")]
    assert inserts[-1].endswith('ON CONFLICT ("time", "lorrygate_id", "year") DO UPDATE SET '
                                '"fields" = concat("fields", excluded."fields")')


def test_merge_into_a_table_without_its_key_keeps_the_messages_and_says_what_to_do():
    """A table made before merge was on has no primary key (time, lorrygate_id, ...): CrateDB refuses the upsert
    for the whole request; its messages are dead letters that say to rename the table and replay, not a write
    retried forever."""
    fake = FakeCrate()
    write(storage(fake), entry({"v": 1}))
    batch, failures = write(storage(fake, merge=10**10), entry({"v": 2}, time=T + 1), entry({"w": 3}, time=T + 2))
    assert failures == [] and batch.refused_rows == 2
    error = batch.extra_dead[0].error
    assert "conflict targets" in error and "rename the table" in error and "dead-letters replay" in error
    assert len(fake.rows(TABLE.schema, TABLE.table)) == 1


def test_a_channels_own_merge_leaves_the_other_channels_rows_alone():
    """``merge`` of a channel: its rows merge (its table made with the key), another channel's rows in the same
    storage stay a row a message (a table without the key)."""
    fake = FakeCrate()
    store = storage(fake, merges={"dtu": 10 * 10**9})
    rooms = TableName(TABLE.schema, "room_1_sensors")

    def on(channel, table, fields, time):
        message = Message("t", b"{}", 1, False, 1.0, "#", Ack())
        return Entry(table, [Record(time, fields, {"site": "b"})], channel, message, "json")

    batch, failures = write(store, on("dtu", TABLE, {"power": 1.5}, T), on("main", rooms, {"t": 20.5}, T),
                            on("dtu", TABLE, {"voltage": 231.0}, T + 10**9), on("main", rooms, {"t": 20.6}, T + 10**6))
    assert failures == [] and batch.extra_dead == []
    assert [row["fields"] for row in fake.rows(TABLE.schema, TABLE.table)] == [{"power": 1.5, "voltage": 231.0}]
    assert sorted(row["fields"]["t"] for row in fake.rows(TABLE.schema, "room_1_sensors")) == [20.5, 20.6]
    assert fake.tables[(TABLE.schema, "room_1_sensors")]["pk"] == []


@pytest.mark.parametrize("before", [{"merge": 10**10}, {"idempotent": True}])
def test_a_keyed_table_keeps_taking_rows_after_merge_or_idempotent_is_turned_off(before):
    """A table made with the key (merge or idempotent on then) requires lorrygate_id in every INSERT: written
    without, CrateDB refuses the whole request; the rows are sent again with an id of their content (idempotent
    rows), not each a dead letter."""
    fake = FakeCrate()
    write(storage(fake, **before), entry({"v": 1}))
    store = storage(fake)
    batch, failures = write(store, entry({"v": 2}, time=T + 10**9), entry({"v": 2}, time=T + 10**9),
                            entry({"w": 3}, time=T + 2 * 10**9))
    assert failures == [] and batch.extra_dead == []
    rows = fake.rows(TABLE.schema, TABLE.table)
    assert len(rows) == 3 and all(row.get("lorrygate_id") for row in rows)
    requests = fake.requests
    batch, failures = write(store, entry({"w": 4}, time=T + 3 * 10**9))  # (known now: no refusal first)
    assert failures == [] and len(fake.rows(TABLE.schema, TABLE.table)) == 4 and fake.requests == requests + 1


def test_names_cratedb_creates_no_table_of_are_stored_under_names_it_takes():
    """CrateDB creates no relation whose schema or name starts with ``_`` (a Tasmota device or zigbee2mqtt friendly
    name ``_attic``, a realm ``_test``) or holds a ``.``, nor one in a read-only system schema (the topic strategy's
    ``sys/...``): the CREATE TABLE failed at every retry, and with it the whole batch, so one device so named
    stopped the storage. Such a part gets the prefix ``lg_``; the other tables of the batch are stored beside."""
    from lorrygate.storage.shared_layout import crate_table

    fake = FakeCrate()
    store = storage(fake, idempotent=True)
    odd = [TableName("tasmota", "_attic_sensors"), TableName("_test_net", "gw_n_sensors"), TableName("sys", "y"),
           TableName("blob", "y"), TableName("pg_catalog", "a.b"), TableName(None, "_x"), TableName("", "e")]
    batch, failures = write(store, entry({"v": 0}), *[entry({"v": n}, table=t) for n, t in enumerate(odd, 1)])
    assert failures == [] and batch.extra_dead == []
    assert [crate_table(t) for t in odd] == [
        TableName("tasmota", "lg__attic_sensors"), TableName("lg__test_net", "gw_n_sensors"),
        TableName("lg_sys", "y"), TableName("lg_blob", "y"), TableName("lg_pg_catalog", "a_b"),
        TableName(None, "lg__x"), TableName(None, "e")]
    stored = {(schema, name): [row["fields"]["v"] for row in fake.rows(schema, name)] for schema, name in fake.tables
              if not name.startswith("lorrygate_")}
    assert stored == {(TABLE.schema, TABLE.table): [0], ("tasmota", "lg__attic_sensors"): [1],
                      ("lg__test_net", "gw_n_sensors"): [2], ("lg_sys", "y"): [3], ("lg_blob", "y"): [4],
                      ("lg_pg_catalog", "a_b"): [5], ("doc", "lg__x"): [6], ("doc", "e"): [7]}
    assert crate_table(TABLE) is TABLE  # (a name CrateDB takes is kept, and so are its rows' ids)


def test_a_table_cratedb_refuses_to_create_keeps_its_rows_as_dead_letters_and_the_rest_flows():
    """A CREATE TABLE that CrateDB refuses for good (a DDL template it does not take at run time) failed the whole
    batch at every retry: the storage stood still. The rows of that table are dead letters that say why and what
    to do; the other tables' rows are stored, and the next batch tries the table again."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"v": 0}))  # (the table exists: its rows need no CREATE)
    fake.fail_next(400, 4000, "IllegalArgumentException[Cannot use column month of type TEXT as partition]",
                   statement="CREATE TABLE")
    other = TableName(TABLE.schema, "other_sensors")
    batch, failures = write(store, entry({"v": 1}), entry({"v": 2}, table=other))
    assert failures == [] and batch.refused_rows == 1
    (dead,) = batch.extra_dead
    assert dead.error.startswith(f"CrateDB refused to create the table {other}: CrateDB error 4000: "
                                 "IllegalArgumentException[Cannot use column month")
    assert "'lorrygate dead-letters replay' stores these rows" in dead.error
    assert [row["fields"]["v"] for row in fake.rows(TABLE.schema, TABLE.table)] == [0, 1]
    _, failures = write(store, entry({"v": 3}, table=other))  # (refused once, not for good)
    assert failures == [] and [row["fields"]["v"] for row in fake.rows(other.schema, other.table)] == [3]

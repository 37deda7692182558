"""The CrateDB writer's side of the protocol, against a fake that follows CrateDB's documented
responses (tests/fakecrate.py), and every generated statement against CrateDB's grammar."""

import pytest
from cratedb_sqlparse import sqlparse
from treq.testing import StubTreq
from twisted.internet.task import Clock

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.cratedb import DEAD_LETTER_DDL, DEAD_LETTER_INSERT, CrateStorage, default_ddl, insert_statement
from lorrygate.storage.ddl import DdlTemplate, crate_validator
from tests.fakecrate import FakeCrate
from tests.doubles import Ack

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
                      DEAD_LETTER_INSERT):
        sqlparse(statement, raise_exception=True)


def test_new_table_is_created_with_the_default_layout_and_rows_land():
    """An unknown table (4041/4045) is created with the default layout, and the insert is sent again."""
    fake = FakeCrate()
    store = storage(fake, replicas="0-1")
    _, failures = write(store, entry({"temperature": 21.5, "wifi": {"rssi": -60}}))
    assert failures == []
    ddl = fake.tables[(TABLE.schema, TABLE.table)]["ddl"]
    assert 'OBJECT(DYNAMIC)' in ddl and "PARTITIONED BY (\"month\")" in ddl and "CLUSTERED INTO 1 SHARDS" in ddl
    assert "number_of_replicas = '0-1'" in ddl
    (row,) = fake.rows(TABLE.schema, TABLE.table)
    assert row == {"time": T // 1_000_000, "tags": {"site": "b"}, "fields": {"temperature": 21.5, "wifi": {"rssi": -60}}}
    assert [s.split(" (")[0] for s in fake.statements] == [
        'INSERT INTO "mqttkit_1_testdrive"."area_42_node_1_sensors"',
        'CREATE TABLE IF NOT EXISTS "mqttkit_1_testdrive"."area_42_node_1_sensors"',
        'INSERT INTO "mqttkit_1_testdrive"."area_42_node_1_sensors"',
    ]


def test_mixed_row_results_in_one_bulk_answer():
    """Stored, duplicate and type-error rows in one bulk answer: stored and duplicate count as stored,
    the type error goes to the dead-letter table with CrateDB's message."""
    fake = FakeCrate()
    store = storage(fake, idempotent=True)
    write(store, entry({"temperature": 21.5}, time=T))
    batch, failures = write(store, entry({"temperature": 22.0}, time=T + 10**9),
                            entry({"temperature": 21.5}, time=T), entry({"temperature": "warm"}, time=T + 2 * 10**9))
    assert failures == []
    assert len(fake.rows(TABLE.schema, TABLE.table)) == 2
    (dead,) = batch.extra_dead
    assert dead.stage == "store" and "CrateDB error 4003" in dead.error and "warm" in dead.error
    (dead_row,) = fake.rows("doc", "lorrygate_dead_letter")
    assert dead_row["stage"] == "store" and dead_row["payload"] == "{}" and dead_row["payload_base64"] == "e30="


def test_unavailable_shards_retry_only_the_missing_rows():
    """Rows answered with 5002 fail the write (to be retried); the retry sends only those rows."""
    fake = FakeCrate()
    store = storage(fake)
    write(store, entry({"v": 0}))
    fake.unavailable_rows = 1
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
    fake.fail_next(401, 4010, "AuthenticationException[authentication failed]")
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

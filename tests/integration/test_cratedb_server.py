"""
The CrateDB writer over HTTP against the fake that follows CrateDB's source
(tests/fakecrate.py) and, with LORRYGATE_CRATEDB_URL set, the same cases
unchanged against a real CrateDB: what the real server does is asserted, so
that the day it runs it tells whether the fake was right.
"""

import datetime
import decimal
import math
import uuid

import pytest_twisted
from twisted.internet import reactor

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.cratedb import CrateStorage, make_client
from tests.doubles import Ack

T = 1_717_243_200_000_000_000  # 2024-06-01T12:00:00Z


class Case:
    """One test's schema, table and writer."""

    def __init__(self, server, **options):
        self.server = server
        self.schema = f"lgt_{uuid.uuid4().hex[:10]}"
        self.table = TableName(self.schema, "node_1_sensors")
        self.topic = f"{self.schema}/net/gw/node-1/data.json"
        self.store = CrateStorage("crate", server.url, reactor, http=make_client(reactor, False, ""),
                                  replicas="0", **options)

    def entry(self, fields, time=T, payload=b"{}"):
        message = Message(self.topic, payload, 1, False, 1_717_243_200.0, "#", Ack())
        return Entry(self.table, [Record(time, fields, {"site": "b"})], "main", message, "json")

    async def write(self, *entries, dead=()) -> Batch:
        batch = Batch()
        for item in entries:
            batch.add(item)
        for item in dead:
            batch.add_dead_letter(item)
        await self.store.write(batch)
        return batch

    async def fields(self) -> list:
        rows = await self.server.rows(self.schema, self.table.table)
        return [row["fields"] for row in sorted(rows, key=lambda r: r["time"])]

    async def close(self):
        await self.server.close(self.schema)


async def run(server, test, **options):
    case = Case(server, **options)
    try:
        await test(case)
    finally:
        await case.close()


@pytest_twisted.ensureDeferred
async def test_a_sensor_sending_20_then_21_5_keeps_21_5(server):
    """The first value of a field fixes its column's type in CrateDB: numbers go as floats (DOUBLE), so a
    first reading of 20 does not make a BIGINT column that stores 21.5 as 21."""
    async def test(case):
        await case.write(case.entry({"temperature": 20}))
        await case.write(case.entry({"temperature": 21.5}, time=T + 10**9))
        assert [f["temperature"] for f in await case.fields()] == [20.0, 21.5]
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_one_uncastable_value_among_5000_rows_costs_one_dead_letter(server):
    """A value that cannot be cast to a known column fails the whole request (4000): the request is halved
    until the row is alone; it becomes a dead letter, the other 4,999 rows are stored."""
    async def test(case):
        await case.write(case.entry({"v": 0.5}))
        entries = [case.entry({"v": n}, time=T + (n + 1) * 10**6) for n in range(5000)]
        entries[3217] = case.entry({"v": "warm"}, time=T + 3218 * 10**6, payload=b'{"v": "warm"}')
        requests = server.fake.requests if not server.real else 0
        batch = await case.write(*entries)
        assert len(await case.fields()) == 5000
        assert batch.refused_rows == 1 and len(batch.extra_dead) == 1
        (dead,) = await server.dead_letters(case.schema)
        assert dead["payload"] == '{"v": "warm"}' and "4000" in dead["error"] and "warm" in dead["error"]
        if not server.real:
            assert server.fake.requests - requests <= 2 * 13 + 1  # a bisection, not 5,000 requests
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_1000_idempotent_duplicates_resolve_in_one_round(server):
    """With idempotent = true a replay of 1,000 stored rows (INSERT ... ON CONFLICT DO NOTHING, rowcount 0)
    is taken as stored in one request: no retries, no dead letters, no second copy."""
    async def test(case):
        entries = [case.entry({"n": n}, time=T + n * 10**6) for n in range(1000)]
        await case.write(*entries)
        requests = server.fake.requests if not server.real else 0
        batch = await case.write(*[case.entry({"n": n}, time=T + n * 10**6) for n in range(1000)])
        assert batch.extra_dead == [] and len(batch.progress) == 1000
        assert len(await case.fields()) == 1000
        if not server.real:
            assert server.fake.requests - requests == 1
    await run(server, test, idempotent=True)


@pytest_twisted.ensureDeferred
async def test_merged_rows_of_a_bucket_are_one_row(server):
    """``merge``: the values of a bucket, two rows of one request and one of a later request, are one row at the
    bucket's start (``ON CONFLICT (key) DO UPDATE SET "fields" = concat("fields", excluded."fields")``): the
    later value of a key wins, the others stay; the next bucket is a row of its own."""
    async def test(case):
        first = await case.write(case.entry({"power": 1.5, "yield": 7.5}, time=T + 10**9),
                                 case.entry({"voltage": 231.0}, time=T + 2 * 10**9))
        later = await case.write(case.entry({"power": 2.5}, time=T + 3 * 10**9),
                                 case.entry({"power": 4.0}, time=T + 10 * 10**9))
        assert first.extra_dead == [] and later.extra_dead == []
        rows = sorted(await server.rows(case.schema, case.table.table), key=lambda row: row["time"])
        assert [(row["time"], row["fields"]) for row in rows] == [
            (T // 10**6, {"power": 2.5, "yield": 7.5, "voltage": 231.0}), (T // 10**6 + 10_000, {"power": 4.0})]
    await run(server, test, merge=10 * 10**9)


@pytest_twisted.ensureDeferred
async def test_nan_dates_decimals_uuids_bytes_and_a_100_kb_binary_payload(server):
    """NaN and Infinity are stored as null (counted), a CBOR date as epoch milliseconds, a decimal as a
    number, a UUID and bytes as text; a 100 KB binary payload is kept whole in the dead-letter table.
    One write each, no retry loop."""
    async def test(case):
        ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
        await case.write(case.entry({
            "nan": math.nan, "inf": math.inf, "at": datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC),
            "d": decimal.Decimal("1.5"), "id": ident, "raw": b"\x00\xff", "ok": 1.25}))
        (fields,) = await case.fields()
        assert fields["nan"] is None and fields["inf"] is None and fields["ok"] == 1.25
        assert fields["at"] == 1_717_200_000_000 and fields["d"] == 1.5
        assert fields["id"] == str(ident) and fields["raw"] == "AP8="
        assert case.store.conversions.nonfinite == 2
        payload = bytes(range(256)) * 400
        message = Message(case.topic, payload, 1, False, 1_717_243_200.0, "#", Ack())
        await case.write(dead=[DeadLetter("main", message, "decode", "no decoder of the chain accepted it")])
        (dead,) = await server.dead_letters(case.schema)
        assert dead["payload"] is None and len(dead["payload_base64"]) == 4 * math.ceil(len(payload) / 3)
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_a_dropped_table_is_created_again(server):
    """A table dropped while the gateway runs (4041 on a table the writer created) is created again."""
    async def test(case):
        await case.write(case.entry({"v": 1.0}))
        await server.drop(case.schema, case.table.table)
        await case.write(case.entry({"v": 2.0}, time=T + 10**9))
        assert [f["v"] for f in await case.fields()] == [2.0]
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_keys_cratedb_refuses_are_renamed(server):
    """Object keys with '.', '[', ']' (refused by CrateDB, 4008) are stored with '_' instead, distinct."""
    async def test(case):
        await case.write(case.entry({"pm2.5": 3, "pm2_5": 4, "a[0]": 1, "wifi": {"rssi.dbm": -60}}))
        (fields,) = await case.fields()
        assert fields == {"pm2_5": 3.0, "pm2_5_2": 4.0, "a_0_": 1.0, "wifi": {"rssi_dbm": -60.0}}
        assert case.store.conversions.renamed == 3
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_rows_refused_beyond_the_first_ten_get_their_reason(server):
    """25 rows refused in one request (an object for a column that the request's first row made a number):
    CrateDB gives the first 10 a reason and the rest a bare -2; those are sent again in small requests, so
    every dead letter carries CrateDB's reason, within the one write."""
    async def test(case):
        await case.write(case.entry({"note": "short"}))
        entries = [case.entry({"level": {"n": n}}, time=T + (n + 2) * 10**6) for n in range(25)]
        batch = await case.write(case.entry({"level": 1.5}, time=T + 10**6), *entries)
        assert batch.refused_rows == 25
        assert all("CrateDB error" in dead.error and "bare" not in dead.error for dead in batch.extra_dead)
        assert len(await case.fields()) == 2
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_fields_beyond_the_column_limit_or_too_long_to_index_are_kept_unindexed(server):
    """Zigbee2MQTT's bridge/info of 300 devices (1,500 sub-columns, beyond the 1,000 of a table), a text of
    40,000 bytes (beyond the 32,766 of an indexed text), a list of lists and one of mixed types: CrateDB refuses
    the rows; the writer adds
    extra_fields OBJECT(IGNORED) to the table and sends them again with the keys that do not fit there.
    Nothing is a dead letter, every value reads back."""
    async def test(case):
        devices = {f"0x{n:016x}": {"friendly_name": f"sensor {n}", "retain": False, "qos": 1.0, "optimistic": True}
                   for n in range(300)}
        image = "A" * 40_000
        track = {"type": "LineString", "coordinates": [[7.1, 50.7], [7.2, 50.8]]}
        batch = await case.write(case.entry({"version": "1.35.1", "config": {"devices": devices}}),
                                 case.entry({"temperature": 21.5, "snapshot": image}, time=T + 10**9),
                                 case.entry({"speed": 3.5, "track": track, "status": ["ok", 3.0]}, time=T + 2 * 10**9))
        assert batch.extra_dead == [] and await server.dead_letters(case.schema) == []
        rows = sorted(await server.rows(case.schema, case.table.table, ("time", "fields", "extra_fields")),
                      key=lambda row: row["time"])
        assert [row["fields"] for row in rows] == [{"version": "1.35.1"}, {"temperature": 21.5}, {"speed": 3.5}]
        assert rows[0]["extra_fields"] == {"config": {"devices": devices}}
        assert rows[1]["extra_fields"] == {"snapshot": image}
        assert rows[2]["extra_fields"] == {"track": track, "status": ["ok", 3.0]}
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_a_key_moved_into_extra_fields_stays_there_after_a_restart(server):
    """A key moved for a text too long to index: a short value of it, written after the gateway restarted (a
    new writer), goes into extra_fields too, where the key's other values are (doc.lorrygate_extra_keys)."""
    async def test(case):
        await case.write(case.entry({"temperature": 21.5, "log": "x" * 40_000}))
        case.store = CrateStorage("crate", server.url, reactor, http=make_client(reactor, False, ""), replicas="0")
        batch = await case.write(case.entry({"temperature": 21.0, "log": "short"}, time=T + 10**9))
        assert batch.extra_dead == []
        rows = sorted(await server.rows(case.schema, case.table.table, ("time", "fields", "extra_fields")),
                      key=lambda row: row["time"])
        assert [row["fields"] for row in rows] == [{"temperature": 21.5}, {"temperature": 21.0}]
        assert [row["extra_fields"] for row in rows] == [{"log": "x" * 40_000}, {"log": "short"}]
    await run(server, test)


@pytest_twisted.ensureDeferred
async def test_a_device_whose_table_name_cratedb_refuses_is_stored_beside_the_others(server):
    """CrateDB creates no table whose name starts with ``_`` (a Tasmota device ``_attic``): the CREATE TABLE
    failed at every retry and the whole batch with it. That table is ``lg__attic_sensors``; the batch's other
    rows are stored beside it, in one write."""
    async def test(case):
        odd = TableName(case.schema, "_attic_sensors")
        message = Message(case.topic, b"{}", 1, False, 1_717_243_200.0, "#", Ack())
        batch = await case.write(case.entry({"v": 1.0}), Entry(odd, [Record(T, {"v": 2.0}, {})], "main", message,
                                                                "json"))
        assert batch.extra_dead == []
        assert [row["fields"] for row in await server.rows(case.schema, "lg__attic_sensors")] == [{"v": 2.0}]
        assert [f["v"] for f in await case.fields()] == [1.0]
    await run(server, test)

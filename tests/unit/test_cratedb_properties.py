"""
The CrateDB writer against arbitrary field values, through the fake that follows CrateDB's refusals
(tests/fakecrate.py): whatever a fleet sends, a write never fails (a failed write is retried for ever and
the storage stops), and every message ends stored or a dead letter.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.cratedb import CrateStorage
from tests import anyvalues
from tests.doubles import Ack
from tests.fakecrate import FakeCrate

T = 1_717_243_200_123_456_789


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=anyvalues.batches, idempotent=st.booleans())
def test_arbitrary_fields_never_fail_a_write_and_each_message_is_stored_or_a_dead_letter(batches, idempotent):
    fake = FakeCrate()
    store = CrateStorage("crate", "http://crate.invalid:4200", None, http=StubTreq(fake), replicas="0",
                         idempotent=idempotent)
    tables = [TableName("net", "gw_node_1_sensors"), TableName("net", "gw_node_2_sensors")]
    sent = []
    for number, items in enumerate(batches):
        batch = Batch()
        for seq, (which, fields, tags) in enumerate(items):
            payload = f"{number}/{seq}".encode()
            message = Message("net/gw/node/data.json", payload, 1, False, 1.0, "#", Ack())
            # (a millisecond of its own: CrateDB keeps milliseconds, and idempotent rows of one time and equal
            # fields would be one row)
            batch.add(Entry(tables[which], [Record(T + (number * 1000 + seq) * 1_000_000, fields, tags)],
                            "main", message, "json"))
            sent.append(payload)
        failures: list = []
        store.write(batch).addErrback(failures.append)
        assert failures == [], failures[0].getTraceback()
    stored = {row["time"] for table in tables if (table.schema, table.table) in fake.tables
              for row in fake.rows(table.schema, table.table)}
    dead = {row["payload"] for row in fake.tables.get(("doc", "lorrygate_dead_letter"), {"rows": []})["rows"]}
    for number, items in enumerate(batches):
        for seq, _ in enumerate(items):
            millis = T // 1_000_000 + number * 1000 + seq
            assert millis in stored or f"{number}/{seq}" in dead, f"message {number}/{seq} is lost"



_floats = st.one_of(st.none(), st.floats(-10, 10, allow_nan=False), st.just(float("nan")))
#: (seconds after the bucket's start, a site tag, fields): a type a key, as a fleet's device sends them
_messages = st.lists(st.tuples(st.integers(0, 25), st.sampled_from(["a", "b"]),
                               st.fixed_dictionaries({}, optional={
                                   "power": _floats, "voltage": _floats,
                                   "wifi": st.dictionaries(st.sampled_from(["rssi", "ch"]), st.integers(0, 3),
                                                           min_size=1)})), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_messages, min_size=1, max_size=3))
def test_merged_rows_hold_the_last_value_of_each_key_in_the_messages_order(batches):
    """``merge`` through the fake: one row a (tags, bucket), each first-level key of ``fields`` its last value sent
    in the messages' order (an object as a whole, a null or NaN nothing)."""
    fake = FakeCrate()
    store = CrateStorage("crate", "http://crate.invalid:4200", None, http=StubTreq(fake), replicas="0",
                         merge=10 * 10**9)
    table = TableName("net", "gw_node_1_sensors")
    bucket = T - T % (10 * 10**9)
    expected: dict = {}
    for items in batches:
        batch = Batch()
        for seconds, site, fields in items:
            batch.add(Entry(table, [Record(bucket + seconds * 10**9, fields, {"site": site})], "main",
                            Message("net/gw/node-1/data.json", b"{}", 1, False, 1.0, "#", Ack()), "json"))
            row = expected.setdefault((bucket // 10**6 + seconds // 10 * 10_000, site), {})
            for name, value in fields.items():
                if value is not None and value == value:  # (NaN is no value)
                    row[name] = {key: float(item) for key, item in value.items()} if isinstance(value, dict) \
                        else value
        failures: list = []
        store.write(batch).addErrback(failures.append)
        assert failures == [] and batch.extra_dead == [], failures
    stored = {(row["time"], row["tags"]["site"]): {name: value for name, value in row["fields"].items()
                                                   if value is not None}
              for row in fake.rows(table.schema, table.table)}
    assert len(stored) == len(fake.rows(table.schema, table.table))
    assert stored == expected

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


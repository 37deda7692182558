"""
Byte ranges a storage holds (lorrygate.storage.positions), and SQLite
keeping them in the transaction that stores the rows: a message read twice
is stored once, in whatever order the commits come.
"""

import sqlite3

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.positions import Positions, covers, merge
from lorrygate.storage.spool import decode, encode
from lorrygate.storage.sqlite import SQLiteDialect, SQLiteStorage
from lorrygate.storage.sqlstorage import SqlStorage


def test_merge_joins_touching_and_overlapping_ranges():
    assert merge([], 0, 10) == [[0, 10]]
    assert merge([[0, 10]], 10, 20) == [[0, 20]]
    assert merge([[0, 10], [20, 30]], 10, 20) == [[0, 30]]
    assert merge([[0, 10], [20, 30]], 12, 15) == [[0, 10], [12, 15], [20, 30]]
    assert merge([[20, 30]], 0, 5) == [[0, 5], [20, 30]]
    assert merge([[0, 10]], 3, 7) == [[0, 10]]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 10)), max_size=30))
def test_merged_ranges_cover_exactly_what_was_added(pieces):
    ranges: list = []
    held = set()
    for start, length in pieces:
        ranges = merge(ranges, start, start + length)
        held.update(range(start, start + length))
    assert all(low < high for low, high in ranges)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))  # sorted, apart
    assert {i for low, high in ranges for i in range(low, high)} == held
    for start, length in pieces:
        assert covers(ranges, start, start + length)


def message(stream, start, end, payload=b"{}"):
    return Message("t", payload, 1, False, 1.0, "t", position=(stream, start, end))


def entry(msg, value=1):
    return Entry(TableName("", "readings"), [Record(1_000_000_000, {"v": value})], "main", msg)


def test_select_leaves_out_what_is_held_and_counts_it():
    positions = Positions()
    positions.load([("s", "[[0,20]]")])
    held, new = message("s", 10, 20), message("s", 20, 30)
    entries, dead, changed, skipped = positions.select([entry(held), entry(held), entry(new)], [])
    assert [e.message for e in entries] == [new] and skipped == 1
    assert changed == {"s": [[0, 30]]}
    assert positions.streams == {"s": [[0, 20]]}  # unchanged until applied
    positions.apply(changed)
    assert positions.streams == {"s": [[0, 30]]}


def test_a_spooled_message_keeps_its_position():
    batch = Batch()
    batch.add(entry(message("s", 0, 9)))
    batch.add_dead_letter(DeadLetter("main", message("s", 9, 12), "decode", "bad"))
    again = decode(encode(batch))
    assert again.positioned
    assert again.entries[0].message.position == ("s", 0, 9)
    assert again.dead_letters[0].message.position == ("s", 9, 12)


def batch_of(*pairs):
    batch = Batch()
    for msg, value in pairs:
        if value is None:
            batch.add_dead_letter(DeadLetter("main", msg, "decode", "not JSON"))
        else:
            batch.add(entry(msg, value))
    return batch


@pytest_twisted.inlineCallbacks
def test_sqlite_stores_a_message_read_twice_once_across_restarts_and_out_of_order(tmp_path):
    from twisted.internet import reactor

    path = str(tmp_path / "db.sqlite")
    storage = SQLiteStorage("db", path, reactor)
    yield storage.start()
    a, b, c, bad = message("s", 0, 10), message("s", 10, 20), message("s", 20, 30), message("s", 30, 35)
    yield storage.write(batch_of((b, 2)))  # a spooled batch drains after a later one
    yield storage.write(batch_of((a, 1), (b, 2)))
    yield storage.write(batch_of((bad, None)))
    yield storage.stop()
    storage = SQLiteStorage("db", path, reactor)  # a restart reads the ranges back
    yield storage.start()
    yield storage.write(batch_of((a, 1), (b, 2), (c, 3), (bad, None)))
    yield storage.stop()
    with sqlite3.connect(path) as conn:
        assert sorted(v for (v,) in conn.execute("SELECT v FROM readings")) == [1, 2, 3]
        assert conn.execute("SELECT count(*) FROM lorrygate_dead_letter").fetchone() == (1,)
        assert conn.execute("SELECT stream, ranges FROM lorrygate_positions").fetchall() == [("s", "[[0,35]]")]
    assert storage.details()["held_already"] == 3


class FailingOnce(SQLiteDialect):
    failed = False

    def commit(self, conn):
        if not FailingOnce.failed:
            FailingOnce.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        super().commit(conn)


@pytest_twisted.inlineCallbacks
def test_a_failed_commit_leaves_the_ranges_as_they_were(tmp_path):
    from twisted.internet import reactor

    path = str(tmp_path / "db.sqlite")
    storage = SqlStorage("db", FailingOnce(path), reactor)
    yield storage.start()
    try:
        a = message("s", 0, 10)
        # the commit fails, the batch is written again entry by entry: a is
        # not "held" by the transaction that was rolled back
        yield storage.write(batch_of((a, 1)))
        yield storage.write(batch_of((a, 1)))
    finally:
        yield storage.stop()
    assert FailingOnce.failed
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT v FROM readings").fetchall() == [(1,)]


@pytest_twisted.inlineCallbacks
def test_a_data_table_named_as_lorrygates_own_tables_is_one_of_its_own(tmp_path):
    """A strategy's ``table = {node}`` and a device ``lorrygate_positions``: its rows made a data table of that
    name, and a files source's positions were then refused by it (or went into it); a device
    ``lorrygate_dead_letter`` had its rows refused as dead letters. Each gets the prefix ``lg_``, in any case."""
    from twisted.internet import reactor

    path = str(tmp_path / "db.sqlite")
    storage = SQLiteStorage("db", path, reactor)
    yield storage.start()
    hostile = Batch()
    for number, name in enumerate(("lorrygate_positions", "LORRYGATE_DEAD_LETTER", "lorrygate_table")):
        hostile.add(Entry(TableName("", name), [Record(1_000_000_000, {"stream": "s", "ranges": "[[0,99]]"})],
                          "main", message(f"d{number}", 0, 1)))
    yield storage.write(hostile)
    yield storage.write(batch_of((message("s", 0, 10), 1), (message("s", 10, 20), None)))
    yield storage.stop()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} - {"sqlite_sequence"}
        assert tables == {"lg_lorrygate_positions", "lg_LORRYGATE_DEAD_LETTER", "lorrygate_table", "readings",
                          "lorrygate_positions", "lorrygate_dead_letter"}
        assert conn.execute("SELECT stream, ranges FROM lorrygate_positions ORDER BY stream").fetchall() == [
            ("d0", "[[0,1]]"), ("d1", "[[0,1]]"), ("d2", "[[0,1]]"), ("s", "[[0,20]]")]
        assert conn.execute("SELECT topic, stage FROM lorrygate_dead_letter").fetchall() == [("t", "decode")]
        assert conn.execute('SELECT stream FROM "lg_LORRYGATE_DEAD_LETTER"').fetchall() == [("s",)]


def test_lorrygates_own_table_names_are_data_tables_of_their_own_in_postgresql_and_cratedb():
    """Only beside lorrygate's own tables: PostgreSQL's ``public``, CrateDB's ``doc``; elsewhere a name is kept."""
    from lorrygate.storage.postgresql import qualified
    from lorrygate.storage.shared_layout import crate_table

    assert qualified(TableName("public", "lorrygate_dead_letter")) == '"public"."lg_lorrygate_dead_letter"'
    assert qualified(TableName("", "lorrygate_positions")) == '"public"."lg_lorrygate_positions"'
    assert qualified(TableName("zwave", "lorrygate_positions")) == '"zwave"."lorrygate_positions"'
    assert qualified(TableName("public", "Lorrygate_positions")) == '"public"."Lorrygate_positions"'
    assert crate_table(TableName("doc", "lorrygate_dead_letter")) == TableName("doc", "lg_lorrygate_dead_letter")
    assert crate_table(TableName(None, "lorrygate_dead_letter")) == TableName(None, "lg_lorrygate_dead_letter")
    assert crate_table(TableName("zwave", "lorrygate_dead_letter")) == TableName("zwave", "lorrygate_dead_letter")

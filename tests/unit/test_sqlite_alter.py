"""SQLite: the columns a write adds to many tables go in at once, as SQLite's ALTER TABLE would add them."""

import sqlite3

import pytest

from lorrygate.config.settings import ddl_template
from lorrygate.errors import StorageError
from lorrygate.model import Message, Record, TableName
from lorrygate.storage import sqlite_alter
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.sqlite import SQLiteDialect, SQLiteStorage
from lorrygate.storage.sqlite_alter import AT_ONCE, ColumnAdder

NS = 1_717_243_200_123_456_789
SCHEMA = "mqttkit_1_fleet"


def node(n):
    return TableName(SCHEMA, f"area_{n // 10}_node_{n}_data")


def physical(n):
    return f"{SCHEMA}__area_{n // 10}_node_{n}_data"


def entry(table, fields, time=NS):
    return Entry(table, [Record(time, fields)], "main", Message("t", b"{}", 1, False, 1.5, "#"), "json")


def batch(*entries):
    result = Batch()
    for item in entries:
        result.add(item)
    return result


def open_storage(path, **kwargs):
    store = SQLiteStorage("db", str(path), reactor=None, **kwargs)
    store._connect()
    return store


def schema_version(store):
    return store._conn.execute("PRAGMA schema_version").fetchone()[0]


def texts(conn):
    return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"))


def fleet_update(store, nodes=40):
    """Every node's table exists; then its firmware sends two new fields, one of them nested."""
    store._commit(batch(*(entry(node(n), {"temperature": 20.0 + n}) for n in range(nodes))))
    before = schema_version(store)
    store._commit(batch(*(entry(node(n), {"temperature": 21.0, "rssi": -60 - n, "fw": {"v": "1.2"}}, NS + 1)
                          for n in range(nodes))))
    return before


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_fleet_wide_new_field_changes_the_schema_twice_not_once_a_column(tmp_path, idempotent):
    """80 columns over 40 tables: the schema version (every connection then reads the whole schema again)
    goes up twice, where one ALTER TABLE a column raised it 80 times; the texts are ALTER TABLE's own."""
    store = open_storage(tmp_path / "fleet.sqlite", idempotent=idempotent)
    before = fleet_update(store)
    assert schema_version(store) - before == 2

    # the same tables and columns through ALTER TABLE, one by one
    reference = sqlite3.connect(":memory:", isolation_level=None)
    stored = texts(store._conn)
    for n in range(40):
        reference.execute(stored[physical(n)].replace(', "rssi" INTEGER, "fw.v"', ""))
        reference.execute(f'ALTER TABLE "{physical(n)}" ADD COLUMN "rssi" INTEGER')
        reference.execute(f'ALTER TABLE "{physical(n)}" ADD COLUMN "fw.v"')
    expected = texts(reference)
    assert {name: stored[name] for name in expected} == expected

    for n in (0, 39):
        assert store._conn.execute(f'SELECT temperature, rssi, "fw.v" FROM "{physical(n)}" ORDER BY time').fetchall() \
            == [(20.0 + n, None, None), (21.0, -60 - n, "1.2")]
    assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store._close()


def test_another_connection_and_a_restart_see_the_added_columns(tmp_path):
    """A reader that had the schema before reads the new columns; a reopened storage knows them."""
    path = tmp_path / "fleet.sqlite"
    reader = sqlite3.connect(path)
    store = open_storage(path)
    store._commit(batch(*(entry(node(n), {"a": 1}) for n in range(10))))
    assert reader.execute(f'SELECT * FROM "{physical(3)}"').fetchall() == [("2024-06-01T12:00:00.123456789Z", 1)]
    store._commit(batch(*(entry(node(n), {"a": 2, "b": n, "c": "x"}, NS + 1) for n in range(10))))
    assert reader.execute(f'SELECT a, b, c FROM "{physical(3)}" ORDER BY time').fetchall() == [(1, None, None), (2, 3, "x")]
    store._close()
    store._columns.clear()
    store._connect()
    store._commit(batch(*(entry(node(n), {"a": 3, "b": n, "c": "y", "d": 1.5}, NS + 2) for n in range(10))))
    assert reader.execute(f'SELECT a, b, c, d FROM "{physical(9)}" ORDER BY time').fetchall() == [
        (1, None, None, None), (2, 9, "x", None), (3, 9, "y", 1.5)]
    store._close()
    reader.close()


def test_a_rolled_back_write_takes_its_columns_back(tmp_path, monkeypatch):
    """A commit that fails after the columns went in: the schema is as before, and the retry adds them."""
    store = open_storage(tmp_path / "fleet.sqlite")
    store._commit(batch(*(entry(node(n), {"a": 1}) for n in range(10))))
    before = texts(store._conn)
    commit = SQLiteDialect.commit
    calls = []

    def fail_once(self, conn):
        calls.append(1)
        if len(calls) == 1:
            raise StorageError("the disk is unwell")
        commit(self, conn)

    monkeypatch.setattr(SQLiteDialect, "commit", fail_once)
    update = batch(*(entry(node(n), {"a": 2, "b": n, "c": "x"}, NS + 1) for n in range(10)))
    with pytest.raises(StorageError):
        store._commit(update)
    assert texts(store._conn) == before
    assert [row[1] for row in store._conn.execute(f'PRAGMA table_info("{physical(0)}")')] == ["time", "a"]
    store._commit(update)
    assert store._conn.execute(f'SELECT a, b, c FROM "{physical(7)}" ORDER BY time').fetchall() == [(1, None, None), (2, 7, "x")]
    assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store._close()


def test_an_entry_the_database_refuses_keeps_its_columns_out_and_the_rest_in(tmp_path):
    """Written entry by entry after a refusal, each entry's columns go in with it, or not at all."""
    store = open_storage(tmp_path / "fleet.sqlite")
    store._commit(batch(*(entry(node(n), {"a": 1}) for n in range(10))))
    bad = TableName(SCHEMA, "area_0_node_3_data")
    entries = [entry(node(n), {"a": 2, "b": n, "c": "x", "d": 0.5}, NS + 1) for n in range(10)]
    entries.insert(5, entry(bad, {"a": 3, "e": 1, "bad": "\ud800"}, NS + 2))
    store._commit(batch(*entries))
    assert [row[1] for row in store._conn.execute(f'PRAGMA table_info("{physical(3)}")')] == ["time", "a", "b", "c", "d"]
    assert store._conn.execute(f'SELECT a, b, c, d FROM "{physical(3)}" ORDER BY time').fetchall() == [
        (1, None, None, None), (2, 3, "x", 0.5)]
    assert store._conn.execute("SELECT count(*) FROM lorrygate_dead_letter").fetchone() == (1,)
    assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store._close()


def test_a_template_with_table_constraints_gets_the_columns_before_them(tmp_path):
    """A DDL template's table: the columns go where ALTER TABLE puts them, before its constraints."""
    template = ddl_template("CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, note TEXT DEFAULT 'x', "
                            "CHECK (length(time) > 0), UNIQUE (time)) ", "sqlite")
    store = open_storage(tmp_path / "ddl.sqlite", ddl={"": template})
    before = schema_version(store)
    store._commit(batch(*(entry(node(n), {"a": n, "b": 1.5}) for n in range(10))))
    # ten CREATE TABLEs and the columns of all of them at once
    assert schema_version(store) - before == 10 + 2
    text = texts(store._conn)[physical(4)]
    assert text == (f'CREATE TABLE "{physical(4)}" (time TEXT NOT NULL, note TEXT DEFAULT \'x\', "a" INTEGER, '
                    '"b" REAL, CHECK (length(time) > 0), UNIQUE (time))')
    assert store._conn.execute(f'SELECT a, b, note FROM "{physical(4)}"').fetchall() == [(4, 1.5, "x")]
    store._close()


def _refuse_writing_the_schema_table(conn):
    """Refuse an UPDATE of sqlite_master while ``writable_schema`` is on, as SQLITE_DBCONFIG_DEFENSIVE
    does (ALTER TABLE's own update of it stays allowed): with Python 3.12's ``setconfig`` the real one."""
    if hasattr(conn, "setconfig"):
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_DEFENSIVE, True)
        return
    writable = []

    def authorizer(action, first, second, *_):
        if action == sqlite3.SQLITE_PRAGMA and first.lower() == "writable_schema" and second is not None:
            writable[:] = [second.upper() == "ON"]
        if action == sqlite3.SQLITE_UPDATE and first == "sqlite_master" and writable == [True]:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorizer)


def test_where_sqlite_refuses_writing_its_schema_table_columns_go_through_alter_table(tmp_path):
    """A build that forbids writing sqlite_master: ALTER TABLE a column, from then on, and nothing is lost."""
    store = open_storage(tmp_path / "fleet.sqlite")
    _refuse_writing_the_schema_table(store._conn)
    before = fleet_update(store, nodes=10)
    assert schema_version(store) - before == 20
    assert store.dialect._adder.writable is False
    assert store._conn.execute(f'SELECT rssi, "fw.v" FROM "{physical(5)}" ORDER BY time').fetchall() == [
        (None, None), (-65, "1.2")]
    assert store._conn.execute("SELECT count(*) FROM lorrygate_dead_letter").fetchone() == (0,)
    store._close()


def test_a_table_the_scratch_database_refuses_goes_through_alter_table(tmp_path, monkeypatch):
    """A CREATE text that the empty in-memory database does not take (a collation of the real connection,
    say): that table's columns go through ALTER TABLE, the others' at once."""
    store = open_storage(tmp_path / "fleet.sqlite")
    altered = ColumnAdder._altered

    def refuse_node_2(self, table, text, definitions):
        return None if table == physical(2) else altered(self, table, text, definitions)

    monkeypatch.setattr(ColumnAdder, "_altered", refuse_node_2)
    before = fleet_update(store, nodes=10)
    assert schema_version(store) - before == 2 + 2  # the first column, the other tables, node 2's two columns
    assert store._conn.execute(f'SELECT rssi FROM "{physical(2)}" ORDER BY time').fetchall() == [(None,), (-62,)]
    store._close()


def test_few_columns_go_through_alter_table(tmp_path):
    """Below `AT_ONCE` columns in one write, each goes through ALTER TABLE (one schema re-read each)."""
    store = open_storage(tmp_path / "few.sqlite")
    store._commit(batch(entry(node(1), {"a": 1})))
    before = schema_version(store)
    store._commit(batch(entry(node(1), {"a": 2, **{f"f{i}": i for i in range(AT_ONCE - 1)}})))
    assert schema_version(store) - before == AT_ONCE - 1
    store._close()


def test_the_same_shape_is_made_once_in_the_scratch_database(tmp_path, monkeypatch):
    """Tables that differ only in name share one edit; each gets its own name back."""
    calls = []
    alter = sqlite_alter.alter

    def counting(conn, table, definition):
        calls.append(table)
        alter(conn, table, definition)

    monkeypatch.setattr(sqlite_alter, "alter", counting)
    store = open_storage(tmp_path / "fleet.sqlite")
    fleet_update(store, nodes=30)
    # one real ALTER TABLE for node 0's first column, one in the scratch database for its second, and two
    # for the shape of the other 29 tables
    assert len(calls) == 4
    assert all(f'CREATE TABLE "{physical(n)}" (' in texts(store._conn)[physical(n)] for n in range(30))
    store._close()


def test_tables_of_one_shape_that_add_different_columns_get_their_own(tmp_path):
    """The shared edit is per shape and columns: half of a fleet adds one field, the other half another."""
    store = open_storage(tmp_path / "fleet.sqlite")
    store._commit(batch(*(entry(node(n), {"a": 1}) for n in range(20))))
    store._commit(batch(*(entry(node(n), {"a": 2, ("x" if n % 2 else "y"): n}, NS + 1) for n in range(20))))
    stored = texts(store._conn)
    for n in range(20):
        column = "x" if n % 2 else "y"
        assert stored[physical(n)] == f'CREATE TABLE "{physical(n)}" (time TEXT NOT NULL, "a" INTEGER, "{column}" INTEGER)'
        assert store._conn.execute(f'SELECT {column} FROM "{physical(n)}" ORDER BY time').fetchall() == [(None,), (n,)]
    store._close()


def test_hostile_field_names_added_at_once_stay_identifiers(tmp_path):
    """Quotes, SQL, non-Latin letters, a case variant of an existing column and a 300-character name, added to
    many tables at once: each is a column of its own, quoted, and the database stays whole."""
    store = open_storage(tmp_path / "fleet.sqlite")
    store._commit(batch(*(entry(node(n), {"temperature": 1.0}) for n in range(10))))
    hostile = {'x"; DROP TABLE lorrygate_dead_letter; --': 1, "Ünïcödé ✓": "u", "TEMPERATURE": 2.0,
               "n" * 300: 3, "with space": 4.5, ")": 5}
    store._commit(batch(*(entry(node(n), dict(hostile, temperature=n + 0.5), NS + 1) for n in range(10))))
    columns = [row[1] for row in store._conn.execute(f'PRAGMA table_info("{physical(7)}")')]
    assert columns[:2] == ["time", "temperature"] and len(columns) == 2 + len(hostile)
    assert 'x"; DROP TABLE lorrygate_dead_letter; --' in columns and "n" * 300 in columns and ")" in columns
    ((count,),) = store._conn.execute(f'SELECT count(*) FROM "{physical(7)}" WHERE "Ünïcödé ✓" = \'u\'').fetchall()
    assert count == 1
    names = {row[0] for row in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "lorrygate_dead_letter" in names
    assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert store._conn.execute("SELECT count(*) FROM lorrygate_dead_letter").fetchone() == (0,)
    store._close()


def test_a_refusal_after_columns_went_in_at_once_leaves_the_schema_as_the_file_has_it(tmp_path):
    """Columns added at once (`ColumnAdder._write`) and then rolled back, with the transaction (a row the
    database refuses makes the write go entry by entry) or with an entry's savepoint: the connection kept them in
    its schema, though the file had them no more, so each entry written again that needed them failed with
    "duplicate column name", a dead letter each. A DDL template's UNIQUE (time) and one redelivered row did it to
    a whole fleet's new field."""
    template = ddl_template("CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, UNIQUE (time))", "sqlite")
    store = open_storage(tmp_path / "ddl.sqlite", ddl={"": template})
    store._commit(batch(*(entry(node(n), {"a": 1}) for n in range(6))))
    # five tables get b and c at once; node 5's row is one it has (its time): the transaction is rolled back
    store._commit(batch(*(entry(node(n), {"a": 2, "b": n, "c": 1}, NS + 1) for n in range(5)), entry(node(5), {"a": 1})))
    for n in range(5):
        assert store._conn.execute(f'SELECT a, b, c FROM "{physical(n)}" ORDER BY time').fetchall() == [
            (1, None, None), (2, n, 1)]
    # one entry's five new columns at once, rolled back to its savepoint (a value SQLite refuses); the next
    # entry of that table needs them
    refused = entry(node(0), {"d": 1, "e": 1, "f": 1, "g": 1, "h": "\ud800"}, NS + 2)
    store._commit(batch(entry(node(5), {"a": 1}), refused, entry(node(0), {"d": 2, "e": 2, "f": 2, "g": 2, "h": "x"},
                                                                 NS + 3)))
    assert store._conn.execute(f'SELECT d, e, f, g, h FROM "{physical(0)}" WHERE d IS NOT NULL').fetchall() == [
        (2, 2, 2, 2, "x")]
    errors = [row[0] for row in store._conn.execute("SELECT error FROM lorrygate_dead_letter ORDER BY id")]
    assert len(errors) == 3 and "duplicate column" not in " ".join(errors), errors
    assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store._close()

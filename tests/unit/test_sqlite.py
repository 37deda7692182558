"""SQLite storage: tables on first sample, a column per field, dead letters, bad rows isolated."""


import os
import sqlite3

import pytest
import pytest_twisted

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.sqlite import FEW_ROWS, SQLiteStorage

T1 = TableName("mqttkit_1_testdrive", "area_42_node_1_sensors")
NS = 1_717_243_200_123_456_789


@pytest.fixture
def storage(tmp_path):
    store = SQLiteStorage("db", str(tmp_path / "sub" / "test.sqlite"), reactor=None)
    store._connect()
    yield store
    store._close()


def batch(*entries, dead=()):
    result = Batch()
    for item in entries:
        result.add(item)
    for item in dead:
        result.add_dead_letter(item)
    return result


def entry(fields, table=T1, time=NS, topic="t"):
    return Entry(table, [Record(time, fields)], "main", Message(topic, b"{}", 1, False, 1.5, "#"), "json")


def rows(storage, sql):
    return storage._conn.execute(sql).fetchall()


def test_first_sample_creates_the_table(storage):
    """The first row creates <schema>__<table> with a time column and one column per field."""
    storage._commit(batch(entry({"temperature": 21.5, "count": 3, "name": "bme280", "ok": True})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    columns = [(row[1], row[2]) for row in rows(storage, f'PRAGMA table_info("{table}")')]
    assert columns == [("time", "TEXT"), ("temperature", "REAL"), ("count", "INTEGER"), ("name", ""), ("ok", "INTEGER")]
    assert rows(storage, f'SELECT * FROM "{table}"') == [("2024-06-01T12:00:00.123456789Z", 21.5, 3, "bme280", 1)]
    assert rows(storage, f"SELECT julianday(time) > 0 FROM \"{table}\"") == [(1,)]


def test_a_column_made_by_text_keeps_the_numbers_after_it_as_numbers(storage):
    """Home Assistant's statestream publishes ``unavailable`` until a sensor has a state: that first value made a
    TEXT column, whose affinity stored every reading after it as text ('100' < '20' in a WHERE, strings in a
    dashboard). A column made by text (or JSON) has no type: each value is stored as it is."""
    for value in ("unavailable", 21.5, 100, "unknown", 19):
        storage._commit(batch(entry({"value": value})))
    storage._commit(batch(entry({"value": 1, "fw": "1.10", "tags": ["a"]})))
    storage._commit(batch(entry({"value": 2, "fw": 2, "tags": 3})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT value, typeof(value) FROM "{table}" LIMIT 5') == [
        ("unavailable", "text"), (21.5, "real"), (100, "integer"), ("unknown", "text"), (19, "integer")]
    assert rows(storage, f'SELECT value FROM "{table}" WHERE typeof(value) != \'text\' AND value > 20') == [
        (21.5,), (100,)]
    # text stays text as it was written (no numeric affinity reads "1.10" as 1.1), and a later number a number
    assert rows(storage, f'SELECT fw, typeof(fw), tags, typeof(tags) FROM "{table}" WHERE fw IS NOT NULL') == [
        ("1.10", "text", '["a"]', "text"), (2, "integer", 3, "integer")]


def test_new_field_adds_a_column(storage):
    """A field seen for the first time adds a column; earlier rows read NULL there."""
    storage._commit(batch(entry({"a": 1})))
    storage._commit(batch(entry({"a": 2, "B": 3})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT a, b FROM "{table}" ORDER BY a') == [(1, None), (2, 3)]


def test_nested_objects_become_dotted_columns_and_lists_json(storage):
    """Nested objects flatten to dotted names; lists are stored as JSON text; huge ints as text."""
    storage._commit(batch(entry({"wifi": {"rssi": -60, "ap": {"ch": 6}}, "list": [1, "x"], "big": 2**70})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT "wifi.rssi", "wifi.ap.ch", list, big FROM "{table}"') == [
        (-60, 6, '[1, "x"]', str(2**70))
    ]


def test_flat_fields_and_a_user_decoders_non_text_keys(storage):
    """Flat fields go in as they are; keys that are not text (a user decoder's) are named as text, twice over."""
    storage._commit(batch(entry({"a": 1.5, "s": "x"}), entry({1: 2.5, "a": 3.0})))
    storage._commit(batch(entry({1: 4.5})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT a, s, "1" FROM "{table}" ORDER BY rowid') == [
        (1.5, "x", None), (3.0, None, 2.5), (None, None, 4.5)
    ]



def test_a_row_of_known_fields_with_an_object_or_tags_is_still_flattened(storage):
    """After a flat row, a row of the same field names whose value is an object, or that has tags, is not taken
    for one of the same shape: its object becomes dotted columns, its tags columns."""
    tagged = Entry(T1, [Record(NS, {"a": 4, "b": 5}, {"site": "x"})], "main", Message("t", b"{}", 1, False, 1.5, "#"),
                   "json")
    storage._commit(batch(entry({"a": 1, "b": 2}), entry({"a": 3, "b": {"c": 6}}), tagged, entry({"a": 7, "b": 8})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT a, b, "b.c", site FROM "{table}" ORDER BY a') == [
        (1, 2, None, None), (3, None, 6, None), (4, 5, None, "x"), (7, 8, None, None)
    ]

@pytest.mark.parametrize("count", [1, 2, 3, 1023, 1024, 1025, 2999])
def test_many_rows_of_one_shape_go_in_multi_row_statements_in_order(storage, count):
    """A batch's rows of one table go in multi-row INSERTs of power-of-two sizes: every row once, in order."""
    storage._commit(batch(*(entry({"seq": n, "v": n / 2}, time=NS + n) for n in range(count))))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT seq, v FROM "{table}" ORDER BY rowid') == [(n, n / 2) for n in range(count)]
    (plan,) = storage.dialect._statements.values()
    # few statements per shape, none over 64 rows (a prepared statement's memory grows with its rows)
    assert set(plan.statements) <= {1, 2, 4, 8, 16, 32, 64}


def test_values_the_module_cannot_bind_are_stored_as_text_within_a_statement(storage):
    """A list or a 70-bit integer among plain values of the same columns: stored as JSON or text; the INTEGER
    column's affinity makes the integer's text the nearest REAL (exact for 2**70; docs/storage.rst says so)."""
    values = [1, [1, 2], 2**70, 3, True, ["x"], 4]
    storage._commit(batch(*(entry({"v": value}, time=NS + n) for n, value in enumerate(values))))
    storage._commit(batch(entry({"v": 5})))  # the shape keeps converting, and plain values stay plain
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    stored = [row[0] for row in rows(storage, f'SELECT v FROM "{table}" ORDER BY rowid')]
    # the 70-bit integer goes in as text, which the INTEGER column's affinity reads as a number
    assert stored == [1, "[1, 2]", float(2**70), 3, 1, '["x"]', 4, 5]


@pytest.mark.parametrize("count, bad", [(3, 1), (3, 0), (3, 2), (10, 9), (10, 8), (10, 3)])
def test_a_value_the_module_cannot_bind_among_the_last_few_rows_is_stored_once(storage, count, bad):
    """The last rows of a group (fewer than FEW_ROWS) go in one step a row; when one of them cannot be bound,
    the rows before it are written already: they are not written again, and that row and the rest are."""
    storage._commit(batch(entry({"v": -1}, time=NS - 1)))  # an INTEGER column
    values = [[n] if n == bad else n for n in range(count)]
    storage._commit(batch(*(entry({"v": value}, time=NS + n) for n, value in enumerate(values))))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    stored = [row[0] for row in rows(storage, f'SELECT v FROM "{table}" ORDER BY rowid')]
    assert stored == [-1] + [f"[{n}]" if n == bad else n for n in range(count)]


def test_groups_of_few_rows_share_the_one_row_statement(storage):
    """A table that gets one, two, ... seven rows a commit keeps one prepared statement for them."""
    for count in range(1, FEW_ROWS):
        storage._commit(batch(*(entry({"v": n}, time=NS + 100 * count + n) for n in range(count))))
    (plan,) = storage.dialect._statements.values()
    assert set(plan.statements) == {1}
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT count(*) FROM "{table}"') == [(sum(range(1, FEW_ROWS)),)]


def test_dead_letters_keep_the_raw_message(storage):
    """A dead letter keeps topic, raw payload, stage and reason."""
    message = Message("a//b", b"\x00\xff raw", 1, True, 1_717_243_200.5, "#")
    storage._commit(batch(dead=[DeadLetter("main", message, "topology", "the gateway level is empty")]))
    assert rows(storage, "SELECT received, channel, topic, qos, retain, payload, stage, error FROM lorrygate_dead_letter") == [
        ("2024-06-01T12:00:00.500000000Z", "main", "a//b", 1, 1, b"\x00\xff raw", "topology", "the gateway level is empty")
    ]


def test_a_dead_letter_table_an_earlier_lorrygate_made_gets_the_columns_it_lacks(tmp_path):
    """The table as the first lorrygate made it (no decoder, replayed, content_type, headers or sent): a start
    adds them, and a dead letter keeps its message's MQTT 5 Content Type, its headers and the bus's time of
    it."""
    path = str(tmp_path / "old.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE lorrygate_dead_letter (id INTEGER PRIMARY KEY AUTOINCREMENT, received TEXT NOT "
                     "NULL, channel TEXT NOT NULL, topic TEXT NOT NULL, qos INTEGER, retain INTEGER, payload BLOB, "
                     "stage TEXT NOT NULL, error TEXT NOT NULL)")
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    try:
        typed = Message("a/b", b"\xa1", 1, False, 1.0, "#", content_type="application/cbor",
                        headers=(("k", "v"),), sent=1_717_243_200.5)
        store._commit(batch(dead=[DeadLetter("main", typed, "topology", "refused", "cbor")]))
        assert rows(store, "SELECT topic, decoder, replayed, content_type, headers, sent FROM lorrygate_dead_letter") \
            == [("a/b", "cbor", None, "application/cbor", '[["k","v"]]', "2024-06-01T12:00:00.500000000Z")]
    finally:
        store._close()


def test_a_row_the_database_refuses_goes_to_the_dead_letter_table(storage):
    """One bad row does not hold back the batch: it becomes a dead letter, the rest is stored."""
    storage._commit(batch(entry({"a": 1}), entry({"bad": "\ud800"}, topic="bad"), entry({"a": 2})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT a FROM "{table}" ORDER BY a') == [(1,), (2,)]
    ((topic, stage, error),) = rows(storage, "SELECT topic, stage, error FROM lorrygate_dead_letter")
    assert (topic, stage) == ("bad", "store")
    # (the driver's "surrogates not allowed" named no field and no fix)
    assert "field 'bad' holds a lone UTF-16 surrogate ('\\ud800')" in error and "decoder" in error, error


def test_bytes_in_a_list_are_base64_as_crate_and_the_sinks_have_them(storage):
    """A MessagePack list of bin values: its JSON text had Python's text of the bytes, ``"b'\\x01'"``. (A row's id
    is made as before, the id the version before made: the rows stored before keep theirs.)"""
    from lorrygate.storage.layout import row_id

    storage._commit(batch(entry({"l": [b"\x01\xff", 2], "o": {"k": [b"x"]}})))
    assert rows(storage, f'SELECT l, "o.k" FROM "{T1.schema}__{T1.table}"') == [('["Af8=", 2]', '["eA=="]')]
    assert row_id(T1, 1, {"l": [b"\x01"]}) == "8e4f42ad0527c9e09d08e6890b11f907"


def test_hostile_names_stay_identifiers(storage):
    """Table and field names with quotes and SQL stay single quoted identifiers."""
    evil = TableName('x"; DROP TABLE lorrygate_dead_letter; --', 'y')
    storage._commit(batch(entry({'f"; DELETE FROM x; --': 1}, table=evil)))
    names = {row[0] for row in rows(storage, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert 'x"; DROP TABLE lorrygate_dead_letter; --__y' in names and "lorrygate_dead_letter" in names


def test_columns_known_after_restart(storage, tmp_path):
    """A reopened database knows its columns and adds only new ones."""
    storage._commit(batch(entry({"a": 1})))
    storage._close()
    storage._columns.clear()
    storage._connect()
    storage._commit(batch(entry({"a": 2, "c": 3})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT a, c FROM "{table}" ORDER BY a') == [(1, None), (2, 3)]


def test_unusable_path_is_a_storage_error(tmp_path):
    """A database that cannot be opened raises StorageError naming the path."""
    (tmp_path / "file").write_text("")
    store = SQLiteStorage("db", str(tmp_path / "file" / "x.sqlite"), reactor=None)
    from lorrygate.errors import StorageError

    with pytest.raises(StorageError, match="cannot use SQLite database"):
        store._connect()


def test_wal_mode(storage):
    """The database runs in WAL mode."""
    assert rows(storage, "PRAGMA journal_mode") == [("wal",)]


def test_idempotent_rows_ignore_a_redelivered_message(tmp_path):
    """With idempotent rows, the same message committed twice is one row."""
    store = SQLiteStorage("db", str(tmp_path / "i.sqlite"), reactor=None, idempotent=True)
    store._connect()
    store._commit(batch(entry({"a": 1})))
    store._commit(batch(entry({"a": 1}), entry({"a": 2})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert sorted(r[0] for r in rows(store, f'SELECT a FROM "{table}"')) == [1, 2]
    store._close()


def test_custom_ddl_runs_before_the_default(tmp_path):
    """A DDL template creates the table its way; the writer adds field columns after."""
    from lorrygate.config.settings import ddl_template

    template = ddl_template('CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, note TEXT DEFAULT {qualified_text})', "sqlite")
    store = SQLiteStorage("db", str(tmp_path / "d.sqlite"), reactor=None, ddl={"": template})
    store._connect()
    store._commit(batch(entry({"a": 1})))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(store, f'SELECT a, note FROM "{table}"') == [(1, f'"{table}"')]
    store._close()


def test_refused_rows_count_as_dead_letters_not_as_committed(tmp_path):
    """Rows the database refuses entry by entry are counted as dead letters; a batch of only those marks the storage failing."""
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from lorrygate.config.settings import ddl_template
    from lorrygate.storage.batcher import Batcher

    ddl = {"": ddl_template("SELECT create_hypertable('{table}', 'time');", "sqlite")}
    store = SQLiteStorage("db", str(tmp_path / "ddl.sqlite"), reactor=None, ddl=ddl)
    store._connect()

    class InThisThread:
        name = "db"

        def write(self, batch):
            return succeed(store._commit(batch))

    batcher = Batcher(InThisThread(), Clock())
    batcher.add(entry({"x": 1.0}))
    batcher.add(entry({"x": 2.0}, table=TableName("s", "other")))
    batcher.flush()
    store._close()
    assert (batcher.stats.rows, batcher.stats.dead_letters) == (0, 2)
    assert "create_hypertable" in batcher.stats.failing


def test_a_deleted_database_file_is_not_written_into(storage, tmp_path):
    """A database file deleted while open fails the commit (nothing acknowledged); the next one reopens it."""
    import os

    from lorrygate.errors import StorageError

    storage._commit(batch(entry({"x": 1.0})))
    os.unlink(storage.dialect.path)
    with pytest.raises(StorageError, match="deleted or replaced while open"):
        storage._commit(batch(entry({"x": 2.0})))
    storage._commit(batch(entry({"x": 2.0})))
    assert rows(storage, 'SELECT x FROM "mqttkit_1_testdrive__area_42_node_1_sensors"') == [(2.0,)]


def test_the_database_file_is_private(storage):
    """The database file and its directory are created for the gateway's user only."""
    import os
    import stat

    assert stat.S_IMODE(os.stat(storage.dialect.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(storage.dialect.path)).st_mode) == 0o700


def test_a_commit_tells_how_many_tables_it_wrote(storage):
    """The batcher tells a wide write (a few rows into each of many tables) by what the storage reports."""
    tables = [TableName("mqttkit_1_testdrive", f"area_42_node_{n}_sensors") for n in range(3)]
    written = batch(*(entry({"v": n}, table=tables[n % 3], time=NS + n) for n in range(7)))
    storage._commit(written)
    assert written.tables == 3


def test_a_write_after_a_start_knows_the_tables_columns(storage):
    """The start leaves the columns to be read after it (`_connect(False)`): the first write reads them
    before it looks at a row, so a table at its column budget still gets no column beyond it."""
    storage.max_columns = 4  # time and id, and two fields
    storage._commit(batch(entry({"a": 1, "b": 2})))
    storage._close()
    storage._columns.clear()
    storage._connect(False)
    assert not storage._columns_read
    storage._commit(batch(entry({"c": 3}, time=NS + 1)))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    names = [row[1] for row in rows(storage, f'PRAGMA table_info("{table}")')]
    assert names == ["time", "a", "b", "extra_fields"]


def test_columns_that_cannot_be_read_fail_the_write_and_the_next_one_reads_them(storage, monkeypatch):
    """A failed read of the columns is a StorageError that says so (the batcher retries the batch)."""
    from lorrygate.errors import StorageError

    storage._commit(batch(entry({"a": 1})))
    storage._close()
    storage._connect(False)
    dialect = type(storage.dialect)
    real = dialect.existing_columns
    monkeypatch.setattr(dialect, "existing_columns", lambda self, conn: (_ for _ in ()).throw(
        __import__("sqlite3").OperationalError("disk I/O error")))
    with pytest.raises(StorageError, match="cannot read the tables of SQLite database .*disk I/O error"):
        storage._commit(batch(entry({"a": 2}, time=NS + 1)))
    monkeypatch.setattr(dialect, "existing_columns", real)
    storage._commit(batch(entry({"a": 2}, time=NS + 1)))
    table = "mqttkit_1_testdrive__area_42_node_1_sensors"
    assert rows(storage, f'SELECT a FROM "{table}" ORDER BY time') == [(1,), (2,)]


@pytest_twisted.inlineCallbacks
def test_a_start_returns_before_the_columns_are_read_and_a_failed_read_fails_only_a_write(tmp_path, monkeypatch):
    """`start` opens the database; the columns are read on the writer thread after it. When that read
    fails, the start has still succeeded and a write reads them again; when that fails too, the write
    fails saying why, and the next one works."""
    from twisted.internet import reactor

    from lorrygate.errors import StorageError
    from lorrygate.storage.sqlite import SQLiteDialect

    path = str(tmp_path / "db.sqlite")
    store = SQLiteStorage("db", path, reactor)
    store.max_columns = 4
    yield store.start()
    yield store.write(batch(entry({"a": 1, "b": 2})))
    yield store.stop()

    reads = []
    real = SQLiteDialect.existing_columns

    def existing_columns(self, conn):
        reads.append(1)
        if len(reads) <= 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, conn)

    monkeypatch.setattr(SQLiteDialect, "existing_columns", existing_columns)
    store = SQLiteStorage("db", path, reactor)
    store.max_columns = 4
    yield store.start()
    try:
        with pytest.raises(StorageError, match="cannot read the tables of SQLite database .*: disk I/O error"):
            yield store.write(batch(entry({"c": 3}, time=NS + 1)))
        yield store.write(batch(entry({"c": 3}, time=NS + 1)))
    finally:
        yield store.stop()
    assert len(reads) == 3
    with sqlite3.connect(path) as conn:
        table = "mqttkit_1_testdrive__area_42_node_1_sensors"
        assert [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')] == ["time", "a", "b", "extra_fields"]
        assert conn.execute(f'SELECT a, extra_fields FROM "{table}" ORDER BY time').fetchall() == [
            (1, None), (None, '{"c": 3}')]


def _big_rows(count, start=0):
    """Rows of ~2 KB each: a page or more apiece at the 2 KiB page size."""
    return batch(*(entry({"blob": "x" * 2000}, time=NS + n) for n in range(start, start + count)))


def test_a_commit_leaves_the_copy_of_the_wal_to_the_checkpoint_after_it(storage):
    """COMMIT only appends to the WAL; `SQLiteDialect.checkpoint` copies it into the database once
    `CHECKPOINT_PAGES` wait there, and not before."""
    from lorrygate.storage.sqlite import CHECKPOINT_PAGES

    path = storage.dialect.path
    storage._commit(_big_rows(10))
    assert storage.dialect.checkpoint(storage._conn) == 0  # a few pages: they wait in the WAL
    before = os.path.getsize(path)
    storage._commit(_big_rows(CHECKPOINT_PAGES, start=10))
    assert os.path.getsize(path) == before, "COMMIT copied the WAL into the database itself"
    copied = storage.dialect.checkpoint(storage._conn)
    assert copied >= CHECKPOINT_PAGES
    assert os.path.getsize(path) >= before + CHECKPOINT_PAGES * 2048
    assert storage.dialect.checkpoint(storage._conn) == 0  # nothing waits now
    assert rows(storage, 'SELECT count(*) FROM "mqttkit_1_testdrive__area_42_node_1_sensors"') == [
        (CHECKPOINT_PAGES + 10,)]


@pytest_twisted.inlineCallbacks
def test_a_write_is_followed_by_its_checkpoint_on_the_writer_thread(tmp_path):
    """`write` fires once the rows are committed; the checkpoint runs after it on the same thread, so
    the next job there finds the WAL copied, with the connection still open."""
    from twisted.internet import reactor

    from lorrygate.storage.sqlite import CHECKPOINT_PAGES

    path = str(tmp_path / "db.sqlite")
    store = SQLiteStorage("db", path, reactor)
    yield store.start()
    try:
        yield store.write(_big_rows(10))
        before = os.path.getsize(path)
        yield store.write(_big_rows(CHECKPOINT_PAGES, start=10))
        yield store._call(lambda: None)  # the writer thread's queue, up to the checkpoint
        assert os.path.exists(path + "-wal")
        assert os.path.getsize(path) >= before + CHECKPOINT_PAGES * 2048
    finally:
        yield store.stop()


@pytest_twisted.inlineCallbacks
def test_a_failing_checkpoint_is_said_once_and_fails_no_write(tmp_path, monkeypatch):
    """The rows are committed in the WAL either way: a checkpoint that fails is a warning, once for
    the same reason, and once more when it works again."""
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    from lorrygate.storage.sqlite import SQLiteDialect

    failing = [True]
    real = SQLiteDialect.checkpoint

    def checkpoint(self, conn):
        if failing[0]:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, conn)

    monkeypatch.setattr(SQLiteDialect, "checkpoint", checkpoint)
    events: list = []
    globalLogPublisher.addObserver(events.append)
    path = str(tmp_path / "db.sqlite")
    store = SQLiteStorage("db", path, reactor)
    yield store.start()
    try:
        for n in range(3):
            yield store.write(batch(entry({"a": n}, time=NS + n)))
        failing[0] = False
        yield store.write(batch(entry({"a": 3}, time=NS + 3)))
        yield store._call(lambda: None)
    finally:
        yield store.stop()
        globalLogPublisher.removeObserver(events.append)
    said = [e for e in events if e.get("log_namespace", "").endswith("SqlStorage")
            and e.get("log_level").name in ("warn", "info")]
    assert [e["log_level"].name for e in said] == ["warn", "info"]
    assert "disk I/O error" in said[0]["error"] and "rows are committed" in said[0]["log_format"]
    with sqlite3.connect(path) as conn:
        assert conn.execute('SELECT count(*) FROM "mqttkit_1_testdrive__area_42_node_1_sensors"').fetchone() == (4,)


def _database(path, *tables):
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for table in tables:
            conn.execute(f'CREATE TABLE "{table}" (time TEXT, "Temp" REAL, "Ünit" TEXT)')
    conn.close()


def test_a_start_adopts_the_tables_read_ahead(tmp_path, monkeypatch):
    """`read_ahead` reads the tables and columns while the gateway starts; the storage then takes
    that connection and those columns instead of reading them again."""
    from lorrygate.storage import sqlite_schema

    path = str(tmp_path / "db.sqlite")
    _database(path, "a__one", "a__two")
    reads = []
    real = sqlite_schema.read_columns
    monkeypatch.setattr(sqlite_schema, "read_columns", lambda conn: reads.append(1) or real(conn))
    sqlite_schema.read_ahead(path)
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    try:
        assert len(reads) == 1
        assert store._columns["a__one"] == store._columns["a__two"] == {"time": "time", "temp": "Temp", "Ünit": "Ünit"}
        assert sqlite_schema.take(path) is None  # taken once
        store._commit(batch(entry({"Temp": 1.5}, table=TableName("a", "one"))))
        assert rows(store, 'SELECT "Temp" FROM a__one') == [(1.5,)]
    finally:
        store._close()
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()  # nothing read ahead this time: the storage reads itself
    store._close()
    assert len(reads) == 2


def test_a_read_ahead_only_reads_and_a_file_replaced_after_it_is_read_anew(tmp_path):
    """The read ahead changes nothing in the file; when the file is replaced before the storage
    starts, the storage opens the new one and reads its tables."""
    from lorrygate.storage import sqlite_schema

    path, other = str(tmp_path / "db.sqlite"), str(tmp_path / "other.sqlite")
    _database(path, "a__old")
    _database(other, "a__new")
    with open(path, "rb") as file:
        before = file.read()
    sqlite_schema.read_ahead(path)
    sqlite_schema._ahead[os.path.abspath(path)].thread.join()
    with open(path, "rb") as file:
        assert file.read() == before
    os.replace(other, path)
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    try:
        assert "a__new" in store._columns and "a__old" not in store._columns
    finally:
        store._close()


def test_a_read_ahead_of_a_broken_file_leaves_the_error_to_the_start(tmp_path):
    from lorrygate.errors import StorageError
    from lorrygate.storage import sqlite_schema

    path = str(tmp_path / "db.sqlite")
    with open(path, "wb") as file:
        file.write(b"not a database, but a text file of some length" * 100)
    sqlite_schema.read_ahead(path)
    sqlite_schema.read_ahead(str(tmp_path / "missing.sqlite"))  # nothing to read: nothing done
    assert sqlite_schema.take(str(tmp_path / "missing.sqlite")) is None
    os.mkfifo(tmp_path / "fifo.sqlite")
    os.mkdir(tmp_path / "directory.sqlite")
    for odd in ("fifo.sqlite", "directory.sqlite"):  # neither blocks nor is adopted
        sqlite_schema.read_ahead(str(tmp_path / odd))
        assert sqlite_schema.take(str(tmp_path / odd)) is None
    store = SQLiteStorage("db", path, reactor=None)
    with pytest.raises(StorageError, match="cannot use SQLite database .*: file is not a database"):
        store._connect()


def test_the_columns_are_read_without_sqlites_json_functions_too(tmp_path):
    """An SQLite built without its JSON functions: the columns come as rows instead."""
    from lorrygate.storage import sqlite_schema

    path = str(tmp_path / "db.sqlite")
    _database(path, "a__one")

    class WithoutJson:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql):
            if "json_group_object" in sql:
                raise sqlite3.OperationalError("no such function: json_group_object")
            return self.conn.execute(sql)

    conn = sqlite3.connect(path)
    try:
        assert sqlite_schema.read_columns(WithoutJson(conn)) == sqlite_schema.read_columns(conn) == {
            "a__one": {"time": "time", "temp": "Temp", "Ünit": "Ünit"}}
    finally:
        conn.close()


def test_the_wal_index_is_read_through_one_descriptor_kept_while_its_file_lives(tmp_path):
    """Closing a descriptor of the -shm file would drop SQLite's POSIX locks on it: one descriptor per
    file stays open, and is closed only once SQLite deleted that file (its last connection closed)."""
    from lorrygate.storage import sqlite_wal

    path = str(tmp_path / "db.sqlite")
    counts = []
    for n in range(3):
        store = SQLiteStorage("db", path, reactor=None)
        store._connect()
        store._commit(batch(entry({"a": n}, time=NS + n)))
        assert store.dialect.checkpoint(store._conn) == 0  # a page or two wait: no checkpoint
        assert sqlite_wal.waiting_pages(path) > 0
        shm = os.stat(path + "-shm")
        assert any(os.fstat(fd).st_ino == shm.st_ino for fd in sqlite_wal._open.values())
        counts.append(sqlite_wal.open_descriptors())
        store._close()
        assert not os.path.exists(path + "-shm")  # SQLite deleted it with the last connection
    assert counts[1] == counts[2] <= counts[0]  # the deleted files' descriptors were closed, not kept


def test_a_wal_index_of_another_format_leaves_checkpoints_to_sqlite(storage, monkeypatch):
    from lorrygate.storage import sqlite_wal

    monkeypatch.setattr(sqlite_wal, "WAL_INDEX_VERSION", 1)
    storage._commit(batch(entry({"a": 1})))
    assert storage.dialect.checkpoint(storage._conn) == 0
    assert rows(storage, "PRAGMA wal_autocheckpoint") == [(1000,)]


def test_a_wal_index_that_is_no_file_is_not_read(tmp_path):
    """A FIFO where the -shm file belongs neither blocks the writer thread nor is read as a WAL index."""
    from lorrygate.storage import sqlite_wal

    path = str(tmp_path / "db.sqlite")
    os.mkfifo(path + "-shm")
    assert sqlite_wal.waiting_pages(path) is None
    os.unlink(path + "-shm")
    os.mkdir(path + "-shm")
    assert sqlite_wal.waiting_pages(path) is None


def test_a_second_descriptor_of_a_wal_index_in_use_is_kept_open(storage, monkeypatch):
    """Should a stat and the open after it disagree (the file replaced in between by one already
    open here), the second descriptor is kept too: closing it would drop SQLite's locks on that file."""
    from lorrygate.storage import sqlite_wal

    storage._commit(batch(entry({"a": 1})))
    path = storage.dialect.path
    sqlite_wal.waiting_pages(path)
    first = sqlite_wal._descriptor(path + "-shm")
    real = os.stat

    class Other:
        st_dev, st_ino = -1, -1

    monkeypatch.setattr(sqlite_wal.os, "stat", lambda p, *a, **k: Other() if p.endswith("-shm") else real(p, *a, **k))
    assert sqlite_wal._descriptor(path + "-shm") == first
    monkeypatch.setattr(sqlite_wal.os, "stat", real)
    spare = sqlite_wal._spare[-1]
    assert os.fstat(spare).st_ino == os.fstat(first).st_ino  # still open


def test_max_tables_keeps_a_runaway_topic_from_making_a_table_a_message(storage):
    """A publisher that puts a counter or a time into a topic level makes a table a message; each costs the
    gateway memory for good (~4 KB, also after a restart), until it runs out. Beyond ``max_tables`` a new table
    is not made: its messages are dead letters that say so and how to go on; known tables keep their rows."""
    storage._commit(batch(entry({"v": 8})))
    storage.max_tables = len(storage._columns) + 3
    first = batch(*[entry({"v": n}, table=TableName("runaway", f"node_{n}_sensors"), topic=f"t/{n}") for n in range(5)],
                  entry({"v": 9}))
    storage._commit(first)
    assert [d.message.topic for d in first.extra_dead] == ["t/3", "t/4"]
    error = first.extra_dead[0].error
    assert f"storage db holds {storage.max_tables} tables, its max_tables: runaway__node_3_sensors" in error, error
    assert "raise max_tables in [storage:db]" in error and "lorrygate dead-letters replay --stage store" in error
    names = {row[0] for row in rows(storage, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {f"runaway__node_{n}_sensors" for n in range(3)} <= names and "runaway__node_3_sensors" not in names
    assert rows(storage, 'SELECT v FROM "mqttkit_1_testdrive__area_42_node_1_sensors"') == [(8,), (9,)]
    later = batch(entry({"v": 10}, table=TableName("runaway", "node_0_sensors")), entry({"v": 11, "new": 1}))
    storage._commit(later)  # known tables: rows and new columns as ever
    assert later.extra_dead == []
    storage.max_tables = 0  # no limit
    again = batch(entry({"v": 3}, table=TableName("runaway", "node_3_sensors")))
    storage._commit(again)
    assert again.extra_dead == [] and rows(storage, 'SELECT v FROM "runaway__node_3_sensors"') == [(3,)]


def test_a_write_lock_held_by_another_connection_is_named_in_the_error(storage, tmp_path):
    """A sqlite3 shell left in a transaction (or a backup) holds the file's write lock: the write fails after the
    busy timeout and is retried from the spool; the error said only "database is locked"."""
    from lorrygate.errors import StorageError

    storage._commit(batch(entry({"v": 1})))
    storage._conn.execute("PRAGMA busy_timeout = 50")  # (the storage's own: 5 s)
    other = sqlite3.connect(storage.dialect.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError) as info:
            storage._commit(batch(entry({"v": 2})))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "database is locked" in str(info.value)
    assert "another connection holds the file's write lock" in str(info.value), str(info.value)
    storage._commit(batch(entry({"v": 3})))  # once it lets go
    assert rows(storage, 'SELECT v FROM "mqttkit_1_testdrive__area_42_node_1_sensors"') == [(1,), (3,)]


def test_a_full_disk_a_read_only_file_and_a_damaged_file_say_what_to_do(tmp_path):
    """SQLite's own messages name neither the file nor a remedy: the storage's do, from SQLite's result codes."""
    import sqlite3

    from lorrygate.storage.sqlite import SQLiteDialect

    full = tmp_path / "full.sqlite"
    conn = sqlite3.connect(full)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")  # (the database cannot grow: SQLITE_FULL, as on a full disk)
    with pytest.raises(sqlite3.OperationalError) as filled:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    conn.close()
    said = SQLiteDialect(str(full)).unwell(filled.value)
    assert said.startswith("database or disk is full (the disk of ") and "free some room there" in said

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database " * 1000)
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(junk).execute("SELECT * FROM sqlite_master").fetchall()
    said = SQLiteDialect(str(junk)).unusable(damaged.value)
    assert said.startswith(f"file is not a database ({junk} is damaged or no SQLite database: with lorrygate "
                           "stopped, move it and its -wal and -shm files aside")
    assert SQLiteDialect(str(junk)).unwell(damaged.value).endswith("; the writes wait in the spool meanwhile")


def test_a_database_that_cannot_be_used_at_the_start_passes_for_a_full_disk_or_a_lock_not_a_damaged_file(tmp_path):
    """The gateway starts anyway (its batches wait) for a state that passes: a full disk, a lock another program
    holds; a damaged file is for someone to fix and stops the start, as before."""
    import sqlite3

    from lorrygate.errors import StorageError
    from lorrygate.storage.sqlite import SQLiteDialect

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database " * 1000)
    with pytest.raises(StorageError) as damaged:
        SQLiteStorage("db", str(junk), reactor=None)._connect()
    assert damaged.value.passing is False

    full = tmp_path / "full.sqlite"
    conn = sqlite3.connect(full)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as filled:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    other = sqlite3.connect(full, timeout=0, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN EXCLUSIVE")
    conn.rollback()
    conn.close()
    other.close()
    assert SQLiteDialect(str(full)).passing(filled.value) and SQLiteDialect(str(full)).passing(locked.value)


def test_a_field_name_keeps_its_column_across_messages_when_another_differs_only_in_case(tmp_path):
    """SQLite compares column names without ASCII case, so ``temp`` beside ``Temp`` in one message gets
    ``temp_2``. A later message with ``temp`` alone went into ``Temp`` (the name SQLite matched), so that one
    field's values were split over two columns and another field's column got them: each exact name keeps its
    one column now, after a restart too, as in PostgreSQL."""
    path = str(tmp_path / "case.sqlite")
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    store._commit(batch(entry({"Temp": 1, "temp": 2}, time=NS + 1)))
    store._commit(batch(entry({"temp": 3}, time=NS + 2)))
    store._commit(batch(entry({"TEMP": 4, "Temp": 5}, time=NS + 3), entry({"temp": 6}, time=NS + 4)))
    store._close()
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()  # what the file has, read anew
    try:
        store._commit(batch(entry({"temp": 7, "TEMP": 8}, time=NS + 5)))
        store._commit(batch(entry({"tEMP": 9, "Temp": 10}, time=NS + 6)))
        table = "mqttkit_1_testdrive__area_42_node_1_sensors"
        columns = [row[1] for row in rows(store, f'PRAGMA table_info("{table}")')]
        assert columns == ["time", "Temp", "temp_2", "TEMP_3", "tEMP_4"]
        assert rows(store, f'SELECT "Temp", "temp_2", "TEMP_3", "tEMP_4" FROM "{table}" ORDER BY time') == [
            (1, 2, None, None), (None, 3, None, None), (5, None, 4, None), (None, 6, None, None),
            (None, 7, 8, None), (10, None, None, 9)]
    finally:
        store._close()


def test_tables_whose_names_differ_only_in_case_stay_apart_across_a_restart(tmp_path):
    """A drop-in strategy may name ``Lab/Probe`` and ``lab/probe`` (the built-in ones lower-case their names).
    SQLite compares table names without ASCII case, so the rows of both went into the first one's table, as if of
    one address. Each name gets a table of its own now (``lab__probe_2``), in one batch, in later ones, with the
    time index, and after a restart, as PostgreSQL keeps them apart."""
    path = str(tmp_path / "tables.sqlite")
    upper, lower, other = TableName("Lab", "Probe"), TableName("lab", "probe"), TableName("LAB", "probe")
    store = SQLiteStorage("db", path, reactor=None)
    store.time_index = True
    store._connect()
    store._commit(batch(entry({"temp": 1}, table=upper, time=NS + 1), entry({"temp": 2}, table=lower, time=NS + 2)))
    store._commit(batch(entry({"temp": 3, "rh": 30}, table=lower, time=NS + 3)))
    store._close()
    store = SQLiteStorage("db", path, reactor=None)
    store.time_index = True
    store._connect()  # what the file has, read anew; the other order of first rows
    try:
        store._commit(batch(entry({"temp": 4}, table=lower, time=NS + 4), entry({"temp": 5}, table=other, time=NS + 5),
                            entry({"temp": 6, "rh": 60}, table=upper, time=NS + 6)))
        tables = [name for name, in rows(store, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE "
                                                "'lab%' ORDER BY rowid")]
        assert tables == ["Lab__Probe", "lab__probe_2", "LAB__probe_3"]
        assert rows(store, 'SELECT time, temp, rh FROM "Lab__Probe" ORDER BY time') == [
            ("2024-06-01T12:00:00.123456790Z", 1, None), ("2024-06-01T12:00:00.123456795Z", 6, 60)]
        assert rows(store, 'SELECT temp, rh FROM "lab__probe_2" ORDER BY time') == [(2, None), (3, 30), (4, None)]
        assert rows(store, 'SELECT temp FROM "LAB__probe_3"') == [(5,)]
        indexes = {name for name, in rows(store, "SELECT tbl_name FROM sqlite_master WHERE type = 'index'")}
        assert {"Lab__Probe", "lab__probe_2", "LAB__probe_3"} <= indexes
    finally:
        store._close()


def test_a_ddl_template_makes_the_table_of_its_own_name_where_another_case_of_it_is_a_table(tmp_path):
    from lorrygate.config.settings import ddl_template

    template = ddl_template("CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, site TEXT DEFAULT 'x')",
                            "sqlite")
    store = SQLiteStorage("db", str(tmp_path / "ddl.sqlite"), reactor=None, ddl={"": template})
    store._connect()
    try:
        store._commit(batch(entry({"temp": 1}, table=TableName("Lab", "Probe"))))
        store._commit(batch(entry({"temp": 2}, table=TableName("lab", "probe"))))
        assert rows(store, 'SELECT temp, site FROM "Lab__Probe"') == [(1, "x")]
        assert rows(store, 'SELECT temp, site FROM "lab__probe_2"') == [(2, "x")]
    finally:
        store._close()


def test_the_export_grafana_and_describe_read_the_table_of_its_own_name(tmp_path):
    """What reads a table by its address finds the one the storage wrote (`sqlite_schema.own_name`), not the table
    of another case of the name that SQLite would take for it."""
    import types

    from lorrygate.hooks.grafana import column_query, sqlite_table
    from lorrygate.pipeline.describe import _physical
    from lorrygate.sources.export import _SQLiteReader

    path = str(tmp_path / "read.sqlite")
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    try:
        store._commit(batch(entry({"temp": 1}, table=TableName("Lab", "Probe")),
                            entry({"temp": 2}, table=TableName("lab", "probe"))))
    finally:
        store._close()
    reader = _SQLiteReader(types.SimpleNamespace(path=path))
    conn = reader.connect()
    try:
        assert reader.relation(conn, TableName("lab", "probe")) == ('"lab__probe_2"', True)
        assert reader.relation(conn, TableName("Lab", "Probe")) == ('"Lab__Probe"', True)
        assert reader.relation(conn, TableName("LAB", "PROBE")) == ('"LAB__PROBE_3"', False)  # not written yet
        assert reader.relation(conn, TableName("lab", "other")) == ('"lab__other"', False)
        query = column_query("sqlite", TableName("lab", "probe"), "temp", None,
                             sqlite_table(path, TableName("lab", "probe")))
        assert "lab__probe_2" in query
        assert [value for _, value in conn.execute(
            query.replace("$__unixEpochFrom()", "0").replace("$__unixEpochTo()", "4e9"))] == [2]
    finally:
        conn.close()
    storage = types.SimpleNamespace(kind="sqlite", path=path)
    assert _physical(storage, TableName("lab", "probe")) == "lab__probe_2"
    assert _physical(storage, TableName("Lab", "Probe")) == "Lab__Probe"
    assert _physical(types.SimpleNamespace(kind="sqlite", path=str(tmp_path / "none.sqlite")),
                     TableName("lab", "probe")) == "lab__probe"
    assert not os.path.exists(tmp_path / "none.sqlite")  # (describe makes no file)


def test_the_export_reads_a_database_whose_path_has_a_hash_or_a_question_mark(tmp_path):
    """``file:PATH?mode=ro`` cut such a path at that character: the export opened (and so made) another file,
    read-write, and answered "no data yet"."""
    import types

    from lorrygate.sources.export import _SQLiteReader

    folder = tmp_path / "site#1?b"
    folder.mkdir()
    path = str(folder / "db.sqlite")
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    try:
        store._commit(batch(entry({"temp": 1})))
    finally:
        store._close()
    reader = _SQLiteReader(types.SimpleNamespace(path=path))
    conn = reader.connect()
    try:
        relation, exists = reader.relation(conn, T1)
        assert exists and conn.execute(f"SELECT temp FROM {relation}").fetchall() == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE x (a)")
    finally:
        conn.close()
    assert sorted(os.listdir(tmp_path)) == ["site#1?b"]

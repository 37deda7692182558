"""``merge``: the rows of a table with the same tags in one time bucket are one row (SQLite)."""

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.sqlite import SQLiteStorage

T1 = TableName("solar", "inverter_1_sensors")
TABLE = "solar__inverter_1_sensors"
#: 2024-06-01T12:00:00Z, and a nanosecond time 3.25 s into its 10-second bucket
BUCKET = 1_717_243_200_000_000_000
NS = BUCKET + 3_250_000_000
SECOND = 1_000_000_000


def batch(*entries):
    result = Batch()
    for item in entries:
        result.add(item)
    return result


def entry(fields, time=NS, tags=None, table=T1, topic="solar/1/0/power"):
    return Entry(table, [Record(time, fields, tags)], "main", Message(topic, b"1", 1, False, 1.5, "#"), "value")


def merged(tmp_path, seconds=10.0, **options):
    store = SQLiteStorage("db", str(tmp_path / "m.sqlite"), reactor=None, merge=seconds, **options)
    store._connect()
    return store


def rows(store, sql):
    return store._conn.execute(sql).fetchall()


def test_values_of_a_bucket_are_one_row_at_its_start(tmp_path):
    """A device that publishes a topic a value (OpenDTU, ESPHome): its values of a bucket, in one batch or in
    several, are one row at the bucket's start, not a row a value."""
    store = merged(tmp_path)
    store._commit(batch(entry({"power": 230.5}), entry({"voltage": 231.0}, time=NS + SECOND)))
    store._commit(batch(entry({"current": 1.0}, time=NS + 2 * SECOND)))
    store._commit(batch(entry({"power": 240.0}, time=BUCKET + 11 * SECOND)))  # the next bucket
    assert rows(store, f'SELECT time, power, voltage, current FROM "{TABLE}" ORDER BY time') == [
        ("2024-06-01T12:00:00.000000000Z", 230.5, 231.0, 1.0), ("2024-06-01T12:00:10.000000000Z", 240.0, None, None)]
    store._close()


def test_a_later_value_replaces_an_earlier_and_a_missing_one_keeps_its_value(tmp_path):
    """Within a batch (rows of one statement) and across batches: the later value of a column wins; a column a
    message lacks keeps what the row has."""
    store = merged(tmp_path)
    store._commit(batch(entry({"power": 1.0, "yield": 5}), entry({"power": 2.0}, time=NS + 1)))
    assert rows(store, f'SELECT power, yield FROM "{TABLE}"') == [(2.0, 5)]
    store._commit(batch(entry({"power": 3.0})))
    assert rows(store, f'SELECT power, yield FROM "{TABLE}"') == [(3.0, 5)]
    store._close()


def test_rows_of_other_tags_or_tables_stay_apart(tmp_path):
    """The key is the table and the tags: a channel of an inverter (a tag) is a row of its own, and so is
    another inverter's table."""
    store = merged(tmp_path)
    other = TableName("solar", "inverter_2_sensors")
    store._commit(batch(entry({"power": 1.0}, tags={"channel": "1"}), entry({"power": 2.0}, tags={"channel": "2"}),
                        entry({"voltage": 30.0}, tags={"channel": "1"}), entry({"power": 9.0}, table=other)))
    assert rows(store, f'SELECT channel, power, voltage FROM "{TABLE}" ORDER BY channel') == [
        ("1", 1.0, 30.0), ("2", 2.0, None)]
    assert rows(store, 'SELECT power FROM "solar__inverter_2_sensors"') == [(9.0,)]
    store._close()


def test_a_redelivered_message_changes_nothing(tmp_path):
    """A message delivered twice (a lost PUBACK, a replay) merges into its row again: one row, the same values."""
    store = merged(tmp_path)
    store._commit(batch(entry({"power": 1.0}), entry({"voltage": 2.0})))
    store._commit(batch(entry({"power": 1.0})))
    assert rows(store, f'SELECT power, voltage FROM "{TABLE}"') == [(1.0, 2.0)]
    store._close()


def test_a_table_made_before_merge_gets_the_key_and_keeps_its_rows(tmp_path):
    """A table an earlier run made (a row a record, no key) gets a unique index on (time, lorrygate_id) at its
    first merged write; its rows stay as they are, and the new ones merge."""
    path = str(tmp_path / "m.sqlite")
    plain = SQLiteStorage("db", path, reactor=None)
    plain._connect()
    plain._commit(batch(entry({"power": 1.0}), entry({"voltage": 2.0})))
    plain._close()
    store = merged(tmp_path)
    store._commit(batch(entry({"power": 3.0}), entry({"voltage": 4.0})))
    store._commit(batch(entry({"current": 5.0})))
    assert sorted(rows(store, f'SELECT power, voltage, current, lorrygate_id IS NULL FROM "{TABLE}"'),
                  key=repr) == [(1.0, None, None, 1), (3.0, 4.0, 5.0, 0), (None, 2.0, None, 1)]
    indexes = [row[1] for row in rows(store, f'PRAGMA index_list("{TABLE}")') if row[2]]
    assert indexes == [f"{TABLE}:merge"]
    store._close()
    again = merged(tmp_path)  # (a restart: the key is found, not made twice)
    again._commit(batch(entry({"current": 6.0})))
    assert [row[1] for row in rows(again, f'PRAGMA index_list("{TABLE}")') if row[2]] == [f"{TABLE}:merge"]
    assert rows(again, f'SELECT current FROM "{TABLE}" WHERE lorrygate_id IS NOT NULL') == [(6.0,)]
    again._close()


def test_a_new_table_has_the_key_as_its_primary_key(tmp_path):
    """A table made with merge on has the primary key (time, lorrygate_id), as an idempotent one: no second index."""
    store = merged(tmp_path)
    store._commit(batch(entry({"power": 1.0})))
    store._commit(batch(entry({"power": 2.0})))
    assert [(row[1], row[3]) for row in rows(store, f'PRAGMA index_list("{TABLE}")')] == [
        (f"sqlite_autoindex_{TABLE}_1", "pk")]
    assert rows(store, f'SELECT count(*), max(power) FROM "{TABLE}"') == [(1, 2.0)]
    store._close()


def test_a_refused_entry_is_a_dead_letter_and_the_rest_merges(tmp_path):
    """An entry the database refuses (here a template's CHECK) is a dead letter; the rest of the batch merges."""
    from lorrygate.config.settings import ddl_template

    template = ddl_template("CREATE TABLE IF NOT EXISTS {qualified} (time TEXT NOT NULL, power REAL CHECK (power >= 0))",
                            "sqlite")
    store = merged(tmp_path, ddl={"": template})
    store._commit(batch(entry({"power": 1.0}), entry({"power": -5.0}, time=NS + 1), entry({"voltage": 2.0})))
    assert rows(store, f'SELECT power, voltage FROM "{TABLE}"') == [(1.0, 2.0)]
    assert [r[0] for r in rows(store, "SELECT error FROM lorrygate_dead_letter")] == [
        "IntegrityError: CHECK constraint failed: power >= 0"]
    store._close()


def test_merged_rows_and_idempotent_ones_share_the_key_column(tmp_path):
    """With idempotent = true too, rows still merge (the merge key is what makes a redelivery one row)."""
    store = merged(tmp_path, idempotent=True)
    store._commit(batch(entry({"power": 1.0}), entry({"voltage": 2.0})))
    assert rows(store, f'SELECT power, voltage FROM "{TABLE}"') == [(1.0, 2.0)]
    store._close()


def test_a_bucket_of_a_minute(tmp_path):
    """Buckets are of the storage's length, counted from the epoch (a minute starts at :00)."""
    store = merged(tmp_path, seconds=60.0)
    store._commit(batch(entry({"a": 1}, time=BUCKET + 59 * SECOND), entry({"b": 2}, time=BUCKET + 61 * SECOND)))
    assert rows(store, f'SELECT time, a, b FROM "{TABLE}" ORDER BY time') == [
        ("2024-06-01T12:00:00.000000000Z", 1, None), ("2024-06-01T12:01:00.000000000Z", None, 2)]
    store._close()


def test_the_last_message_of_a_batch_wins_whatever_the_columns_of_the_others(tmp_path):
    """Rows of other columns go in other statements: a batch's messages of one key are merged before they are
    written, so that the last value of a column wins even when a message between had fewer columns; objects are
    merged key by key, as their dotted columns are."""
    store = merged(tmp_path)
    store._commit(batch(entry({"power": 1.0, "voltage": 1.0}), entry({"power": 2.0}),
                        entry({"power": 3.0, "voltage": 3.0})))
    assert rows(store, f'SELECT power, voltage FROM "{TABLE}"') == [(3.0, 3.0)]
    store._commit(batch(entry({"wifi": {"rssi": -60}, "power": 4.0}), entry({"wifi": {"ch": 6}, "power": None})))
    assert rows(store, f'SELECT power, voltage, "wifi.rssi", "wifi.ch" FROM "{TABLE}"') == [(4.0, 3.0, -60, 6)]
    store._close()


def test_tags_a_decoder_of_your_own_made_lists_merge_too(tmp_path):
    """A tag that is not text (a list, from a decoder of your own) is part of the key all the same."""
    store = merged(tmp_path)
    store._commit(batch(entry({"a": 1}, tags={"ids": ["x", "y"]}), entry({"b": 2}, tags={"ids": ["x", "y"]}),
                        entry({"a": 3}, tags={"ids": ["z"]})))
    store._commit(batch(entry({"c": 4}, tags={"ids": ["x", "y"]})))
    assert rows(store, f'SELECT ids, a, b, c FROM "{TABLE}" ORDER BY ids') == [
        ('["x", "y"]', 1, 2, 4), ('["z"]', 3, None, None)]
    store._close()


def test_tags_equal_only_across_types_are_rows_of_their_own_in_any_order(tmp_path):
    """Tags 1, 1.0 and true compare equal in Python but are other keys to the database (the row's key is the
    tags' JSON): they stay apart whether they come in one batch or in several, in any order, and a row's key is
    the one its own tags make (not the key of equal tags seen before)."""
    from lorrygate.storage.layout import merge_id

    for order in ([1, True, 1.0], [True, 1.0, 1], [1.0, 1, True]):
        for together in (True, False):
            path = tmp_path / f"{order}{together}"
            path.mkdir()
            store = merged(path)
            entries = [entry({"power": float(n)}, tags={"channel": tag}) for n, tag in enumerate(order)]
            for part in ([entries] if together else [[one] for one in entries]):
                store._commit(batch(*part))
            ids = {row[0]: row[1] for row in rows(store, f'SELECT power, lorrygate_id FROM "{TABLE}"')}
            assert ids == {float(n): merge_id(T1, {"channel": tag}) for n, tag in enumerate(order)}, (order, together)
            store._close()


def on(channel, table, fields, time=NS):
    return Entry(table, [Record(time, fields)], channel, Message("t", b"1", 1, False, 1.5, "#"), "value")


def test_a_channels_own_merge_leaves_the_other_channels_rows_alone(tmp_path):
    """``merge`` of a channel: that channel's rows merge (its tables made with the key), while a channel of
    devices that send whole rows more often than the bucket keeps a row a message in the same storage (its
    tables without the key, with their time index)."""
    store = SQLiteStorage("db", str(tmp_path / "m.sqlite"), reactor=None)
    store.time_index, store.merges = True, {"dtu": 10 * SECOND}
    store._connect()
    rooms = TableName("home", "room_1_sensors")
    store._commit(batch(on("dtu", T1, {"power": 1.0}), on("main", rooms, {"t": 20.5}),
                        on("dtu", T1, {"voltage": 2.0}, NS + SECOND), on("main", rooms, {"t": 20.6}, NS + SECOND)))
    store._commit(batch(on("dtu", T1, {"current": 3.0}, NS + 2 * SECOND), on("main", rooms, {"t": 20.7}, NS + 2)))
    assert rows(store, f'SELECT power, voltage, current FROM "{TABLE}"') == [(1.0, 2.0, 3.0)]
    assert rows(store, 'SELECT t FROM "home__room_1_sensors" ORDER BY time') == [(20.5,), (20.7,), (20.6,)]
    assert [row[3] for row in rows(store, f'PRAGMA index_list("{TABLE}")')] == ["pk"]
    assert [(row[1], row[3]) for row in rows(store, 'PRAGMA index_list("home__room_1_sensors")')] == [
        ("home__room_1_sensors:time", "c")]
    store._close()


def test_a_channels_merge_of_0_turns_the_storages_off_for_it(tmp_path):
    """The storage merges, one channel does not (``merge = 0`` in its section): a row a message there."""
    store = merged(tmp_path)
    store.merges = {"main": 0}
    rooms = TableName("home", "room_1_sensors")
    store._commit(batch(on("dtu", T1, {"power": 1.0}), on("dtu", T1, {"voltage": 2.0}),
                        on("main", rooms, {"t": 20.5}), on("main", rooms, {"t": 20.6}, NS + 1)))
    assert rows(store, f'SELECT power, voltage FROM "{TABLE}"') == [(1.0, 2.0)]
    assert rows(store, 'SELECT count(*) FROM "home__room_1_sensors"') == [(2,)]
    store._close()


def test_a_keyed_table_keeps_taking_rows_after_merge_or_idempotent_is_turned_off(tmp_path):
    """A table made with the key (merge or idempotent on) has a NOT NULL lorrygate_id: once the setting is off (or
    another channel writes to it), its rows get an id of their content as idempotent ones do; they were each a
    dead letter (NOT NULL constraint failed)."""
    path = str(tmp_path / "m.sqlite")
    for options in ({"merge": 10.0}, {"idempotent": True}):
        first = SQLiteStorage("db", path, reactor=None, **options)
        first._connect()
        table = TableName("solar", f"inverter_{len(options)}_{next(iter(options))}_sensors")
        first._commit(batch(entry({"power": 1.0}, table=table)))
        first._close()
        store = SQLiteStorage("db", path, reactor=None)
        store._connect()
        done = batch(entry({"power": 2.0}, table=table, time=NS + 1), entry({"power": 2.0}, table=table, time=NS + 1),
                     entry({"voltage": 3.0}, table=table, time=NS + 2))
        store._commit(done)
        assert done.extra_dead == []
        assert store._conn.execute(f'SELECT count(*), count(lorrygate_id) FROM "solar__{table.table}"').fetchall() == [
            (3, 3)]
        store._close()


def test_the_records_of_one_message_merge_in_their_order(tmp_path):
    """One message of several records of a bucket (a JSON list of readings): merged as messages are, the last value
    of a column wins."""
    store = merged(tmp_path)
    records = [Record(NS, {"power": 1.0, "voltage": 1.0}), Record(NS + 1, {"power": 2.0}),
               Record(NS + 2, {"power": 3.0, "voltage": 3.0})]
    store._commit(batch(Entry(T1, records, "main", Message("t", b"[]", 1, False, 1.5, "#"), "json")))
    assert rows(store, f'SELECT power, voltage FROM "{TABLE}"') == [(3.0, 3.0)]
    store._close()


def test_the_status_says_the_storages_merge_and_its_channels_own(tmp_path):
    """``lorrygate status`` shows the buckets a storage merges by, and the channels' own; nothing without merge."""
    from lorrygate.control_client import render_status

    def status(store):
        return render_status({"config": "gw.ini", "sources": [], "channels": [], "storages": [{
            "name": "db", "kind": "sqlite", "pending": 0, "rows": 5, "dead_letters": 0, "failures": 0,
            "last_flush_age": None, "last_flush_rows": 0, "paused_sources": False, "last_error": "", "tables": [],
            "backend": store.details()}]}).splitlines()

    store = SQLiteStorage("db", str(tmp_path / "a.sqlite"), None)
    assert not any("merge" in line for line in status(store))
    store.merges = {"solar": 5 * SECOND, "rooms": 0}
    assert ("  merge: the rows of a table and tags in a bucket are one row; buckets of none (a row a record), "
            "channels' own: rooms off, solar 5 s") in status(store)
    store.merge = 10 * SECOND
    assert "  merge: the rows of a table and tags in a bucket are one row; buckets of 10 s, channels' own: rooms off, " \
           "solar 5 s" in status(store)


_values = st.one_of(st.none(), st.integers(-5, 5), st.floats(-10, 10, allow_nan=False), st.text("ab", max_size=2),
                    st.dictionaries(st.sampled_from(["rssi", "ch"]), st.one_of(st.none(), st.integers(0, 3)),
                                    max_size=2))
#: (table, seconds after the bucket's start, a channel tag or none, fields)
_messages = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 25), st.sampled_from([None, "1", "2"]),
                               st.dictionaries(st.sampled_from(["power", "voltage", "yield", "wifi"]), _values,
                                               min_size=1, max_size=3)), min_size=1, max_size=12)


def sent(messages, tables) -> Batch:
    """A batch of the property tests' messages: (table, seconds after the bucket's start, channel tag, fields)."""
    return batch(*[entry(fields, time=BUCKET + seconds * SECOND, table=tables[which],
                         tags={"channel": channel} if channel else None) for which, seconds, channel, fields in messages])


def expected_rows(batches) -> dict:
    """What merged rows hold, by (table, bucket, channel tag): the last value sent for each column, in the order
    the messages came (an object's keys are columns of their own, an empty one its JSON; a null sends nothing)."""
    expected: dict = {}
    for messages in batches:
        for which, seconds, channel, fields in messages:
            row = expected.setdefault((which, seconds // 10, channel), {})
            for name, value in fields.items():
                if value == {}:
                    value = "{}"
                for column, item in (value.items() if isinstance(value, dict) else [("", value)]):
                    if item is not None:
                        row[f"{name}.{column}" if column else name] = item
    return expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_messages, min_size=1, max_size=3))
def test_each_column_of_a_merged_row_holds_its_last_value_in_the_messages_order(tmp_path_factory, batches):
    """Whatever the messages (nulls, objects beside a scalar of the same name, tags, several batches): each
    (table, tags, bucket) is one row, and each of its columns holds the last value sent for it in the order the
    messages came (an object's keys are columns of their own; a null sends nothing)."""
    store = SQLiteStorage("db", str(tmp_path_factory.mktemp("merge") / "m.sqlite"), reactor=None, merge=10.0)
    store._connect()
    tables = [TableName("solar", f"inverter_{n}_sensors") for n in range(3)]
    for messages in batches:
        done = sent(messages, tables)
        store._commit(done)
        assert done.extra_dead == []
    expected = expected_rows(batches)
    stored = {}
    for which, table in enumerate(tables):
        try:
            cursor = store._conn.execute(f'SELECT * FROM "solar__{table.table}"')
        except sqlite3.OperationalError:  # (no message made it)
            continue
        names = [column[0] for column in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(names, values))
            key = (which, int(row.pop("time")[17:19]) // 10, row.pop("channel", None))
            assert key not in stored, f"two rows of {key}"
            row.pop("lorrygate_id")
            stored[key] = {name: value for name, value in row.items() if value is not None}
    assert stored == {key: row for key, row in expected.items()}
    store._close()

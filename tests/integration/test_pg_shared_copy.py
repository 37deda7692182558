"""
PostgreSQL writes the tables of one shape together, against a real server: with one COPY (into a temporary
table, then one round trip of INSERT ... SELECT), or, for tables with a few rows each, with an INSERT a
table in one pipeline. Either way every row lands in its own table once, in order, with the time and the
values a table's own COPY stores; a refused value still makes only its message a dead letter; a rolled-back
transaction's temporary table is made again.
"""

import itertools
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from lorrygate.model import Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.postgresql import PostgresDialect, qualified
from lorrygate.topology.naming import quote
from tests.integration.pgstore import connected

NS = 1_717_243_200_000_000_000
RUN = itertools.count()


@pytest.fixture(params=["shared", "pipelined"])
def store(request, postgres):
    """Tables of one shape with up to 8 rows each go in a pipeline (`PIPELINE_ROWS`), with more share a COPY:
    each test that does not care runs both ways."""
    with connected(postgres.url) as storage:
        if request.param == "shared":
            storage.dialect.pipeline_rows = 0
        yield storage


@pytest.fixture
def shared(postgres):
    """A store whose tables of one shape always share a COPY (the temporary tables' own tests)."""
    with connected(postgres.url) as storage:
        storage.dialect.pipeline_rows = 0
        yield storage


def together(store, tables) -> bool:
    """Whether the rows of ``tables`` went in together as the store's way has it: through a temporary table
    (shared), or an INSERT each in a pipeline (whose statements the dialect keeps by table)."""
    if not store.dialect.pipeline_rows:
        return bool(store.dialect._stages)
    return all(any(key[0] == table and key[2] is None for key in store.dialect._statements) for table in tables)


def entry(table, fields, n, topic="t"):
    return Entry(table, [Record(NS + n * 1000, fields)], "main", Message(topic, b"{}", 1, False, 1.0, "#"), "json")


def read(url, table, columns):
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {columns} FROM {qualified(table)} ORDER BY time").fetchall()


def tables(prefix, count):
    return [TableName(f"shared_{prefix}", f"node_{i}") for i in range(count)]


def test_tables_of_one_shape_share_a_copy_and_every_row_lands_once_in_its_table(store, postgres):
    """12 tables of one shape, 2 of another, one whose seq column is a float: each gets exactly its rows."""
    run = next(RUN)
    fleet, others, odd = tables(f"{run}_a", 12), tables(f"{run}_b", 2), TableName(f"shared_{run}_c", "odd")
    for round_ in range(2):  # the first batch creates the tables, the second finds them (and the shared COPY)
        batch = Batch()
        n = 0
        for k in range(60):
            table = fleet[k % 12]
            batch.add(entry(table, {"temperature": k / 2, "seq": k, "sensor": "bme280"}, round_ * 1000 + n))
            n += 1
            if k % 10 == 0:
                batch.add(entry(others[(k // 10) % 2], {"level": k}, round_ * 1000 + n))
                batch.add(entry(odd, {"temperature": 1.5, "seq": k + 0.5, "sensor": "x"}, round_ * 1000 + n))
                n += 1
        store._commit(batch)
        assert batch.tables == 15  # what the batcher tells a wide write by
    assert together(store, fleet), "the fleet's tables went in together"
    for i, table in enumerate(fleet):
        expected = [(k / 2, k, "bme280") for k in range(i, 60, 12)] * 2
        assert read(postgres.url, table, "temperature, seq, sensor") == expected
    for i, table in enumerate(others):
        assert read(postgres.url, table, "level") == [(k,) for k in range(0, 60, 10) if (k // 10) % 2 == i] * 2
    assert read(postgres.url, odd, "seq") == [(k + 0.5,) for k in range(0, 60, 10)] * 2


def test_a_value_its_column_refuses_is_one_dead_letter_and_the_shared_copy_goes_on(store, postgres):
    """Text in a BIGINT column, among 30 good rows of 6 tables: that message is a dead letter, the rest stored,
    and the next batch shares its COPY again."""
    run = next(RUN)
    fleet = tables(f"{run}_d", 6)
    first = Batch()
    for k in range(6):
        first.add(entry(fleet[k], {"seq": k}, k))
    store._commit(first)
    bad = Batch()
    for k in range(30):
        fields = {"seq": "not a number"} if k == 7 else {"seq": 100 + k}
        bad.add(entry(fleet[k % 6], fields, 100 + k, topic=f"bad/{k}" if k == 7 else "t"))
    store._commit(bad)
    assert [(d.message.topic, d.stage) for d in bad.extra_dead] == [("bad/7", "store")]
    assert "bigint" in bad.extra_dead[0].error
    after = Batch()
    for k in range(6):
        after.add(entry(fleet[k], {"seq": 200 + k}, 200 + k))
    store._commit(after)
    stored = sorted(seq for table in fleet for (seq,) in read(postgres.url, table, "seq"))
    assert stored == sorted(list(range(6)) + [100 + k for k in range(30) if k != 7] + [200 + k for k in range(6)])
    assert together(store, fleet)


def test_a_rolled_back_transaction_forgets_the_temporary_table_it_made(shared, postgres):
    """The temporary table made in a transaction that rolls back is gone with it: the next batch makes another."""
    run = next(RUN)
    fleet = tables(f"{run}_e", 4)
    for k in range(4):  # one table a batch: no shared COPY yet
        first = Batch()
        first.add(entry(fleet[k], {"v": k}, k))
        shared._commit(first)
    assert not shared.dialect._stages
    conn = shared._conn
    shared.dialect.insert_all(conn, [(t, shared.dialect.physical(t), ("v",), [shared.dialect.row(NS + k * 10**9, [k])])
                                    for k, t in enumerate(fleet)], False,
                             lambda physical, columns: shared._types(physical, columns, {}))
    made = dict(shared.dialect._stages)
    assert made
    shared.dialect.rollback(conn)
    assert not shared.dialect._stages
    second = Batch()
    for k in range(4):
        second.add(entry(fleet[k], {"v": 10 + k}, 10 + k))
    shared._commit(second)
    assert sorted(v for t in fleet for (v,) in read(postgres.url, t, "v")) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert shared.dialect._stages and set(shared.dialect._stages.values()) != set(made.values())


def test_a_temporary_table_used_twice_in_a_transaction_does_not_move_rows_twice(shared, postgres):
    """Two shared COPYs of one shape in one transaction (the table's rows of the first are gone before the second)."""
    run = next(RUN)
    fleet = tables(f"{run}_f", 3)
    for k in range(3):
        first = Batch()
        first.add(entry(fleet[k], {"v": k}, k))
        shared._commit(first)
    conn, dialect = shared._conn, shared.dialect
    for base in (10, 20):
        dialect.insert_all(conn, [(t, dialect.physical(t), ("v",), [dialect.row(NS + (base + k) * 10**9, [base + k])])
                                  for k, t in enumerate(fleet)], False,
                           lambda physical, columns: shared._types(physical, columns, {}))
    dialect.commit(conn)
    assert sorted(v for t in fleet for (v,) in read(postgres.url, t, "v")) == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_the_temporary_tables_are_bounded_as_shapes_come_and_go(shared, postgres):
    """At most max_stages temporary tables: a new shape's table replaces the oldest, and rows still land."""
    shared.dialect.max_stages = 2
    run = next(RUN)
    fleet = tables(f"{run}_g", 3)
    for shape in range(4):
        batch = Batch()
        for k, table in enumerate(fleet):
            batch.add(entry(table, {f"f{shape}": k}, shape * 10 + k))
        shared._commit(batch)  # the first makes the tables, the later add a column each
    assert shared.dialect._made == 4 and len(shared.dialect._stages) == 2  # each shape shared a COPY
    for k, table in enumerate(fleet):
        assert read(postgres.url, table, "f0, f1, f2, f3") == [(k, None, None, None), (None, k, None, None),
                                                                (None, None, k, None), (None, None, None, k)]
    temporary = shared._conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'lorrygate_stage_%' "
                                    "AND relkind = 'r' AND relpersistence = 't' AND pg_table_is_visible(oid)")
    assert temporary.fetchone()[0] == 2
    shared._conn.rollback()


def test_a_temporary_table_dropped_in_a_rolled_back_transaction_is_kept_again(shared, postgres):
    """A new shape's temporary table replaced the oldest in a transaction that rolls back: the DROP is rolled
    back too, so the old table is there again and is used again, and the bound still holds (it used to be
    there untracked, one more a connection at each such rollback)."""
    shared.dialect.max_stages = 1
    run = next(RUN)
    fleet = tables(f"{run}_h", 3)
    conn, dialect = shared._conn, shared.dialect

    def staged():
        return conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'lorrygate_stage_%' AND "
                            "relkind = 'r' AND relpersistence = 't' AND pg_table_is_visible(oid)").fetchall()

    for shape in range(2):
        batch = Batch()
        for k, table in enumerate(fleet):
            batch.add(entry(table, {f"f{shape}": k}, shape * 10 + k))
        shared._commit(batch)  # the first makes the tables, the second adds a column and replaces the stage
    kept = dict(dialect._stages)
    assert len(kept) == 1 and dialect._made == 2
    other = lambda physical, columns: shared._types(physical, columns, {})  # noqa: E731
    dialect.insert_all(conn, [(t, dialect.physical(t), ("f0",), [dialect.row(NS + (20 + k) * 10**9, [20 + k])])
                              for k, t in enumerate(fleet)], False, other)
    assert dialect._made == 3 and dialect._stages != kept
    dialect.rollback(conn)
    assert dialect._stages == kept
    assert staged() == [(name,) for name in kept.values()]
    conn.rollback()
    batch = Batch()
    for k, table in enumerate(fleet):
        batch.add(entry(table, {"f1": 30 + k}, 30 + k))
    shared._commit(batch)
    assert dialect._made == 3 and dialect._stages == kept  # the old table again, no new one
    assert staged() == [(name,) for name in kept.values()]
    conn.rollback()
    for k, table in enumerate(fleet):
        assert read(postgres.url, table, "f0, f1") == [(k, None), (None, k), (None, 30 + k)]


#: times a shared COPY carries as nanoseconds and the database makes timestamps of: cut to microseconds as a
#: table's own COPY cuts them (floor), before 1970 as well, and at the ends of what 64 bits of nanoseconds hold
EDGE_TIMES = [NS + 123_456_789, NS + 999, NS - 1, 0, -1, -1_500, -86_400 * 10**9 - 1, 2**63 - 1, -(2**63)]
#: values a shared COPY writes as they come (objects and lists as JSON, an integer beyond 64 bits as text)
EDGE_VALUES = {"nested": {"a": {"b": {"c": {"d": [1, 2]}}}}, "items": [1, "two", None], "pair": (1, 2.5),
               "huge": 2**70, "flag": True, "ratio": float("nan"), "name": "tab\there, back\\slash\nnewline"}


def test_a_shared_copy_stores_the_times_and_values_a_tables_own_copy_stores(store, postgres):
    """The same rows into three tables (one shared COPY) and into one table alone (its own COPY): the same
    timestamps to the microsecond and the same values, whatever their type."""
    run = next(RUN)
    fleet, alone = tables(f"{run}_h", 3), TableName(f"shared_{run}_h", "alone")
    for target in (fleet, [alone]):
        first = Batch()
        for table in target:
            first.add(Entry(table, [Record(NS, dict(EDGE_VALUES))], "main", Message("t", b"{}", 1, False, 1.0, "#"),
                            "json"))
        store._commit(first)  # makes the tables and their columns
        batch = Batch()
        for table in target:
            for time in EDGE_TIMES:
                batch.add(Entry(table, [Record(time, dict(EDGE_VALUES))], "main",
                                Message("t", b"{}", 1, False, 1.0, "#"), "json"))
        store._commit(batch)
        assert not batch.extra_dead
    assert store.dialect._stages, "the fleet's rows went through a shared COPY"
    columns = 'time, "nested.a.b", items, pair, huge, flag, ratio::text, name'
    expected = read(postgres.url, alone, columns)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert [row[0] for row in expected] == sorted(epoch + timedelta(microseconds=t // 1000) for t in [NS] + EDGE_TIMES)
    for table in fleet:
        assert read(postgres.url, table, columns) == expected


def test_rows_of_many_tables_store_the_times_and_plain_values_a_tables_own_copy_stores(store, postgres):
    """The edge times with values of every plain type (text with tabs, newlines and backslashes, NaN, NULLs)
    into three tables and into one alone, at most 8 rows a table a batch: the same rows, shared or
    pipelined."""
    run = next(RUN)
    fleet, alone = tables(f"{run}_k", 3), TableName(f"shared_{run}_k", "alone")
    values = [{"n": -(2**63), "x": float("nan"), "s": EDGE_VALUES["name"], "b": True},
              {"n": 2**63 - 1, "x": -0.0, "s": "", "b": False},
              {"n": None, "x": 1e308, "s": None, "b": None}]
    for target in (fleet, [alone]):
        first = Batch()
        for table in target:
            first.add(entry(table, dict(values[0]), 0))
        store._commit(first)  # makes the tables and their columns
        for times in (EDGE_TIMES[:5], EDGE_TIMES[5:]):
            batch = Batch()
            for table in target:
                for k, time in enumerate(times):
                    batch.add(Entry(table, [Record(time, dict(values[k % 3]))], "main",
                                    Message("t", b"{}", 1, False, 1.0, "#"), "json"))
            store._commit(batch)
            assert not batch.extra_dead
    assert together(store, fleet), "the fleet's rows went in together"
    expected = read(postgres.url, alone, "time, n, x::text, s, b")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert [row[0] for row in expected] == sorted(epoch + timedelta(microseconds=t // 1000)
                                                  for t in [NS] + EDGE_TIMES)
    for table in fleet:
        assert read(postgres.url, table, "time, n, x::text, s, b") == expected


def test_pipelined_inserts_go_in_statements_of_bounded_tables_and_parameters(postgres, monkeypatch):
    """Tables with a few rows go in statements of at most WITH_TABLES tables and WITH_PARAMETERS parameters
    (PostgreSQL takes 65,535): 30 tables of 1-3 rows, statements of 3 tables or 20 parameters, each row in
    its table once; and a table with more rows than a statement's parameters still goes in alone. The
    statements are seen on their way to the server (a spy: each still goes)."""
    import psycopg

    import lorrygate.storage.postgresql as postgresql

    monkeypatch.setattr(postgresql, "WITH_TABLES", 3)
    monkeypatch.setattr(postgresql, "WITH_PARAMETERS", 20)
    sent: list = []
    execute = psycopg.RawCursor.execute

    def spy(cursor, query, params=None, **kwargs):
        if isinstance(query, str) and query.startswith("WITH "):
            sent.append((query.count(" AS (INSERT INTO "), len(params)))
        return execute(cursor, query, params, **kwargs)

    monkeypatch.setattr(psycopg.RawCursor, "execute", spy)
    run = next(RUN)
    fleet = tables(f"{run}_m", 30)
    with connected(postgres.url) as store:
        for round_ in range(2):  # the first creates the tables, the second finds them
            batch = Batch()
            for i, table in enumerate(fleet):
                for k in range(1 + i % 3 if round_ else 1):
                    batch.add(entry(table, {"v": i * 10 + k, "w": 0.5 + k, "s": f"{i}"}, round_ * 100 + k))
            store._commit(batch)
            assert not batch.extra_dead
        assert together(store, fleet)
        crowded = Batch()
        for k in range(8):  # 8 rows of 4 parameters: 32, beyond the 20
            for table in fleet[:3]:
                crowded.add(entry(table, {"v": 1000 + k, "w": 1.5, "s": "x"}, 500 + k))
        store._commit(crowded)
        assert not crowded.extra_dead
    assert max(tables_ for tables_, _ in sent) == 3  # the bound of tables is reached, never passed
    assert any(tables_ < 3 and parameters > 12 for tables_, parameters in sent)  # the bound of parameters
    assert all(parameters <= 20 for tables_, parameters in sent if tables_ > 1)
    assert (1, 32) in sent  # the crowded table alone
    for i, table in enumerate(fleet):
        extra = [(1000 + k,) for k in range(8)] if i < 3 else []
        assert read(postgres.url, table, "v") == [(i * 10,)] + [(i * 10 + k,) for k in range(1 + i % 3)] + extra


def test_pipelined_inserts_stay_within_postgresqls_parameters(postgres):
    """50 tables of 8 rows with 200 fields each: 80,400 parameters, beyond the 65,535 one statement takes;
    every row lands."""
    run = next(RUN)
    fleet = tables(f"{run}_n", 50)
    fields = {f"f{c}": float(c) for c in range(200)}
    with connected(postgres.url) as store:
        for round_ in range(2):
            batch = Batch()
            for table in fleet:
                for k in range(8 if round_ else 1):
                    batch.add(entry(table, dict(fields, k=k), round_ * 100 + k))
            store._commit(batch)
            assert not batch.extra_dead
        assert together(store, fleet)
    for table in fleet:
        assert read(postgres.url, table, "k, f199") == [(0, 199.0)] + [(k, 199.0) for k in range(8)]


#: field names that are SQL, placeholders of either style, or differ only in case
HOSTILE = {'a"; DROP TABLE x; --': 1, "$1": 2, "%s": 3, "100%": 4, "Zählwerk": 5, "Case": 6, "case": 7,
           "w0 AS (SELECT 1)": 8, ")": 9}


def test_hostile_field_names_of_many_tables_stay_columns_of_their_own(store, postgres):
    """Names with quotes and SQL, `$1` and `%s`, a lone `)`, case variants: five tables of that shape, a row
    each, every value in its own column, shared or pipelined."""
    run = next(RUN)
    fleet = tables(f"{run}_o", 5)
    for round_ in range(2):
        batch = Batch()
        for i, table in enumerate(fleet):
            batch.add(entry(table, {name: value * 10 + i + round_ * 100 for name, value in HOSTILE.items()}, round_))
        store._commit(batch)
        assert not batch.extra_dead
    assert together(store, fleet)
    with psycopg.connect(postgres.url) as conn:
        for i, table in enumerate(fleet):
            columns = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                                   "AND table_name = %s", (table.schema, table.table)).fetchall()
            assert {name for (name,) in columns} >= set(HOSTILE)
            for name, value in HOSTILE.items():
                found = conn.execute(f'SELECT {quote(name)} FROM {qualified(table)} ORDER BY time').fetchall()
                assert found == [(value * 10 + i,), (value * 10 + i + 100,)]


def test_a_shared_binary_copy_stores_and_refuses_what_a_tables_own_copy_does(store, postgres, monkeypatch):
    """Rows whose values fit their columns go in binary (an integer into a DOUBLE PRECISION column too); a
    batch with a value that text would refuse (a bool in a BIGINT column) goes as text, one with an integer
    beyond 64 bits fails the binary COPY: either way only that message is a dead letter, and the fleet's
    tables (a shared COPY) end as the table alone (its own COPY) does."""
    run = next(RUN)
    fleet, alone = tables(f"{run}_i", 3), TableName(f"shared_{run}_i", "alone")
    batches = [
        [{"n": 1, "x": 1.5, "s": "a", "b": True}],
        [{"n": 2, "x": 3, "s": "b", "b": False}, {"n": None, "x": None, "s": None, "b": None}],
        [{"n": 4, "x": 4.5, "s": "d", "b": True}, {"n": True, "x": 5.5, "s": "e", "b": False}],
        [{"n": 2**70, "x": 6.5, "s": "f", "b": True}, {"n": 7, "x": 7.5, "s": "g", "b": False}],
    ]
    refused = {}
    binary = PostgresDialect._binary
    chosen: list = []
    monkeypatch.setattr(PostgresDialect, "_binary", lambda self, *args: chosen.append(binary(self, *args)) or chosen[-1])
    for target in (fleet, [alone]):
        for number, rows in enumerate(batches):
            batch = Batch()
            for k, fields in enumerate(rows):
                for table in target:
                    batch.add(entry(table, dict(fields), number * 10 + k, topic=f"{table.table}/{number}/{k}"))
            store._commit(batch)
            refused.setdefault(len(target), []).extend(sorted(d.message.topic for d in batch.extra_dead))
    # binary for the first two batches (the second's row of nulls is a row of no columns: a shape of its own);
    # as text for the third, with a bool in a BIGINT column
    assert [kinds is not None for kinds in chosen][:4] == [True, True, True, False]
    assert refused[1] == ["alone/2/1", "alone/3/0"]
    assert refused[3] == [f"node_{i}/2/1" for i in range(3)] + [f"node_{i}/3/0" for i in range(3)]
    expected = read(postgres.url, alone, "n, x, s, b")
    assert expected == [(1, 1.5, "a", True), (2, 3.0, "b", False), (None, None, None, None), (4, 4.5, "d", True),
                        (7, 7.5, "g", False)]
    for table in fleet:
        assert read(postgres.url, table, "n, x, s, b") == expected


def test_a_time_column_without_time_zone_from_custom_ddl_gets_the_same_time(store, postgres):
    """Tables made beforehand with a TIMESTAMP (without time zone) time column: the shared COPY stores the UTC
    wall time there, as a table's own COPY of the ISO text does."""
    run = next(RUN)
    fleet, alone = tables(f"{run}_j", 3), TableName(f"shared_{run}_j", "alone")
    with psycopg.connect(postgres.url) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "shared_{run}_j"')
        for table in fleet + [alone]:
            conn.execute(f'CREATE TABLE {qualified(table)} ("time" TIMESTAMP NOT NULL, v BIGINT)')
    for target in (fleet, [alone]):
        batch = Batch()
        for table in target:
            for k, time in enumerate(EDGE_TIMES[:7]):
                batch.add(Entry(table, [Record(time, {"v": k})], "main", Message("t", b"{}", 1, False, 1.0, "#"),
                                "json"))
        store._commit(batch)
        assert not batch.extra_dead
    assert together(store, fleet), "the fleet's rows went in together"
    expected = read(postgres.url, alone, "time, v")
    epoch = datetime(1970, 1, 1)
    assert [row[0] for row in expected] == sorted(epoch + timedelta(microseconds=t // 1000) for t in EDGE_TIMES[:7])
    for table in fleet:
        assert read(postgres.url, table, "time, v") == expected

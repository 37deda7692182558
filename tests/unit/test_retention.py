"""A SQLite storage's retention: rows older than it deleted from every table, a chunk a transaction, lorrygate's
own tables left alone; the runs an hour apart on the reactor's clock, a failed run tried again; the config."""

import sqlite3
import time
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from lorrygate.errors import ConfigError
from lorrygate.model import Message, Record, TableName
from lorrygate.storage import retention as retention_module
from lorrygate.storage.batch import Batch, DeadLetter, Entry
from lorrygate.storage.retention import Retention
from lorrygate.storage.sqlite import SQLiteStorage
from lorrygate.storage.sqlstorage import SqlStorage

DAY = 86400
OLD = TableName("fleet", "old_node_sensors")
MIXED = TableName("fleet", "mixed_node_sensors")


def ns(seconds_ago: float) -> int:
    return int((time.time() - seconds_ago) * 10**9)


def entry(table, *times, position=None):
    message = Message("fleet/x", b"{}", 1, False, time.time() - 400 * DAY, "#", position=position)
    return Entry(table, [Record(t, {"value": i}) for i, t in enumerate(times)], "main", message, "json")


@pytest_twisted.inlineCallbacks
def test_rows_older_than_the_retention_are_deleted_a_chunk_a_transaction(tmp_path, monkeypatch):
    """The old rows of every table go, in chunks (here of 4 rows); the recent ones, the dead letters (however old)
    and the read positions stay; a second run finds nothing."""
    from twisted.internet import reactor

    monkeypatch.setattr(retention_module, "CHUNK", 4)
    path = str(tmp_path / "db.sqlite")
    storage = SQLiteStorage("db", path, reactor)
    storage.retention = 30 * DAY
    yield storage.start()
    try:
        batch = Batch()
        batch.add(entry(OLD, *(ns(400 * DAY + i) for i in range(9))))
        batch.add(entry(MIXED, ns(31 * DAY), ns(29 * DAY), ns(60), ns(5 * 365 * DAY)))
        batch.add(entry(MIXED, ns(40 * DAY), position=("stream-a", 0, 10)))
        batch.add_dead_letter(DeadLetter("main", Message("fleet/y", b"?", 1, False, time.time() - 400 * DAY, "#"),
                                         "decode", "not JSON"))
        yield storage.write(batch)
        jobs = []
        expire_rows = SqlStorage.expire_rows
        monkeypatch.setattr(SqlStorage, "expire_rows",
                            lambda self, conn, table, *args: jobs.append(table) or expire_rows(self, conn, table, *args))
        deleted = yield Deferred.fromCoroutine(storage._expiry.run())
        assert deleted == 9 + 3
        assert jobs == ["fleet__mixed_node_sensors", "fleet__old_node_sensors", "fleet__old_node_sensors",
                        "fleet__old_node_sensors"]  # 1, then 4 + 4 + 1: each chunk a job of its own
        details = storage.details()
        assert (details["retention"], details["expired"], details["expiry_error"]) == (30 * DAY, 12, "")
        assert (yield Deferred.fromCoroutine(storage._expiry.run())) == 0
    finally:
        yield storage.stop()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM fleet__old_node_sensors").fetchone() == (0,)
        assert conn.execute("SELECT value FROM fleet__mixed_node_sensors ORDER BY time").fetchall() == [(1,), (2,)]
        assert conn.execute("SELECT count(*) FROM lorrygate_dead_letter").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM lorrygate_positions").fetchone() == (1,)


def test_a_table_without_rowid_or_time_is_handled(tmp_path):
    """A DDL template's table WITHOUT ROWID loses its old rows at once; a table without a time column (the
    user's own) is no table of the retention."""
    storage = SQLiteStorage("db", str(tmp_path / "db.sqlite"), reactor=None)
    storage._connect()
    try:
        conn = storage._conn
        conn.execute("CREATE TABLE keyed (time TEXT PRIMARY KEY, v) WITHOUT ROWID")
        conn.execute("CREATE TABLE notes (note TEXT)")
        conn.executemany("INSERT INTO keyed VALUES (?, ?)", [("2020-01-01T00:00:00.000000000Z", 1),
                                                            ("2020-01-02T00:00:00.000000000Z", 2),
                                                            ("2099-01-01T00:00:00.000000000Z", 3)])
        assert storage.dialect.expiry_tables(conn) == ["keyed"]
        assert storage.expire_rows(conn, "keyed", "2021-01-01T00:00:00.000000000Z", 1) == 2
        assert conn.execute("SELECT v FROM keyed").fetchall() == [(3,)]
    finally:
        storage._close()


class FakeStorage:
    name = "db"

    def __init__(self, clock, results):
        self.reactor, self.results, self.dialect = clock, results, SimpleNamespace(expiry_tables=None)

    def call_writer(self, function, *args):
        result = self.results.pop(0)
        return fail(result) if isinstance(result, Exception) else succeed(result)

    def expire_rows(self, *args):
        raise AssertionError("called on the writer thread only")


def test_runs_are_an_hour_apart_from_five_minutes_after_the_start_and_a_failed_one_is_tried_again():
    clock = Clock()
    clock.advance(1_800_000_000)
    storage = FakeStorage(clock, [["t"], 3, ConnectionError("database is locked"), ["t"], 0])
    retention = Retention(storage, 7 * DAY)
    retention.start()
    clock.advance(299)
    assert storage.results[0] == ["t"]  # nothing ran before five minutes
    clock.advance(1)
    assert (retention.expired, retention.last_run, retention.last_error) == (3, 1_800_000_300, "")
    clock.advance(3599)
    assert retention.last_error == ""
    clock.advance(1)
    assert retention.last_error == "database is locked" and retention.last_run == 1_800_000_300
    clock.advance(3600)
    assert (retention.expired, retention.last_run, retention.last_error) == (3, 1_800_007_500, "")
    retention.stop()
    assert clock.getDelayedCalls() == []


def test_no_retention_schedules_nothing():
    clock = Clock()
    Retention(FakeStorage(clock, []), 0).start()
    assert clock.getDelayedCalls() == []


def config(storage: str) -> str:
    return f"[broker:b]\nhost = h\n[storage:s]\n{storage}\n[channel:c]\nsource = b\ntopics = #\nstorage = s\n"


def test_the_retention_is_checked_with_the_config():
    from lorrygate.config import loads

    assert loads(config("url = sqlite:///x.sqlite\nretention = 90d")).storages["s"].retention == 90 * DAY
    assert loads(config("url = sqlite:///x.sqlite")).storages["s"].retention == 0
    with pytest.raises(ConfigError, match=r"retention: expected a retention of at least 1h .*got '30m'"):
        loads(config("url = sqlite:///x.sqlite\nretention = 30m"))
    with pytest.raises(ConfigError, match="retention: expected no retention for a postgresql storage"):
        loads(config("url = postgresql://u@h/db\nretention = 90d"))


def test_the_launch_language_takes_a_retention():
    from lorrygate import parse_launch

    pipeline = parse_launch("mqtt://localhost/a/%23 ! sqlite location=/tmp/x.sqlite retention=30d")
    (storage,) = pipeline.settings.storages.values()
    assert storage.retention == 30 * DAY


def test_the_rows_deleted_are_counted_for_prometheus(tmp_path):
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from lorrygate.service.metrics import GatewayCollector

    kept = SQLiteStorage("kept", str(tmp_path / "a.sqlite"), None)
    aged = SQLiteStorage("aged", str(tmp_path / "b.sqlite"), None)
    aged._expiry = Retention(aged, 30 * DAY, expired=1234)
    gateway = SimpleNamespace(storages={"kept": kept, "aged": aged}, batchers={}, reactor=Clock())

    class Storages:
        def collect(self):
            return GatewayCollector._storages(gateway, CounterMetricFamily, GaugeMetricFamily)

    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(Storages())
    text = prometheus_client.generate_latest(registry).decode()
    assert [line for line in text.splitlines() if line.startswith("lorrygate_rows_expired")] == [
        'lorrygate_rows_expired_total{storage="aged"} 1234.0']


def test_the_status_says_the_retention_and_what_it_deleted(tmp_path):
    from lorrygate.control_client import render_status

    storage = SQLiteStorage("db", str(tmp_path / "a.sqlite"), None)
    storage._expiry = Retention(storage, 90 * DAY, expired=12_345, last_error="database is locked")
    text = render_status({"config": "gw.ini", "sources": [], "channels": [], "storages": [{
        "name": "db", "kind": "sqlite", "pending": 0, "rows": 5, "dead_letters": 0, "failures": 0,
        "last_flush_age": None, "last_flush_rows": 0, "paused_sources": False, "last_error": "", "tables": [],
        "backend": storage.details()}]})
    assert ("  retention 90 days: 12,345 older rows deleted since the start; the last run failed: database is "
            "locked") in text.splitlines()


@pytest_twisted.inlineCallbacks
def test_a_configured_retention_reaches_the_storage_and_its_first_run_is_five_minutes_after_the_start(tmp_path):
    from twisted.internet import reactor

    from lorrygate.config import loads
    from lorrygate.service.storage_service import make_backend

    settings = loads(config(f"url = sqlite:///{tmp_path}/g.sqlite\nretention = 7d")).storages["s"]
    storage = make_backend(settings, reactor, {})
    yield storage.start()
    try:
        call = storage._expiry._call
        assert call.active() and 290 < call.getTime() - reactor.seconds() <= 300
    finally:
        yield storage.stop()
    assert not call.active() and storage._expiry._call is None

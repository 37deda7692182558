"""
A stop waits `StorageService.timeout` for the write in flight, then interrupts it: SQLite's and PostgreSQL's
statement is aborted from the reactor thread, the transaction rolls back, nothing of it is acknowledged, and
the stop ends. Before, a stop waited for the write however long it took (minutes, for a write that created
thousands of SQLite tables one column at a time), against real databases.
"""

import time

import pytest
import pytest_twisted

from lorrygate.config.settings import ddl_template
from lorrygate.model import Message, Record, TableName
from lorrygate.service.storage_service import StorageService
from lorrygate.storage.batch import Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.postgresql import PostgresStorage
from lorrygate.storage.sqlite import SQLiteStorage
from tests.doubles import Ack

#: statements that run far longer than a stop waits (~25 s here: a test of code that does not interrupt fails,
#: and its writer thread still ends)
LONG = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000) SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(30)",
}


def backend_for(kind, reactor, tmp_path, postgres):
    ddl = {"": ddl_template(f"CREATE TABLE IF NOT EXISTS {{qualified}} (time TEXT NOT NULL); {LONG[kind]}", kind)}
    if kind == "sqlite":
        return SQLiteStorage("db", str(tmp_path / "stop.sqlite"), reactor, ddl=ddl)
    return PostgresStorage("db", postgres.url, reactor, ddl=ddl)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest_twisted.ensureDeferred
async def test_a_stop_interrupts_a_write_that_does_not_end(kind, tmp_path, request):
    from twisted.internet import reactor

    postgres = request.getfixturevalue("postgres") if kind == "postgresql" else None
    backend = backend_for(kind, reactor, tmp_path, postgres)
    batcher = Batcher(backend, reactor)
    service = StorageService(None, backend, batcher, reactor, timeout=0.5)
    service.setName("db")
    await backend.start()
    ack = Ack()
    table = TableName("stop_interrupt", f"node_{kind}")
    batcher.add(Entry(table, [Record(1_717_243_200_000_000_000, {"a": 1})], "main",
                      Message("t", b"{}", 1, False, 1.0, "#", ack), "json"))
    batcher.flush()
    assert batcher._writing is not None
    started = time.monotonic()
    stopping = service.stopService()
    stopping.addTimeout(10, reactor)  # a stop that waits for the statement fails the test
    await stopping
    took = time.monotonic() - started
    assert 0.5 <= took < 5, took
    assert ack.count == 0  # rolled back: the broker delivers it again
    assert batcher.stats.rows == 0
    assert any(word in batcher.stats.last_error.lower() for word in ("interrupted", "canceling statement"))


@pytest_twisted.ensureDeferred
async def test_an_interrupt_that_finds_no_statement_running_is_made_again(tmp_path, monkeypatch):
    """The writer runs Python between two statements when the stop's time is up: an interrupt then reaches
    nothing, so it comes again a second later and aborts the statement that followed."""
    from twisted.internet import reactor

    from lorrygate.storage.sqlite import SQLiteDialect

    run_ddl = SQLiteDialect.run_ddl

    def slowly(self, conn, statements):
        time.sleep(1.0)  # Python, no statement running: the first interrupt (at 0.5 s) finds none
        run_ddl(self, conn, statements)

    monkeypatch.setattr(SQLiteDialect, "run_ddl", slowly)
    backend = backend_for("sqlite", reactor, tmp_path, None)
    batcher = Batcher(backend, reactor)
    service = StorageService(None, backend, batcher, reactor, timeout=0.5)
    service.setName("db")
    await backend.start()
    batcher.add(Entry(TableName("stop_interrupt", "again"), [Record(1_717_243_200_000_000_000, {"a": 1})], "main",
                      Message("t", b"{}", 1, False, 1.0, "#", Ack()), "json"))
    batcher.flush()
    started = time.monotonic()
    stopping = service.stopService()
    stopping.addTimeout(10, reactor)
    await stopping
    assert 1.0 <= time.monotonic() - started < 5
    assert "interrupted" in batcher.stats.last_error.lower()

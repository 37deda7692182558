"""Fixtures several integration modules share: a CrateDB to write into (the fake, or the real server at
LORRYGATE_CRATEDB_URL), and SQLite and PostgreSQL storages connected in the test's own thread."""

import pytest
from twisted.internet import reactor

from lorrygate.storage.postgresql import PostgresStorage
from lorrygate.storage.sqlite import SQLiteStorage
from tests.crateserver import REAL_URL, FakeServer, RealServer


@pytest.fixture(params=["fake", "real"])
def server(request):
    """The fake CrateDB, and the real one when LORRYGATE_CRATEDB_URL is set."""
    if request.param == "real":
        if not REAL_URL:
            pytest.skip("LORRYGATE_CRATEDB_URL is not set (see docs/storage.rst: docker compose up)")
        return RealServer(reactor)
    return FakeServer(reactor)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """A SQLite storage of the module's own, committed to with ``_commit``."""
    store = SQLiteStorage("db", str(tmp_path_factory.mktemp("store") / "store.sqlite"), reactor=None)
    store._connect()
    yield store
    store._close()


@pytest.fixture(scope="module")
def pg_store(postgres):
    """A PostgreSQL storage of the module, committed to with ``_commit``."""
    store = PostgresStorage("db", postgres.url, reactor=None)
    store._connect()
    yield store
    store._close()

"""A PostgreSQL storage connected in the test's own thread, for tests that commit batches directly."""

from contextlib import contextmanager

from lorrygate.storage.postgresql import PostgresStorage


@contextmanager
def connected(url: str, **options):
    storage = PostgresStorage("db", url, reactor=None, **options)
    storage._connect()
    try:
        yield storage
    finally:
        storage._close()

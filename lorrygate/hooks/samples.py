"""
What the tables of a storage have shown so far, and the `FirstSample` a hook
gets when a table stores its first row or a field it never had.

`SampleTracker.observe` runs after each committed batch (a batcher observer).
In the steady state it costs one subset test per row; only a row with a new
top-level field is flattened and looked at. What it finds is written to the
state file (``<data_dir>/hooks.sqlite``, one transaction per batch that found
something) before the hooks are told, so that a hook that has not run yet runs
after a restart, and one that has run does not run again.
"""

import json
import os
import sqlite3

import attrs

from lorrygate.model import TableName
from lorrygate.storage.layout import flatten

#: how a field's values look, for hooks (a dashboard draws numbers)
NUMBER, TEXT, BOOLEAN, JSON = "number", "text", "boolean", "json"


def kind_of(value) -> str:
    kind = type(value)
    if kind is bool:
        return BOOLEAN
    if kind is int or kind is float:
        return NUMBER
    if kind is str:
        return TEXT
    return JSON


@attrs.frozen
class FirstSample:
    """What a hook is told: a table of a storage and its fields."""

    storage: str
    #: the storage's kind: sqlite, postgresql, crate, file, app
    kind: str
    table: TableName
    #: realm, network, gateway and node of the address that made the table
    address: dict
    #: every field the table has shown: name -> number, text, boolean or json
    fields: dict
    #: the fields this run is about (every field on the first run)
    new: tuple
    #: True for the first run of the table, False for new fields
    first: bool

    def asdict(self) -> dict:
        return {"storage": self.storage, "kind": self.kind, "schema": self.table.schema, "table": self.table.table,
                "address": dict(self.address), "fields": dict(self.fields), "new": list(self.new),
                "first": self.first}


def _key(table: TableName) -> str:
    return json.dumps([table.schema, table.table])


class HookState:
    """``<data_dir>/hooks.sqlite``: the fields each table has shown, and which of them each hook has seen."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS samples (storage TEXT NOT NULL, tbl TEXT NOT NULL, "
                          "kind TEXT NOT NULL, address TEXT NOT NULL, fields TEXT NOT NULL, "
                          "PRIMARY KEY (storage, tbl))")
        self.conn.execute("CREATE TABLE IF NOT EXISTS runs (hook TEXT NOT NULL, storage TEXT NOT NULL, "
                          "tbl TEXT NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (hook, storage, tbl))")

    def tables(self, storage: str) -> dict:
        """TableName -> (address, fields) of every table of a storage seen so far."""
        found = {}
        for tbl, address, fields in self.conn.execute(
                "SELECT tbl, address, fields FROM samples WHERE storage = ?", (storage,)):
            schema, table = json.loads(tbl)
            found[TableName(schema, table)] = (json.loads(address), json.loads(fields))
        return found

    def record(self, storage: str, kind: str, changes: dict) -> None:
        """Remember tables and their fields: ``{TableName: (address, fields)}``, in one transaction."""
        rows = [(storage, _key(table), kind, json.dumps(address), json.dumps(fields, sort_keys=True))
                for table, (address, fields) in changes.items()]
        with self._transaction():
            self.conn.executemany(
                "INSERT INTO samples (storage, tbl, kind, address, fields) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (storage, tbl) DO UPDATE SET fields = excluded.fields", rows)

    def pending(self, hook: str, storages) -> list:
        """The samples a hook has not seen (whole or in part), oldest first, as `FirstSample`."""
        marks = ",".join("?" * len(storages))
        found = []
        for storage, tbl, kind, address, fields, seen in self.conn.execute(
                f"SELECT s.storage, s.tbl, s.kind, s.address, s.fields, r.fields FROM samples s "
                f"LEFT JOIN runs r ON r.hook = ? AND r.storage = s.storage AND r.tbl = s.tbl "
                f"WHERE s.storage IN ({marks}) AND (r.fields IS NULL OR r.fields != s.fields) ORDER BY s.rowid",
                (hook, *storages)):
            fields, done = json.loads(fields), json.loads(seen) if seen else {}
            schema, table = json.loads(tbl)
            found.append(FirstSample(storage, kind, TableName(schema, table), json.loads(address), fields,
                                     tuple(name for name in fields if name not in done), not done))
        return found

    def done(self, hook: str, sample: FirstSample) -> None:
        """A hook has run for every field of ``sample``."""
        with self._transaction():
            self.conn.execute(
                "INSERT INTO runs (hook, storage, tbl, fields) VALUES (?, ?, ?, ?) ON CONFLICT (hook, storage, tbl) "
                "DO UPDATE SET fields = excluded.fields",
                (hook, sample.storage, _key(sample.table), json.dumps(sample.fields, sort_keys=True)))

    def _transaction(self):
        conn = self.conn

        class Transaction:
            def __enter__(self):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, value, traceback):
                conn.execute("COMMIT" if kind is None else "ROLLBACK")

        return Transaction()

    def close(self) -> None:
        self.conn.close()


@attrs.define(eq=False)
class SampleTracker:
    """Finds the first rows and new fields of a storage's tables in what it commits."""

    storage: str
    kind: str
    state: HookState
    #: the runners of the storage's hooks (`lorrygate.hooks.runner.HookRunner`)
    runners: list
    #: nested objects become dotted names down to this depth, as the SQL storages store them
    depth: int = 3
    #: TableName -> {field: kind}
    _fields: dict = attrs.Factory(dict)
    #: TableName -> the set of top-level field names seen (the cheap test)
    _top: dict = attrs.Factory(dict)
    _address: dict = attrs.Factory(dict)

    def __attrs_post_init__(self):
        for table, (address, fields) in self.state.tables(self.storage).items():
            self._fields[table] = fields
            self._address[table] = address
            self._top[table] = {name.split(".", 1)[0] for name in fields}

    def observe(self, batch, seconds=None) -> None:
        """After a commit: note new tables and fields, tell the hooks."""
        changes = {}
        refused = {id(dead.message) for dead in batch.extra_dead} if batch.extra_dead else ()
        for entry in batch.entries:
            table = entry.table
            if table is None or not entry.records or (refused and id(entry.message) in refused):
                continue
            top = self._top.get(table)
            for record in entry.records:
                if top is not None and top.issuperset(record.fields):
                    continue
                if top is None:
                    self._top[table] = top = set()
                    self._fields[table] = {}
                    self._address[table] = _address(entry.address)
                # (a field with a null in it is not noted as whole: its column comes with a later value)
                top.update(name for name, value in record.fields.items() if _valued(value, self.depth))
                known = self._fields[table]
                new = {name: kind_of(value)
                       for name, value in flatten(record.fields, None, depth=self.depth).items() if name not in known}
                if new:
                    known.update(new)
                    first, added = changes.get(table, (not (known.keys() - new.keys()), ()))
                    changes[table] = (first, added + tuple(new))
        if not changes:
            return
        self.state.record(self.storage, self.kind,
                          {table: (self._address[table], self._fields[table]) for table in changes})
        for table, (first, added) in changes.items():
            sample = FirstSample(self.storage, self.kind, table, self._address[table], dict(self._fields[table]),
                                 added, first)
            for runner in self.runners:
                runner.submit(sample)


def _address(address) -> dict:
    if address is None:
        return {}
    return {"realm": address.realm, "network": address.network, "gateway": address.gateway, "node": address.node}


def _valued(value, depth: int) -> bool:
    """Whether a field's value holds no null down to ``depth`` levels (`flatten` leaves nulls out: they make no
    column; an object deeper is one value)."""
    if value is None:
        return False
    if type(value) is dict and depth > 1:
        return all(_valued(item, depth - 1) for item in value.values())
    return True

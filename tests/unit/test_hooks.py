"""
First-sample hooks without a broker: the tracker finds first rows and new
fields and remembers them across a restart, the runner retries with backoff
and never runs a table twice at once, and the panel queries the grafana hook
writes run on SQLite and parse as CrateDB SQL.
"""

import json
import sqlite3
from datetime import UTC

import attrs
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from lorrygate.hooks.grafana import DataSource, add_panels, column_query, new_dashboard
from lorrygate.hooks.runner import HookRunner
from lorrygate.hooks.samples import FirstSample, HookState, SampleTracker
from lorrygate.model import Address, Message, Record, TableName
from lorrygate.storage.batch import Batch, Entry

NS = 1_700_000_000 * 10**9


def entry(table: str, *fields: dict, node="n1") -> Entry:
    address = Address("r", "net", "gw", node, "data")
    return Entry(TableName("r_net", table), [Record(NS + i, f) for i, f in enumerate(fields)], "main",
                 Message("r/net/gw/n1/data.json", b"{}"), "json", address)


def batch(*entries) -> Batch:
    made = Batch()
    for e in entries:
        made.add(e)
    return made


class Recorder:
    def __init__(self):
        self.samples = []

    def submit(self, sample):
        self.samples.append(sample)


def test_first_rows_and_new_fields_once_across_a_restart(tmp_path):
    state = HookState(str(tmp_path / "hooks.sqlite"))
    runner = Recorder()
    tracker = SampleTracker("db", "sqlite", state, [runner])
    tracker.observe(batch(entry("t1", {"temperature": 21.5, "state": "ok"}, {"temperature": 22}),
                          entry("t2", {"humidity": 40, "ENERGY": {"Power": 5, "Voltage": 230}})), 0.01)
    assert [(str(s.table), s.first, s.new) for s in runner.samples] == [
        ("r_net.t1", True, ("temperature", "state")), ("r_net.t2", True, ("humidity", "ENERGY.Power", "ENERGY.Voltage"))]
    assert runner.samples[0].fields == {"temperature": "number", "state": "text"}
    assert runner.samples[0].address == {"realm": "r", "network": "net", "gateway": "gw", "node": "n1"}
    tracker.observe(batch(entry("t1", {"temperature": 23})), 0.01)
    assert len(runner.samples) == 2  # nothing new
    tracker.observe(batch(entry("t1", {"temperature": 23, "pressure": 1013.2, "on": True})), None)  # drained
    assert (runner.samples[-1].first, runner.samples[-1].new) == (False, ("pressure", "on"))
    assert runner.samples[-1].fields["on"] == "boolean"
    state.close()

    # A restart: the state file knows the tables; the same rows find nothing.
    state = HookState(str(tmp_path / "hooks.sqlite"))
    again = Recorder()
    SampleTracker("db", "sqlite", state, [again]).observe(
        batch(entry("t1", {"temperature": 1, "pressure": 2}), entry("t2", {"humidity": 3})), 0.01)
    assert again.samples == []
    # What a hook has not run for is still pending, per hook.
    pending = state.pending("dashboards", ["db"])
    assert [(str(s.table), s.first) for s in pending] == [("r_net.t1", True), ("r_net.t2", True)]
    state.done("dashboards", pending[0])
    assert [str(s.table) for s in state.pending("dashboards", ["db"])] == ["r_net.t2"]
    assert len(state.pending("other", ["db"])) == 2


def test_rows_the_storage_refused_are_not_samples(tmp_path):
    from lorrygate.storage.batch import DeadLetter

    runner = Recorder()
    tracker = SampleTracker("db", "sqlite", HookState(str(tmp_path / "h.sqlite")), [runner])
    refused = entry("t1", {"temperature": "x"})
    made = batch(refused)
    made.extra_dead = [DeadLetter("main", refused.message, "store", "type mismatch")]
    tracker.observe(made, 0.01)
    assert runner.samples == []


class Flaky:
    """A hook that fails its first ``failures`` runs."""

    def __init__(self, failures: int):
        self.failures = failures
        self.runs = []

    def run(self, sample):
        self.runs.append(sample)
        if len(self.runs) <= self.failures:
            return fail(RuntimeError("Grafana answered 503"))
        return succeed(None)


def sample(table: str, new=("a",), first=True, fields=None) -> FirstSample:
    return FirstSample("db", "sqlite", TableName("s", table), {}, fields or {n: "number" for n in new}, tuple(new), first)


def test_the_runner_retries_with_backoff_and_merges(tmp_path):
    clock = Clock()
    state = HookState(str(tmp_path / "h.sqlite"))
    hook = Flaky(failures=2)
    runner = HookRunner("dashboards", hook, clock, state, retry_initial=1.0, retry_max=4.0)
    runner.submit(sample("t1"))
    assert (len(hook.runs), runner.stats.failures, runner.pending) == (1, 1, 1)
    runner.submit(sample("t1", new=("b",), first=False, fields={"a": "number", "b": "number"}))  # merged while waiting
    clock.advance(0.9)
    assert len(hook.runs) == 1
    clock.advance(0.1)  # first retry after 1 s
    assert (len(hook.runs), runner.stats.failures) == (2, 2)
    clock.advance(1.9)
    assert len(hook.runs) == 2
    clock.advance(0.1)  # then after 2 s
    assert len(hook.runs) == 3 and runner.stats.runs == 1 and runner.pending == 0
    assert hook.runs[-1].new == ("a", "b") and hook.runs[-1].first is True
    assert runner.status()["failing"] == 0


def test_a_table_that_always_fails_holds_no_other_back(tmp_path):
    clock = Clock()

    class OneBad:
        runs = []

        def run(self, sample):
            self.runs.append(str(sample.table))
            return fail(RuntimeError("400 bad dashboard")) if sample.table.table == "bad" else succeed(None)

    hook = OneBad()
    runner = HookRunner("h", hook, clock, HookState(str(tmp_path / "h.sqlite")))
    runner.submit(sample("bad"))
    runner.submit(sample("good"))
    assert hook.runs == ["s.bad", "s.good"] and runner.stats.runs == 1
    clock.advance(1.0)  # bad's own backoff
    assert hook.runs == ["s.bad", "s.good", "s.bad"]
    clock.advance(1.9)
    assert len(hook.runs) == 3
    clock.advance(0.1)  # bad's own backoff: 2 s after its second failure
    assert hook.runs[-1] == "s.bad" and len(hook.runs) == 4


def test_a_server_that_is_down_pauses_the_whole_queue(tmp_path):
    clock = Clock()
    hook = Flaky(failures=1000)
    runner = HookRunner("h", hook, clock, HookState(str(tmp_path / "h.sqlite")), retry_initial=1.0, retry_max=60.0)
    for n in range(100):
        runner.submit(sample(f"t{n}"))
    assert len(hook.runs) == 2  # two tables failed in a row: the queue pauses
    clock.advance(1.0)
    assert len(hook.runs) == 3
    clock.pump([1.0] * 60)
    assert len(hook.runs) < 10  # backing off, not 100 requests a second
    hook.failures = 0
    clock.advance(60.0)
    clock.pump([0] * 200)
    assert runner.pending == 0 and runner.stats.runs == 100


def test_a_hung_run_times_out_and_stop_leaves_it_for_the_next_start(tmp_path):
    clock = Clock()
    state = HookState(str(tmp_path / "h.sqlite"))

    class Hangs:
        def run(self, sample):
            return Deferred()

    runner = HookRunner("h", Hangs(), clock, state, timeout=5.0)
    state.record("db", "sqlite", {TableName("s", "t"): ({}, {"a": "number"})})
    runner.start(["db"])
    clock.advance(5.0)
    assert runner.stats.last_error == "no answer within timeout = 5.0 s"
    runner.stop()
    assert [str(s.table) for s in state.pending("h", ["db"])] == ["s.t"]


def test_the_sqlite_panel_query_runs_on_the_stored_time_format():
    from datetime import datetime

    conn = sqlite3.connect(":memory:")
    from lorrygate.storage.sqlite import table_name

    name = table_name(TableName("r_net", "gw_n1"))
    conn.execute(f'CREATE TABLE "{name}" (time TEXT, "temperature" REAL, "ENERGY.Power" REAL)')
    # The time format of lorrygate.storage.sqlite: ISO 8601, UTC, nanoseconds.
    times = ["2026-11-30T09:59:59.999999999Z", "2026-11-30T10:00:00.123456789Z", "2026-11-30T11:00:00.500000000Z",
             "2026-11-30T12:00:01.000000000Z"]
    for i, t in enumerate(times):
        conn.execute(f'INSERT INTO "{name}" VALUES (?, ?, ?)', (t, 20 + i, i))
    sql = column_query("sqlite", TableName("r_net", "gw_n1"), "ENERGY.Power")
    epoch = lambda text: int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())  # noqa: E731
    # The plugin's macros, as it expands them: seconds since the epoch.
    expanded = sql.replace("$__unixEpochFrom()", str(epoch("2026-11-30T10:00:00"))).replace(
        "$__unixEpochTo()", str(epoch("2026-11-30T12:00:00")))
    found = conn.execute(expanded).fetchall()
    assert [v for _, v in found] == [1.0, 2.0]
    assert [round(t, 3) for t, _ in found] == [epoch("2026-11-30T10:00:00") + 0.123, epoch("2026-11-30T11:00:00") + 0.5]


def test_the_crate_panel_query_is_crate_sql():
    from cratedb_sqlparse import sqlparse

    sql = column_query("crate", TableName("r_net", "gw_n1"), "pm2.5")
    assert "\"fields\"['pm2']['5']" in sql
    statement = sql.replace('$__timeFilter("time")', "\"time\" BETWEEN '2026-01-01' AND '2026-02-01'")
    assert sqlparse(statement)[0].type == "SELECT"


def test_a_new_field_adds_a_panel_below_and_keeps_the_users_panels():
    class Storage:
        name, kind = "db", "postgresql"
        url = attrs.make_class("U", ["raw"])("postgresql://lg:secret@db.example:5433/telemetry")

    datasource = DataSource.for_storage(Storage())
    assert datasource.request()["url"] == "db.example:5433" and datasource.request()["user"] == "lg"
    assert datasource.request()["secureJsonData"] == {"password": "secret"}
    Storage.url = attrs.make_class("U", ["raw"])("postgresql://lg@[fd00::5]:5433/telemetry")
    assert DataSource.for_storage(Storage()).request()["url"] == "[fd00::5]:5433"  # (it was "fd00::5:5433")
    first = sample("gw_n1", new=("temperature", "humidity", "state"),
                   fields={"temperature": "number", "humidity": "number", "state": "text"})
    board = new_dashboard(attrs.evolve(first, kind="postgresql"), datasource)
    assert [p["title"] for p in board["panels"]] == ["temperature", "humidity"]
    board["panels"][0]["title"] = "Temperature (°C)"  # a user's edit
    board["panels"][1]["gridPos"]["h"] = 12
    later = attrs.evolve(first, kind="postgresql", new=("pressure",), first=False,
                         fields={**first.fields, "pressure": "number"})
    assert add_panels(board, later, datasource)
    assert [p["title"] for p in board["panels"]] == ["Temperature (°C)", "humidity", "pressure"]
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    assert board["panels"][2]["gridPos"]["y"] >= 12  # below the user's taller panel
    assert not add_panels(board, later, datasource)


def test_a_panel_reads_the_column_sqlite_gave_a_field_that_differs_from_another_only_in_case():
    """SQLite compares names without case: a field ``temp`` after ``Temp`` is stored in ``temp_2`` (and ``Time``
    in ``Time_2``); the panel of ``temp`` read ``"temp"``, which SQLite took for ``Temp``."""
    from lorrygate.storage.sqlite import SQLiteStorage, table_name

    fields = {"Temp": "number", "Time": "number", "temp": "number", "TEMP": "number"}
    store = SQLiteStorage("db", ":memory:", reactor=None)
    store._connect()
    try:
        table = TableName("r_net", "gw_n1")
        store._commit(batch(Entry(table, [Record(NS, {"Temp": 1, "Time": 2, "temp": 3}),
                                          Record(NS + 1, {"TEMP": 4})], "main", Message("t", b"{}"), "json")))
        made = sample("gw_n1", new=tuple(fields), fields=fields)
        board = new_dashboard(attrs.evolve(made, kind="sqlite", table=table),
                              DataSource("u", "n", "sqlite", {}))
        read = {}
        for item in board["panels"]:
            sql = item["targets"][0]["rawSql"].replace("$__unixEpochFrom()", "0").replace(
                "$__unixEpochTo()", "4000000000")
            read[item["title"]] = [value for _, value in store._conn.execute(sql).fetchall() if value is not None]
        assert read == {"Temp": [1], "Time": [2], "temp": [3], "TEMP": [4]}
        assert table_name(table) == "r_net__gw_n1"
    finally:
        store._close()


class _Answer:
    def __init__(self, code: int, body: dict):
        self.code, self._body = code, json.dumps(body).encode()

    def content(self):
        return succeed(self._body)


class _Grafana:
    """Answers a hook as an empty Grafana does (the documented HTTP API), and keeps what it was sent."""

    def __init__(self):
        self.sent: list = []

    def request(self, method, url, headers=None, data=None, timeout=None, reactor=None):
        self.sent.append((method, url, json.loads(data) if data else None))
        return succeed(_Answer(404 if method == "GET" else 200, {}))


@pytest_twisted.inlineCallbacks
def test_the_dashboard_of_an_sqlite_table_whose_name_differs_from_another_only_in_case_reads_its_own(tmp_path):
    """A drop-in strategy's ``lab/probe`` beside ``Lab/Probe`` is the table ``lab__probe_2`` in SQLite (which
    compares table names without case); its panels read ``"lab__probe"``, the other address's table."""
    import types

    from twisted.internet import reactor

    from lorrygate.hooks.grafana import GrafanaHook
    from lorrygate.storage.sqlite import SQLiteStorage

    path = str(tmp_path / "db.sqlite")
    store = SQLiteStorage("db", path, reactor=None)
    store._connect()
    try:
        store._commit(batch(Entry(TableName("Lab", "Probe"), [Record(NS, {"a": 1})], "main", Message("t", b"{}"), "json"),
                            Entry(TableName("lab", "probe"), [Record(NS, {"a": 2})], "main", Message("t", b"{}"), "json")))
    finally:
        store._close()
    grafana = _Grafana()
    hook = GrafanaHook("http://grafana:3000", {"db": types.SimpleNamespace(name="db", kind="sqlite", path=path)}, reactor,
                       client=grafana)
    yield hook.run(attrs.evolve(sample("x"), table=TableName("lab", "probe")))
    (board,) = [body["dashboard"] for method, url, body in grafana.sent if url.endswith("/api/dashboards/db")]
    sql = board["panels"][0]["targets"][0]["rawSql"]
    assert 'FROM "lab__probe_2"' in sql
    conn = sqlite3.connect(path)
    try:
        assert [value for _, value in conn.execute(sql.replace("$__unixEpochFrom()", "0").replace(
            "$__unixEpochTo()", "4000000000"))] == [2]
    finally:
        conn.close()


def test_grafana_at_an_ipv6_address_is_reached_there_with_the_urls_user_and_password():
    """``http://admin:pw@[::1]:3000/``: the host lost its brackets (``http://::1:3000``, no URL), so every request
    to such a Grafana failed."""
    import base64

    from lorrygate.hooks.grafana import GrafanaHook

    hook = GrafanaHook("http://admin:p%40ss@[::1]:3000/grafana/", {}, reactor=None)
    assert hook.base == "http://[::1]:3000/grafana"
    assert hook.headers[b"Authorization"] == [b"Basic " + base64.b64encode(b"admin:p@ss")]

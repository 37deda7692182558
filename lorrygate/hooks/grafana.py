"""
The ``grafana`` hook: a dashboard per table, with a panel per numeric field,
through Grafana's HTTP API (treq).

For each sample it makes sure, idempotently, that

1. the folder exists (``folder``; its uid derived from the title),
2. the storage's data source exists and is current (PostgreSQL; CrateDB
   through its PostgreSQL wire protocol; SQLite through the
   ``frser-sqlite-datasource`` plugin), uid ``lorrygate-<storage>``,
3. the table's dashboard exists (uid derived from storage and table), with a
   time-series panel for each numeric field; a field that appears later adds
   its panel, leaving the panels a user changed alone. A dashboard is saved
   with the version it was read at (``overwrite = false``): an edit made in
   between is not overwritten, the run reads again and adds its panels.

Authentication: ``token`` (a service account token, sent as a Bearer token)
or a user and password in ``url``. Grafana's answers that mean "try later"
(connection refused, 5xx, 429, a version conflict) fail the run, and the
runner tries again with backoff; a 4xx that says the request is wrong fails
it too, with Grafana's message.
"""

import base64
import hashlib
import json
from typing import Any
from urllib.parse import quote as quote_url
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from lorrygate.config.values import address_text, url_credentials
from lorrygate.storage.layout import column_names
from lorrygate.topology.naming import quote

#: Grafana's dashboard JSON model version this generator writes (Grafana 10-11)
SCHEMA_VERSION = 39
POSTGRES_TYPE = "grafana-postgresql-datasource"
SQLITE_TYPE = "frser-sqlite-datasource"
#: the panel grid: two panels a row
PANEL_WIDTH, PANEL_HEIGHT = 12, 8


class GrafanaError(Exception):
    pass


def uid_for(*parts: str) -> str:
    """A Grafana uid (at most 40 characters of [A-Za-z0-9-_]) from names."""
    return "lg-" + hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:32]


@attrs.frozen
class DataSource:
    """The Grafana data source of a storage."""

    uid: str
    name: str
    type: str
    body: dict = attrs.field(eq=False)

    @classmethod
    def for_storage(cls, storage, datasource_url: str = "") -> "DataSource":
        uid, name = f"lorrygate-{storage.name}"[:40], f"lorrygate {storage.name}"
        if storage.kind == "sqlite":
            import os

            body: dict[str, Any] = {"jsonData": {"path": datasource_url or os.path.abspath(storage.path)}}
            return cls(uid, name, SQLITE_TYPE, body)
        parts = urlsplit(storage.url.raw)
        if storage.kind == "postgresql":
            host, port = parts.hostname or "localhost", parts.port or 5432
            user, database = unquote(parts.username or "postgres"), parts.path.lstrip("/") or "postgres"
        else:  # crate: its PostgreSQL wire protocol
            host, port = parts.hostname or "localhost", 5432
            user, database = unquote(parts.username or "crate"), "doc"
        body = {
            "url": datasource_url or address_text(host, port),
            "user": user,
            "jsonData": {"database": database, "sslmode": "disable", "postgresVersion": 1500, "timeInterval": "1s"},
            "secureJsonData": {"password": unquote(parts.password)} if parts.password else {},
        }
        return cls(uid, name, POSTGRES_TYPE, body)

    def request(self) -> dict:
        return {"uid": self.uid, "name": self.name, "type": self.type, "access": "proxy", **self.body}


def field_columns(kind: str, fields) -> dict:
    """The column of each of a table's field names (in the order the table showed them) in a SQL storage of
    ``kind``, as the storage names them (`lorrygate.storage.layout.column_names`): ``Time`` is ``Time_2``, and
    in SQLite, which compares names without case, ``temp`` after ``Temp`` is ``temp_2``, not the ``Temp`` that
    a query of ``"temp"`` would read."""
    if kind == "postgresql":
        from lorrygate.storage.postgresql import PostgresDialect as dialect
    else:
        from lorrygate.storage.sqlite import SQLiteDialect as dialect  # type: ignore[assignment]
    table: dict | None = {} if getattr(dialect, "folds_case", False) else None
    out = {}
    for name in fields:
        out[name] = column = column_names((name,), dialect.fold, dialect.reserved, dialect.identifier_limit,
                                          table)[0]
        if table is not None:
            table[dialect.fold(column)] = column
    return out


def column_query(kind: str, table, field: str, column: str | None = None, physical: str | None = None) -> str:
    """The SQL of a panel: one field of a table over the dashboard's time range; ``column``: the field's
    column in a SQL storage where `field_columns` tells it (else its column as a row of it alone has);
    ``physical``: SQLite's table of ``table`` where the database tells it (`sqlite_table`)."""
    if kind == "crate":
        from lorrygate.storage.crate_values import crate_key

        path = "".join(f"[{_literal(crate_key(part))}]" for part in field.split("."))
        from lorrygate.storage.shared_layout import crate_table
        from lorrygate.storage.shared_layout import qualified as crate_qualified

        return (f'SELECT "time" AS "time", "fields"{path} AS {quote(field)} '
                f"FROM {crate_qualified(crate_table(table))} WHERE $__timeFilter(\"time\") ORDER BY 1")
    if kind == "postgresql":
        from lorrygate.storage.postgresql import PostgresDialect, qualified

        dialect = PostgresDialect
        column = column or column_names((field,), dialect.fold, dialect.reserved, dialect.identifier_limit)[0]
        return (f'SELECT "time" AS "time", {quote(column)} AS {quote(field)} FROM {qualified(table)} '
                f'WHERE $__timeFilter("time") ORDER BY 1')
    from lorrygate.storage.sqlite import SQLiteDialect, table_name

    column = column or column_names((field,), SQLiteDialect.fold, SQLiteDialect.reserved)[0]
    # seconds since the epoch, with the fraction (unixepoch(..., 'subsec') needs SQLite 3.42)
    return (f"SELECT (julianday(\"time\") - 2440587.5) * 86400.0 AS \"time\", {quote(column)} AS {quote(field)} "
            f"FROM {quote(physical or table_name(table))} "
            f"WHERE \"time\" >= strftime('%Y-%m-%dT%H:%M:%fZ', $__unixEpochFrom(), 'unixepoch') "
            f"AND \"time\" <= strftime('%Y-%m-%dT%H:%M:%fZ', $__unixEpochTo(), 'unixepoch') ORDER BY 1")


def sqlite_table(path: str, table) -> str | None:
    """SQLite's table of ``table`` in the database at ``path`` (`lorrygate.storage.sqlite_schema.own_table`)."""
    from lorrygate.storage.sqlite import table_name
    from lorrygate.storage.sqlite_schema import own_table

    return own_table(path, table_name(table))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def panel(datasource: DataSource, kind: str, table, field: str, index: int, column: str | None = None,
          physical: str | None = None) -> dict:
    reference = {"type": datasource.type, "uid": datasource.uid}
    target = {"refId": "A", "datasource": reference, "rawSql": column_query(kind, table, field, column, physical),
              "rawQuery": True,
              "editorMode": "code", "format": "time_series"}
    if kind == "sqlite":
        target.update(queryText=target["rawSql"], rawQueryText=target["rawSql"], timeColumns=["time"])
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": field,
        "datasource": reference,
        "gridPos": {"x": (index % 2) * PANEL_WIDTH, "y": (index // 2) * PANEL_HEIGHT, "w": PANEL_WIDTH,
                    "h": PANEL_HEIGHT},
        "targets": [target],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "single", "sort": "none"}},
    }


def dashboard_title(sample) -> str:
    parts = [sample.address.get(key) for key in ("realm", "network", "gateway", "node")]
    name = " / ".join(p for p in parts if p) or str(sample.table)
    return f"{name} ({sample.storage})"


def numeric(fields: dict) -> list:
    return [name for name, kind in fields.items() if kind == "number"]


def new_dashboard(sample, datasource: DataSource, physical: str | None = None) -> dict:
    fields = numeric(sample.fields)
    columns = _columns(sample)
    return {
        "uid": uid_for(sample.storage, sample.table.schema, sample.table.table),
        "title": dashboard_title(sample),
        "tags": ["lorrygate"] + ([sample.address["realm"]] if sample.address.get("realm") else []),
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": []},
        "panels": [panel(datasource, sample.kind, sample.table, field, i, columns.get(field), physical)
                   for i, field in enumerate(fields)],
    }


def _columns(sample) -> dict:
    """The columns of a sample's fields in its SQL storage (`field_columns`); none for CrateDB."""
    return {} if sample.kind == "crate" else field_columns(sample.kind, sample.fields)


def add_panels(dashboard: dict, sample, datasource: DataSource, physical: str | None = None) -> bool:
    """Add panels for the sample's new numeric fields that have none (by title); True if any was added.
    Panels a user changed, renamed or removed are left as they are."""
    panels = dashboard.setdefault("panels", [])
    titles = {p.get("title") for p in panels}
    missing = [field for field in numeric(sample.fields) if field in sample.new and field not in titles]
    if not missing:
        return False
    next_id = max([p.get("id") or 0 for p in panels] + [0])
    bottom = max([(p.get("gridPos") or {}).get("y", 0) + (p.get("gridPos") or {}).get("h", 0) for p in panels] + [0])
    columns = _columns(sample)
    for offset, field in enumerate(missing):
        made = panel(datasource, sample.kind, sample.table, field, offset, columns.get(field), physical)
        made["id"] = next_id + offset + 1
        made["gridPos"]["y"] += bottom
        panels.append(made)
    return True


class GrafanaHook:
    """Creates and updates folders, data sources and dashboards in one Grafana."""

    def __init__(self, url: str, storages: dict, reactor, token=None, folder: str = "lorrygate",
                 datasource_url: str = "", timeout: float = 10.0, client=None):
        plain, auth = url_credentials(url)
        parts = urlsplit(plain)
        # (the host as written: an IPv6 address keeps its brackets, which `hostname` dropped)
        self.base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.headers = {b"Content-Type": [b"application/json"], b"Accept": [b"application/json"]}
        if token is not None:
            self.headers[b"Authorization"] = [b"Bearer " + token.encode("utf-8")]
        elif auth is not None and auth[0]:
            pair = f"{auth[0]}:{auth[1]}".encode()
            self.headers[b"Authorization"] = [b"Basic " + base64.b64encode(pair)]
        self.storages = storages
        self.reactor = reactor
        self.folder = folder
        self.folder_uid = uid_for("folder", folder)
        self.datasource_url = datasource_url
        self.timeout = timeout
        self._client = client
        #: what this process already made sure of (a restart checks again)
        self._ensured = set()

    @property
    def client(self):
        if self._client is None:
            import treq

            self._client = treq
        return self._client

    async def _call(self, method: str, path: str, body=None, ok=(200,)):
        data = None if body is None else json.dumps(body).encode("utf-8")
        try:
            response = await self.client.request(method, self.base + path, headers=self.headers, data=data,
                                                 timeout=self.timeout, reactor=self.reactor)
            text = await response.content()
        except Exception as exc:
            raise GrafanaError(f"Grafana at {self.base} did not answer {method} {path}: "
                               f"{type(exc).__name__}: {exc}") from None
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {"message": text[:200].decode("utf-8", "replace")}
        if response.code in ok:
            return response.code, answer
        message = answer.get("message") if isinstance(answer, dict) else None
        raise GrafanaError(f"Grafana answered {method} {path} with {response.code}"
                           + (f": {message}" if message else "")
                           + (" (check the hook's token or the user in its url)" if response.code in (401, 403) else ""))

    def run(self, sample) -> Deferred:
        return Deferred.fromCoroutine(self._run(sample))

    async def _run(self, sample) -> None:
        storage = self.storages[sample.storage]
        datasource = DataSource.for_storage(storage, self.datasource_url)
        physical = None
        if sample.kind == "sqlite":
            physical = await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), sqlite_table, storage.path,
                                               sample.table)
        await self._folder()
        await self._datasource(datasource)
        uid = uid_for(sample.storage, sample.table.schema, sample.table.table)
        code, found = await self._call("GET", f"/api/dashboards/uid/{quote_url(uid)}", ok=(200, 404))
        if code == 404:
            dashboard = new_dashboard(sample, datasource, physical)  # without numbers yet: no panels until they come
        else:
            dashboard = found["dashboard"]
            if not add_panels(dashboard, sample, datasource, physical):
                return
        await self._call("POST", "/api/dashboards/db", {
            "dashboard": dashboard, "folderUid": self.folder_uid, "overwrite": False,
            "message": "lorrygate: " + ("first sample" if code == 404 else f"new fields {', '.join(sample.new)}")})

    async def _folder(self) -> None:
        if "folder" in self._ensured:
            return
        code, _ = await self._call("GET", f"/api/folders/{self.folder_uid}", ok=(200, 404))
        if code == 404:
            await self._call("POST", "/api/folders", {"uid": self.folder_uid, "title": self.folder}, ok=(200, 409, 412))
        self._ensured.add("folder")

    async def _datasource(self, datasource: DataSource) -> None:
        if ("datasource", datasource) in self._ensured:
            return
        path = f"/api/datasources/uid/{datasource.uid}"
        code, _ = await self._call("GET", path, ok=(200, 404))
        if code == 404:
            await self._call("POST", "/api/datasources", datasource.request())
        else:
            await self._call("PUT", path, datasource.request())
        self._ensured.add(("datasource", datasource))

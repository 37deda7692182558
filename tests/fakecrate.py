"""
A fake of CrateDB's HTTP endpoint that answers as a real CrateDB 5.10.11 or
newer does, as read from CrateDB's source and documentation
(../shared/reference/cratedb-http.md). It is not CrateDB: it checks every
statement against CrateDB's grammar (cratedb-sqlparse), keeps rows in memory
(one shard per table) and follows these behaviours, each from the CrateDB
file named:

- ``POST /_sql`` with ``stmt``/``args``/``bulk_args``; one result per bulk
  row; errors as ``{"error": {"message", "code"}}`` with the HTTP status of
  the code's first three digits (``rest/action/SqlHttpHandler.java``,
  ``rest/action/HttpError.java``, ``docs/interfaces/http.rst``);
- the JSON parser refuses ``NaN`` and ``Infinity``: 400, 4000
  (``SqlHttpHandler.java``, Jackson's default);
- ``OBJECT(DYNAMIC)`` sub-columns take the type of their first value (an
  integer makes BIGINT); later values are cast where a cast exists, 21.5 into
  BIGINT is 21, ``"21"`` is 21, numbers into TEXT are text
  (``types/LongType.java``, ``types/DoubleType.java``,
  ``types/StringType.java``, ``types/BooleanType.java``); a value that cannot
  be cast to a column known before the request fails the whole request (400,
  4000, since 5.10.11); a row that adds a column another row of the same
  request gave another type fails by itself, code 4000 (``execution/dml/
  Indexer.java``);
- only the first 10 failed rows of a shard carry an ``error``, later ones are
  a bare ``{"rowcount": -2}`` (``execution/engine/indexing/
  ShardingUpsertExecutor.java``, ``execution/dml/ShardResponse.java``);
- object keys with ``.``, ``[``, ``]``, tab, CR or LF fail their row with 4008
  (``metadata/ColumnIdent.java``); at most 1,000 columns per table, the
  sub-columns of objects counted (``mapping.total_fields.limit``,
  ``metadata/doc/DocTableInfo.java``), beyond that the row fails with 4000;
  an ``OBJECT(IGNORED)`` column added by ``ALTER TABLE ... ADD COLUMN``
  takes any keys and values, neither counted nor indexed
  (``docs/general/ddl/data-types.rst``);
- an indexed TEXT value over 32,766 bytes fails its row with 4000 (Lucene's
  immense-term limit); ``INDEX OFF`` columns take any size;
- a list of lists, or of values of different types, in ``fields`` fails its
  row with 4000 (``types/DataTypes.java``, ``guessType``); an
  ``OBJECT(IGNORED)`` column takes them (crate/crate issue 14451);
- ``INSERT ... ON CONFLICT DO NOTHING`` answers ``rowcount 0`` for a row whose
  primary key is stored (``analyze/InsertAnalyzer.java``); without it the row
  fails with 4091; ``ON CONFLICT (targets) DO UPDATE SET "fields" =
  concat("fields", excluded."fields")`` merges the row's object into the
  stored one (first-level keys, the new value wins; ``docs/general/builtins/
  scalar-functions.rst``, ``concat(object, object)``) and answers
  ``rowcount 1``; conflict targets that are not the primary key's columns
  fail the request with 400, 4000 (``InsertAnalyzer.verifyOnConflictTargets``);
  an INSERT without a primary key column that is not generated fails the
  request with 400, 4000 (``AnalyzedInsertStatement.java``: "Column ... is
  required but is missing from the insert statement");
- unknown schema 4045, unknown table 4041 (404), a column the table does not
  have and cannot add 4043 (``exceptions/ColumnUnknownException.java``);
- a relation's name with a ``.``, and in a CREATE one that is empty or starts
  with ``_`` (4002), or a read-only system schema (4000)
  (``metadata/RelationName.java``);
- a failed authentication answers 401 in plain text, not JSON
  (``auth/AuthenticationHandler.java`` (``HostBasedAuthentication``));
- a request larger than ``http.max_content_length`` (100 MB by default) is
  answered 413 without a body (``http/netty4/Netty4HttpServerTransport.java``,
  Netty's ``HttpObjectAggregator``);
- ``GET /`` answers the node's name and version (``rest/MainAndStaticFileHandler.java``);
- ``sys.cluster``, ``sys.nodes`` and ``sys.shards`` for the shard budget
  (``cluster.max_shards_per_node``, 1,000 by default);
- ``CREATE OR REPLACE VIEW`` replaces a view, and fails with 4093 where a
  table of that name exists (``exceptions/RelationAlreadyExists.java``);
  ``information_schema.views`` lists the views;
- every row has an ``_id``: its primary key's values, or a random text
  (``docs/general/ddl/system-columns.rst``); ``SELECT``, ``UPDATE`` and
  ``DELETE`` of plain columns with ``WHERE`` conditions joined by ``AND``
  (``=``, ``<``, ``>=``, ``IS [NOT] NULL``, ``= ANY(?)``); a search sees the
  table as of its last ``REFRESH TABLE`` (CrateDB refreshes once a second
  by default, ``docs/general/ddl/refresh.rst``), a lookup by ``_id`` sees it
  as it is (a real-time get); ``UPDATE`` and ``DELETE`` with ``bulk_args``
  answer a row count per set of values (``docs/interfaces/http.rst``, bulk
  operations).

Faults are injected by the tests: whole-request errors (``fail_next``), per
row codes (``row_faults``), and a 5002 after a partial write
(``partial_failure``, as 5.10.0-6.4.2 answer a failed shard).
"""

import json
import re

from cratedb_sqlparse import sqlparse
from twisted.web.resource import Resource

_CREATE = re.compile(r'CREATE TABLE IF NOT EXISTS ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*")', re.S)
_INSERT = re.compile(r'INSERT INTO ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*") \(([^)]*)\)')
_VIEW = re.compile(r'CREATE OR REPLACE VIEW ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*") AS SELECT (.*) FROM '
                   r'("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*") WHERE "address" = \'((?:[^\']|\'\')*)\'$', re.S)
_ALTER = re.compile(r'ALTER TABLE ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*") ADD COLUMN ("[^"]+(?:""[^"]*)*") (.+)$')
_PRIMARY = re.compile(r"PRIMARY KEY \(([^)]*)\)")
_UPSERT = re.compile(r"ON CONFLICT \(([^)]*)\) DO UPDATE SET (.+)$", re.S)
_MERGED = re.compile(r'"([a-z_]+)" = concat\("\1", excluded\."\1"\)')
_COLUMN = re.compile(r'(?:\(|, )("[^"]+(?:""[^"]*)*") ([A-Z]+(?: WITH TIME ZONE)?(?:\([A-Z]+\))?)([^,]*)')
_FORBIDDEN = re.compile(r"[.\[\]\t\r\n]")
TEXT_LIMIT = 32_766
COLUMN_LIMIT = 1_000
ERRORS_PER_SHARD = 10


_READ = re.compile(r'SELECT "time", (.*) FROM ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*") WHERE "time" (>=|>|=) \?'
                   r'( AND "time" (<=|<) \?)?( AND "address" = \?)? ORDER BY "time"( DESC)? LIMIT \? OFFSET \?$', re.S)
_EXPRESSION = re.compile(r'"(tags|fields|extra_fields)"((?:\[\'(?:[^\']|\'\')*\'\])*)')
_NAME = r'"[^"]+(?:""[^"]*)*"'
_PLAIN_SELECT = re.compile(rf'SELECT ((?:{_NAME}, )*{_NAME}) FROM ({_NAME})\.({_NAME})(?: WHERE (.+?))?'
                           rf'(?: ORDER BY ({_NAME}))?$', re.S)
_UPDATE = re.compile(rf'UPDATE ({_NAME})\.({_NAME}) SET ((?:{_NAME} = \?, )*{_NAME} = \?) WHERE (.+)$', re.S)
_DELETE = re.compile(rf'DELETE FROM ({_NAME})\.({_NAME}) WHERE (.+)$', re.S)
_REFRESH = re.compile(rf'REFRESH TABLE ({_NAME})\.({_NAME})$')
_CONDITION = re.compile(r'"?([a-z_]+)"? (?:(=|<|>=) (ANY\(\?\)|\?)|IS (NOT )?NULL)$')


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"')


def _kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return None


class CastError(Exception):
    pass


def _cast(value, kind):
    """A value cast to a column type as CrateDB's types do; CastError where no cast exists."""
    if value is None or kind is None or _kind(value) == kind:
        return value
    try:
        if kind == "bigint" and not isinstance(value, (bool, dict, list)):
            return int(float(value)) if isinstance(value, str) and "." in value else int(value)
        if kind == "double precision" and not isinstance(value, (bool, dict, list)):
            return float(value)
        if kind == "text" and not isinstance(value, (dict, list)):
            return json.dumps(value) if isinstance(value, bool) else str(value)
        if kind == "boolean":
            if isinstance(value, (int, float)):
                return bool(value)
            if isinstance(value, str) and value.lower() in ("true", "false", "t", "f"):
                return value.lower() in ("true", "t")
    except (TypeError, ValueError):
        pass
    raise CastError(f"Cannot cast value `{value}` to type `{kind}`")


def _refuse_constant(name):
    raise ValueError(f"Non-standard token '{name}': enable JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS")


class FakeCrate(Resource):
    isLeaf = True

    def __init__(self, version: str = "5.10.11", users: dict | None = None, max_shards_per_node: int = 1000):
        super().__init__()
        self.version = version
        self.users = users  # {"name": "password"}; None: trust every request
        self.max_shards_per_node = max_shards_per_node
        self.nodes = 1
        self.statements = []
        self.requests = 0  # INSERT requests answered
        self.tables = {}  # (schema, table) -> {"rows", "pk", "types", "ddl", "columns", "unindexed", "shards"}
        self.views = {}  # (schema, view) -> ((schema, table), columns, address)
        self.faults = []  # whole-request faults: (status, code, message)
        self.statement_faults = []  # (statement prefix, fault) for the next statement of that prefix
        self.row_faults = []  # codes for the next rows, one each: a per-row error with that code (None: a bare -2)
        self.partial_failure = False  # the next INSERT writes its first half, then answers 500/5002
        self.authorizations = []  # the Authorization header of each request
        self.max_content_length = 100 << 20  # http.max_content_length: a larger request is answered 413
        self.sizes = []  # the bytes of each POST
        self.limit_fails_request = False  # a row beyond the column limit fails the whole request, not itself
        self._ids = 0  # the random _id of rows of tables without a primary key

    # -- fault injection --------------------------------------------------------

    def fail_next(self, status: int, code: int, message: str, statement: str = "") -> None:
        """The next request fails so; with ``statement``, the next one whose statement starts with it."""
        if statement:
            self.statement_faults.append((statement, (status, code, message)))
        else:
            self.faults.append((status, code, message))

    def rows(self, schema: str, table: str) -> list:
        return self.tables[(schema, table)]["rows"]

    def drop(self, schema: str, table: str) -> None:
        del self.tables[(schema, table)]

    def view_rows(self, schema: str, view: str) -> list:
        """What ``SELECT * FROM`` the view answers: the table's rows of its address, with its columns."""
        table, columns, address = self.views[(schema, view)]
        return [{c: row.get(c) for c in columns} for row in self.tables[table]["rows"] if row.get("address") == address]

    # -- HTTP ---------------------------------------------------------------------

    def _authenticated(self, request) -> bool:
        header = request.getHeader(b"authorization")
        self.authorizations.append(header)
        if self.users is None:
            return True
        import base64

        if not header or not header.startswith(b"Basic "):
            return False
        name, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        return self.users.get(name) == password

    def _unauthorized(self, request):
        request.setResponseCode(401)
        request.setHeader(b"content-type", b"text/plain")
        return b"trust authentication failed for user \"crate\"\n"

    def render_GET(self, request):
        if not self._authenticated(request):
            return self._unauthorized(request)
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/_fake/rows":  # not CrateDB's: how a test in another process reads the rows back
            schema, table = request.args[b"schema"][0].decode(), request.args[b"table"][0].decode()
            found = self.tables.get((schema, table))
            return json.dumps([row["fields"] for row in found["rows"]] if found else []).encode()
        return json.dumps({"ok": True, "status": 200, "name": "fake", "cluster_name": "fake",
                           "version": {"number": self.version, "build_snapshot": False}}).encode()

    def render_POST(self, request):
        if not self._authenticated(request):
            return self._unauthorized(request)
        raw = request.content.read()
        self.sizes.append(len(raw))
        if len(raw) > self.max_content_length:  # Netty's HttpObjectAggregator: 413, no body
            request.setResponseCode(413)
            return b""
        request.setHeader(b"content-type", b"application/json")
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError as exc:
            return self._error(request, 400, 4000, f"SQLParseException[{exc}: {raw[:2000].decode('utf-8', 'replace')}]")
        statement = body["stmt"]
        self.statements.append(statement)
        try:
            sqlparse(statement, raise_exception=True)
        except Exception as exc:
            return self._error(request, 400, 4000, f"SQLParseException[{exc}]")
        if self.faults:
            return self._error(request, *self.faults.pop(0))
        for index, (prefix, fault) in enumerate(self.statement_faults):
            if statement.startswith(prefix):
                del self.statement_faults[index]
                return self._error(request, *fault)
        if statement.startswith("CREATE TABLE"):
            return self._create(request, statement)
        if statement.startswith("CREATE OR REPLACE VIEW"):
            return self._view(request, statement)
        if statement.startswith("ALTER TABLE"):
            return self._alter(request, statement)
        if statement.startswith("INSERT INTO"):
            return self._insert(request, statement, body.get("bulk_args"), body.get("args"))
        if statement.startswith("SELECT"):
            return self._select(request, statement, body.get("args") or [])
        if statement.startswith(("UPDATE", "DELETE")) and body.get("bulk_args") is not None:
            return self._bulk_change(request, statement, body["bulk_args"])
        if statement.startswith(("UPDATE", "DELETE", "REFRESH")):
            return self._change(request, statement, body.get("args") or [])
        return self._answer(request, {"cols": [], "rows": [], "rowcount": 0, "duration": 0.1})

    def _answer(self, request, document, status=200):
        request.setResponseCode(status)
        return json.dumps(document).encode()

    def _error(self, request, status, code, message):
        return self._answer(request, {"error": {"message": message, "code": code}}, status)

    # -- statements -----------------------------------------------------------------

    def _select(self, request, statement, args):
        if "information_schema.columns" in statement:
            return self._columns(request, *args)
        if _READ.match(statement):
            return self._read(request, statement, args)
        if _PLAIN_SELECT.match(statement):
            return self._plain_select(request, statement, args)
        if "sys.cluster" in statement:
            rows = [[self.max_shards_per_node]]
        elif "sys.nodes" in statement:
            rows = [[self.nodes]]
        elif "sys.shards" in statement:
            rows = [[sum(t["shards"] for t in self.tables.values())]]
        elif "information_schema.views" in statement:
            rows = [list(key) for key in self.views]
        else:
            rows = [[]]
        return self._answer(request, {"cols": ["x"], "rows": rows, "rowcount": 1, "duration": 0.1})

    def _columns(self, request, schema, table):
        """``information_schema.columns``: a table's columns, and the sub-columns of its objects as paths
        (``fields['wifi']['rssi']``), each typed by its first value (``docs/general/information-schema.rst``:
        "For fields in object columns this is not an identifier but a path")."""
        target = self.tables.get((schema, table))
        if target is None:
            return self._answer(request, {"cols": ["column_name", "data_type"], "rows": [], "rowcount": 0,
                                          "duration": 0.1})
        kinds = {}
        for row in target["rows"]:
            for top in ("tags", "fields"):
                for path, value in _paths(row.get(top) or {}, top):
                    if value is not None:
                        kinds.setdefault(path, _kind(value))
        rows = [[c, "timestamp with time zone" if c == "time" else "object" if c in ("tags", "fields") or str(target["columns"][c]).startswith("OBJECT") else "text"]
                for c in target["columns"]] + sorted([path, kind] for path, kind in kinds.items())
        rows.sort()
        return self._answer(request, {"cols": ["column_name", "data_type"], "rows": rows, "rowcount": len(rows),
                                      "duration": 0.1})

    def _plain_select(self, request, statement, args):
        """Plain columns of a table's rows that match the ``WHERE`` conditions: those of its last refresh, or
        (``"_id" = ANY(?)``) as they are."""
        match = _PLAIN_SELECT.match(statement)
        key = (_unquote(match.group(2)), _unquote(match.group(3)))
        target = self.tables.get(key)
        if target is None:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{key[0]}.{key[1]}' unknown]")
        columns = [_unquote(c) for c in match.group(1).split(", ")]
        where = match.group(4) or ""
        live = where.startswith('"_id" = ANY')
        rows = self._where(self._with_ids(target) if live else target["searchable"], where, args)
        if match.group(5):
            order = _unquote(match.group(5))
            rows = sorted(rows, key=lambda row: (row.get(order) is None, row.get(order)))
        return self._answer(request, {"cols": columns, "rows": [[row.get(c) for c in columns] for row in rows],
                                      "rowcount": len(rows), "duration": 0.1})

    def _bulk_change(self, request, statement, bulk_args):
        """``UPDATE`` or ``DELETE`` with ``bulk_args``: one result (its row count) per set of values
        (``docs/interfaces/http.rst``, bulk operations)."""
        results = []
        for args in bulk_args:
            answer = json.loads(self._change(request, statement, args))
            if "error" in answer:
                return self._answer(request, answer, request.code)
            results.append({"rowcount": answer["rowcount"]})
        request.setResponseCode(200)
        return self._answer(request, {"cols": [], "duration": 0.3, "results": results})

    def _change(self, request, statement, args):
        """``UPDATE``, ``DELETE`` (of the rows as they are) and ``REFRESH TABLE``."""
        match = _UPDATE.match(statement) or _DELETE.match(statement) or _REFRESH.match(statement)
        key = (_unquote(match.group(1)), _unquote(match.group(2)))
        target = self.tables.get(key)
        if target is None:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{key[0]}.{key[1]}' unknown]")
        if statement.startswith("REFRESH"):
            target["searchable"] = self._with_ids(target)
            return self._answer(request, {"cols": [], "rows": [], "rowcount": 1, "duration": 0.1})
        by_id = {target["ids"][id(row)]: row for row in target["rows"]}
        if statement.startswith("UPDATE"):
            columns = [_unquote(part[:-len(" = ?")]) for part in match.group(3).split(", ")]
            for column in columns:
                if column not in target["columns"]:
                    return self._error(request, 404, 4043, f"ColumnUnknownException[Column {column} unknown]")
            chosen = [by_id[view["_id"]]
                      for view in self._where(self._with_ids(target), match.group(4), args[len(columns):])]
            for row in chosen:
                row.update(zip(columns, args))
        else:
            chosen = [by_id[view["_id"]] for view in self._where(self._with_ids(target), match.group(3), args)]
            gone = {id(row) for row in chosen}
            target["rows"][:] = [row for row in target["rows"] if id(row) not in gone]
        return self._answer(request, {"cols": [], "rows": [], "rowcount": len(chosen), "duration": 0.1})

    @staticmethod
    def _with_ids(target) -> list:
        """Copies of a table's rows as they are, each with its ``_id``."""
        return [dict(row, _id=target["ids"][id(row)]) for row in target["rows"]]

    @staticmethod
    def _where(rows, where: str, args) -> list:
        args = list(args)
        tests = []
        for condition in where.split(" AND ") if where else []:
            match = _CONDITION.match(condition.strip())
            if match is None:
                raise AssertionError(f"the fake does not take the condition {condition!r}")
            column, op, mark, negated = match.groups()
            if op is None:
                tests.append(lambda row, c=column, n=negated: (row.get(c) is not None) == bool(n))
                continue
            value = args.pop(0)
            if mark.startswith("ANY"):
                tests.append(lambda row, c=column, v=value: row.get(c) in v)
            else:
                compare = {"=": lambda a, b: a == b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b}[op]
                tests.append(lambda row, c=column, v=value, f=compare: row.get(c) is not None and f(row[c], v))
        return [row for row in rows if all(test(row) for test in tests)]

    def _read(self, request, statement, args):
        """``SELECT "time", <sub-columns> FROM t WHERE "time" >= ? AND "time" <= ? [AND "address" = ?] ORDER BY
        "time" [DESC] LIMIT ? OFFSET ?`` (or ``"time" > ?``, ``"time" < ?``, or ``"time" = ?`` alone):
        timestamps as epoch milliseconds, as CrateDB answers over HTTP."""
        match = _READ.match(statement)
        key = (_unquote(match.group(2)), _unquote(match.group(3)))
        if key not in self.tables:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{key[0]}.{key[1]}' unknown]")
        expressions = _EXPRESSION.findall(match.group(1))
        op, bounded, upper, by_address = match.group(4), match.group(5), match.group(6), match.group(7)
        lower = args[0]
        end = args[1] if bounded else lower
        address = args[2 if bounded else 1] if by_address else None
        limit, offset = args[-2], args[-1]
        after = {">=": lambda t: t >= lower, ">": lambda t: t > lower, "=": lambda t: t == lower}[op]
        before = (lambda t: t < end) if upper == "<" else (lambda t: t <= end)
        rows = sorted((r for r in self.tables[key]["rows"] if after(r["time"]) and before(r["time"])
                       and (address is None or r.get("address") == address)), key=lambda r: r["time"],
                      reverse=bool(match.group(8)))
        answer = []
        for row in rows[offset:offset + limit]:
            values = [row["time"]]
            for top, path in expressions:
                value = row.get(top) if not path else row.get(top) or {}
                for part in re.findall(r"\['((?:[^']|'')*)'\]", path):
                    value = value.get(part.replace("''", "'")) if isinstance(value, dict) else None
                values.append(value)
            answer.append(values)
        return self._answer(request, {"cols": ["time"] + [t + p for t, p in expressions], "rows": answer,
                                      "rowcount": len(answer), "duration": 0.1})

    def _create(self, request, statement):
        match = _CREATE.search(statement)
        key = (_unquote(match.group(1)), _unquote(match.group(2)))
        refused = _invalid_relation(*key, creating=True)
        if refused:
            return self._error(request, 400, *refused)
        if key not in self.tables:
            primary = _PRIMARY.search(statement)
            pk = [_unquote(c.strip()) for c in primary.group(1).split(",")] if primary else []
            columns = {}
            unindexed = set()
            generated = set()
            for name, kind, rest in _COLUMN.findall(statement[match.end():]):
                columns[_unquote(name)] = kind
                if "INDEX OFF" in rest:
                    unindexed.add(_unquote(name))
                if "GENERATED" in rest:
                    generated.add(_unquote(name))
            shards = int(re.search(r"CLUSTERED INTO (\d+) SHARDS", statement).group(1)) \
                if "CLUSTERED INTO" in statement else 4
            self.tables[key] = {"rows": [], "ids": {}, "searchable": [], "pk": pk, "types": {}, "ddl": statement, "columns": columns,
                                "unindexed": unindexed, "generated": generated, "shards": shards, "paths": set(),
                                "name": f"{key[0]}.{key[1]}"}
        return self._answer(request, {"cols": [], "rows": [], "rowcount": 1, "duration": 0.5})

    def _view(self, request, statement):
        match = _VIEW.search(statement)
        key = (_unquote(match.group(1)), _unquote(match.group(2)))
        refused = _invalid_relation(*key, creating=True)
        if refused:
            return self._error(request, 400, *refused)
        if key in self.tables:
            return self._error(request, 409, 4093, f"RelationAlreadyExists[Relation '{key[0]}.{key[1]}' already exists.]")
        table = (_unquote(match.group(4)), _unquote(match.group(5)))
        if table not in self.tables:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{table[0]}.{table[1]}' unknown]")
        columns = [_unquote(c.strip()) for c in match.group(3).split(",")]
        self.views[key] = (table, columns, match.group(6).replace("''", "'"))
        return self._answer(request, {"cols": [], "rows": [], "rowcount": 1, "duration": 0.5})

    def _alter(self, request, statement):
        match = _ALTER.search(statement)
        key = (_unquote(match.group(1)), _unquote(match.group(2)))
        if key not in self.tables:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{key[0]}.{key[1]}' unknown]")
        column = _unquote(match.group(3))
        if column in self.tables[key]["columns"]:
            return self._error(request, 409, 4098, f"IllegalArgumentException[Column '{column}' already exists]")
        self.tables[key]["columns"][column] = match.group(4)
        return self._answer(request, {"cols": [], "rows": [], "rowcount": 1, "duration": 0.5})

    def _insert(self, request, statement, bulk_args, args):
        self.requests += 1
        match = _INSERT.search(statement)
        schema, table = _unquote(match.group(1)), _unquote(match.group(2))
        refused = _invalid_relation(schema, table)
        if refused:
            return self._error(request, 400, *refused)
        if not any(s == schema for s, _ in self.tables):
            return self._error(request, 404, 4045, f"SchemaUnknownException[Schema '{schema}' unknown]")
        if (schema, table) not in self.tables:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{schema}.{table}' unknown]")
        target = self.tables[(schema, table)]
        columns = [_unquote(c.strip()) for c in match.group(3).split(",")]
        for column in columns:
            if target["columns"] and column not in target["columns"]:
                return self._error(request, 404, 4043, f"ColumnUnknownException[Column {column} unknown]")
        for column in target["pk"]:
            if column not in columns and column not in target.get("generated", ()):
                return self._error(request, 400, 4000, f'IllegalArgumentException[Column "{column}" is required but '
                                                       "is missing from the insert statement]")
        do_nothing = "ON CONFLICT" in statement and "DO NOTHING" in statement
        upsert = _UPSERT.search(statement)
        if upsert is not None:
            targets = [_unquote(name.strip()) for name in upsert.group(1).split(",")]
            if len(targets) != len(target["pk"]) or not set(targets) <= set(target["pk"]):
                return self._error(request, 400, 4000, (
                    f"IllegalArgumentException[Number of conflict targets ({targets}) did not match the number of "
                    f"primary key columns ({target['pk'] or ['_id']})]") if len(targets) != len(target["pk"]) else (
                    f"IllegalArgumentException[Conflict target ({targets}) did not match the primary key columns "
                    f"({target['pk']})]"))
            merged = [name for name in _MERGED.findall(upsert.group(2))]
            do_nothing = merged or True
        rows = [dict(zip(columns, row)) for row in (bulk_args if bulk_args is not None else [args])]
        if self.limit_fails_request and any(
                len(target["columns"]) + len(target["paths"]) + len(_new_paths(target, row)) > COLUMN_LIMIT
                for row in rows):
            return self._error(request, 400, 4000, _limit_message(target))
        # A value that cannot be cast to a column the table knows already fails the whole request.
        for row in rows:
            for name, value in (row.get("fields") or {}).items():
                try:
                    _cast(value, target["types"].get(name))
                except CastError as exc:
                    return self._error(request, 400, 4000, f"SQLParseException[{exc}]")
        if self.partial_failure:
            self.partial_failure = False
            for row in rows[: len(rows) // 2]:
                self._row(target, row, do_nothing)
            return self._error(request, 500, 5002, "ShardsUnavailable[a shard failed after the first half]")
        if bulk_args is None:  # one row: its error is the request's
            result = self._row(target, rows[0], do_nothing)
            if "error" in result:
                error = result["error"]
                return self._error(request, int(str(error["code"])[:3]), error["code"], error["message"])
            return self._answer(request, {"cols": [], "rows": [], "rowcount": max(result["rowcount"], 0),
                                          "duration": 1.0})
        results = []
        failed = 0
        for row in rows:
            result = self._row(target, row, do_nothing)
            if result["rowcount"] == -2:
                failed += 1
                if failed > ERRORS_PER_SHARD:
                    result = {"rowcount": -2}
            results.append(result)
        return self._answer(request, {"cols": [], "duration": 2.2, "results": results})

    def _row(self, target, row, do_nothing) -> dict:
        """``do_nothing``: True (``ON CONFLICT DO NOTHING``), a list of the object columns an upsert merges, or
        False."""
        if self.row_faults:
            code = self.row_faults.pop(0)
            if code is None:  # as a failed row beyond the first 10 of a shard
                return {"rowcount": -2}
            messages = {4037: "ClusterBlockException[index [t] blocked by: [TOO_MANY_REQUESTS/12/disk usage "
                              "exceeded flood-stage watermark, index has read-only-allow-delete block]]",
                        5000: "EsRejectedExecutionException[rejected execution]",
                        5002: "ShardsUnavailable"}
            return {"rowcount": -2, "error": {"code": code, "message": messages.get(code, "injected")}}
        for name, _value in _flatten(row.get("fields") or {}):
            if _FORBIDDEN.search(name.rsplit("\x00", 1)[-1]):
                return {"rowcount": -2, "error": {"code": 4008, "message": (
                    f"InvalidColumnNameException[\"{name.split(chr(0))[-1]}\" conflicts with subscript pattern, "
                    "square brackets are not allowed]")}}
        for name, value in row.items():
            if isinstance(value, str) and len(value.encode()) > TEXT_LIMIT and name not in target["unindexed"]:
                return _immense(name)
        for name, value in _flatten(row.get("fields") or {}):
            if isinstance(value, str) and len(value.encode()) > TEXT_LIMIT:
                return _immense(name)
            if isinstance(value, list):
                refused = _list_refused(value)
                if refused:
                    return {"rowcount": -2, "error": {"code": 4000, "message": f"IllegalArgumentException[{refused}]"}}
        fields = {}
        new = {}
        for name, value in (row.get("fields") or {}).items():
            known = target["types"].get(name)
            try:
                fields[name] = _cast(value, known)
            except CastError as exc:
                return {"rowcount": -2, "error": {"code": 4000, "message": f"SQLParseException[{exc}]"}}
            if value is not None and known is None:
                new[name] = _kind(value)
        paths = _new_paths(target, row)
        if len(target["columns"]) + len(target["paths"]) + len(paths) > COLUMN_LIMIT:
            return {"rowcount": -2, "error": {"code": 4000, "message": _limit_message(target)}}
        if target["pk"]:
            key = tuple(row.get(column) for column in target["pk"] if column in row)
            stored = next((r for r in target["rows"] if tuple(r.get(c) for c in target["pk"] if c in r) == key),
                          None)
            if stored is not None:
                if isinstance(do_nothing, list):  # (DO UPDATE SET "fields" = concat("fields", excluded."fields"))
                    for column in do_nothing:
                        value = fields if column == "fields" else row.get(column)
                        if value is not None:
                            stored[column] = {**(stored.get(column) or {}), **value}
                    target["types"].update(new)
                    target["paths"] |= paths
                    return {"rowcount": 1}
                if do_nothing:
                    return {"rowcount": 0}
                return {"rowcount": -2, "error": {"code": 4091,
                                                  "message": "DuplicateKeyException[A document with the same primary key exists already]"}}
        target["types"].update(new)
        target["paths"] |= paths
        stored = dict(row, fields=fields) if "fields" in row else row
        self._ids += 1
        target["ids"][id(stored)] = "/".join(str(stored.get(c)) for c in target["pk"]) if target["pk"] \
            else f"fake{self._ids:06d}"
        target["rows"].append(stored)
        return {"rowcount": 1}


def _invalid_relation(schema: str, name: str, creating: bool = False) -> tuple | None:
    """``(code, message)`` of CrateDB's refusal of a relation's name (``metadata/RelationName.java``): a ``.`` in
    the schema or the name in any statement (``RelationName.of``); an empty one or one that starts with ``_``,
    and a read-only system schema, in a CREATE (``ensureValidForRelationCreation``). Invalid names are 4002
    (``InvalidSchemaNameException``, ``InvalidRelationName``: ``RELATION_INVALID_NAME``), the read-only schema an
    IllegalArgumentException (4000)."""
    if "." in schema:
        return 4002, f'InvalidSchemaNameException[schema name "{schema}" is invalid.]'
    if "." in name:
        return 4002, f'InvalidRelationName[Relation name "{schema}.{name}" is invalid.]'
    if not creating:
        return None
    if not schema or schema.startswith("_"):
        return 4002, f'InvalidSchemaNameException[schema name "{schema}" is invalid.]'
    if not name or name.startswith("_"):
        return 4002, f'InvalidRelationName[Relation name "{schema}.{name}" is invalid.]'
    if schema in ("sys", "information_schema", "pg_catalog"):
        return 4000, f"IllegalArgumentException[Cannot create relation in read-only schema: {schema}]"
    return None


def _paths(obj, prefix):
    """The sub-columns of an object as CrateDB names them: ``fields['wifi']``, ``fields['wifi']['rssi']``."""
    for key, value in obj.items():
        path = f"{prefix}['{key.replace(chr(39), chr(39) * 2)}']"
        yield path, value
        if isinstance(value, dict):
            yield from _paths(value, path)


def _flatten(obj, prefix=""):
    for key, value in obj.items():
        yield prefix + key, value
        if isinstance(value, dict):
            yield from _flatten(value, prefix + key + "\x00")


def _new_paths(target, row) -> set:
    """The sub-columns a row would add to a table."""
    return {path for top in ("tags", "fields") for path, value in _paths(row.get(top) or {}, top)
            if value is not None} - target["paths"]


def _limit_message(target) -> str:
    return f"IllegalArgumentException[Limit of total columns [{COLUMN_LIMIT}] in table [{target['name']}] exceeded]"


def _list_refused(value: list) -> str:
    """Why a list cannot make a column (``types/DataTypes.java`` ``guessType``), or ""."""
    kinds = []
    for item in value:
        if item is None:
            continue
        if isinstance(item, list):
            return "Dynamic nested arrays are not supported"
        kind = "double precision" if isinstance(item, (int, float)) and not isinstance(item, bool) else _kind(item)
        if kinds and kind != kinds[0]:
            return f"Mixed dataTypes inside a list are not supported. Found {kinds[0]} and {kind}"
        kinds.append(kind)
    return ""


def _immense(name):
    return {"rowcount": -2, "error": {"code": 4000, "message": (
        f"IllegalArgumentException[Document contains at least one immense term in field=\"{name.replace(chr(0), '.')}\" "
        f"(whose UTF8 encoding is longer than the max length {TEXT_LIMIT})]")}}


def serve(port: int) -> None:
    """The fake on ``port`` in a process of its own (``python -m tests.fakecrate PORT``)."""
    from twisted.internet import reactor
    from twisted.web.server import Site

    reactor.listenTCP(port, Site(FakeCrate()), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    import sys

    serve(int(sys.argv[1]))

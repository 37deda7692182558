"""
A fake of CrateDB's HTTP endpoint, built from CrateDB's documented request and
response shapes (shared/reference/cratedb-http.md): ``POST /_sql`` with
``stmt``/``args``/``bulk_args``, one result per bulk row, the error codes and
the HTTP statuses that follow them. It is not CrateDB: it checks every
statement against CrateDB's grammar (cratedb-sqlparse), keeps rows in memory,
fixes the type of each ``fields`` sub-column at its first value (as
``OBJECT(DYNAMIC)`` does) and enforces primary keys. Faults are injected by
the tests.
"""

import json
import re

from cratedb_sqlparse import sqlparse
from twisted.web.resource import Resource

_CREATE = re.compile(r'CREATE TABLE IF NOT EXISTS ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*")', re.S)
_INSERT = re.compile(r'INSERT INTO ("[^"]+(?:""[^"]*)*")\.("[^"]+(?:""[^"]*)*") \(([^)]*)\)')
_PRIMARY = re.compile(r"PRIMARY KEY \(([^)]*)\)")


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"')


def _kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "double precision"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return None


class FakeCrate(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.statements = []
        self.tables = {}  # (schema, table) -> {"rows": [...], "pk": [...], "types": {}}
        self.faults = []  # whole-request faults: (status, code, message)
        self.unavailable_rows = 0  # next rows answered with a per-row 5002
        self.authorizations = []  # the Authorization header of each request

    # -- fault injection --------------------------------------------------------

    def fail_next(self, status: int, code: int, message: str) -> None:
        self.faults.append((status, code, message))

    def rows(self, schema: str, table: str) -> list:
        return self.tables[(schema, table)]["rows"]

    # -- HTTP ---------------------------------------------------------------------

    def render_POST(self, request):
        self.authorizations.append(request.getHeader(b"authorization"))
        body = json.loads(request.content.read())
        statement = body["stmt"]
        self.statements.append(statement)
        request.setHeader(b"content-type", b"application/json")
        try:
            sqlparse(statement, raise_exception=True)
        except Exception as exc:
            return self._error(request, 400, 4000, f"SQLParseException[{exc}]")
        if self.faults:
            return self._error(request, *self.faults.pop(0))
        if statement.startswith("CREATE TABLE"):
            return self._create(request, statement)
        if statement.startswith("INSERT INTO"):
            return self._insert(request, statement, body.get("bulk_args"), body.get("args"))
        return self._answer(request, {"cols": [], "rows": [], "rowcount": 0, "duration": 0.1})

    def _answer(self, request, document, status=200):
        request.setResponseCode(status)
        return json.dumps(document).encode()

    def _error(self, request, status, code, message):
        return self._answer(request, {"error": {"message": message, "code": code}}, status)

    def _create(self, request, statement):
        match = _CREATE.search(statement)
        key = (_unquote(match.group(1)), _unquote(match.group(2)))
        if key not in self.tables:
            primary = _PRIMARY.search(statement)
            pk = [_unquote(c.strip()) for c in primary.group(1).split(",")] if primary else []
            self.tables[key] = {"rows": [], "pk": pk, "types": {}, "ddl": statement}
        return self._answer(request, {"cols": [], "rows": [], "rowcount": 1, "duration": 0.5})

    def _insert(self, request, statement, bulk_args, args):
        match = _INSERT.search(statement)
        schema, table = _unquote(match.group(1)), _unquote(match.group(2))
        if not any(s == schema for s, _ in self.tables):
            return self._error(request, 404, 4045, f"SchemaUnknownException[Schema '{schema}' unknown]")
        if (schema, table) not in self.tables:
            return self._error(request, 404, 4041, f"RelationUnknown[Relation '{schema}.{table}' unknown]")
        target = self.tables[(schema, table)]
        columns = [_unquote(c.strip()) for c in match.group(3).split(",")]
        if bulk_args is None:
            bulk_args = [args]
        results = [self._row(target, dict(zip(columns, row)), schema, table) for row in bulk_args]
        return self._answer(request, {"cols": [], "duration": 2.2, "results": results})

    def _row(self, target, row, schema, table):
        if self.unavailable_rows:
            self.unavailable_rows -= 1
            return {"rowcount": -2, "error": {"code": 5002, "message": "ShardsUnavailable"}}
        if target["pk"]:
            key = tuple(row.get(column) for column in target["pk"] if column in row)
            if any(tuple(r.get(c) for c in target["pk"] if c in r) == key for r in target["rows"]):
                return {"rowcount": -2, "error": {"code": 4091,
                                                  "message": "DuplicateKeyException[A document with the same primary key exists already]"}}
        for name, value in (row.get("fields") or {}).items():
            kind = _kind(value)
            known = target["types"].get(name)
            if value is not None and known is not None and kind != known:
                return {"rowcount": -2, "error": {"code": 4003, "message": (
                    f"ColumnValidationException[Validation failed for fields['{name}']: Cannot cast object element "
                    f"`{name}` with value `{value}` to type `{known}`]")}}
        for name, value in (row.get("fields") or {}).items():
            if value is not None:
                target["types"].setdefault(name, _kind(value))
        target["rows"].append(row)
        return {"rowcount": 1}

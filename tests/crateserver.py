"""
A CrateDB for a test to write into: the fake (tests/fakecrate.py) on a port
of its own, or the real server at LORRYGATE_CRATEDB_URL. Both are read back
the same way, so the same test asserts what the real server does the day it
runs, and tells whether the fake was right.
"""

import json
import os

import treq
from twisted.web.server import Site

from lorrygate.storage.cratedb import make_client
from tests.fakecrate import FakeCrate

REAL_URL = os.environ.get("LORRYGATE_CRATEDB_URL", "").rstrip("/")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FakeServer:
    real = False

    def __init__(self, reactor, **options):
        self.fake = FakeCrate(**options)
        self._port = reactor.listenTCP(0, Site(self.fake), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self._port.getHost().port}"

    async def rows(self, schema: str, table: str, columns=("time", "tags", "fields")) -> list:
        found = self.fake.tables.get((schema, table))
        return [{k: row.get(k) for k in columns} for row in found["rows"]] if found else []

    async def dead_letters(self, topic_prefix: str) -> list:
        found = self.fake.tables.get(("doc", "lorrygate_dead_letter"))
        return [row for row in (found["rows"] if found else []) if row["topic"].startswith(topic_prefix)]

    async def drop(self, schema: str, table: str) -> None:
        self.fake.drop(schema, table)

    async def close(self, schema: str) -> None:
        await self._port.stopListening()


class RealServer:
    real = True

    def __init__(self, reactor):
        self.url = REAL_URL
        self._http = make_client(reactor, REAL_URL.startswith("https"), "")

    async def sql(self, statement: str, args=()) -> dict:
        response = await self._http.post(f"{self.url}/_sql", data=json.dumps({"stmt": statement, "args": list(args)}),
                                         headers={"Content-Type": ["application/json"]})
        answer = json.loads(await treq.content(response))
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    async def rows(self, schema: str, table: str, columns=("time", "tags", "fields")) -> list:
        name = f"{_quoted(schema)}.{_quoted(table)}"
        try:
            await self.sql(f"REFRESH TABLE {name}")
        except RuntimeError:
            return []
        answer = await self.sql(f"SELECT {', '.join(map(_quoted, columns))} FROM {name}")
        return [dict(zip(columns, row)) for row in answer["rows"]]

    async def dead_letters(self, topic_prefix: str) -> list:
        try:
            await self.sql("REFRESH TABLE doc.lorrygate_dead_letter")
        except RuntimeError:
            return []
        columns = ("topic", "payload", "payload_base64", "stage", "error")
        answer = await self.sql(f"SELECT {', '.join(columns)} FROM doc.lorrygate_dead_letter WHERE topic LIKE ?",
                                [topic_prefix + "%"])
        return [dict(zip(columns, row)) for row in answer["rows"]]

    async def drop(self, schema: str, table: str) -> None:
        await self.sql(f"DROP TABLE {_quoted(schema)}.{_quoted(table)}")

    async def close(self, schema: str) -> None:
        answer = await self.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema])
        for (table,) in answer["rows"]:
            await self.drop(schema, table)
        try:
            await self.sql('DELETE FROM doc.lorrygate_extra_keys WHERE table_schema = ?', [schema])
        except RuntimeError:
            pass  # (no keys moved: no such table)

"""
The WebSocket sink: a live view of what a channel stores (``url = ws://127.0.0.1:9482/``).

The gateway serves, on that address (autobahn's WebSocket on the reactor):

- ``/``: a small live page listing every address (table) with its latest
  values and when they came, updating as records arrive;
- ``/ws``: the WebSocket: each committed record as one JSON message
  ``{"table", "address", "time", "fields", "tags"}``; a client may send
  ``{"subscribe": ["schema.table", ...]}`` to receive only those tables
  (``[]``: all again);
- ``/latest``: the latest record of every table, as JSON.

Delivery: at most once, to whoever is connected: it is a view, not a store.
A batch counts as written once it is handed to the connected browsers; a
browser that reads slower than records come loses messages (its queue is
bounded at 4 MiB, what does not fit is dropped and counted) rather than
growing the gateway's memory. Put it beside a storage that keeps the data
(``storage = db, live``).

It has no authentication of its own: whoever reaches the address sees every
row. The configuration warns of an address beyond loopback; put a reverse
proxy that authenticates in front of one.
"""

import json
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.resource import Resource
from zope.interface import implementer

from lorrygate.decoding.timestamps import to_iso
from lorrygate.interfaces import IStorage
from lorrygate.storage.layout import json_text

#: a client whose unsent data exceeds this loses messages instead of growing memory
CLIENT_BUFFER = 4 << 20
#: tables whose latest record the page and /latest show
MAX_TABLES = 10_000
#: the largest message a browser may send (a subscription)
MAX_CLIENT_MESSAGE = 1 << 20

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lorrygate live</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; } #state { color: #888; font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
td.values { font-family: ui-monospace, monospace; }
</style></head>
<body><h1>lorrygate live <span id="state">connecting</span></h1>
<table><thead><tr><th>address</th><th>table</th><th>time</th><th>latest values</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
"use strict";
const rows = new Map();
const body = document.getElementById("rows");
function show(record) {
  let row = rows.get(record.table);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.table = record.table;
    row.dataset.firstSeen = String(Date.now());
    for (let i = 0; i < 4; i++) row.appendChild(document.createElement("td"));
    row.cells[3].className = "values";
    rows.set(record.table, row);
    body.appendChild(row);
  }
  const a = record.address || {};
  row.cells[0].textContent = [a.realm, a.network, a.gateway, a.node].filter(Boolean).join(" / ");
  row.cells[1].textContent = record.table;
  row.cells[2].textContent = record.time;
  row.cells[3].textContent = JSON.stringify(Object.assign({}, record.tags, record.fields));
  row.dataset.updated = String(Date.now());
}
function connect() {
  const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  socket.onopen = () => { document.getElementById("state").textContent = "live"; document.body.dataset.live = "yes"; };
  socket.onmessage = (event) => show(JSON.parse(event.data));
  socket.onclose = () => {
    document.getElementById("state").textContent = "reconnecting";
    document.body.dataset.live = "no";
    setTimeout(connect, 1000);
  };
}
fetch("latest").then((r) => r.json()).then((latest) => latest.forEach(show)).finally(connect);
</script></body></html>
"""


def record_message(entry, record) -> dict:
    address = entry.address
    return {
        "table": str(entry.table),
        "address": {} if address is None else {"realm": address.realm, "network": address.network,
                                                "gateway": address.gateway, "node": address.node},
        "time": to_iso(record.time),
        "fields": record.fields,
        "tags": record.tags,
    }


def _protocol_class():
    from autobahn.twisted.websocket import WebSocketServerProtocol

    class LiveProtocol(WebSocketServerProtocol):
        subscribed: set | None = None

        def onOpen(self):
            self.factory.sink.clients.add(self)

        def onMessage(self, payload, isBinary):
            try:
                wanted = json.loads(payload).get("subscribe")
            except (ValueError, AttributeError):
                return
            if wanted is None or wanted == []:
                self.subscribed = None
            elif isinstance(wanted, list) and all(isinstance(table, str) for table in wanted):
                self.subscribed = set(wanted)
            # (anything else, a text or an object: not a subscription, nothing changes)

        def onClose(self, wasClean, code, reason):
            self.factory.sink.clients.discard(self)

    return LiveProtocol


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.encode("utf-8")


class _Latest(Resource):
    isLeaf = True

    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json_text(list(self.sink.latest.values())).encode("utf-8")


@implementer(IStorage)
@attrs.define(eq=False)
class WebSocketSink:
    name: str
    url: str
    reactor: Any
    clients: set = attrs.Factory(set)
    #: table -> its latest record message
    latest: dict = attrs.Factory(dict)
    sent: int = 0
    dropped: int = 0
    _port: Any = None

    log = Logger()

    def start(self) -> Deferred:
        return Deferred.fromCoroutine(self._listen())

    async def _listen(self) -> None:
        from autobahn.twisted.resource import WebSocketResource
        from autobahn.twisted.websocket import WebSocketServerFactory
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from lorrygate.errors import StorageError
        from lorrygate.service.control import quiet_site

        parts = urlsplit(self.url)
        factory = WebSocketServerFactory(self.url.replace("http", "ws", 1))
        factory.protocol = _protocol_class()
        # what a browser sends is a subscription of a few table names: a larger message closes its connection
        # (1009) instead of being gathered in memory (autobahn's default has no bound)
        factory.setProtocolOptions(maxMessagePayloadSize=MAX_CLIENT_MESSAGE, maxFramePayloadSize=MAX_CLIENT_MESSAGE)
        factory.sink = self  # type: ignore[attr-defined]  # read by the protocols
        root = Resource()
        root.putChild(b"", _Page())
        root.putChild(b"ws", WebSocketResource(factory))
        root.putChild(b"latest", _Latest(self))
        endpoint = TCP4ServerEndpoint(self.reactor, parts.port or 9482, interface=parts.hostname or "127.0.0.1")
        try:
            self._port = await endpoint.listen(quiet_site(root))
        except Exception as exc:
            raise StorageError(f"WebSocket sink {self.name}: cannot listen on {self.url} ({exc})") from None
        self.log.info("WebSocket sink {sink}: live page on http://{host}:{port}/", sink=self.name,
                      host=parts.hostname or "127.0.0.1", port=self._port.getHost().port)

    def stop(self) -> Deferred:
        for client in list(self.clients):
            client.sendClose()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else succeed(None)

    def details(self) -> dict:
        return {"clients": len(self.clients), "sent": self.sent, "dropped": self.dropped, "tables": len(self.latest)}

    def write(self, batch) -> Deferred:
        messages = []
        for entry in batch.entries:
            if entry.table is None or not entry.records:
                continue
            shown = None
            for record in entry.records:
                message = record_message(entry, record)
                try:
                    messages.append((message["table"], json_text(message).encode("utf-8")))
                except ValueError:  # (nested too deeply for JSON text): not shown, as a page too slow is not
                    self.dropped += 1
                    continue
                shown = message
            table = str(entry.table)
            if shown is not None and (table in self.latest or len(self.latest) < MAX_TABLES):
                self.latest[table] = shown
        for client in list(self.clients):
            transport = client.transport
            for table, data in messages:
                if client.subscribed is not None and table not in client.subscribed:
                    continue
                if _unsent(transport) > CLIENT_BUFFER:
                    self.dropped += 1
                    continue
                client.sendMessage(data, isBinary=False)
                self.sent += 1
        return succeed(None)


def _unsent(transport) -> int:
    """Bytes a TCP transport still holds for its peer (Twisted's FileDescriptor buffers)."""
    handle = getattr(transport, "transport", transport)  # the TLS or WebSocket wrappers hold the TCP one
    return len(getattr(handle, "dataBuffer", b"")) + getattr(handle, "_tempDataLen", 0)

"""
The control endpoint: a small HTTP interface on a local endpoint
(``[lorrygate] control``, by default the UNIX socket ``var/lorrygate.sock``)
that ``lorrygate status`` and ``lorrygate flush`` talk to.

- ``GET /status``: JSON with each source (connected, paused), each storage
  (rows buffered per table and the age of the oldest, last flush, rows and
  dead letters committed, failed writes, last error) and each channel's
  counters.
- ``POST /flush``: commit everything buffered now; answers once it is
  committed (or after the shutdown timeout, with what is still pending).
"""

import json

from twisted.internet.defer import DeferredList, TimeoutError as DeferredTimeout
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def status(gateway) -> dict:
    storages = []
    for name, batcher in gateway.batchers.items():
        stats = batcher.stats
        storages.append({
            "name": name,
            "kind": gateway.settings.storages[name].kind,
            "pending": batcher.pending,
            "paused_sources": batcher.paused,
            "tables": batcher.buffered(),
            "batches": stats.batches,
            "rows": stats.rows,
            "dead_letters": stats.dead_letters,
            "failures": stats.failures,
            "last_error": stats.last_error,
            "failing": stats.failing,
            "last_flush_age": None if stats.last_flush is None else round(gateway.reactor.seconds() - stats.last_flush, 3),
            "last_flush_rows": stats.last_flush_rows,
            "down": batcher.down,
            "backend": batcher.storage.details() if hasattr(batcher.storage, "details") else {},
            "spool": None if batcher.spool is None else {
                "batches": batcher.spool.batches,
                "bytes": batcher.spool.bytes,
                "oldest_age": batcher.spool.oldest_age(gateway.reactor.seconds()),
                "damaged": batcher.spool.damaged,
                "spooled": stats.spooled,
                "drained": stats.drained,
            },
        })
    sources = [{"name": s.name, "broker": f"{s.broker.host}:{s.broker.port}", "connected": s.connected,
                "client_id": s.client_id, "last_error": s.last_error, "retained_skipped": s.retained_skipped,
                "subscribed": s.subscribed, "paused_by": list(s.paused_by)}
               for s in gateway.sources]
    channels = [dict(router.stats.asdict(), name=router.channel.name) for router in gateway.routers]
    return {"config": gateway.settings.source, "sources": sources, "storages": storages, "channels": channels,
            "reload_error": gateway.reload_error}


class _Status(Resource):
    isLeaf = True

    def __init__(self, gateway):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status(self.gateway)).encode()


class _Flush(Resource):
    isLeaf = True

    def __init__(self, gateway):
        super().__init__()
        self.gateway = gateway

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        drains = [batcher.drain() for batcher in self.gateway.batchers.values()]
        for d in drains:
            d.addTimeout(self.gateway.shutdown_timeout, self.gateway.reactor)

        def done(results):
            timed_out = any(not ok and result.check(DeferredTimeout) for ok, result in results)
            answer = {"flushed": not timed_out, "status": status(self.gateway)}
            if not request.finished and not getattr(request, "_disconnected", False):
                request.write(json.dumps(answer).encode())
                request.finish()

        DeferredList(drains, consumeErrors=True).addCallback(done)
        return NOT_DONE_YET


class _Guarded(Resource):
    """Answers 401 unless the request carries ``Authorization: Bearer <token>``."""

    def __init__(self, token: str, inner: Resource):
        super().__init__()
        self.token = token.encode("utf-8")
        self.inner = inner

    def getChildWithDefault(self, path, request):
        import hmac

        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, b"Bearer " + self.token):
            from twisted.web.resource import ErrorPage

            return ErrorPage(401, "Unauthorized", "the control endpoint wants its control_token")
        return self.inner.getChildWithDefault(path, request)


def control_site(gateway):
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"status", _Status(gateway))
    root.putChild(b"flush", _Flush(gateway))
    token = gateway.settings.gateway.control_token
    if token is not None:
        root = _Guarded(token.reveal(), root)
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site

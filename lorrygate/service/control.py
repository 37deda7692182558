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
import time

from twisted.internet.defer import DeferredList
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from lorrygate.clock import time_of_day
from lorrygate.service.connections import ENDPOINT_CONNECTIONS, LimitedFactory


def _section(source) -> dict:
    """The ``[source:NAME]`` a source of a channel was made from (its log lines name it so), where it has one."""
    settings = getattr(source, "settings", None)
    section = getattr(settings, "name", None)
    return {"section": section} if isinstance(section, str) and section else {}


def status(gateway) -> dict:
    storages = []
    for name, batcher in gateway.batchers.items():
        stats = batcher.stats
        storages.append({
            "name": name,
            "kind": gateway.settings.storages[name].kind,
            "pending": batcher.pending,
            "paused_sources": batcher.paused,
            "pauses": stats.pauses,
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
                "oldest_age": batcher.spool.oldest_age(time_of_day(gateway.reactor)()),
                "damaged": batcher.spool.damaged,
                "spooled": stats.spooled,
                "drained": stats.drained,
            },
        })
    sources = [{"name": s.name, **_section(s), "broker": f"{s.broker.host}:{s.broker.port}", "connected": s.connected,
                "client_id": s.client_id, "last_error": s.last_error,
                "last_error_age": _age(getattr(s, "last_error_at", None)), "retained_skipped": s.retained_skipped,
                "subscribed": s.subscribed, "paused_by": list(s.paused_by),
                **({"details": s.status()} if hasattr(s, "status") else {}),
                **({"group": s.group} if isinstance(getattr(s, "group", None), str) and s.group else {})}
               for s in gateway.sources]
    channels = [dict(router.stats.asdict(), name=router.channel.name, last_ignored=router.why_ignored())
                for router in gateway.routers]
    hooks = [runner.status() for runner in gateway.hook_runners.values()]
    return {"config": gateway.settings.source, "sources": sources, "storages": storages, "channels": channels,
            "hooks": hooks, "reload_error": gateway.reload_error}


def _age(at: float | None) -> float | None:
    """Seconds since ``at`` (``time.monotonic``), or None."""
    return None if at is None else round(time.monotonic() - at, 1)


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

    def __init__(self, token: str, inner: Resource, wants: str = "the control endpoint wants its control_token"):
        super().__init__()
        self.token = token.encode("utf-8")
        self.inner = inner
        self.wants = wants

    def getChildWithDefault(self, path, request):
        import hmac

        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, b"Bearer " + self.token):
            from twisted.web.resource import ErrorPage

            return ErrorPage(401, "Unauthorized", self.wants)
        return self.inner.getChildWithDefault(path, request)


def not_ready(gateway) -> list:
    """Why the gateway is not ready to take data ([] when it is): a source not connected and subscribed,
    a storage down without a spool, or down with its spool nearly full (its sources are about to pause)."""
    reasons = []
    for source in gateway.sources:
        if not (source.connected and source.subscribed):
            reasons.append(f"source {source.name}: not subscribed yet"
                           + (f" ({source.last_error})" if source.last_error else ""))
    for name, batcher in gateway.batchers.items():
        if not batcher.down:
            continue
        spool = batcher.spool
        if spool is None:
            reasons.append(f"storage {name}: down and without a spool ({batcher.stats.last_error})")
        elif batcher.spool_refused:
            reasons.append(f"storage {name}: down and its spool takes no more ({batcher.spool_refused})")
        elif spool.bytes >= 0.9 * spool.max_bytes:
            reasons.append(f"storage {name}: down and its spool is {spool.bytes * 100 // spool.max_bytes}% full "
                           f"({batcher.stats.last_error})")
    return reasons


class _Health(Resource):
    """``/health``: 200 while the process answers."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"alive\n"


class _Ready(Resource):
    """``/ready``: 200 when every source is subscribed and every storage is up or spooling within
    bounds, else 503 with the reasons, one a line."""

    isLeaf = True

    def __init__(self, gateway):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        reasons = not_ready(self.gateway)
        if reasons:
            request.setResponseCode(503)
            return ("not ready:\n" + "".join(f"- {reason}\n" for reason in reasons)).encode("utf-8")
        return b"ready\n"


def quiet_site(root, limit: int = ENDPOINT_CONNECTIONS):
    """A Site that logs no access line per request and shows no tracebacks, keeping at most ``limit``
    connections open (`LimitedFactory`)."""
    from twisted.web.server import Site

    class QuietSite(Site):
        noisy = False
        displayTracebacks = False

        def log(self, request):
            pass

    return LimitedFactory(QuietSite(root), limit)


def control_site(gateway):
    root = Resource()
    root.putChild(b"status", _Status(gateway))
    root.putChild(b"flush", _Flush(gateway))
    root.putChild(b"health", _Health())
    root.putChild(b"ready", _Ready(gateway))
    token = gateway.settings.gateway.control_token
    if token is not None:
        root = _Guarded(token.reveal(), root)
    return quiet_site(root)  # no access-log line per status or health request

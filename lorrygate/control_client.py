"""
The client side of the control endpoint, for ``lorrygate status`` and
``lorrygate flush``: plain blocking HTTP (these are one-shot commands, no
reactor), over a UNIX socket or TCP.
"""

import http.client
import json
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def request(endpoint: str, method: str, path: str, timeout: float = 60.0, token: str | None = None) -> dict:
    """Send one request to a control endpoint string; return the JSON answer."""
    connection: http.client.HTTPConnection
    if endpoint.startswith("unix:"):
        connection = _UnixConnection(endpoint[5:], timeout)
    else:
        parts = endpoint.split(":")
        host = next((p.split("=", 1)[1] for p in parts[2:] if p.startswith("interface=")), "127.0.0.1")
        connection = http.client.HTTPConnection(host, int(parts[1]), timeout=timeout)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"HTTP {response.status}: {body[:200]!r}")
    return json.loads(body)


def _ago(source: dict) -> str:
    """How long ago a source's last error was, said beside it: `` (3 min ago, connected again since)``."""
    age = source.get("last_error_age")
    if age is None:
        return ""
    when = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h"
    return f" ({when} ago" + (", connected again since)" if source.get("connected") else ")")


def render_status(answer: dict) -> str:
    """The status answer as text for people."""
    lines = [f"lorrygate: {answer['config']}"]
    if answer.get("reload_error"):
        lines.append(f"the last reload could not start, the running configuration stays: {answer['reload_error']}")
    for source in answer["sources"]:
        # a [source:NAME] source is named as its log lines name it, with the channel it serves (whose name the
        # status carries for every source)
        named = (f"source {source['section']} (channel {source['name']})"
                 if source.get("section") and source["section"] != source["name"] else f"source {source['name']}")
        state = "connected" if source["connected"] else "NOT connected"
        details = source.get("details") or {}
        if details.get("finished"):
            lines.append(f"{named}: finished: the graph {details['graph']} ended after "
                         f"{details['produced']} values")
            continue
        if "listening" in details:
            counts = ", ".join(f"{details[key]} {what}" for key, what in (("received", "received"),
                               ("refused", "refused"), ("timed_out", "answered 503 after timeout"),
                               ("turned_away", "connections closed past max_connections"),
                               ("busy", "answered 503 while bodies held the 64 MiB budget"),
                               ("exports", "exports"), ("exporting", "exporting now"))
                               if key in details and (details[key] or key not in ("turned_away", "exporting", "busy")))
            lines.append(f"{named}: "
                         + (f"listening on {details['listening']}" if source["connected"] else "NOT listening")
                         + (f" ({counts})" if counts else ""))
            if source.get("last_error"):
                lines.append(f"  last error{_ago(source)}: {source['last_error']}")
            continue
        lines.append(f"{named}: {state} to {source['broker']} as {source['client_id']}"
                     + (f", in group {source['group']}" if source.get("group") else "")
                     + (f", lag {details['lag']:,} messages" if details.get("lag") is not None else ""))
        if details.get("broker_dropped"):
            lines.append(f"  the broker counts {details['broker_dropped']:,} message(s) it dropped since it started, "
                         f"{details.get('broker_dropped_while_watched', 0):,} of them while watched (a session's "
                         "queue full: docs/delivery.rst)")
        if source.get("last_error"):
            lines.append(f"  last error{_ago(source)}: {source['last_error']}")
    for storage in answer["storages"]:
        last = "never" if storage["last_flush_age"] is None else f"{storage['last_flush_age']:.1f} s ago ({storage['last_flush_rows']} rows)"
        lines.append(
            f"storage {storage['name']} ({storage['kind']}): {storage['pending']} rows pending, "
            f"{storage['rows']} rows and {storage['dead_letters']} dead letters committed, "
            f"{storage['failures']} failed writes, last flush {last}"
            + (", sources paused (backpressure)" if storage["paused_sources"] else "")
            + (f", reading paused {storage['pauses']} times since the start" if storage.get("pauses") else "")
        )
        if storage.get("down"):
            lines.append("  DOWN: writes fail; batches go to the spool")
        if storage.get("failing"):
            lines.append(f"  FAILING: the database refuses every row (kept as dead letters): {storage['failing']}")
        spool = storage.get("spool")
        if spool and spool["batches"]:
            lines.append(f"  spool: {spool['batches']} batches, {spool['bytes']} bytes, oldest {spool['oldest_age']:.1f} s")
        if spool and spool["damaged"]:
            lines.append(f"  spool: {spool['damaged']} damaged record(s) moved aside")
        if storage["last_error"]:
            lines.append(f"  last error: {storage['last_error']}")
        backend = storage.get("backend") or {}
        if backend.get("retention"):
            lines.append(f"  retention {backend['retention'] / 86400:g} days: {backend['expired']:,} older rows "
                         f"deleted since the start"
                         + (f"; the last run failed: {backend['expiry_error']}" if backend.get("expiry_error") else ""))
        if "merge" in backend:
            own = ", ".join(f"{channel} {seconds:g} s" if seconds else f"{channel} off"
                            for channel, seconds in backend.get("channel_merge", {}).items())
            lines.append("  merge: the rows of a table and tags in a bucket are one row; buckets of "
                         + (f"{backend['merge']:g} s" if backend["merge"] else "none (a row a record)")
                         + (f", channels' own: {own}" if own else ""))
        for table in storage["tables"]:
            lines.append(f"  {table['rows']:>8} rows buffered, oldest {table['oldest_age']:.1f} s  {table['table']}")
    for channel in answer["channels"]:
        lines.append(
            f"channel {channel['name']}: {channel['received']} received, {channel['routed']} routed"
            + (f" ({channel['partly']} but for bad lines, kept as dead letters)" if channel.get("partly") else "")
            + f", {channel['unmatched']} unmatched, {channel['undecodable']} undecodable"
            + (f", {channel['ignored']} ignored (the last: {channel['last_ignored'][:300]})"
               if channel.get("ignored") and channel.get("last_ignored") else "")
            + (f", {channel['ignored']} ignored" if channel.get("ignored") and not channel.get("last_ignored") else "")
            # (the rest of what was received, where there is any: so that the counts add up to it)
            + (f", {channel['empty']} empty (nothing to store)" if channel.get("empty") else "")
            + (f", {channel['too_large']} over the size limit (dead letters by reference)"
               if channel.get("too_large") else "")
            + (f", {channel['own_reports']} own error reports received back" if channel.get("own_reports") else "")
            + (f", {channel['collisions']} table name collisions (two addresses, one table: see the log)"
               if channel.get("collisions") else "")
            + (f", {channel['seq_gaps']} sequence gaps (messages lost before the gateway)"
               if channel.get("seq_gaps") else "")
            + (f", {channel['keepalives']} keep-alives sent" if channel.get("keepalives") else "")
        )
    for hook in answer.get("hooks", ()):
        lines.append(f"hook {hook['name']}: {hook['runs']} runs, {hook['failures']} failures, {hook['pending']} waiting"
                     + (f"; failing: {hook['last_error']}" if hook["failing"] else ""))
    return "\n".join(lines)

"""
Log output: structured `twisted.logger` events, as text for people or as one
flat JSON object per line for log shippers.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``,
``message`` (the event's text, formatted), then the event's own fields
(``channel``, ``storage``, ``event`` = ``stats``, ...); a failure adds
``traceback``. Values JSON cannot hold are written as text.
"""

import json
import sys
from datetime import UTC, datetime
from typing import Any, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
#: keys of Twisted's own bookkeeping (and of its legacy log system), not the event's fields
_INTERNAL = frozenset({"message", "isError", "system", "printed", "format", "time", "level", "logger", "why",
                       "failure", "log_trace"})


def flat_event(event: dict) -> dict:
    """One log event as the flat object of a JSON log line."""
    level = event.get("log_level")
    stamp = event.get("log_time")
    out = {
        "time": datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if stamp is not None else None,
        "level": level.name if level is not None else ("error" if event.get("isError") else "info"),
        "logger": event.get("log_namespace") or event.get("system") or "",
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _INTERNAL:
            continue
        out[key] = value
    failure = event.get("log_failure") or event.get("failure")
    if failure is not None:
        try:
            out["traceback"] = failure.getTraceback()
        except Exception:
            out["traceback"] = repr(failure)
    return out


@implementer(ILogObserver)
class FlatJsonObserver:
    """Writes each event as one flat JSON object per line."""

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, event: dict) -> None:
        try:
            line = json.dumps(flat_event(event), default=str, ensure_ascii=False)
        except Exception as exc:  # a log line must never break the program
            line = json.dumps({"level": "error", "message": f"unloggable event: {exc!r}"})
        self.stream.write(line + "\n")
        self.stream.flush()


#: Twisted's own info lines that say nothing an operator needs (lorrygate logs the failure and the next try
#: of a connection itself; listening ports are in the start-up line; an HTTP client's "Starting factory" and
#: "Stopping factory" come with each new connection of a poll or a CrateDB storage)
_QUIET = {"twisted.application._client_service.ClientService", "log_legacy",
          "twisted.web.client._HTTP11ClientFactory"}


def _not_noise(event: dict) -> PredicateResult:
    level = event.get("log_level")
    if event.get("log_namespace") in _QUIET and (level is None or level < LogLevel.warn):
        return PredicateResult.no
    return PredicateResult.maybe


def start_logging(fmt: str = "text", level: str = "info", stream=None) -> None:
    """Send every log event at ``level`` or above to ``stream`` (stdout)."""
    stream = stream or sys.stdout
    observer: Any = FlatJsonObserver(stream) if fmt == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [cast(Any, _not_noise), predicate])], redirectStandardIO=False
    )

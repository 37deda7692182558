"""JSON log lines: one flat object each, whatever logged the event."""

import io
import json

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from lorrygate.logs import FlatJsonObserver


def lines_of(emit):
    stream = io.StringIO()
    publisher = LogPublisher(FlatJsonObserver(stream))
    emit(Logger(namespace="lorrygate.test", observer=publisher), publisher)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_structured_event_is_flat_with_its_own_fields():
    (line,) = lines_of(lambda log, _: log.warn("storage {storage}: {count} rows", storage="db", count=3))
    assert line["level"] == "warn" and line["logger"] == "lorrygate.test" and line["message"] == "storage db: 3 rows"
    assert (line["storage"], line["count"]) == ("db", 3) and line["time"].endswith("Z")
    assert not any(key.startswith("log_") for key in line)


def test_a_failure_has_its_traceback_and_odd_values_become_text():
    def emit(log, _):
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("it broke: {thing}", Failure(), thing=object())

    (line,) = lines_of(emit)
    assert line["level"] == "critical" and "ZeroDivisionError" in line["traceback"]
    assert line["thing"].startswith("<object object")


def test_a_legacy_twisted_event_is_flat_too():
    def emit(_, publisher):
        publisher({"message": ("Site starting on 8080",), "isError": 0, "system": "-", "log_level": LogLevel.info,
                   "log_time": 1_700_000_000.0, "log_format": "{log_text}", "log_text": "Site starting on 8080"})

    (line,) = lines_of(emit)
    assert line == {"time": "2023-11-14T22:13:20.000Z", "level": "info", "logger": "-",
                    "message": "Site starting on 8080"}

"""``lorrygate status`` says how long ago a source's last error was: the error of a connection lost hours ago,
shown bare beside a source that is connected again, was read as its state now."""

import time

from twisted.internet.task import Clock

from lorrygate.config.settings import SourceSettings
from lorrygate.control_client import render_status
from lorrygate.service.control import _age
from lorrygate.sources.http import HttpSource


def test_a_sources_last_error_is_timed_when_it_is_set():
    source = HttpSource("api", SourceSettings(name="web", type="http", listen=("127.0.0.1", 0)), [].append, Clock())
    assert (source.last_error, source.last_error_at) == ("", None)
    before = time.monotonic()
    source.last_error = "cannot listen on 127.0.0.1:80: permission denied"
    assert before <= source.last_error_at <= time.monotonic()
    at = source.last_error_at
    source.last_error = ""  # (cleared: its time stays, unused)
    assert source.last_error_at == at and _age(None) is None and 0 <= _age(at) < 60


def render(connected, age):
    return render_status({"config": "gw.ini", "storages": [], "channels": [], "sources": [
        {"name": "main", "connected": connected, "broker": "mqtt:1883", "client_id": "c",
         "last_error": "connection lost (the broker closed it)", "last_error_age": age}]})


def test_the_status_says_how_long_ago_and_whether_the_source_is_connected_again():
    assert "  last error (2.0 h ago, connected again since): connection lost" in render(True, 7_300.0)
    assert "  last error (5 min ago): connection lost (the broker closed it)" in render(False, 300.0)
    assert "  last error (42 s ago, connected again since)" in render(True, 42.0)
    assert "  last error: connection lost" in render(True, None)  # (an older gateway's answer: no age)

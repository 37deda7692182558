"""
The Prometheus sink: the latest numeric value of every field of every
address, as gauges (``url = prometheus://`` on the gateway's metrics
listener, ``[lorrygate] metrics``; or ``url = pushgateway://HOST:9091/JOB``,
pushed to a Pushgateway, with HTTP Basic authentication from the URL's
``user:password@``).

A field becomes the gauge ``lorrygate_field_<field>`` (the name sanitized
for Prometheus) with the labels ``realm``, ``network``, ``gateway``, ``node``
and ``table``, and the row's tags (a RuuviTag's ``mac``, a Shelly's
``component``, a channel's ``tags``: without them the sensors of one table
were one series, the last one's value) as labels of their names (sanitized;
one of the five's name is that label where the address has none, as a
Meshtastic packet's ``node``, else ``tag_<name>`` where its value differs). A gauge
has the same labels on every series, as the Pushgateway requires: a series
without a tag that others of the gauge have has it empty, which Prometheus
reads as no such label. A field of a nested object by its dotted name, as the SQL
storages' column (``{"wifi": {"rssi": -60}}`` is
``lorrygate_field_wifi_rssi``); booleans are 0 or 1, text is left out. A
field whose gauge name another field of its table has already (``a-b``
beside ``a_b``: both were one series, each value overwriting the other's)
gets ``_2`` (``_3``, ...), as a column does in SQLite; which one is first
is the order in which they came, since the gateway started. The series are
bounded: at most ``max_series`` (default 10,000); fields of addresses beyond
that are not exported and are counted (``lorrygate_sink_series_refused``).

Delivery: at most once, as a gauge is: it holds the latest value, and what
changes between two scrapes (or pushes) is not seen. A batch counts as
written once the values are updated (and, with a Pushgateway, pushed: a
failed push fails the batch, which is retried, so the Pushgateway catches
up; pushes are at least one second apart). A push the Pushgateway refuses
for what it holds (HTTP 400: metrics inconsistent with those another job
pushed under the same name, say) does not fail the batch: every push would
be refused the same, and the channel would wait for this sink for good. It
is counted (``push_refused``) and its reason logged and kept
(``last_refusal``), and the next push tries again.
"""

import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.config.values import url_credentials
from lorrygate.errors import StorageError
from lorrygate.interfaces import IStorage
from lorrygate.storage.layout import flatten
from lorrygate.topology.naming import digest, fold_letters

LABELS = ("realm", "network", "gateway", "node", "table")
_NOT_METRIC = re.compile(r"[^a-zA-Z0-9_]")
PUSH_EVERY = 1.0
_NESTED = frozenset((dict,))


def prometheus_name(text: str) -> str:
    """``text`` as the part of a Prometheus name (letters, digits, ``_``): an accent folded (``über`` is ``uber``),
    another character ``_``; a name that lost a letter so (``температура``, ``влажность``: both were ``_``s,
    one gauge) ends in ``_`` and 8 hex digits of its SHA-256, as the SQL names do."""
    if text.isascii():
        return _NOT_METRIC.sub("_", text)
    letters, lost = fold_letters(text)
    name = _NOT_METRIC.sub("_", letters)
    return f"{name}_{digest(text)}" if lost else name


def metric_name(field: str) -> str:
    return "lorrygate_field_" + prometheus_name(field)


def tag_labels(tags: dict, fixed: tuple) -> tuple:
    """The labels of a row: ``fixed`` (`LABELS`' values) and its tags as sorted ``(label name, value)`` pairs,
    names made Prometheus label names (``__`` starts the names Prometheus keeps for itself, a digit none). A tag
    of a fixed label's name is that label where the address left it empty (a Meshtastic packet's ``node``), else
    ``tag_<name>`` (where its value differs); of two tags of one label name, the first."""
    pairs: dict = {}
    for name, value in tags.items():
        if value is None:
            continue
        label = prometheus_name(str(name)) or "_"
        if label[0].isdigit() or label.startswith("__"):
            label = "tag_" + label.lstrip("_")
        value = str(value)
        if label in LABELS:
            at = LABELS.index(label)
            if fixed[at] == value:
                continue
            if not fixed[at]:
                fixed = fixed[:at] + (value,) + fixed[at + 1:]
                continue
            label = "tag_" + label
        pairs.setdefault(label, value)
    return fixed, tuple(sorted(pairs.items()))


class _Snapshot:
    """The values of a sink at one moment, for a push from another thread."""

    def __init__(self, sink):
        self.name, self.values, self.refused = sink.name, dict(sink.values), sink.refused

    def collect(self):
        return PrometheusSink.collect(self)


@implementer(IStorage)
@attrs.define(eq=False)
class PrometheusSink:
    name: str
    url: str
    reactor: Any
    max_series: int = 10_000
    #: (metric name, (address labels, tag labels)) -> latest value
    values: dict = attrs.Factory(dict)
    #: (table, field) -> its gauge's name; (table, gauge name) of the gauges taken (at most one a series)
    _gauges: dict = attrs.Factory(dict)
    _taken: set = attrs.Factory(set)
    refused: int = 0
    pushed: int = 0
    #: pushes the Pushgateway refused for their content (HTTP 400), and the reason of the last
    push_refused: int = 0
    last_refusal: str = ""
    _last_push: float = 0.0
    _timer: Any = None

    log = Logger()

    @property
    def pushes(self) -> bool:
        return self.url.startswith("pushgateway://")

    def start(self) -> Deferred:
        return succeed(None)

    def stop(self) -> Deferred:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        return self._push(force=True) if self.pushes and self.values else succeed(None)

    def details(self) -> dict:
        return {"series": len(self.values), "refused": self.refused, "pushed": self.pushed,
                "push_refused": self.push_refused, "last_refusal": self.last_refusal}

    def _gauge(self, table: str, field: str) -> str:
        """The gauge of a table's field not seen before: `metric_name`, or with ``_2`` (``_3``, ...) where another
        field of the table has that name (``a-b`` beside ``a_b``)."""
        name = metric_name(field)
        if (table, name) not in self._taken:
            return name
        number = 2
        while (table, f"{name}_{number}") in self._taken:
            number += 1
        return f"{name}_{number}"

    def write(self, batch) -> Deferred:
        values, gauges = self.values, self._gauges
        for entry in batch.entries:
            if entry.table is None or not entry.records:
                continue
            address = entry.address
            table = str(entry.table)
            labels = (address.realm if address else "", (address.network or "") if address else "",
                      (address.gateway or "") if address else "", (address.node or "") if address else "", table)
            for record in entry.records:
                fields = record.fields
                series = tag_labels(record.tags, labels) if record.tags else (labels, ())
                if not _NESTED.isdisjoint(map(type, fields.values())):
                    fields = flatten(fields, None)  # (nested values were left out)
                for field, value in fields.items():
                    kind = type(value)
                    if kind is bool:
                        value = 1.0 if value else 0.0
                    elif kind is not int and kind is not float:
                        continue
                    gauge = gauges.get((table, field))
                    if gauge is None:
                        gauge = self._gauge(table, field)
                    key = (gauge, series)
                    if key not in values:
                        if len(values) >= self.max_series:
                            self.refused += 1
                            continue
                        gauges[table, field] = gauge
                        self._taken.add((table, gauge))
                    values[key] = float(value)
        if self.pushes:
            return self._push()
        return succeed(None)

    def _push(self, force: bool = False) -> Deferred:
        now = time.monotonic()
        if not force and now - self._last_push < PUSH_EVERY:
            # pushed a moment ago: these values go with the next push, a second after the last at the latest
            if self._timer is None or not self._timer.active():
                self._timer = self.reactor.callLater(PUSH_EVERY - (now - self._last_push), self._push_later)
            return succeed(None)
        self._last_push = now
        from prometheus_client import CollectorRegistry, push_to_gateway
        from prometheus_client.exposition import basic_auth_handler, default_handler

        parts = urlsplit(self.url)
        job = unquote(parts.path.strip("/")) or "lorrygate"
        address = f"http://{parts.hostname}:{parts.port or 9091}"
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self))  # taken here, in the reactor thread
        handler = default_handler
        _, auth = url_credentials(self.url)
        if auth is not None:  # (a Pushgateway behind HTTP Basic: the user and password were left out)
            user, password = auth

            def handler(url, method, timeout, headers, data):
                return basic_auth_handler(url, method, timeout, headers, data, user, password)

        def push():
            from urllib.error import HTTPError

            try:
                push_to_gateway(address, job=job, registry=registry, timeout=10, handler=handler)
            except HTTPError as exc:
                if exc.code != 400:
                    raise StorageError(f"Prometheus sink {self.name}: pushing to {address} failed ({exc})") from None
                return exc.read()[:1000].decode("utf-8", "replace").strip() or "HTTP 400"
            except Exception as exc:
                raise StorageError(f"Prometheus sink {self.name}: pushing to {address} failed ({exc})") from None
            self.pushed += 1

        def refused(reason):
            if reason is None:
                return
            self.push_refused += 1
            if reason != self.last_refusal:  # (once a reason, not once a second)
                self.log.error("Prometheus sink {sink}: {address} refused the push (HTTP 400): {reason}; the batch is "
                               "not held for it, the next push tries again. Another job may push metrics of these "
                               "names: rename them there", sink=self.name, address=address, reason=reason)
            self.last_refusal = reason

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), push).addCallback(refused)

    def _push_later(self) -> None:
        self._push(force=True).addErrback(lambda failure: self.log.warn(
            "Prometheus sink {sink}: {error}; the next batch pushes again", sink=self.name,
            error=failure.getErrorMessage()))

    # -- a prometheus-client collector ----------------------------------------------------

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        by_name: dict = {}
        for (name, (labels, tags)), value in list(self.values.items()):
            by_name.setdefault(name, []).append((labels, dict(tags), value))
        for name, samples in by_name.items():
            # every series of a gauge with the same labels (the Pushgateway refuses a gauge whose series differ)
            tag_names = sorted({label for _, tags, _ in samples for label in tags})
            family = GaugeMetricFamily(name, f"The latest value of the field {name[16:]!r}.",
                                       labels=list(LABELS) + tag_names)
            for labels, tags, value in samples:
                family.add_metric(list(labels) + [tags.get(label, "") for label in tag_names], value)
            yield family
        refused = CounterMetricFamily("lorrygate_sink_series_refused",
                                      "Field values not exported: the sink holds max_series series already.",
                                      labels=["storage"])
        refused.add_metric([self.name], self.refused)
        yield refused

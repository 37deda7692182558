"""
Prometheus metrics (``[lorrygate] metrics = 127.0.0.1:9481``; off by default).

The endpoint is served by the reactor (``/metrics``, and ``/health`` and
``/ready`` as on the control endpoint) from a registry of the gateway's own:

- counters and gauges are read from the gateway's statistics at scrape time
  (`GatewayCollector`), so the data path pays nothing for them;
- histograms (commit latency, batch size, receive-to-commit lag) are observed
  once per committed batch, never per message.

Labels are bounded: channel, storage, source and stage names come from the
configuration, never from a topic or a node.
"""

from twisted.web.resource import Resource

from lorrygate import __version__
from lorrygate.clock import time_of_day

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROWS_BUCKETS = (1, 10, 100, 500, 1000, 5000, 10_000, 50_000, 100_000)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: channel counters: (metric name without ``_total``, ChannelStats field, help)
CHANNEL_COUNTERS = (
    ("lorrygate_messages_received", "received", "Messages the channel received from its source."),
    ("lorrygate_messages_routed", "routed", "Messages decoded into records and handed to the storages."),
    ("lorrygate_messages_ignored", "ignored", "Commands and ignored topics: acknowledged, not stored."),
    ("lorrygate_own_reports", "own_reports", "The channel's own error reports received back (not stored)."),
    ("lorrygate_error_reports", "error_reports", "Reports published to error topics."),
    ("lorrygate_table_collisions", "collisions", "Addresses whose table name another address already uses."),
    ("lorrygate_values_dropped", "values_dropped", "Nulls, NaN and infinite values left out by the kotori value policy."),
    ("lorrygate_messages_empty", "empty", "Empty payloads no decoder took (cleared retained messages): not stored."),
    ("lorrygate_sequence_gaps", "seq_gaps",
     "Messages whose sequence number says that messages before them never came (Sparkplug B seq): lost upstream."),
)


def available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class GatewayCollector:
    """Counters and gauges read from a running gateway when Prometheus scrapes."""

    def __init__(self, gateway):
        self.gateway = gateway

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        gateway = self.gateway
        yield InfoMetricFamily("lorrygate_build", "The lorrygate version.", value={"version": __version__})
        routers = gateway.routers
        for name, field, text in CHANNEL_COUNTERS:
            family = CounterMetricFamily(name, text, labels=["channel"])
            for router in routers:
                family.add_metric([router.channel.name], getattr(router.stats, field))
            yield family
        family = CounterMetricFamily("lorrygate_messages_dead_lettered",
                                     "Messages kept as dead letters, by the stage that refused them.",
                                     labels=["channel", "stage"])
        for router in routers:
            for stage, count in sorted(router.stats.dead_letters.items()):
                family.add_metric([router.channel.name, stage], count)
        yield family
        yield from self._storages(gateway, CounterMetricFamily, GaugeMetricFamily)
        yield from self._sinks(gateway, CounterMetricFamily)
        yield from self._sources(gateway, GaugeMetricFamily)
        for backend in gateway.storages.values():
            if hasattr(backend, "collect") and not getattr(backend, "pushes", True):
                yield from backend.collect()  # a prometheus:// sink: the latest values, scraped here
        runs = CounterMetricFamily("lorrygate_hook_runs", "First-sample hook runs that worked.", labels=["hook"])
        failures = CounterMetricFamily("lorrygate_hook_failures", "First-sample hook runs that failed (retried).",
                                       labels=["hook"])
        pending = GaugeMetricFamily("lorrygate_hook_pending", "Tables waiting for a hook to run.", labels=["hook"])
        for name, runner in gateway.hook_runners.items():
            runs.add_metric([name], runner.stats.runs)
            failures.add_metric([name], runner.stats.failures)
            pending.add_metric([name], runner.pending)
        yield runs
        yield failures
        yield pending
        for name, field, text in (("lorrygate_reloads", "reloads", "Configuration reloads that were applied."),
                                  ("lorrygate_reload_failures", "failed_reloads",
                                   "Reloads refused (invalid or failing configuration); the running one stayed.")):
            family = CounterMetricFamily(name, text)
            family.add_metric([], getattr(gateway, field))
            yield family

    @staticmethod
    def _storages(gateway, Counter, Gauge):
        now = time_of_day(gateway.reactor)()  # (the spool's files are stamped with the time of day)
        counters = {
            "rows": Counter("lorrygate_rows_committed", "Rows committed to the storage.", labels=["storage"]),
            "dead_letters": Counter("lorrygate_dead_letters_committed",
                                    "Dead letters committed to the storage's dead-letter table.", labels=["storage"]),
            "batches": Counter("lorrygate_batches_committed", "Batches committed to the storage.", labels=["storage"]),
            "failures": Counter("lorrygate_storage_failures", "Failed writes (each one retried or spooled).",
                                labels=["storage"]),
            "spooled": Counter("lorrygate_spooled_batches", "Batches written to the disk spool.", labels=["storage"]),
            "drained": Counter("lorrygate_drained_batches", "Spooled batches written to the storage.",
                               labels=["storage"]),
            "pauses": Counter("lorrygate_storage_pauses", "Times the storage paused its sources (backpressure: its "
                              "max_pending bound, or a wide write).", labels=["storage"]),
        }
        gauges = {
            "up": Gauge("lorrygate_storage_up", "1 while the storage takes writes, 0 while it is down.",
                        labels=["storage"]),
            "pending": Gauge("lorrygate_rows_pending", "Rows received and not yet committed (in flight).",
                             labels=["storage"]),
            "paused": Gauge("lorrygate_storage_paused_sources",
                            "1 while the storage holds its sources paused (backpressure).", labels=["storage"]),
            "spool_bytes": Gauge("lorrygate_spool_bytes", "Bytes in the disk spool.", labels=["storage"]),
            "spool_batches": Gauge("lorrygate_spool_batches", "Batches in the disk spool.", labels=["storage"]),
            "spool_age": Gauge("lorrygate_spool_oldest_age_seconds",
                               "Age of the oldest spooled batch (0 when the spool is empty).", labels=["storage"]),
        }
        for name, batcher in gateway.batchers.items():
            stats = batcher.stats
            for field, family in counters.items():
                family.add_metric([name], getattr(stats, field))
            gauges["up"].add_metric([name], 0 if batcher.down else 1)
            gauges["pending"].add_metric([name], batcher.pending)
            gauges["paused"].add_metric([name], 1 if batcher.paused else 0)
            spool = batcher.spool
            if spool is not None:
                gauges["spool_bytes"].add_metric([name], spool.bytes)
                gauges["spool_batches"].add_metric([name], spool.batches)
                gauges["spool_age"].add_metric([name], spool.oldest_age(now) or 0.0)
        yield from counters.values()
        yield from gauges.values()
        expired = Counter("lorrygate_rows_expired", "Rows older than the storage's retention that it deleted "
                          "(SQLite's retention).", labels=["storage"])
        for name, backend in sorted(gateway.storages.items()):
            if getattr(backend, "expired_rows", None) is not None:
                expired.add_metric([name], backend.expired_rows)
        yield expired

    @staticmethod
    def _sinks(gateway, Counter):
        """What the MQTT and Kafka sinks published, and the messages they set aside as dead letters on their
        dead-letter topic (they have no table for them: ``lorrygate_dead_letters_committed`` does not count them)."""
        published = Counter("lorrygate_sink_published", "Messages a broker sink (MQTT, Kafka) published "
                            "and its broker acknowledged.", labels=["storage"])
        set_aside = Counter("lorrygate_sink_set_aside",
                            "Messages a broker sink published to its dead-letter topic instead of their own: "
                            "reason refused (a topic the broker does not take, or the broker refused the message) "
                            "or too_large (more than the broker takes; a reference is published).",
                            labels=["storage", "reason"])
        for name, backend in sorted(gateway.storages.items()):
            if not hasattr(backend, "too_large"):
                continue
            published.add_metric([name], backend.published)
            set_aside.add_metric([name, "refused"], backend.refused)
            set_aside.add_metric([name, "too_large"], backend.too_large)
        yield published
        yield set_aside

    @staticmethod
    def _sources(gateway, Gauge):
        connected = Gauge("lorrygate_source_connected", "1 while the source is connected to its broker.",
                          labels=["source"])
        subscribed = Gauge("lorrygate_source_subscribed", "1 once the source's subscriptions were acknowledged.",
                           labels=["source"])
        paused = Gauge("lorrygate_source_paused", "1 while a storage holds the source paused (backpressure).",
                       labels=["source"])
        lag = Gauge("lorrygate_source_lag", "Messages the broker holds for the source beyond what it stored or "
                    "spooled (Kafka: the group's lag over the partitions assigned here; AMQP: the queue's ready messages "
                    "and those in flight; Redis Streams: the group's entries not read and those pending).",
                    labels=["source"])
        dropped = Gauge("lorrygate_broker_dropped_messages", "The broker's count of the messages it dropped since it "
                        "started, for all its clients (a session's queue full: Mosquitto's "
                        "$SYS/broker/publish/messages/dropped), as the MQTT source last got it; alert on a rise.",
                        labels=["source"])
        for source in gateway.sources:
            connected.add_metric([source.name], 1 if source.connected else 0)
            subscribed.add_metric([source.name], 1 if source.subscribed else 0)
            paused.add_metric([source.name], 1 if source.paused_by else 0)
            if getattr(source, "lag", None) is not None:
                lag.add_metric([source.name], source.lag)
            drops = getattr(source, "drops", None)
            if drops is not None and drops.count is not None:
                dropped.add_metric([source.name], drops.count)
        yield connected
        yield subscribed
        yield paused
        yield lag
        yield dropped


class Metrics:
    """The gateway's registry: the collector plus histograms observed per committed batch."""

    def __init__(self, gateway):
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(gateway))
        self.clock = gateway.reactor
        self.commit_seconds = Histogram(
            "lorrygate_commit_seconds", "Time to write one batch to the storage (the commit included).",
            ["storage"], registry=self.registry, buckets=COMMIT_BUCKETS)
        self.batch_rows = Histogram("lorrygate_batch_rows", "Rows per committed batch.", ["storage"],
                                    registry=self.registry, buckets=ROWS_BUCKETS)
        self.lag_seconds = Histogram(
            "lorrygate_commit_lag_seconds",
            "From receiving the oldest message of a batch to its commit (the gateway's share of the "
            "publish-to-commit lag).", ["storage"], registry=self.registry, buckets=LAG_BUCKETS)
        self._watched = {}

    def watch(self, name: str, batcher) -> None:
        """Observe the batches a storage's batcher commits."""
        commit = self.commit_seconds.labels(name)
        rows = self.batch_rows.labels(name)
        lag = self.lag_seconds.labels(name)
        now = time_of_day(self.clock)

        def committed(batch, seconds):
            if seconds is None:
                return  # drained from the spool: not a live commit
            commit.observe(seconds)
            rows.observe(len(batch))
            first = batch.entries[0].message if batch.entries else (
                batch.dead_letters[0].message if batch.dead_letters else None)
            if first is not None and first.received:
                lag.observe(max(0.0, now() - first.received))

        self.unwatch(name)
        batcher.observers.append(committed)
        self._watched[name] = (batcher, committed)

    def unwatch(self, name: str) -> None:
        batcher, observer = self._watched.pop(name, (None, None))
        if batcher is not None and observer in batcher.observers:
            batcher.observers.remove(observer)

    def unwatch_all(self) -> None:
        for name in list(self._watched):
            self.unwatch(name)

    def exposition(self, accept: str) -> tuple:
        """The body and content type for a scrape that sent ``accept``."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _MetricsPage(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        body, content_type = self.metrics.exposition(accept)
        request.setHeader(b"content-type", content_type.encode("latin-1"))
        return body


def metrics_site(gateway, metrics: Metrics):
    """``/metrics``, ``/health`` and ``/ready`` on the metrics listener; each asks for the ``metrics_token``
    where one is set (``Authorization: Bearer ...``)."""
    from lorrygate.service.control import _Guarded, _Health, _Ready, quiet_site

    root = Resource()
    root.putChild(b"metrics", _MetricsPage(metrics))
    root.putChild(b"health", _Health())
    root.putChild(b"ready", _Ready(gateway))
    token = gateway.settings.gateway.metrics_token
    if token:
        root = _Guarded(token.reveal(), root, "the metrics listener wants its metrics_token (Prometheus: "
                                              "authorization: credentials)")
    return quiet_site(root)


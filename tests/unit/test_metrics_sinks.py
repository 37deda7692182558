"""The broker sinks' counters on the Prometheus endpoint: what an MQTT or Kafka sink set aside as a dead letter
on its dead-letter topic was in its status only, and no alert could see it."""

import types

import pytest

from lorrygate.service.metrics import GatewayCollector
from lorrygate.storage.kafka_sink import KafkaSink
from lorrygate.storage.mqtt_sink import MqttSink
from lorrygate.storage.sqlite import SQLiteStorage

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.core import CounterMetricFamily  # noqa: E402


class _Sinks:
    def __init__(self, gateway):
        self.gateway = gateway

    def collect(self):
        return GatewayCollector._sinks(self.gateway, CounterMetricFamily)


def test_the_mqtt_and_kafka_sinks_count_what_they_published_and_set_aside_by_reason(tmp_path):
    mqtt = MqttSink("relay", None, None)
    mqtt.published, mqtt.refused, mqtt.too_large = 296, 4, 1
    kafka = KafkaSink("stream", "127.0.0.1:9092", None)
    kafka.published, kafka.refused = 10, 2
    storages = {"relay": mqtt, "stream": kafka, "db": SQLiteStorage("db", str(tmp_path / "g.sqlite"), None)}
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(_Sinks(types.SimpleNamespace(storages=storages)))
    text = prometheus_client.generate_latest(registry).decode()
    lines = {line for line in text.splitlines() if not line.startswith("#")}
    assert lines == {
        'lorrygate_sink_published_total{storage="relay"} 296.0',
        'lorrygate_sink_published_total{storage="stream"} 10.0',
        'lorrygate_sink_set_aside_total{reason="refused",storage="relay"} 4.0',
        'lorrygate_sink_set_aside_total{reason="too_large",storage="relay"} 1.0',
        'lorrygate_sink_set_aside_total{reason="refused",storage="stream"} 2.0',
        'lorrygate_sink_set_aside_total{reason="too_large",storage="stream"} 0.0',
    }

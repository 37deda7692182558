"""
Prometheus metrics: a real Prometheus server (Debian's package, on its own
port) scrapes a running gateway; its HTTP API answers with the messages the
test published and a commit-latency histogram with observations.
"""

import http.client
import json
import os
import uuid

import pytest
import pytest_twisted

from tests.gatewayproc import GatewayProcess, Publisher, count_rows, write_config
from tests.servers import Mosquitto, Prometheus, free_port, wait_until

pytestmark = pytest.mark.integration


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type"), response.read().decode()
    finally:
        conn.close()


def value(prometheus, expression):
    result = prometheus.query(expression)
    return result[0][1] if result else None


def test_prometheus_scrapes_the_gateway(tmp_path):
    (tmp_path / "broker").mkdir()
    (tmp_path / "prometheus").mkdir()
    broker = Mosquitto(str(tmp_path / "broker")).start()
    port = free_port()
    realm = f"pm{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), broker.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("[lorrygate]\n", f"[lorrygate]\nmetrics = 127.0.0.1:{port}\n")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    prometheus = Prometheus(str(tmp_path / "prometheus"), f"127.0.0.1:{port}").start()
    try:
        wait_until(lambda: get(port, "/ready")[0] == 200, 30, "/ready on the metrics listener")
        publisher = Publisher(broker.port)
        messages = [(f"{realm}/net/gw/node{i % 7}/data.json", f'{{"temperature": {20 + i % 5}.5}}')
                    for i in range(1234)]
        messages += [(f"{realm}/net/gw/broken/data.json", "{not json") for _ in range(3)]
        publisher.publish_many(messages)
        publisher.close()
        wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), realm) == 1234, 60,
                   "every row committed")

        received = 'lorrygate_messages_received_total{job="lorrygate",channel="main"}'
        # What the test published, and the channel's 3 error reports (error.json), which come
        # back through its own subscription.
        wait_until(lambda: value(prometheus, received) == len(messages) + 3, 60,
                   "Prometheus to scrape the received count")
        assert value(prometheus, 'lorrygate_own_reports_total{channel="main"}') == 3
        assert value(prometheus, 'lorrygate_messages_dead_lettered_total{stage="decode"}') == 3
        assert value(prometheus, 'lorrygate_rows_committed_total{storage="db"}') == 1234
        assert value(prometheus, 'lorrygate_commit_seconds_count{storage="db"}') >= 1
        buckets = prometheus.query('lorrygate_commit_seconds_bucket{storage="db"}')
        assert len(buckets) > 5 and max(v for _, v in buckets) >= 1
        assert value(prometheus, 'lorrygate_commit_lag_seconds_count{storage="db"}') >= 1
        assert value(prometheus, 'lorrygate_source_subscribed{source="main"}') == 1
        # (the broker's count of what it dropped: none, as the broker's queue holds all)
        wait_until(lambda: value(prometheus, 'lorrygate_broker_dropped_messages{source="main"}') == 0, 60,
                   "Prometheus to scrape the broker's count of dropped messages")
        assert value(prometheus, 'lorrygate_storage_up{storage="db"}') == 1
        assert value(prometheus, 'lorrygate_storage_pauses_total{storage="db"}') == 0  # 1,237 of 20,000
        # Bounded labels: no topic or node ever becomes a label.
        series = prometheus.query('{job="lorrygate"}')
        labels = {key for metric, _ in series for key in metric}
        assert labels <= {"__name__", "job", "instance", "channel", "storage", "source", "stage", "le", "version"}, labels

        status, content_type, body = get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and content_type.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
        assert get(port, "/health")[0] == 200
        assert get(port, "/nothing")[0] == 404
    finally:
        prometheus.stop()
        assert gateway.stop() == 0
        broker.stop()


def test_the_prometheus_sink_on_the_metrics_listener_and_a_pushgateway(tmp_path, mosquitto):
    """The latest numeric field values as gauges: scraped from the metrics listener (prometheus://) and pushed to
    a real Pushgateway (pushgateway://); text is left out, booleans are 0/1, series are bounded."""
    from tests.servers import Pushgateway

    (tmp_path / "pgw").mkdir()
    pushgateway = Pushgateway(str(tmp_path / "pgw")).start()
    port = free_port()
    realm = f"ps{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("[lorrygate]\n", f"[lorrygate]\nmetrics = 127.0.0.1:{port}\n")
    text = text.replace("storage = db\n", "storage = db, gauges, pushed\n") + (
        "\n[storage:gauges]\nurl = prometheus://\nmax_series = 5\n"
        f"\n[storage:pushed]\nurl = pushgateway://127.0.0.1:{pushgateway.port}/sensors\n")
    open(config, "w").write(text)
    gateway = GatewayProcess(config, str(tmp_path / "gw.log")).start()
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([(f"{realm}/net/gw/{node}/data.json",
                                 json.dumps({"temperature": t, "on": True, "state": "ok"}))
                                for node, t in (("a", 20.5), ("b", 21.5), ("a", 22.5))])
        publisher.publish_many([(f"{realm}/net/gw/{node}/data.json", json.dumps({"temperature": 1}))
                                for node in ("c", "d", "e", "f")])  # beyond max_series = 5 on the scraped sink
        publisher.close()
        wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), realm) == 7, 30, "the rows")
        labels = f'gateway="gw",network="net",node="a",realm="{realm}",table="{realm}_net.gw_a_sensors"'
        body = wait_until(lambda: (lambda b: b if f"lorrygate_field_temperature{{{labels}}} 22.5" in b else None)(
            get(port, "/metrics")[2]), 30, "the latest value on /metrics")
        assert f"lorrygate_field_on{{{labels}}} 1.0" in body
        assert "lorrygate_field_state" not in body  # text is not a gauge
        assert 'lorrygate_sink_series_refused_total{storage="gauges"} ' in body
        pushed = wait_until(lambda: (lambda b: b if "lorrygate_field_temperature" in b and 'node="f"' in b else None)(
            pushgateway.metrics()), 30, "the values on the pushgateway")
        assert 'job="sensors"' in pushed and 'node="a"' in pushed
    finally:
        assert gateway.stop() == 0
        pushgateway.stop()


def test_a_metrics_token_guards_the_listener_and_prometheus_scrapes_with_it(tmp_path, mosquitto):
    """The fleet's values on the metrics listener (prometheus://) are for whoever holds its metrics_token: a
    request without it, or with another, gets 401; a real Prometheus scraping with ``authorization:
    credentials`` reads the values."""
    port = free_port()
    realm = f"pt{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    text = open(config).read().replace("[lorrygate]\n", f"[lorrygate]\nmetrics = 127.0.0.1:{port}\n"
                                                        "metrics_token = ${ENV:LORRYGATE_TEST_METRICS_TOKEN}\n")
    text = text.replace("storage = db\n", "storage = db, gauges\n") + "\n[storage:gauges]\nurl = prometheus://\n"
    open(config, "w").write(text)
    (tmp_path / "prometheus").mkdir()
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"), env={**os.environ, "LORRYGATE_TEST_METRICS_TOKEN": "s3cret"}).start()
    prometheus = Prometheus(str(tmp_path / "prometheus"), f"127.0.0.1:{port}", token="s3cret").start()
    try:
        bearer = {"Authorization": "Bearer s3cret"}
        wait_until(lambda: get(port, "/ready", bearer)[0] == 200, 30, "/ready with the token")
        assert get(port, "/metrics")[0] == get(port, "/ready")[0] == 401
        assert get(port, "/metrics", {"Authorization": "Bearer s3cre"})[0] == 401
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([(f"{realm}/net/gw/a/data.json", json.dumps({"temperature": 20.5}))])
        publisher.close()
        wait_until(lambda: value(prometheus, f'lorrygate_field_temperature{{realm="{realm}"}}') == 20.5, 60,
                   "Prometheus to scrape the value with the token")
        assert "s3cret" not in open(str(tmp_path / "gw.log")).read()
    finally:
        assert gateway.stop() == 0
        prometheus.stop()


@pytest_twisted.ensureDeferred
async def test_a_push_the_pushgateway_refuses_for_its_content_does_not_hold_the_batch(tmp_path):
    """Another job pushed lorrygate_field_temperature as a counter: the Pushgateway refuses every push of our
    gauge of that name (HTTP 400, "inconsistent with existing metrics"). Failing the batch for it held the
    channel for good; the batch is written, the refusal counted and its reason kept, logged once."""
    import urllib.request

    from twisted.internet import reactor

    from lorrygate.model import Address, Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.prometheus_sink import PrometheusSink
    from tests.servers import Pushgateway

    (tmp_path / "pgw").mkdir()
    pushgateway = Pushgateway(str(tmp_path / "pgw")).start()
    try:
        foreign = b"# TYPE lorrygate_field_temperature counter\nlorrygate_field_temperature 3\n"
        request = urllib.request.Request(f"http://127.0.0.1:{pushgateway.port}/metrics/job/other", data=foreign)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        sink = PrometheusSink("pushed", f"pushgateway://127.0.0.1:{pushgateway.port}/sensors", reactor)
        batch = Batch()
        batch.add(Entry(TableName("r_net", "gw_n1_sensors"), [Record(0, {"temperature": 21.5})], "main",
                        Message("r/net/gw/n1/data.json", b"{}"), "json", Address("r", "net", "gw", "n1", "data",
                                                                                 "data.json")))
        await sink.write(batch)  # (it failed with a StorageError, and so did every write after it)
        assert sink.push_refused == 1 and sink.pushed == 0
        await sink._push(force=True)  # the next push: refused the same, counted
        assert sink.push_refused == 2 and sink.pushed == 0
        assert "inconsistent with existing metrics" in sink.last_refusal
        assert "lorrygate_field_temperature" in sink.last_refusal
    finally:
        pushgateway.stop()


@pytest_twisted.ensureDeferred
async def test_a_pushgateway_behind_a_password_is_pushed_to_with_the_urls_user_and_password(tmp_path):
    """``pushgateway://user:password@host:9091/job``: the user and password were left out of the push, and every
    push was refused (401) and failed its batch. They go as HTTP Basic authentication, percent-escapes undone;
    a wrong password is a failed push that says so."""
    from twisted.internet import reactor

    from lorrygate.errors import StorageError
    from lorrygate.model import Address, Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.prometheus_sink import PrometheusSink
    from tests.servers import Pushgateway

    (tmp_path / "pgw").mkdir()
    pushgateway = Pushgateway(str(tmp_path / "pgw"), basic_auth=("gw", "p@ss:1")).start()
    try:
        batch = Batch()
        batch.add(Entry(TableName("r_net", "gw_n1_sensors"), [Record(0, {"temperature": 21.5})], "main",
                        Message("r/net/gw/n1/data.json", b"{}"), "json", Address("r", "net", "gw", "n1", "data")))
        wrong = PrometheusSink("pushed", f"pushgateway://gw:nope@127.0.0.1:{pushgateway.port}/auth", reactor)
        with pytest.raises(StorageError, match="Unauthorized"):
            await wrong.write(batch)
        sink = PrometheusSink("pushed", f"pushgateway://gw:p%40ss%3A1@127.0.0.1:{pushgateway.port}/auth", reactor)
        await sink.write(batch)
        assert sink.pushed == 1
        assert 'lorrygate_field_temperature{gateway="gw",instance="",job="auth"' in pushgateway.metrics()
    finally:
        pushgateway.stop()


@pytest_twisted.ensureDeferred
async def test_series_of_one_gauge_with_different_tags_are_taken_by_the_pushgateway(tmp_path):
    """Two RuuviTags of one table (their MACs tags of the rows) and a row without tags: three series of one gauge,
    pushed to a real Pushgateway, which refuses a gauge whose series have different label names."""
    from twisted.internet import reactor

    from lorrygate.model import Address, Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.prometheus_sink import PrometheusSink
    from tests.servers import Pushgateway

    (tmp_path / "pgw").mkdir()
    pushgateway = Pushgateway(str(tmp_path / "pgw")).start()
    try:
        sink = PrometheusSink("pushed", f"pushgateway://127.0.0.1:{pushgateway.port}/tags", reactor)
        batch = Batch()
        rows = [Record(0, {"temperature": 21.5}, {"mac": "aa01"}), Record(0, {"temperature": 19.5}, {"mac": "aa02"}),
                Record(0, {"temperature": 5.5})]
        batch.add(Entry(TableName("ruuvi", "gw_1_sensors"), rows, "main", Message("ruuvi/gw-1/aa01", b"{}"),
                        "ruuvi", Address("ruuvi", None, "gw-1", None, "data")))
        await sink.write(batch)
        assert (sink.pushed, sink.push_refused, sink.last_refusal) == (1, 0, "")
        pushed = [line for line in pushgateway.metrics().splitlines() if line.startswith("lorrygate_field_temperature{")]
        values = sorted(line.rpartition(" ")[2] for line in pushed)
        assert values == ["19.5", "21.5", "5.5"], pushed
        assert any('mac="aa01"' in line and line.endswith(" 21.5") for line in pushed), pushed
    finally:
        pushgateway.stop()

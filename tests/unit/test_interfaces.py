"""Every implementation provides its interface (zope.interface verifyObject)."""

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from lorrygate.config import loads
from lorrygate.decoding import DECODERS
from lorrygate.interfaces import IDecoder, ISource, IStorage, IStrategy
from lorrygate.sources.mqtt import MQTTSource
from lorrygate.storage.memory import MemoryStorage
from lorrygate.storage.sqlite import SQLiteStorage
from lorrygate.topology import STRATEGIES


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategies(name):
    """Built-in strategies provide IStrategy."""
    assert verifyObject(IStrategy, STRATEGIES[name]())


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoders(name):
    """Built-in decoders provide IDecoder."""
    assert verifyObject(IDecoder, DECODERS[name]())


@pytest.mark.parametrize("storage", [MemoryStorage(), SQLiteStorage("db", "x.sqlite", None)], ids=["memory", "sqlite"])
def test_storages(storage):
    """Storages provide IStorage."""
    assert verifyObject(IStorage, storage)


def test_mqtt_source():
    """The MQTT source provides ISource."""
    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\nsource=b\ntopics=a/#\nstorage=s\n")
    clock = Clock()
    source = MQTTSource("c", settings.brokers["b"], ("a/#",), 1, lambda m: None, clock)
    assert verifyObject(ISource, source)


def test_amqp_source_and_mqtt_sink():
    """The AMQP source provides ISource; the MQTT sink IStorage."""
    from lorrygate.sources.amqp import AMQPSource
    from lorrygate.storage.mqtt_sink import MqttSink

    settings = loads("[broker:b]\ntype=amqp\nhost=h\n[storage:s]\nurl=mqtt://h/\n[channel:c]\ntopics=a/#\n")
    clock = Clock()
    assert verifyObject(ISource, AMQPSource("c", settings.brokers["b"], ("a/#",), lambda m: None, clock))
    assert verifyObject(IStorage, MqttSink("s", settings.storages["s"].broker, clock))


def test_redis_source():
    """The Redis source provides ISource."""
    from lorrygate.sources.redis import RedisSource

    settings = loads("[broker:b]\ntype=redis\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=s\n")
    assert verifyObject(ISource, RedisSource("c", settings.brokers["b"], ("s",), lambda m: None, Clock()))


def test_zeromq_source():
    """The ZeroMQ source provides ISource."""
    from lorrygate.sources.zeromq import ZeroMQSource

    settings = loads("[broker:b]\ntype=zmq\nhost=*\nport=5555\n[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=a/#\n")
    assert verifyObject(ISource, ZeroMQSource("c", settings.brokers["b"], ("a/#",), lambda m: None, Clock()))


def test_kafka_source_and_sink():
    """The Kafka source provides ISource; the Kafka sink IStorage."""
    from lorrygate.sources.kafka import KafkaSource
    from lorrygate.storage.kafka_sink import KafkaSink

    settings = loads("[broker:b]\ntype=kafka\nhost=h\n[storage:s]\nurl=kafka://h:9092/\n[channel:c]\ntopics=t\n")
    assert verifyObject(ISource, KafkaSource("c", settings.brokers["b"], ("t",), lambda m: None, Clock()))
    assert verifyObject(IStorage, KafkaSink("s", settings.storages["s"].broker, Clock()))


def test_websocket_sink():
    """The WebSocket sink provides IStorage."""
    from lorrygate.storage.websocket_sink import WebSocketSink

    assert verifyObject(IStorage, WebSocketSink("live", "ws://127.0.0.1:9482/", Clock()))


def test_prometheus_sink():
    """The Prometheus sink provides IStorage."""
    from lorrygate.storage.prometheus_sink import PrometheusSink

    assert verifyObject(IStorage, PrometheusSink("gauges", "prometheus://", Clock()))


def test_periodic_source():
    """The periodic source provides ISource."""
    from lorrygate.sources.periodic import PeriodicSource

    settings = loads("[source:w]\ntype=poll\nurl=http://h/x\n[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=#\n")
    assert verifyObject(ISource, PeriodicSource("c", settings.sources["w"], lambda m: None, Clock()))


def test_socket_source():
    """The Unix socket source provides ISource."""
    from lorrygate.sources.unixsocket import SocketSource

    settings = loads("[source:w]\ntype=socket\npath=/tmp/x.sock\n[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=#\n")
    assert verifyObject(ISource, SocketSource("c", settings.sources["w"], lambda m: None, Clock()))


def test_cdc_source():
    """The CDC source provides ISource."""
    from lorrygate.sources.pgcdc import CdcSource

    settings = loads("[source:p]\ntype=pgcdc\ndatabase=postgresql://u@h/db\n[storage:s]\nurl=sqlite:///x\n"
                     "[channel:c]\ntopics=#\n")
    assert verifyObject(ISource, CdcSource("c", settings.sources["p"], lambda m: None, Clock()))


def test_the_prometheus_sink_exports_the_values_of_nested_objects():
    """{"wifi": {"rssi": -60}}: the gauge lorrygate_field_wifi_rssi, as the SQL storages' column "wifi.rssi" (it was
    left out); text and nulls are not gauges."""
    from lorrygate.model import Address, Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.prometheus_sink import PrometheusSink

    sink = PrometheusSink("gauges", "prometheus://", Clock())
    batch = Batch()
    batch.add(Entry(TableName("r_net", "gw_n1_sensors"),
                    [Record(1, {"t": 21.5, "wifi": {"rssi": -60, "ssid": "x", "ap": {"ch": 6, "up": True}},
                                "gone": None})],
                    "main", Message("r/net/gw/n1/data.json", b"{}"), "json", Address("r", "net", "gw", "n1", "data")))
    sink.write(batch)
    labels = (("r", "net", "gw", "n1", "r_net.gw_n1_sensors"), ())
    assert sink.values == {("lorrygate_field_t", labels): 21.5, ("lorrygate_field_wifi_rssi", labels): -60.0,
                           ("lorrygate_field_wifi_ap_ch", labels): 6.0, ("lorrygate_field_wifi_ap_up", labels): 1.0}


def test_prometheus_names_keep_fields_of_other_scripts_apart():
    """``температура`` and ``влажность`` were both lorrygate_field_ and underscores: one gauge, whichever came last;
    ``über`` lost its letter. Accents fold, and a name that lost letters gets 8 hex digits of its hash."""
    from lorrygate.storage.prometheus_sink import metric_name

    names = ["temperature", "wifi.rssi", "über", "öber", "температура", "влажность", "温度", "Temp°C"]
    made = [metric_name(name) for name in names]
    assert made[:4] + made[7:] == ["lorrygate_field_temperature", "lorrygate_field_wifi_rssi", "lorrygate_field_uber",
                                   "lorrygate_field_ober", "lorrygate_field_Temp_C"]
    assert len(set(made)) == len(names)
    assert made[4] == "lorrygate_field_" + "_" * 11 + "_7783226f"


def test_fields_of_one_gauge_name_in_a_table_are_gauges_of_their_own():
    """``a-b`` and ``a_b`` of one table were both lorrygate_field_a_b, one series, each value overwriting the
    other's. The second one the sink sees is ``_2`` (then ``_3``), for good; in another table the name is free; a
    field refused for max_series takes no name."""
    from lorrygate.model import Address, Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.prometheus_sink import PrometheusSink

    def write(sink, table, *records):
        batch = Batch()
        batch.add(Entry(TableName("r", table), list(records), "main", Message("r/x", b"{}"), "json",
                        Address("r", None, "gw", None, "data")))
        sink.write(batch)

    sink = PrometheusSink("gauges", "prometheus://", Clock())
    write(sink, "a", Record(1, {"a-b": 1, "a_b": 2, "a.b": 3}))
    write(sink, "a", Record(2, {"a_b": 20, "a.b": 30, "a-b": 10}))
    write(sink, "b", Record(3, {"a_b": 5}))
    by_name = {(name, labels[-1]): value for (name, (labels, _)), value in sink.values.items()}
    assert by_name == {("lorrygate_field_a_b", "r.a"): 10.0, ("lorrygate_field_a_b_2", "r.a"): 20.0,
                       ("lorrygate_field_a_b_3", "r.a"): 30.0, ("lorrygate_field_a_b", "r.b"): 5.0}
    full = PrometheusSink("gauges", "prometheus://", Clock(), max_series=1)
    write(full, "a", Record(1, {"a-b": 1, "a_b": 2}))
    write(full, "c", Record(1, {"a_b": 3}))
    assert list(full.values.values()) == [1.0] and full.refused == 2


def test_the_prometheus_sink_keeps_a_series_for_each_tag_of_a_table():
    """The RuuviTags of one gateway are one table, each tag's MAC a tag of its rows: they were one series a field,
    the last one's value. A row's tags are labels now, every series of a gauge with the same labels (empty where a
    row has no such tag), as the Pushgateway requires; a tag of a fixed label's name and another value is
    tag_<name>."""
    from prometheus_client import CollectorRegistry, generate_latest

    from lorrygate.model import Address, Message, Record, TableName
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.prometheus_sink import PrometheusSink

    sink = PrometheusSink("gauges", "prometheus://", Clock())
    batch = Batch()
    rows = [Record(1, {"t": 21.5}, {"mac": "aa01", "gateway": "gw-1"}), Record(2, {"t": 19.0}, {"mac": "aa02"}),
            Record(3, {"t": 7.0}, {"gateway": "gw-2", "9th floor": "x", "__name__": "y"}), Record(4, {"t": 1.0}),
            Record(5, {"t": 3.0}, {"node": "!a1b2c3d4"})]
    batch.add(Entry(TableName("ruuvi", "gw_1_sensors"), rows, "main", Message("ruuvi/gw-1/aa01", b"{}"), "ruuvi",
                    Address("ruuvi", None, "gw-1", None, "data")))
    sink.write(batch)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(sink)
    lines = [line for line in generate_latest(registry).decode().splitlines() if line.startswith("lorrygate_field_t{")]
    rest = 'realm="ruuvi",table="ruuvi.gw_1_sensors"'  # (the labels in the order of their names)
    assert sorted(lines) == sorted([
        f'lorrygate_field_t{{gateway="gw-1",mac="aa01",network="",node="",{rest},tag_9th_floor="",tag_gateway="",'
        f'tag_name__=""}} 21.5',
        f'lorrygate_field_t{{gateway="gw-1",mac="aa02",network="",node="",{rest},tag_9th_floor="",tag_gateway="",'
        f'tag_name__=""}} 19.0',
        f'lorrygate_field_t{{gateway="gw-1",mac="",network="",node="",{rest},tag_9th_floor="x",tag_gateway="gw-2",'
        f'tag_name__="y"}} 7.0',
        f'lorrygate_field_t{{gateway="gw-1",mac="",network="",node="",{rest},tag_9th_floor="",tag_gateway="",'
        f'tag_name__=""}} 1.0',
        f'lorrygate_field_t{{gateway="gw-1",mac="",network="",node="!a1b2c3d4",{rest},tag_9th_floor="",'
        f'tag_gateway="",tag_name__=""}} 3.0'])


def test_a_websocket_client_subscribes_with_a_list_of_table_names_and_nothing_else():
    """{"subscribe": [...]} of names subscribes, [] or null all again; a text, an object or a list of lists (which
    raised in the protocol) changes nothing."""
    from lorrygate.storage.websocket_sink import _protocol_class

    client = _protocol_class()()
    client.onMessage(b'{"subscribe": ["a.b", "c.d"]}', False)
    assert client.subscribed == {"a.b", "c.d"}
    for other in (b'{"subscribe": "a.b"}', b'{"subscribe": {"a": 1}}', b'{"subscribe": [["a"]]}', b"[1]", b"x"):
        client.onMessage(other, False)
        assert client.subscribed == {"a.b", "c.d"}, other
    client.onMessage(b'{"subscribe": []}', False)
    assert client.subscribed is None

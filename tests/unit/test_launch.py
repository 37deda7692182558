"""The launch language: pipelines that parse and build, and the located errors of those that do not."""

import os

import pytest

from lorrygate.errors import LorrygateError
from lorrygate.pipeline.grammar import LaunchSyntaxError, parse
from lorrygate.pipeline.model import PipelineError, parse_launch

VALID = [
    ("mqtt://localhost/mqttkit-1/%23 ! sqlite:///var/x.sqlite", 1, [("sink0",)]),
    ("mqtt://localhost/mqttkit-1/# ! sqlite:///var/x.sqlite", 1, [("sink0",)]),
    ("mqtt://user:pw@broker:1884/a/%23?qos=0 ! sqlite:///x.db", 1, [("sink0",)]),
    ("mqtts://broker/a/%23 ! sqlite:///x.db", 1, [("sink0",)]),
    ("mqtt://localhost/testdrive/%23?content-type=json ! sqlite:///data.db?table=testdrive", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! sqlite location=x.db", 1, [("sink0",)]),
    ("mqttsrc host=broker port=1884 topic=a/#,b/+ qos=2 protocol=5 ! sqlite location=x.db", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! strategy name=lan ! sqlite location=x.db", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! decode chain=json,csv,kv ! sqlite location=x.db", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! decode chain=json timezone=Europe/Berlin ! sqlite location=x.db", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! strategy name=wan ! decode chain=json ! transform rename=t:temperature ! sqlite location=x.db",
     1, [("sink0",)]),
    ('mqttsrc topic=a/# ! transform tags="site=berlin,node={node}" ! sqlite location=x.db', 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! transform convert='t: value * 2' ! sqlite location=x.db", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! queue ! sqlite location=x.db", 1, [("sink0",)]),
    ('mqttsrc topic=a/# ! sqlite location="with space.db"', 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! sqlite location=x.db name=main", 1, [("main",)]),
    ("mqttsrc topic=a/# ! textsink location=out.ndjson", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! textsink location=out.csv format=csv", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! postgresql url=postgresql://u:p@db/x", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! crate url=crate://localhost:4200/ shards=2", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! crate://localhost:4200/", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! appsink callback=json:dumps", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! file:///tmp/rows.ndjson", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! tee name=t\nt. ! sqlite location=x.db\nt. ! textsink location=out.ndjson", 1,
     [("sink0", "sink1")]),
    ("mqttsrc topic=a/# ! tee name=t t. ! queue ! sqlite location=x.db t. ! queue ! textsink location=o.ndjson", 1,
     [("sink0", "sink1")]),
    ("# a comment line\nmqttsrc topic=a/# ! sqlite location=x.db  # trailing comment", 1, [("sink0",)]),
    ("mqttsrc topic=a/# ! sqlite location=a.db\nmqttsrc topic=b/# ! sqlite location=b.db", 2, [("sink0",), ("sink1",)]),
    ("mqtt://localhost/a/%23 ! tee name=both\n  both. ! sqlite:///a.db\n  both. ! sqlite:///b.db\n  both. ! sqlite:///c.db",
     1, [("sink0", "sink1", "sink2")]),
]


@pytest.mark.parametrize("text, channels, storages", VALID, ids=[f"valid-{i:02d}" for i in range(len(VALID))])
def test_valid_pipelines(text, channels, storages):
    """Each valid pipeline builds, with its channels and their storages."""
    pipeline = parse_launch(text, callbacks={})
    assert len(pipeline.channels) == channels
    assert [channel.storages for channel in pipeline.channels] == storages


INVALID = [
    ("", 1, 1, "expected a pipeline"),
    ("mqttsrc ! ! sqlite", 1, 11, "expected an element after '!'"),
    ("mqttsrc topic=a/# !", 1, 20, "expected an element after '!'"),
    ("! sqlite location=x", 1, 1, "expected an element before '!'"),
    ("mqttsrc topic=", 1, 15, "expected a property value after '='"),
    ('mqttsrc topic="a/#', 1, 15, "a closing \""),
    ("mqttsrc topic=a/# ! sqlit location=x", 1, 21, "unknown element 'sqlit' (did you mean 'sqlite'?)"),
    ("mqttsrc topic=a/# ! sqlite path=x", 1, 21, "sqlite has no property 'path' (it has: location, layout, time-index, retention, merge, name)"),
    ("mqttsrc topic=a/# ! sqlite locaton=x", 1, 21, "sqlite has no property 'locaton' (did you mean 'location'?) (it has: "),
    ("mqttsrc topic=a/# ! sqlite", 1, 21, "sqlite needs location=..."),
    ("mqttsrc ! sqlite location=x", 1, 1, "mqttsrc needs topic=..."),
    ("mqttsrc topic=a/# qos=3 ! sqlite location=x", 1, 1, "mqttsrc qos: expected a whole number from 0 to 2, got '3'"),
    ("mqttsrc topic=a/#/b ! sqlite location=x", 1, 1, "'#' must be the last level"),
    ("sqlite location=x ! mqttsrc topic=a", 1, 1, "a chain starts with a source"),
    ("sqlite:///x.db ! mqtt://h/t", 1, 1, "or a URL: mqtt://, mqtts://, amqp://"),
    ("file:///logs/*.ndjson ! sqlite:///x.db", 1, 1, "files are read by the element filesrc location=/logs/*.ndjson"),
    ("mqttsrc topic=a/# ! decode chain=json ! strategy name=wan ! sqlite location=x", 1, 41, "out of order"),
    ("mqttsrc topic=a/# ! strategy name=moon ! sqlite location=x", 1, 21, "unknown strategy 'moon'"),
    ("mqttsrc topic=a/# ! decode chain=yaml ! sqlite location=x", 1, 21, "unknown decoder 'yaml'"),
    ("mqttsrc topic=a/# ! strategy name=esphom ! sqlite location=x", 1, 21, "unknown strategy 'esphom' (did you mean "
                                                                          "'esphome'?)"),
    ("mqttsrc topic=a/# ! decode chain=jsno ! sqlite location=x", 1, 21, "unknown decoder 'jsno' (did you mean 'json'?)"),
    ("mqttsrc topic=a/#", 1, 1, "this chain has no sink"),
    # a word without '=' or a missing '!' began a chain of its own: the chain before it was said to have no sink,
    # pointing at its last element
    ("mqtt://h/a ! decode jsn ! sqlite:///x.db", 1, 21, "'jsn' begins another chain on this line, and the chain "
                                                         "before it has no sink: write a property as name=value"),
    ("mqtt://h/a  sqlite:///x.db", 1, 13, "'sqlite:///x.db' begins another chain on this line"),
    ("mqtt://h/a\nmqtt://h/b ! sqlite:///x.db", 1, 1, "this chain has no sink: end it with"),
    ("mqttsrc topic=a/# ! sqlite location=x ! sqlite location=y", 1, 41, "out of order"),
    ("t. ! sqlite location=x", 1, 1, "no element is named 't'"),
    ("mqttsrc topic=a/# ! tee name=t\nt. ! mqttsrc topic=b", 2, 6, "a branch is: NAME. ! [queue !] sink"),
    ("mqttsrc topic=a/# ! tee name=t", 1, 21, "has no branch"),
    # the checks made once every chain is read pointed at line 1, column 1, whichever chain was wrong
    ("mqtt://h/a ! sqlite:///x.db\nmqtt://h/b ! decode chain=jsn ! sqlite:///y.db", 2, 14, "unknown decoder 'jsn'"),
    ("mqtt://h/a ! sqlite:///x.db\nmqtt://h/b ! strategy name=wn ! sqlite:///y.db", 2, 14, "unknown strategy 'wn'"),
    ("mqtt://h/a ! sqlite:///x.db\n  mqtt://h/b ! tee name=t", 2, 16, "tee of chain launch1 has no branch"),
    ("mqtt://h/x ! sqlite:///x.db\nmqtt://h/a/%23 ! mqtt://h/a/relayed/{topic}", 2, 1, "a sink that feeds its source"),
    # the user and password were taken without a word, and the connection went without either
    ("zmq+tcp://gw:secret@plc:5556/a ! sqlite:///x.db", 1, 1, "expected a zmq+tcp:// URL without a user or password "
                                                           "(lorrygate's ZeroMQ source neither authenticates"),
    ('mqtt://h/x ! sqlite:///x.db\nmqtt://h/a/%23 ! transform tags="s={nope}" ! sqlite:///y.db', 2, 18,
     "transform tags: expected placeholders the strategy wan fills"),
    ("mqtt://h/x ! sqlite:///x.db\nmqtt://h/a/%23 ! transform headers=a:b ! sqlite:///y.db", 2, 18,
     "transform headers: expected a source that sends headers"),
    ("mqttsrc topic=a/# ! appsink", 1, 21, "appsink needs callback=module:function"),
    ("mqttsrc topic=a/# ! transform convert='t: open(value)' ! sqlite location=x", 1, 21, "transform: expected"),
    ("mqtt://localhost/ ! sqlite:///x.db", 1, 1, "an MQTT URL with a topic"),
    ("mqttsrc topic=a/# ! mysql://db/x", 1, 21, "unknown element 'mysql://db/x'"),
    ("mqttsrc topic=a/# ! postgresql url=crate://x:4200/", 1, 21, "postgresql url: expected a postgresql URL"),
    ("mqttsrc topic=a/# ! sqlite location=x.db location=y.db", 1, 21, "sqlite has location= twice"),
    # URLs that urllib cannot split were a traceback
    ("mqtt://h:notaport/x ! sqlite location=x", 1, 1, "a URL that cannot be read: Port could not be cast"),
    ("mqtt://h:99999/x ! sqlite location=x", 1, 1, "a URL that cannot be read: Port out of range"),
    ("mqtt://[::1/x ! sqlite location=x", 1, 1, "a URL that cannot be read: Invalid IPv6 URL"),
    ("amqp://h:x/%2F?exchange=e&topic=t ! sqlite location=x", 1, 1, "a URL that cannot be read"),
    ("mqtt://h/x ! mqtt://h:port/out", 1, 14, "a URL that cannot be read"),
    ("mqtt://h/x ! sqlite location=x merge=10s layout=per-network", 1, 14,
     "merge: expected per-address tables (layout=per-address), got layout=per-network"),
    ("mqtt://h/x ! crate url=crate://h:4200/ merge=ten", 1, 14, "crate merge: expected a duration"),
    # a relative module name was a TypeError of importlib, a traceback; a name that is no function was taken
    ("mqttsrc topic=a/# ! appsink callback=..:dumps", 1, 21,
     "appsink callback '..:dumps': TypeError: the 'package' argument is required"),
    ("mqttsrc topic=a/# ! appsink callback=json:__name__", 1, 21, "module 'json' has no function '__name__'"),
]


@pytest.mark.parametrize("text, line, column, message", INVALID, ids=[f"invalid-{i:02d}" for i in range(len(INVALID))])
def test_invalid_pipelines(text, line, column, message):
    """Each invalid pipeline fails with its line, column and what was expected."""
    with pytest.raises(LorrygateError) as info:
        parse_launch(text)
    error = info.value
    assert isinstance(error, (LaunchSyntaxError, PipelineError))
    assert message in str(error), str(error)
    assert (error.lineno, error.col) == (line, column), str(error)


def test_at_least_thirty_cases():
    """The tables hold at least 30 pipelines, valid and invalid, tees and quoted values among them."""
    assert len(VALID) + len(INVALID) >= 30
    assert any("tee" in text for text, *_ in VALID) and any('"' in text for text, *_ in VALID)


def test_properties_keep_quotes_and_spaces():
    """Quoted values keep their spaces and escaped quotes."""
    (chain,) = parse(r'mqttsrc topic=a/# ! textsink location="my \"rows\".ndjson"')
    assert chain.elements[1].get("location") == 'my "rows".ndjson'


def test_describe_prints_schema_table_and_ddl():
    """--describe resolves a topic to address, schema, table and the DDL, without connecting."""
    pipeline = parse_launch("mqtt://localhost/mqttkit-1/%23 ! crate://localhost:4200/")
    text = pipeline.describe(["mqttkit-1/testdrive/area-42/node-1/data.json"])
    assert "schema mqttkit_1_testdrive, table area_42_node_1_sensors" in text
    assert 'CREATE TABLE IF NOT EXISTS "mqttkit_1_testdrive"."area_42_node_1_sensors"' in text



def test_describe_names_the_tables_each_database_writes_and_a_ddl_template_gets_them_too():
    """A name a database creates no table of is written under another (``lg_...``): describe showed the name as the
    strategy gave it, and a PostgreSQL DDL template's ``{schema}`` was ``pg_...``, which CREATE TABLE refuses."""
    from lorrygate.config import loads
    from lorrygate.pipeline.describe import describe

    settings = loads("[broker:b]\nhost=h\n[storage:c]\nurl=crate://localhost:4200\n[storage:p]\n"
                     "url=postgresql://u@localhost/x\nddl = CREATE TABLE {schema}.{table} (time TIMESTAMPTZ)\n"
                     "[storage:s]\nurl=sqlite:///x.sqlite\n[channel:c]\ntopics=#\nstorage=c, p, s\n"
                     "strategy=topic\n")
    text = describe(settings, ["pg_lab/_attic", "sqlite_stat1/y", "sys/y"])
    for line in ("storage c (crate): schema pg_lab, table _attic -> pg_lab.lg__attic",
                 "storage p (postgresql): schema pg_lab, table _attic -> lg_pg_lab._attic",
                 'CREATE TABLE "lg_pg_lab"."_attic" (time TIMESTAMPTZ)',
                 "storage s (sqlite): schema sqlite_stat1, table y -> lg_sqlite_stat1__y",
                 "storage c (crate): schema sys, table y -> lg_sys.y",
                 'CREATE TABLE IF NOT EXISTS "lg_sys"."y"'):
        assert line in text, (line, text)
    # the prefix keeps within PostgreSQL's 63 bytes, which cut "lg_" + 63 bytes: two realms were one schema
    from lorrygate.model import TableName
    from lorrygate.storage.postgresql import schema_name

    long = "pg_" + "x" * 58
    names = {schema_name(TableName(long + end, "t")) for end in ("ab", "cd")}
    assert len(names) == 2 and all(len(name) == 63 and name.startswith("lg_pg_x") for name in names)


def test_a_postgresql_ddl_template_and_describe_name_a_table_of_a_long_name_as_it_is_made():
    """A strategy of one's own may name a table beyond PostgreSQL's 63 bytes: it is made as its first bytes
    and a hash (`table_part`); a DDL template's ``{table}`` and ``{qualified}`` are that name, and so is
    describe's."""
    from lorrygate.config import loads
    from lorrygate.model import TableName
    from lorrygate.pipeline.describe import _physical
    from lorrygate.storage.postgresql import table_part

    settings = loads("[broker:b]\nhost=h\n[storage:p]\nurl=postgresql://u@localhost/x\n"
                     "ddl = CREATE TABLE {schema}.{table} (time TIMESTAMPTZ); COMMENT ON TABLE {qualified} IS 'x'\n"
                     "[channel:c]\ntopics=#\nstorage=p\n")
    table = TableName("s" * 70, "t" * 70)
    short = table_part(table)
    assert len(short.encode()) == 63 and short.startswith("t" * 50) and short != table_part(TableName("s", "t" * 71))
    statements = settings.storages["p"].ddl.render(table, None)
    assert statements[0].startswith(f'CREATE TABLE "{"s" * 54}_') and f'."{short}" (time' in statements[0]
    assert statements[1].endswith(f'."{short}" IS \'x\'')
    assert _physical(settings.storages["p"], table).endswith(f".{short}")


def test_describe_of_a_topic_filter_says_it_is_one():
    """``describe --topic 'mqttkit-1/#'`` (a filter, as a channel's topics are written) was told that the wan
    strategy refuses a topic of 2 levels: it is told that it gave a filter, not a message's topic."""
    from lorrygate.config import loads
    from lorrygate.pipeline.describe import describe

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x.sqlite\n[channel:c]\ntopics=r/#\n")
    for topic in ("r/#", "r/+/g/d/data.json"):
        assert describe(settings, [topic]).endswith(
            f"topic {topic}:\n  a topic filter (a level + or #), not a topic: give the topic of one message, as a "
            "device publishes it")


def test_describe_says_which_decoders_a_topic_gets_and_what_is_ignored():
    """describe routes as the gateway does: the suffix's decoder first, event values last, the channel's ignore
    filters and the strategy's commands are "ignored", not "refused"."""
    from lorrygate.config import loads
    from lorrygate.pipeline.describe import describe

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x.sqlite\n[channel:c]\ntopics=r/#\n"
                     "ignore=r/n/g/cmd/#\n[channel:z]\ntopics=zigbee2mqtt/#\nstrategy=zigbee2mqtt\n")
    text = describe(settings, ["r/n/g/d/data.csv", "r/n/g/d/event.json", "r/n/g/cmd/x/data.json", "r//g/d/data.json",
                               "zigbee2mqtt/lamp/set"])
    assert "    decoders csv,ttn,json,value\n" in text and "    decoders ttn,json,value,event\n" in text
    assert "  channel c: ignored (acknowledged, not stored): matches the channel's ignore filters" in text
    assert "  channel c: refused by strategy wan: the network level is empty (a dead letter)" in text
    assert ("  channel z: ignored (acknowledged, not stored): zigbee2mqtt/<friendly name>/set or /get: a command, not "
            "a measurement") in text

def test_describe_shows_the_shared_table_and_the_view_of_the_per_network_layout():
    pipeline = parse_launch('mqtt://localhost/mqttkit-1/%23 ! crate url=crate://localhost:4200/ layout=per-network')
    text = pipeline.describe(["mqttkit-1/testdrive/area-42/node-1/data.json"])
    assert 'CREATE TABLE IF NOT EXISTS "mqttkit_1_testdrive"."sensors" ("time" TIMESTAMP WITH TIME ZONE NOT NULL, ' \
           '"address" TEXT NOT NULL, "gateway" TEXT, "node" TEXT' in text
    assert ('CREATE OR REPLACE VIEW "mqttkit_1_testdrive"."area_42_node_1_sensors" AS SELECT "time", "tags", '
            '"fields" FROM "mqttkit_1_testdrive"."sensors" WHERE "address" = \'area_42_node_1_sensors\'') in text


def test_describe_shows_the_shared_sqlite_table_and_its_view():
    pipeline = parse_launch("mqtt://localhost/mqttkit-1/%23 ! sqlite location=x.sqlite layout=per-network")
    text = pipeline.describe(["mqttkit-1/testdrive/area-42/node-1/data.json"])
    assert ('CREATE TABLE IF NOT EXISTS "mqttkit_1_testdrive__sensors" (time TEXT NOT NULL, address TEXT, gateway '
            'TEXT, node TEXT)') in text
    assert ('CREATE VIEW IF NOT EXISTS "mqttkit_1_testdrive__area_42_node_1_sensors" AS SELECT * FROM '
            '"mqttkit_1_testdrive__sensors" WHERE "address" = \'area_42_node_1_sensors\'') in text


def test_describe_shows_the_column_each_field_gets():
    """--describe --field: the column per storage, with the reason where a name had to change."""
    from lorrygate.pipeline.model import parse_launch

    text = parse_launch("mqtt://localhost/%23 ! sqlite:///x.sqlite").describe(
        ["r/n/g/d/data.json"], ["Temp", "temp", "pm2.5"])
    assert "field 'Temp' -> column 'Temp'" in text
    assert "field 'temp' -> column 'temp_2' (SQLite compares names without ASCII case" in text
    text = parse_launch("mqtt://localhost/%23 ! crate://localhost/").describe(["r/n/g/d/data.json"], ["pm2.5"])
    assert "field 'pm2.5' -> fields['pm2_5'] (CrateDB refuses" in text


def test_bus_urls_make_sources_and_an_mqtt_url_at_the_end_a_sink():
    """amqp:// and redis:// start a chain; mqtt:// after the source publishes (a relay: any topic, any payload)."""
    from lorrygate.pipeline.model import parse_launch

    relay = parse_launch("amqp://u:p@rabbit/%2Fprod?exchange=ex&topic=a/%23,b/%2B&prefetch=100 "
                         "! mqtt://broker:1884/copy/{topic}?payload=message")
    settings = relay.settings
    channel = settings.channels[0]
    broker = settings.brokers[channel.source]
    assert (broker.type, broker.host, broker.port, broker.vhost) == ("amqp", "rabbit", 5672, "/prod")
    assert (channel.exchange, channel.topics, channel.prefetch) == ("ex", ("a/#", "b/+"), 100)
    assert channel.queue.startswith("lorrygate-")  # stable across restarts, distinct per relay
    assert (channel.strategy, channel.decoders) == ("topic", ("raw",))
    sink = settings.storages[channel.storage]
    assert (sink.kind, sink.topic, sink.broker.host, sink.broker.port) == ("mqtt", "copy/{topic}", "broker", 1884)
    streams = parse_launch("redis://:pw@cache/s1,s2?group=g ! sqlite:///x.sqlite").settings
    assert (streams.channels[0].topics, streams.channels[0].group, streams.channels[0].strategy) == \
        (("s1", "s2"), "g", "wan")
    kafka = parse_launch("kafka://k1:9092,k2:9092/sensors?group=gw ! kafka://k3:9092/copy").settings
    assert (kafka.brokers["source0"].type, kafka.brokers["source0"].host, kafka.channels[0].group) == \
        ("kafka", "k1:9092,k2:9092", "gw")
    assert (kafka.storages["sink0"].kind, kafka.storages["sink0"].topic) == ("kafka", "copy")
    live = parse_launch("mqtt://localhost/a/%23 ! tee name=t t. ! ws://127.0.0.1:9482/ t. ! prometheus://").settings
    assert sorted((x.kind, x.spool) for x in live.storages.values()) == [("prometheus", False), ("websocket", False)]
    zmq = parse_launch("zmq+tcp://*:5556/plant/%23?mode=pull ! sqlite:///x.sqlite").settings
    assert (zmq.brokers["source0"].host, zmq.brokers["source0"].port, zmq.channels[0].mode) == ("*", 5556, "pull")
    assert "redis cache:6379 streams s1,s2, consumer group g" in parse_launch(
        "redis://:pw@cache/s1,s2?group=g ! sqlite:///x.sqlite").describe([], ())


def test_every_bus_has_an_element_that_inspect_lists():
    """The elements say in properties what the URLs say; lorrygate inspect lists them."""
    from lorrygate.pipeline.elements import describe_elements
    from lorrygate.pipeline.model import parse_launch

    listing = describe_elements()
    for name in ("mqttsrc", "amqpsrc", "redissrc", "zmqsrc", "kafkasrc", "mqttsink", "kafkasink", "wssink",
                 "prometheussink"):
        assert f"\n{name} (" in "\n" + listing, name
    settings = parse_launch(
        "redissrc host=cache password=pw stream=s1 group=g ! tee name=t "
        "t. ! kafkasink servers=k:9092 topic=copy name=k "
        "t. ! wssink port=9999 name=live "
        "t. ! prometheussink pushgateway=pgw:9091 job=plant name=gauges").settings
    channel = settings.channels[0]
    assert (settings.brokers[channel.source].type, channel.topics, channel.group) == ("redis", ("s1",), "g")
    assert {name: s.kind for name, s in settings.storages.items()} == {"k": "kafka", "live": "websocket",
                                                                      "gauges": "prometheus"}
    assert settings.storages["gauges"].url.raw == "pushgateway://pgw:9091/plant"
    zmq = parse_launch("zmqsrc host=* port=5557 mode=pull ! sqlite:///x.sqlite").settings
    assert (zmq.brokers["source0"].host, zmq.channels[0].mode) == ("*", "pull")
    # a default told once, and none where there is no value to tell (it said "(default: the system's)
    # (default '')" and "(default None)")
    assert not any(line.count("default") > 1 or "(default None)" in line or "(default '')" in line
                   for line in listing.splitlines()), listing
    assert "    qos        subscription QoS (default 1)" in listing.splitlines()
    polled = parse_launch("pollsrc url=http://w/x.json interval=5s topic=w/net/gw/st/data.json ! sqlite:///x.sqlite")
    assert polled.settings.sources["source0"].url == "http://w/x.json"
    assert "poll source source0 (http://w/x.json) every 5 s" in polled.describe([], ())
    kafka = parse_launch("kafkasrc servers=a:9092,b:9092 topic=t1 ! sqlite:///x.sqlite").settings
    assert kafka.brokers["source0"].host == "a:9092,b:9092"


def test_local_source_elements_are_checked_like_their_config_sections(tmp_path):
    files = parse_launch(f"filesrc location={tmp_path}/*.ndjson start=end topic=lab/{{stem}} ! sqlite:///x.sqlite")
    source = files.settings.sources["source0"]
    assert (source.type, source.path, source.start, source.topic) == ("files", f"{tmp_path}/*.ndjson", "end",
                                                                      "lab/{stem}")
    assert "files source source0" in files.describe([], ())
    default = parse_launch("filesrc location=logs/a.ndjson ! sqlite:///x.sqlite").settings.sources["source0"]
    assert os.path.isabs(default.path) and default.topic == "source0/{stem}" and default.charset == "utf-8"
    latin = parse_launch("filesrc location=logs/a.csv charset=latin-1 ! sqlite:///x.sqlite").settings.sources["source0"]
    assert latin.charset == "iso8859-1"
    sock = parse_launch("socketsrc path=/tmp/x.sock framing=length ! sqlite:///x.sqlite").settings.sources["source0"]
    assert (sock.type, sock.framing) == ("socket", "length")
    cdc = parse_launch("pgcdcsrc database=postgresql://u@h/db tables=public.t ! sqlite:///x.sqlite")
    assert cdc.settings.sources["source0"].database.reveal() == "postgresql://u@h/db"
    with pytest.raises(PipelineError, match="pgcdcsrc database"):
        parse_launch("pgcdcsrc database=mysql://h/db ! sqlite:///x.sqlite")
    # libpq's options checked as a storage URL's: a misspelt sslmode failed only at the first connection
    with pytest.raises(PipelineError, match="pgcdcsrc database: expected sslmode = disable, allow, prefer"):
        parse_launch("pgcdcsrc database=postgresql://u:hunter2@h/db?sslmode=verify tables=public.t ! sqlite:///x.sqlite")
    with pytest.raises(PipelineError, match="filesrc needs location"):
        parse_launch("filesrc ! sqlite:///x.sqlite")


def test_describe_shows_the_shared_postgresql_table_its_index_and_the_view():
    pipeline = parse_launch("mqtt://localhost/mqttkit-1/%23 ! postgresql url=postgresql://u:p@localhost/db "
                            "layout=per-network")
    text = pipeline.describe(["mqttkit-1/testdrive/area-42/node-1/data.json"])
    assert ('CREATE TABLE IF NOT EXISTS "mqttkit_1_testdrive"."sensors" ("time" TIMESTAMPTZ NOT NULL, "address" TEXT, '
            '"gateway" TEXT, "node" TEXT)') in text
    assert 'CREATE INDEX IF NOT EXISTS "sensors_address_time_idx" ON "mqttkit_1_testdrive"."sensors" ("address", ' \
           '"time")' in text
    assert ('CREATE OR REPLACE VIEW "mqttkit_1_testdrive"."area_42_node_1_sensors" AS SELECT "time", ... FROM '
            '"mqttkit_1_testdrive"."sensors" WHERE "address" = \'area_42_node_1_sensors\'') in text


@pytest.mark.parametrize("text", [
    "mqtt://gw:hunter2@h:bad/x ! sqlite location=x",  # the URL is refused
    "mqtt://gw:hunter2@h/x ! bogus=1",  # the grammar refuses another part of the line
    "mqtt://h/x ! postgresql://gw:hunter2@h:bad/db",
    "mqtt://h/x?password=hunter2&qos=7 ! sqlite location=x",
])
def test_an_invalid_pipeline_is_shown_without_its_passwords(text):
    """The error quoted the line as written, the password of its URLs with it; shown as one * a character, the
    caret still points at the same column."""
    with pytest.raises(LorrygateError) as info:
        parse_launch(text)
    shown = str(info.value)
    assert "hunter2" not in shown and "*******" in shown, shown
    line, caret = shown.splitlines()[-2:]
    assert len(line) == len(text) and caret.index("^") == info.value.col - 1


@pytest.mark.parametrize("text, decoders, values", [
    # a strategy element brings its chain and values policy, as a channel of an ini file that names it
    ("mqtt://h/spBv1.0/%23 ! strategy name=sparkplug ! sqlite:///x.sqlite", ("sparkplug", "json", "value"), "as-sent"),
    ("mqtt://h/tele/%23 ! strategy name=tasmota ! sqlite:///x.sqlite", ("tasmota", "json", "value"), "as-sent"),
    ("mqtt://h/weewx/%23 ! strategy name=wan ! sqlite:///x.sqlite", ("ttn", "json", "value"), "kotori"),
    # unless a decode element or the URL's content-type chooses
    ("mqtt://h/tele/%23 ! strategy name=tasmota ! decode chain=json ! sqlite:///x.sqlite", ("json",), "as-sent"),
    ("mqtt://h/a/%23?content-type=csv ! strategy name=tasmota ! sqlite:///x.sqlite", ("json", "csv", "kv"),
     "as-sent"),
    # without one, as before
    ("mqtt://h/a/%23 ! sqlite:///x.sqlite", ("json",), "as-sent"),
])
def test_a_strategy_element_brings_its_chain_and_values_policy(text, decoders, values):
    """``strategy name=sparkplug`` decoded JSON only (every Sparkplug payload a dead letter), and ``strategy
    name=wan`` stored Kotori's numbers in text as text: a launch text is to run what an ini file runs."""
    channel = parse_launch(text).settings.channels[0]
    assert (channel.decoders, channel.values) == (decoders, values)


@pytest.mark.parametrize("text, expected", [
    ("mqtt://h/a/%23 ! crate://db:4200/?table=t&shards=3", "expected a crate:// URL without ?options"),
    ("mqtt://h/a/%23 ! crate://db:4200/doc", "expected a crate:// URL without a path"),
    ("mqtt://h/a/%23 ! sqlite:///x.sqlite?table=t&mode=ro", "expected sqlite:/// and the file's path alone"),
    ("mqtt://h/a/%23 ! postgresql://gw@db/x?table=t&sslmode=requre", "expected sslmode = disable"),
])
def test_a_sink_url_option_the_sink_does_not_read_is_an_error(text, expected):
    """Beside ``table``, a sink URL's options were passed on and left unread (crate's ``shards=3`` made tables of
    one shard): the launch line is refused as an ini file's url is."""
    with pytest.raises(PipelineError) as info:
        parse_launch(text)
    assert expected in str(info.value), str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("mqtt://h/a/%23?clientid=gw ! sqlite:///x.sqlite", "an mqtt:// source URL with the options it reads "
                                                          "(client-id, client_id, content-type, protocol, qos, "
                                                          "retained, tls_ca, tls_cert, tls_key), not 'clientid'"),
    ("mqtt://h/a/%23?protocol=5.0 ! sqlite:///x.sqlite", "protocol=3.1.1 or 5 in an mqtt:// source URL, not '5.0'"),
    ("mqtt://h/a/%23?retained=yes ! sqlite:///x.sqlite", "retained=new or always or never"),
    ("amqp://h/%2F?exchange=x&prefetch_count=10 ! sqlite:///x.sqlite", "not 'prefetch_count'"),
    ("redis://h/s?group_name=g ! sqlite:///x.sqlite", "a redis:// URL with the options it reads"),
    ("kafka://h:9092/t?offset=latest ! sqlite:///x.sqlite", "a kafka:// source URL with the options it reads"),
    ("zmq+tcp://h:5555/t?bind=1 ! sqlite:///x.sqlite", "a zmq+tcp:// URL with the options it reads (mode)"),
    ("mqtt://h/a/%23 ! mqtt://h2/copy/{topic}?qos=2", "an mqtt:// sink URL with the options it reads (client-id, client_id, payload, protocol, "
                                                      "tls_ca, tls_cert, tls_key)"),
    ("mqtt://h/a/%23 ! kafka://k:9092/t?payload=json", "payload=message or records in a kafka:// sink URL"),
])
def test_a_bus_url_option_its_element_does_not_read_is_an_error(text, expected):
    """A URL option the element does not read was ignored in silence: ``?clientid=`` (for client-id) gave each
    start another MQTT session, so what the broker kept for the last one was never delivered; ``?protocol=5.0``
    and ``?retained=yes`` were passed on as they were."""
    with pytest.raises(PipelineError) as info:
        parse_launch(text)
    assert expected in str(info.value), str(info.value)


def test_the_options_bus_urls_read_are_taken():
    settings = parse_launch("mqtt://h/a/%23?qos=0&client-id=gw&protocol=5&retained=never&content-type=csv "
                            "! mqtt://h2/copy/{topic}?payload=records").settings
    (channel,) = settings.channels
    broker = settings.brokers[channel.source]
    assert (channel.qos, channel.retained, broker.client_id, broker.protocol) == (0, "never", "gw", "5")


@pytest.mark.parametrize("text, expected", [
    ("mqtt://h/a/%23 ! mqtt://h2/copy/{realm}/{node:>4}/{topic}?payload=records", None),
    ("mqtt://h/a/%23 ! mqtt://h/out/{", "got 'out/{': ValueError: Single '{' encountered in format string"),
    ("mqtt://h/a/%23 ! mqtt://h/out/{nodes}", "got 'out/{nodes}': KeyError: 'nodes'"),
    ("mqtt://h/a/%23 ! mqtt://h/out/%2B/{topic}", "the topic holds '+' at character 4 (a wildcard)"),
    ("mqtt://h/a/%23 ! kafka://k:9092/t-{table.x}", "AttributeError"),
], ids=["fine", "lone-brace", "unknown", "wildcard", "kafka"])
def test_a_sink_topic_template_that_gives_no_topic_is_an_error(text, expected):
    """``{nodes}`` gave an empty level in silence, and ``{`` failed every batch, so the sink stopped for good."""
    if expected is None:
        assert parse_launch(text).settings.storages["sink0"].topic == "copy/{realm}/{node:>4}/{topic}"
        return
    if "kafka" in text:
        pytest.importorskip("confluent_kafka")
    with pytest.raises(PipelineError) as info:
        parse_launch(text)
    assert expected in str(info.value), str(info.value)


@pytest.mark.parametrize("text, loops", [
    ("mqtt://localhost/loop/%23 ! mqtt://127.0.0.1:1883/loop/relayed/{topic}", True),
    ("mqtt://h:1884/%23 ! mqtt://h:1884/{topic}", True),
    ("mqtt://h/mqttkit-1/%23 ! strategy name=wan ! mqtt://h/{realm}/copies/{node}", True),
    ("mqtt://h/a/%2B/data ! mqtt://h/a/{node}/data", True),
    ("mqtt://h/loop/%23 ! mqtt://h2/loop/relayed/{topic}", False),
    ("mqtt://h/loop/%23 ! mqtt://h:1884/loop/relayed/{topic}", False),
    ("mqtt://h/loop/%23 ! mqtt://h/copy/{topic}", False),
    ("mqtt://h/a/%2B/data ! mqtt://h/a/{node}/copy", False),
], ids=["relayed-below", "everything", "a-placeholder-is-a-level-of-the-filter", "single-level", "another-host",
        "another-port", "outside", "another-level"])
def test_a_sink_that_publishes_into_its_own_sources_topics_is_an_error(text, loops):
    """A relay whose sink published, on the broker its source subscribes, to topics the source's filter matches
    got each message back and published it again, without end (``loop/#`` to ``loop/relayed/{topic}`` until the
    topic had 200 levels and Mosquitto closed the connection, which then stopped the sink)."""
    if not loops:
        assert parse_launch(text).settings.storages
        return
    with pytest.raises(PipelineError, match="a sink that feeds its source: .* it would come back and be published "
                                            "again, without end"):
        parse_launch(text)


def test_chains_that_feed_each_other_round_are_a_warning():
    """Two chains of one launch text, each relaying into the other's topics on one broker: a warning naming
    both hops, as for the channels of a config (it was not looked for in launch texts)."""
    settings = parse_launch("mqtt://h/a/%23 ! mqtt://h/b/{topic}  mqtt://h/b/%23 ! mqtt://h/a/{topic}").settings
    (warning,) = settings.warnings
    assert warning.startswith("<launch>: [channel:") and "go round these channels without end" in warning
    assert warning.count("publishes through storage") == 2
    assert parse_launch("mqtt://h/a/%23 ! mqtt://h/b/{topic}  mqtt://h/c/%23 ! mqtt://h/a/{topic}").settings.warnings == ()


def test_a_url_takes_its_password_from_the_environment(monkeypatch):
    """``${ENV:NAME}`` in a URL, as in a config's values: a password on the command line is in ``ps`` for every
    user of the machine. In the user info it goes in percent-encoded (a password with ``@``, ``/`` or ``:``
    stays a password); the error of one unset names it."""
    monkeypatch.setenv("LG_MQTT_PW", "p@ss/w:rd")
    monkeypatch.setenv("LG_PG_PW", "s3cr%t")
    monkeypatch.setenv("LG_KAFKA_PW", "k@fka")
    settings = parse_launch("mqtt://gw:${ENV:LG_MQTT_PW}@broker:1884/plant/%23 "
                            "! postgresql://gw:${ENV:LG_PG_PW}@db/telemetry").settings
    broker = settings.brokers[settings.channels[0].source]
    assert (broker.host, broker.port, broker.username, broker.password.reveal()) == ("broker", 1884, "gw", "p@ss/w:rd")
    assert "s3cr%25t@db/telemetry" in settings.storages["sink0"].url.raw
    relayed = parse_launch("amqp://gw:${ENV:LG_MQTT_PW}@rabbit/plant/%23 ! tee name=t "
                           "t. ! mqtt://gw:${ENV:LG_MQTT_PW}@other/copy/{topic} "
                           "t. ! kafka://gw:${ENV:LG_KAFKA_PW}@k:9092/copy").settings
    assert relayed.brokers["source0"].password.reveal() == "p@ss/w:rd"
    assert relayed.storages["sink0"].broker.password.reveal() == "p@ss/w:rd"
    assert relayed.storages["sink1"].broker.password.reveal() == "k@fka"
    with pytest.raises(PipelineError, match="environment variable LG_UNSET to be set") as info:
        parse_launch("mqtt://gw:${ENV:LG_UNSET}@broker/a ! sqlite:///x.sqlite")
    assert info.value.col == 1


def test_an_mqtt_sink_takes_the_protocol_and_client_id_its_config_section_takes():
    """``?protocol=5`` (a message the broker's ACL refuses is a dead letter, not acknowledged and dropped) and
    ``?client-id=`` were refused in a launch's mqtt:// sink, which a ``[storage:NAME]`` URL takes; an mqttsink
    element's password with ``@`` or ``/`` made another URL."""
    url = parse_launch("mqtt://h/a ! mqtt://gw:pw@h2/out/{topic}?protocol=5&client-id=relay-1&payload=records")
    sink = url.settings.storages["sink0"]
    assert (sink.broker.protocol, sink.broker.client_id, sink.broker.password.reveal(), sink.payload) == (
        "5", "relay-1", "pw", "records")
    element = parse_launch("mqtt://h/a ! mqttsink host=h2 username=gw password=p@ss/w:rd protocol=5 client-id=c")
    broker = element.settings.storages["sink0"].broker
    assert (broker.host, broker.protocol, broker.client_id, broker.password.reveal()) == ("h2", "5", "c", "p@ss/w:rd")
    default = parse_launch("mqtt://h/a ! mqtt://h2/out").settings.storages["sink0"].broker
    assert default.protocol == "3.1.1" and default.client_id.startswith("lorrygate-")
    with pytest.raises(PipelineError, match="protocol=3.1.1 or 5 in an mqtt:// sink URL, not '4'"):
        parse_launch("mqtt://h/a ! mqtt://h2/out?protocol=4")


def test_tls_urls_and_elements_take_the_ca_and_a_client_certificate(tmp_path):
    """``?tls_ca=``, ``?tls_cert=``, ``?tls_key=`` (and ``tls-ca=``... of mqttsrc and mqttsink), as a
    [broker:NAME] section's keys, checked at once."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = parse_launch(f"mqtts://b:8883/in/%23?tls_ca={pem}&tls_cert={pem}&tls_key={pem} "
                            f"! mqtts://c/out/{{topic}}?tls_ca={pem}").settings
    source, sink = settings.brokers["source0"], settings.storages["sink0"].broker
    assert (source.tls, source.tls_ca, source.tls_cert, source.tls_key) == (True, str(pem), str(pem), str(pem))
    assert (sink.tls, sink.tls_ca, sink.tls_cert) == (True, str(pem), "")
    elements = parse_launch(f"mqttsrc host=b topic=in/# tls=true tls-ca={pem} "
                            f"! mqttsink host=c tls=true tls-ca={pem} tls-cert={pem} tls-key={pem}").settings
    assert elements.brokers["source0"].tls_ca == str(pem)
    amqp = parse_launch(f"amqpsrc host=r tls=true tls-ca={pem} ! sqlite:///x.sqlite").settings
    assert amqp.brokers["source0"].tls_ca == str(pem)
    assert elements.storages["sink0"].broker.tls_key == str(pem)
    for url in (f"kafkas://k:9093/t?tls_ca={pem}", f"amqps://r/%2F?topic=a/%23&tls_ca={pem}",
                f"rediss://c/s1?tls_ca={pem}", f"redissrc host=c stream=s1 tls=true tls-ca={pem}",
                f"kafkasrc servers=k:9093 topic=t tls=true tls-ca={pem} tls-cert={pem} tls-key={pem}"):
        broker = parse_launch(f"{url} ! sqlite:///x.sqlite").settings.brokers["source0"]
        assert (broker.tls, broker.tls_ca) == (True, str(pem)), url
    kafka = parse_launch(f"mqtt://b/in ! kafkasink servers=k:9093 tls=true tls-ca={pem}").settings
    assert (kafka.storages["sink0"].broker.tls, kafka.storages["sink0"].broker.tls_ca) == (True, str(pem))
    for text, expected in [
        (f"mqtt://b/in?tls_ca={pem} ! sqlite:///x.sqlite", "TLS for tls_ca"),
        (f"mqtts://b/in?tls_ca={tmp_path}/none.pem ! sqlite:///x.sqlite", "a readable PEM file for tls_ca"),
        (f"mqtt://b/in ! mqttsink host=c tls-key={pem} tls=true", "tls_cert, the client certificate tls_key"),
        (f"mqttsrc host=b topic=in tls-ca={pem} ! sqlite:///x.sqlite", "mqttsrc: expected TLS for tls_ca"),
        (f"redissrc host=c stream=s1 tls-ca={pem} ! sqlite:///x.sqlite", "expected TLS for tls_ca"),
        (f"kafkasrc topic=t tls=true tls-ca={tmp_path}/none.pem ! sqlite:///x.sqlite", "a readable PEM file"),
    ]:
        with pytest.raises(PipelineError, match=expected):
            parse_launch(text)


@pytest.mark.parametrize("sink", ["sqlite location=x.sqlite", "postgresql url=postgresql://u@db/t",
                                  "crate url=crate://h:4200/"])
def test_a_launch_texts_sql_sinks_take_merge(sink):
    """``merge=`` of a SQL sink element is the storage's ``merge`` (seconds); without it, off."""
    (storage,) = parse_launch(f"mqtt://h/x ! {sink} merge=1m").settings.storages.values()
    assert storage.merge == 60.0
    (storage,) = parse_launch(f"mqtt://h/x ! {sink}").settings.storages.values()
    assert storage.merge == 0.0


def test_describe_shows_the_key_of_a_merged_channels_crate_tables():
    """``--describe``: a channel with ``merge`` makes its CrateDB tables with the key its rows merge on."""
    from lorrygate.config import loads
    from lorrygate.pipeline.model import Pipeline

    settings = loads("[broker:b]\nhost = h\n[storage:c]\nurl = crate://localhost:4200/\n"
                     "[channel:solar]\ntopics = solar/#\nstrategy = opendtu\nmerge = 10s\n")
    text = Pipeline(settings).describe(["solar/114172220355/0/power"])
    assert 'PRIMARY KEY ("time", "lorrygate_id", "year")' in text
    plain = loads("[broker:b]\nhost = h\n[storage:c]\nurl = crate://localhost:4200/\n"
                  "[channel:solar]\ntopics = solar/#\nstrategy = opendtu\n")
    assert "PRIMARY KEY" not in Pipeline(plain).describe(["solar/114172220355/0/power"])


def test_a_launch_line_with_a_relative_sqlite_path_below_a_top_level_folder_is_warned(tmp_path, monkeypatch):
    """``! sqlite:///tmp/x.sqlite`` wrote ./tmp/x.sqlite (three slashes: relative) while its user looked in /tmp."""
    monkeypatch.chdir(tmp_path)
    (warning,) = parse_launch("mqtt://h/a/# ! sqlite:///tmp/x.sqlite").settings.warnings
    assert warning.endswith(f"is the file {tmp_path}/tmp/x.sqlite (three slashes: a path relative to {tmp_path}); "
                            "for /tmp/x.sqlite, write sqlite:////tmp/x.sqlite"), warning
    assert parse_launch("mqtt://h/a/# ! sqlite:////tmp/x.sqlite").settings.warnings == ()


def test_a_prometheus_sink_is_served_on_a_metrics_listener_of_the_pipeline():
    """A pipeline has no ``[lorrygate] metrics``: its prometheus sink's values went nowhere. They are served on
    127.0.0.1:9481, or where ``listen`` says; a pushgateway sink needs no listener."""
    assert parse_launch("mqtt://localhost/a/%23 ! prometheus://").settings.gateway.metrics == ("127.0.0.1", 9481)
    assert parse_launch("mqtt://localhost/a/%23 ! prometheussink listen=127.0.0.1:9555").settings.gateway.metrics \
        == ("127.0.0.1", 9555)
    assert parse_launch("mqtt://localhost/a/%23 ! prometheussink pushgateway=h:9091").settings.gateway.metrics is None
    assert parse_launch("mqtt://localhost/a/%23 ! sqlite:///var/x.sqlite").settings.gateway.metrics is None
    with pytest.raises(PipelineError, match="prometheus sinks on one metrics listener: got 127.0.0.1:9555 beside "
                                            "127.0.0.1:9481"):
        parse_launch("mqtt://localhost/a/%23 ! tee name=t t. ! prometheus:// t. ! prometheussink "
                     "listen=127.0.0.1:9555")


def test_a_password_in_plain_text_beyond_loopback_is_warned_of_in_a_launch_text_too():
    warned = parse_launch("mqtt://gw:secret@broker.example/a/%23 ! crate://admin:pw@crate.example:4200/").settings
    assert [w.split(":")[0] + ":" + w.split(":")[1] for w in warned.warnings] == [
        "<launch> [broker:source0] password", "<launch> [storage:sink0] url"]
    assert "secret" not in " ".join(warned.warnings) and "pw@" not in " ".join(warned.warnings)
    assert parse_launch("mqtts://gw:secret@broker.example/a/%23 ! sqlite:///x.db").settings.warnings == ()

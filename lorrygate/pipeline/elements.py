"""
The elements of the launch language, with their documented properties.
``lorrygate inspect`` prints this registry.

Property values parse with the same parsers as the ini keys they mirror, so
``qos=3`` fails here exactly as ``qos = 3`` does in a config file.
"""

from typing import Any

import attrs

from lorrygate.config import values as v
from lorrygate.storage.shared_layout import LAYOUTS

REQUIRED = object()


@attrs.frozen
class Prop:
    parse: Any
    default: Any
    doc: str


@attrs.frozen
class ElementSpec:
    name: str
    kind: str  # source, strategy, decode, transform, tee, queue, sink
    doc: str
    properties: dict


def _spec(element, kind, doc, **properties):
    return element, ElementSpec(element, kind, doc, properties)


ELEMENTS = dict([
    _spec("mqttsrc", "source", "Receives from an MQTT broker (persistent session, QoS 1 by default).",
          host=Prop(v.nonempty, "localhost", "broker host"),
          port=Prop(v.integer(1, 65535), None, "broker port (1883, 8883 with tls)"),
          topic=Prop(v.topic_filters, REQUIRED, "topic filters, comma-separated"),
          qos=Prop(v.integer(0, 2), 1, "subscription QoS"),
          **{"client-id": Prop(v.text, "", "client id (the element's channel name is appended)")},
          username=Prop(v.text, "", "user name"),
          password=Prop(v.text, "", "password (use ${ENV:NAME})"),
          protocol=Prop(v.choice("3.1.1", "5"), "3.1.1", "MQTT version"),
          tls=Prop(v.boolean, False, "TLS with certificate verification"),
          **{"tls-ca": Prop(v.text, "", "with tls: a PEM file of the CA that signed the broker's certificate "
                                        "(default: the system's)"),
             "tls-cert": Prop(v.text, "", "with tls: a PEM client certificate"),
             "tls-key": Prop(v.text, "", "with tls: the client certificate's PEM private key")},
          retained=Prop(v.choice("new", "always", "never"), "", "retained messages on (re)subscribe: new "
                                                                 "(always for strategy victron), always or never")),
    _spec("amqpsrc", "source", "Consumes a durable queue of a RabbitMQ (AMQP 0-9-1), bound to a topic exchange; "
          "routing keys read as MQTT topics.",
          host=Prop(v.nonempty, "localhost", "broker host"),
          port=Prop(v.integer(1, 65535), None, "broker port (5672, 5671 with tls)"),
          vhost=Prop(v.nonempty, "/", "virtual host"),
          exchange=Prop(v.nonempty, "amq.topic", "topic exchange"),
          topic=Prop(v.topic_filters, ("#",), "topic filters (bindings), comma-separated"),
          queue=Prop(v.text, "", "queue name (default lorrygate.<channel>)"),
          prefetch=Prop(v.integer(1, 65535), 2000, "unacknowledged messages at once"),
          username=Prop(v.text, "guest", "user name"),
          password=Prop(v.text, "guest", "password (use ${ENV:NAME})"),
          tls=Prop(v.boolean, False, "TLS with certificate verification"),
          **{"tls-ca": Prop(v.text, "", "with tls: a PEM file of the CA that signed the broker's certificate "
                                        "(default: the system's)"),
             "tls-cert": Prop(v.text, "", "with tls: a PEM client certificate"),
             "tls-key": Prop(v.text, "", "with tls: the client certificate's PEM private key")}),
    _spec("redissrc", "source", "Reads Redis Streams with a consumer group (at least once), or pub/sub (at most once).",
          host=Prop(v.nonempty, "localhost", "server host"),
          port=Prop(v.integer(1, 65535), 6379, "server port"),
          password=Prop(v.text, "", "password (use ${ENV:NAME})"),
          stream=Prop(v.nonempty, REQUIRED, "stream keys, comma-separated (mode=pubsub: a topic pattern)"),
          mode=Prop(v.choice("streams", "pubsub"), "streams", "streams or pubsub"),
          group=Prop(v.nonempty, "lorrygate", "consumer group"),
          consumer=Prop(v.text, "", "consumer name (default <host>-<channel>)"),
          tls=Prop(v.boolean, False, "TLS with certificate verification"),
          **{"tls-ca": Prop(v.text, "", "with tls: a PEM file of the CA that signed the server's certificate "
                                        "(default: the system's)"),
             "tls-cert": Prop(v.text, "", "with tls: a PEM client certificate"),
             "tls-key": Prop(v.text, "", "with tls: the client certificate's PEM private key")}),
    _spec("zmqsrc", "source", "A ZeroMQ SUB or PULL socket (at most once); host=* binds.",
          host=Prop(v.nonempty, "localhost", "peer host, or * to bind"),
          port=Prop(v.integer(1, 65535), REQUIRED, "port"),
          topic=Prop(v.topic_filters, ("#",), "topic filters"),
          mode=Prop(v.choice("sub", "pull"), "sub", "sub or pull")),
    _spec("kafkasrc", "source", "A Kafka consumer group; offsets committed after the rows (at least once).",
          servers=Prop(v.nonempty, "localhost:9092", "bootstrap servers, comma-separated"),
          topic=Prop(v.nonempty, REQUIRED, "Kafka topics, comma-separated"),
          group=Prop(v.nonempty, "lorrygate", "consumer group"),
          start=Prop(v.choice("earliest", "latest"), "earliest", "where a new group starts"),
          tls=Prop(v.boolean, False, "TLS with certificate verification"),
          **{"tls-ca": Prop(v.text, "", "with tls: a PEM file of the CA that signed the server's certificate "
                                        "(default: the system's)"),
             "tls-cert": Prop(v.text, "", "with tls: a PEM client certificate"),
             "tls-key": Prop(v.text, "", "with tls: the client certificate's PEM private key")}),
    _spec("pollsrc", "source", "Polls an HTTP(S) URL or runs a command on an interval (at most once).",
          url=Prop(v.text, "", "the URL to GET (or command=)"),
          command=Prop(v.text, "", "a command whose output is the payload (or url=)"),
          interval=Prop(v.duration(0.01, 86400), 10.0, "time between polls"),
          timeout=Prop(v.duration(0.1, 3600), 30.0, "how long a poll may take"),
          topic=Prop(v.text, "", "the topic of what it reads")),
    _spec("iiosrc", "source", "Reads Linux IIO sensors through sysfs on an interval (at most once).",
          root=Prop(v.nonempty, "/sys/bus/iio/devices", "the sysfs directory of the devices"),
          interval=Prop(v.duration(0.01, 86400), 10.0, "time between reads"),
          topic=Prop(v.text, "", "topic prefix (the device name follows)")),
    _spec("filesrc", "source", "Follows a file or glob across rotation; exactly once into SQLite and PostgreSQL.",
          location=Prop(v.nonempty, REQUIRED, "a file or a glob (** for subdirectories)"),
          exclude=Prop(v.text, "", "a glob of file names to leave out"),
          start=Prop(v.choice("beginning", "end"), "beginning", "where files present at the first start are read"),
          header=Prop(v.boolean, False, "the first line is a header put before every line (CSV)"),
          charset=Prop(v.line_charset, "utf-8", "the files' character set (latin-1, cp1252)"),
          topic=Prop(v.text, "", "topic; {stem} {name} {dir} {path} filled in (default <source>/{stem})")),
    _spec("socketsrc", "source", "Listens on a Unix socket that local programs write to (at most once).",
          path=Prop(v.nonempty, REQUIRED, "the socket file"),
          framing=Prop(v.choice("lines", "length", "datagram"), "lines", "lines, length or datagram"),
          mode=Prop(v.octal_mode, "660", "the socket file's permissions"),
          topic=Prop(v.text, "", "the topic of what it reads")),
    _spec("pgcdcsrc", "source", "PostgreSQL change data capture through wal2json (at least once).",
          database=Prop(v.nonempty, REQUIRED, "postgresql://USER:PASSWORD@HOST/DATABASE"),
          slot=Prop(v.nonempty, "lorrygate", "the logical replication slot"),
          tables=Prop(v.names, (), "schema.table names, comma-separated (default: all)"),
          topic=Prop(v.text, "", "the topic prefix (schema and table follow)")),
    _spec("tributarysrc", "source", "The values of a Tributary streaming graph (at most once; backpressure).",
          graph=Prop(v.callable_ref, REQUIRED, "module:function that returns the graph's last node"),
          topic=Prop(v.text, "", "topic; a dict value's fields fill {name} placeholders"),
          window=Prop(v.integer(1, 1_000_000), 1_000, "values taken and not yet committed, at most")),
    _spec("strategy", "strategy", "Turns topics into addresses and tables (docs/topology.rst).",
          name=Prop(v.nonempty, "wan", "a built-in, drop-in or declared strategy")),
    _spec("decode", "decode", "Decodes payloads with a fallback chain (docs/decoding.rst).",
          chain=Prop(v.names, ("json",), "decoder names, tried in order"),
          timezone=Prop(v.timezone, "UTC", "zone of payload times without an offset")),
    _spec("transform", "transform", "Rewrites records after decoding (docs/decoding.rst).",
          rename=Prop(v.text, "", "old:new pairs"), drop=Prop(v.text, "", "field names"),
          tags=Prop(v.text, "", "name=value pairs, values may use {node} and friends"),
          convert=Prop(v.text, "", "field: expression; field: expression"),
          metadata=Prop(v.boolean, False, "add topic, address, decoder and receive time as tags"),
          headers=Prop(v.text, "", "headers sent with the message to store as tags: name or name:tag, ...")),
    _spec("hamilton", "dataflow", "Runs a Hamilton dataflow over each address's records; its outputs become "
          "fields (docs/transform.rst).",
          modules=Prop(v.names, REQUIRED, "the dataflow's Python files or module names, comma-separated"),
          inputs=Prop(v.names, REQUIRED, "the record fields it reads (pandas Series)"),
          outputs=Prop(v.names, REQUIRED, "the functions whose values are stored"),
          constants=Prop(v.pairs("=", "name=value pairs"), (), "scalar inputs, name=value pairs"),
          history=Prop(v.integer(0, 1_000_000), 0, "rows of each address kept for rolling computations"),
          into=Prop(v.choice("fields", "table"), "fields", "fields of the rows, or a derived table"),
          timeout=Prop(v.duration(0.01, 3600), 10.0, "how long one run may take")),
    _spec("tee", "tee", "Sends every record to each branch that starts with NAME. (all must commit).",
          name=Prop(v.nonempty, REQUIRED, "the name branches refer to")),
    _spec("queue", "queue", "Accepted for gst-launch habits; every storage already buffers."),
    _spec("sqlite", "sink", "SQLite storage (docs/storage.rst).",
          location=Prop(v.nonempty, REQUIRED, "database file"),
          layout=Prop(v.choice(*LAYOUTS), "per-address",
                      "per-address, or per-network: a table per network and kind, a view per address"),
          **{"time-index": Prop(v.boolean, False, "an index on each table's time, for reads of a time range")},
          retention=Prop(v.retention, 0.0, "rows older than this (90d) are deleted every hour; 0: kept"),
          merge=Prop(v.duration(0, 86400), 0.0, "rows of a table and tags in one time bucket of this length (10s) "
                     "are one row at its start; 0: a row a record"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("postgresql", "sink", "PostgreSQL storage.",
          url=Prop(v.storage_url, REQUIRED, "postgresql://USER:PASSWORD@HOST/DATABASE"),
          layout=Prop(v.choice(*LAYOUTS), "per-address",
                      "per-address, or per-network: a table per network and kind, a view per address"),
          merge=Prop(v.duration(0, 86400), 0.0, "rows of a table and tags in one time bucket of this length (10s) "
                     "are one row at its start; 0: a row a record"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("crate", "sink", "CrateDB storage over HTTP.",
          url=Prop(v.storage_url, REQUIRED, "crate://HOST:4200/"),
          shards=Prop(v.integer(1, 1000), 1, "shards per table"), replicas=Prop(v.nonempty, "0", "replicas"),
          layout=Prop(v.choice(*LAYOUTS), "per-address",
                      "per-address, or per-network: a table per network and kind, a view per address"),
          merge=Prop(v.duration(0, 86400), 0.0, "rows of a table and tags in one time bucket of this length (10s) "
                     "are one row at its start; 0: a row a record"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("textsink", "sink", "Appends rows to a file as NDJSON or CSV, fsync'd per batch.",
          location=Prop(v.nonempty, REQUIRED, "file path"),
          format=Prop(v.choice("ndjson", "csv"), "ndjson", "ndjson or csv"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("mqttsink", "sink", "Publishes to an MQTT broker, QoS 1; the source message is acknowledged after the PUBACK.",
          host=Prop(v.nonempty, "localhost", "broker host"),
          port=Prop(v.integer(1, 65535), None, "broker port (1883, 8883 with tls)"),
          topic=Prop(v.nonempty, "{topic}", "topic template ({topic}, {realm}, {node}, {table}, ...)"),
          payload=Prop(v.choice("message", "records"), "message", "the payload as it came, or each record as JSON"),
          username=Prop(v.text, "", "user name"),
          password=Prop(v.text, "", "password (use ${ENV:NAME})"),
          tls=Prop(v.boolean, False, "TLS with certificate verification"),
          **{"tls-ca": Prop(v.text, "", "with tls: a PEM file of the CA that signed the broker's certificate "
                                        "(default: the system's)"),
             "tls-cert": Prop(v.text, "", "with tls: a PEM client certificate"),
             "tls-key": Prop(v.text, "", "with tls: the client certificate's PEM private key")},
          protocol=Prop(v.choice("3.1.1", "5"), "3.1.1", "MQTT version (5: a message the broker refuses, for its "
                        "ACL, say, is a dead letter; 3.1.1 brokers acknowledge and drop it)"),
          **{"client-id": Prop(v.text, "", "client id (empty: lorrygate-<host>-<storage>)")},
          name=Prop(v.nonempty, "", "storage name")),
    _spec("kafkasink", "sink", "Produces to Kafka (acks=all); the MQTT topic is the key.",
          servers=Prop(v.nonempty, "localhost:9092", "bootstrap servers, comma-separated"),
          topic=Prop(v.nonempty, "lorrygate", "Kafka topic (template)"),
          payload=Prop(v.choice("message", "records"), "message", "the payload as it came, or records as JSON"),
          tls=Prop(v.boolean, False, "TLS with certificate verification"),
          **{"tls-ca": Prop(v.text, "", "with tls: a PEM file of the CA that signed the server's certificate "
                                        "(default: the system's)"),
             "tls-cert": Prop(v.text, "", "with tls: a PEM client certificate"),
             "tls-key": Prop(v.text, "", "with tls: the client certificate's PEM private key")},
          name=Prop(v.nonempty, "", "storage name")),
    _spec("wssink", "sink", "A live page and a WebSocket of the records (at most once: a view).",
          host=Prop(v.nonempty, "127.0.0.1", "address to listen on"),
          port=Prop(v.integer(1, 65535), 9482, "port"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("prometheussink", "sink", "The latest numeric values as gauges: on the metrics listener, or pushed.",
          pushgateway=Prop(v.text, "", "host:port of a Pushgateway (empty: the metrics listener)"),
          listen=Prop(v.listen_address, "127.0.0.1:9481", "where Prometheus scrapes /metrics without a "
                      "pushgateway: HOST:PORT"),
          job=Prop(v.nonempty, "lorrygate", "Pushgateway job"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("tributarysink", "sink", "Feeds records into a Tributary graph; written once the graph took them "
          "(at least once; a slow graph holds the source).",
          graph=Prop(v.callable_ref, REQUIRED, "module:function that takes the records' node, returns the last node"),
          name=Prop(v.nonempty, "", "storage name")),
    _spec("appsink", "sink", "Hands rows to a Python callable, callback(rows).",
          callback=Prop(v.callable_ref, "", "module:function (or give it to parse_launch)"),
          name=Prop(v.nonempty, "", "the name parse_launch(callbacks=...) uses")),
])

#: URL schemes that stand for elements
URL_KINDS = {"mqtt": "source", "mqtts": "source", "amqp": "source", "amqps": "source", "redis": "source",
             "rediss": "source", "zmq+tcp": "source", "kafka": "source", "kafkas": "source", "ws": "sink",
             "prometheus": "sink", "pushgateway": "sink", "sqlite": "sink", "postgresql": "sink", "postgres": "sink",
             "crate": "sink", "crate+http": "sink", "crate+https": "sink", "file": "sink"}


def _default_of(prop) -> str:
    """`` (required)``, `` (default 1)``; nothing where there is no value to tell (an empty one, or the doc tells
    it: ``(default: the system's)``)."""
    if prop.default is REQUIRED:
        return " (required)"
    if prop.default in (None, "", ()) or "default" in prop.doc:
        return ""
    return f" (default {prop.default!r})"


def describe_elements(name: str | None = None) -> str:
    """The registry as text, like gst-inspect."""
    if name is not None and name not in ELEMENTS:
        raise KeyError(name)
    lines = []
    for spec in ELEMENTS.values() if name is None else [ELEMENTS[name]]:
        lines.append(f"{spec.name} ({spec.kind}): {spec.doc}")
        for key, prop in spec.properties.items():
            lines.append(f"    {key:<10} {prop.doc}{_default_of(prop)}")
    if name is None:
        lines.append("URLs: mqtt://[user:password@]host[:port]/topic?qos=1 and "
                     "amqp://[user:password@]host[:port]/[vhost]?exchange=amq.topic&topic=a/%23, "
                     "redis://[:password@]host[:port]/STREAM?mode=streams|pubsub, "
                     "zmq+tcp://host:port/topic?mode=sub|pull, kafka://host:9092/TOPIC?group=NAME (sources); "
                     "sqlite:///path, "
                     "postgresql://..., crate://host:4200/, file:///path.ndjson (sinks; ?table=NAME writes every "
                     "record into that one table), and mqtt://host/TOPIC-TEMPLATE?payload=message|records or "
                     "kafka://host:9092/TOPIC at the end of a chain (sinks that publish), ws://127.0.0.1:9482/ (a live "
                     "page), prometheus:// and pushgateway://host:9091/JOB (the latest values as gauges)")
    return "\n".join(lines)

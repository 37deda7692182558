"""
The validated configuration, as frozen values, and the keys each ini section
accepts.

An ini file has one optional ``[lorrygate]`` section and any number of named
``[broker:NAME]``, ``[storage:NAME]`` and ``[channel:NAME]`` sections. Every
key below is documented in ``etc/gateway.ini``.
"""

import functools
import os
import string
from typing import Any

import attrs

from lorrygate.config import values as v
from lorrygate.model import DATA, KINDS, Channel
from lorrygate.storage.shared_layout import LAYOUTS
from lorrygate.topology.naming import quote

REQUIRED = object()
DEFAULT_STRATEGIES = "strategies"


@attrs.frozen
class Key:
    """One key of a section: how to parse it, its default, whether it is secret."""

    parse: Any
    default: Any = REQUIRED
    secret: bool = False
    #: what the key is for, for the configuration reference (docs/configuration.rst)
    doc: str = ""


@attrs.frozen
class GatewaySettings:
    data_dir: str = "var"
    log_format: str = "text"
    log_level: str = "info"
    stats_interval: float = 60.0
    #: seconds the user's code may run on the reactor thread at a time (`lorrygate.time_limit`)
    code_time_limit: float = 5.0
    strategies: str = DEFAULT_STRATEGIES
    #: the control endpoint (``lorrygate status``/``flush``): a Twisted
    #: endpoint string, "" for ``unix:<data_dir>/lorrygate.sock``, or "off"
    control: str = ""
    #: the token a TCP control endpoint asks for (``Authorization: Bearer ...``)
    control_token: v.Secret | None = attrs.field(default=None, repr=False)
    #: where Prometheus scrapes ``/metrics``: (host, port), or None (off)
    metrics: tuple | None = None
    #: the token the metrics listener asks for (``Authorization: Bearer ...``), or None
    metrics_token: v.Secret | None = attrs.field(default=None, repr=False)

    @property
    def control_endpoint(self) -> str | None:
        """The control endpoint as Twisted's endpoint string (``unix:<data_dir>/lorrygate.sock`` by default), or
        None for ``off``."""
        if self.control == "off":
            return None
        return self.control or f"unix:{self.data_dir}/lorrygate.sock"


@attrs.frozen
class BrokerSettings:
    name: str
    host: str
    port: int = 1883
    protocol: str = "3.1.1"
    client_id: str = ""
    username: str = ""
    password: v.Secret | None = attrs.field(default=None, repr=False)
    keepalive: int = 60
    clean_session: bool = False
    session_expiry: int = 0xFFFFFFFF
    receive_maximum: int = 65535
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    connect_timeout: float = 10.0
    reconnect_max_delay: float = 30.0
    #: PUBLISH packets larger than this are dead letters by reference (size and SHA-256), never held in memory
    max_payload: int = 8 << 20
    #: mqtt, amqp (RabbitMQ, AMQP 0-9-1) or redis
    type: str = "mqtt"
    #: amqp: the virtual host
    vhost: str = "/"
    #: mqtt: follow the broker's count of the messages it dropped (Mosquitto's ``$SYS``), and warn of drops
    watch_drops: bool = True


@attrs.frozen
class StorageSettings:
    name: str
    #: str() masks the password
    url: v.StorageUrl
    kind: str
    path: str = ""
    batch_size: int = 5000
    linger: float = 0.0
    max_pending: int = 20_000
    synchronous: str = "FULL"
    #: SQLite: an index on each table's time (PostgreSQL's tables always have one)
    time_index: bool = False
    #: SQLite: seconds after which rows are deleted (0: kept)
    retention: float = 0.0
    idempotent: bool = False
    #: SQL storages: seconds of the time buckets whose rows of a table and tags are merged into one (0: off), and
    #: the channels' own (``merge`` of a channel section), (channel, seconds) pairs
    merge: float = 0.0
    channel_merge: tuple = ()
    #: a `lorrygate.storage.ddl.DdlTemplate`, or None
    ddl: Any = None
    shards: int = 1
    replicas: str = "0-1"
    partition: str = "year"
    #: CrateDB, PostgreSQL and SQLite: per-address or per-network (`lorrygate.storage.shared_layout`)
    layout: str = "per-address"
    flatten_depth: int = 3
    max_columns: int = 250
    max_tables: int = 100_000
    tls_ca: str = ""
    #: mqtts:// and kafkas:// sinks: a client certificate and its key
    tls_cert: str = ""
    tls_key: str = ""
    timeout: float = 30.0
    spool: bool = True
    spool_max: int = 1 << 30
    #: textsink: ndjson or csv
    text_format: str = "ndjson"
    #: appsink: the callable that takes the rows; tributary: the graph's function (``graph``), once resolved
    #: (not compared: a reload imports a drop-in module again, and ``code`` tells whether it changed)
    callback: Any = attrs.field(default=None, repr=False, eq=False)
    graph: str = ""
    #: tributary: a hash of the graph's drop-in module and the helpers ("" for an installed module)
    code: str = ""
    #: names of ``[hook:NAME]`` sections run on the first sample of each table
    hooks: tuple = ()
    #: mqtt sinks: the topic template, what is published, where dead letters go, and the connection
    topic: str = "{topic}"
    payload: str = "message"
    dead_letter_topic: str = "lorrygate/dead-letters"
    broker: Any = attrs.field(default=None, repr=False)
    max_series: int = 10_000


@attrs.frozen
class Settings:
    """Everything a gateway needs, checked before the reactor runs."""

    source: str
    gateway: GatewaySettings
    brokers: dict
    storages: dict
    channels: tuple
    #: strategy name -> a callable that returns a fresh IStrategy
    strategies: dict = attrs.field(factory=dict, repr=False)
    #: decoder name -> a callable ``f(timezone, reactor)`` that returns an IDecoder
    decoders: dict = attrs.field(factory=dict, repr=False)
    #: what a reload compares besides the values above: the raw items of each
    #: ``strategy:NAME`` and ``decoder:NAME`` section, and under ``code`` a hash
    #: of the strategies directory and the codec files
    fingerprints: dict = attrs.field(factory=dict, repr=False)
    #: hook name -> `HookSettings`
    hooks: dict = attrs.field(factory=dict)
    #: source name -> `SourceSettings` (``[source:NAME]``)
    sources: dict = attrs.field(factory=dict)
    #: what is allowed but most likely a mistake (`lorrygate.config.loader.doubled_routes`): printed by ``check``,
    #: logged at the start
    warnings: tuple = ()
    #: the files the configuration reads besides its own file and the strategies directory (``${FILE:path}``,
    #: TLS files, codec files, ``ddl = @file``, a dataflow's modules), absolute: ``--reload`` watches them
    files: tuple = attrs.field(default=(), eq=False)


@attrs.frozen
class SourceSettings:
    """A ``[source:NAME]``: something on this machine that lorrygate reads on its own (lorrygate.sources.periodic)."""

    name: str
    type: str
    url: str = ""
    command: str = ""
    root: str = "/sys/bus/iio/devices"
    interval: float = 10.0
    jitter: float = 0.0
    timeout: float = 30.0
    topic: str = ""
    path: str = ""
    framing: str = "lines"
    mode: str = "660"
    group: str = ""
    #: pgcdc: the source database URL (a Secret), the slot, the tables
    database: Any = attrs.field(default=None, repr=False)
    slot: str = "lorrygate"
    tables: tuple = ()
    create_slot: bool = True
    #: files: names to leave out, where to begin, a header line, lines in flight, the longest line
    exclude: str = ""
    start: str = "beginning"
    header: bool = False
    charset: str = "utf-8"
    window: int = 10_000
    max_line: int = 8 << 20
    #: http: where it listens, (host, port); the token its clients send (a Secret), or None
    listen: tuple = ("127.0.0.1", 24642)
    token: Any = attrs.field(default=None, repr=False)
    tls_cert: str = ""
    tls_key: str = ""
    max_connections: int = 1000
    #: http: Kotori's data export (GET /api/<topic>.csv), and the token it wants (a Secret; None: ``token``)
    export: bool = False
    export_token: Any = attrs.field(default=None, repr=False)
    export_stall: float = 300.0
    #: tributary: "module:function", and the function once the loader resolved it
    graph: str = ""
    function: Any = attrs.field(default=None, repr=False, eq=False)


#: the listen hosts only this machine reaches
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: the bytes a Unix socket's path may have (Linux's ``sun_path`` is 108 bytes with the NUL)
UNIX_PATH_LIMIT = 107


def make_source(name: str, values: dict, section: str, problem):
    kind = values["type"]
    allowed = SOURCE_TYPE_KEYS[kind]
    for key in SOURCE_KEYS:
        if key != "type" and key not in allowed and values[key] not in (SOURCE_KEYS[key].default, None):
            problem(section, key, f"no {key} for a {kind} source (it takes {', '.join(allowed)})", repr(values[key]))
            return None
    if kind == "http" and bool(values["tls_cert"]) != bool(values["tls_key"]):
        missing = "tls_key" if values["tls_cert"] else "tls_cert"
        problem(section, missing, "a PEM file (HTTPS needs tls_cert and tls_key)", "nothing")
        return None
    if kind == "http" and values["export"] and not (values["export_token"] or values["token"]) \
            and values["listen"][0] not in LOOPBACK:
        # (as a control endpoint beyond loopback needs its control_token: the fleet's data for anyone who asks)
        host, port = values["listen"]
        problem(section, "export", "an export_token (or a token; from ${ENV:...} or ${FILE:...}) for an export "
                "others can reach, or a loopback listen address (127.0.0.1:PORT)",
                f"export = true on {host}:{port} without a token")
        return None
    if kind == "poll" and bool(values["url"]) == bool(values["command"]):
        problem(section, "url", "either a url or a command (one of them)", "both" if values["url"] else "neither")
        return None
    if kind == "pgcdc":
        if not values["database"] or not values["database"].reveal().startswith(("postgresql://", "postgres://")):
            problem(section, "database", "the source database as postgresql://USER@HOST/DATABASE", "nothing else")
            return None
        if not installed("psycopg"):
            problem(section, "type", needs("psycopg", "a pgcdc source"), "pgcdc")
            return None
        try:
            v.section_storage_url(values["database"].reveal())  # (libpq's check of its options, as a storage's)
        except v.Invalid as exc:
            problem(section, "database", exc.expected, repr(v.mask_url(values["database"].reveal())))
            return None
        if values["interval"] == SOURCE_KEYS["interval"].default:
            values["interval"] = 0.2  # how long to wait when the slot has nothing new
    if kind == "files":
        if not values["path"]:
            problem(section, "path", "the file or glob to read (a files source needs it)", "nothing")
            return None
        if not os.path.isabs(values["path"]):
            problem(section, "path", "an absolute path or glob (relative ones are read from the config's directory "
                                     "when written in a config file)", repr(values["path"]))
            return None
        if values["interval"] == SOURCE_KEYS["interval"].default:
            values["interval"] = 1.0  # how often the glob is looked at for new and rotated files
    if kind == "tributary":
        if not values["graph"]:
            problem(section, "graph", "module:function that returns the graph's last node", "nothing")
            return None
        if not installed("tributary"):
            problem(section, "type", needs("tributary", "a tributary source"), "tributary")
            return None
        if values["window"] == SOURCE_KEYS["window"].default:
            values["window"] = 1_000
    if kind == "socket" and not values["path"]:
        problem(section, "path", "the path of the socket file (a socket source needs it)", "nothing")
        return None
    if kind == "socket" and len(os.fsencode(values["path"])) > UNIX_PATH_LIMIT:
        # (the source did not listen, and said so only in its status)
        problem(section, "path", f"a Unix socket path of at most {UNIX_PATH_LIMIT} bytes: give a shorter one "
                f"(/run/lorrygate/sensors.sock)", f"{values['path']!r} ({len(os.fsencode(values['path']))} bytes)")
        return None
    if kind == "socket" and values["group"]:
        import grp

        try:
            grp.getgrnam(values["group"])
        except KeyError:
            problem(section, "group", "a group of this machine", repr(values["group"]))
            return None
    default_topic = f"{name}/{{stem}}" if kind == "files" else name
    return SourceSettings(name=name, **{**values, "topic": values["topic"] or default_topic})


@attrs.frozen
class HookSettings:
    name: str
    type: str
    callable: str = ""
    command: str = ""
    url: str = attrs.field(default="", repr=False)
    token: v.Secret | None = attrs.field(default=None, repr=False)
    folder: str = "lorrygate"
    datasource_url: str = ""
    timeout: float = 30.0
    retry_max: float = 300.0
    #: the resolved ``callable`` of a python hook
    function: Any = attrs.field(default=None, eq=False, repr=False)
    #: a hash of a python hook's drop-in module and the helpers (`lorrygate.config.code_identity.code_of`): a
    #: reload after an edit starts a new runner with the new code, and the storages that run it again
    code: str = attrs.field(default="", repr=False)


def make_hook(name: str, values: dict, section: str, problem):
    required, optional = HOOK_TYPE_KEYS[values["type"]]
    for key in ("callable", "command", "url", "token", "folder", "datasource_url"):
        given = values[key] not in ("", None) and values[key] != HOOK_KEYS[key].default
        if key in required and not values[key]:
            problem(section, key, f"a value (a {values['type']} hook needs it)", "nothing")
            return None
        if given and key not in required and key not in optional:
            problem(section, key, f"no {key} for a {values['type']} hook", "a value")
            return None
    return HookSettings(name=name, **values)


GATEWAY_KEYS = {
    "data_dir": Key(v.nonempty, "var", doc='Where the gateway keeps its files: the disk spools, the lock, the control socket, hooks.sqlite, csv-headers.sqlite, mqtt-sessions/.'),
    "log_format": Key(v.choice("text", "json"), "text", doc='text for people, json for log shippers (one flat object per line).'),
    "log_level": Key(v.choice("debug", "info", "warn", "error"), "info", doc='The lowest level logged.'),
    "stats_interval": Key(v.duration(1, 86400), 60.0, doc='How often each channel and storage logs its counters (30s, 5m, ...).'),
    "code_time_limit": Key(v.duration(0.01, 10), 5.0,
                           doc="How long a strategy, a decoder not declared blocking, or a channel's hook or convert "
                               "may run at a time on the reactor thread, which it holds for every channel: past it, "
                               "the code is stopped and the message is a dead letter."),
    "strategies": Key(v.nonempty, DEFAULT_STRATEGIES, doc='A directory of drop-in strategy and decoder modules.'),
    "control": Key(v.control_endpoint, "", doc='The control endpoint of lorrygate status and flush, /health and /ready: unix:PATH, tcp:PORT:interface=127.0.0.1 or off; empty for unix:<data_dir>/lorrygate.sock. A Unix socket path holds at most 107 bytes.'),
    "control_token": Key(v.text, None, secret=True, doc='The bearer token a TCP control endpoint beyond loopback asks for (from ${ENV:...} or ${FILE:...}).'),
    "metrics": Key(v.listen_address, None, doc='Where Prometheus scrapes /metrics (also /health, /ready): PORT, HOST:PORT, [IPv6]:PORT or off. Needs prometheus-client.'),
    "metrics_token": Key(v.text, None, secret=True, doc="The bearer token the metrics listener asks for (Prometheus: authorization: credentials); needed beyond loopback where a prometheus:// storage serves the fleet's values there (from ${ENV:...} or ${FILE:...})."),
}

BROKER_KEYS = {
    "type": Key(v.choice("mqtt", "amqp", "redis", "zmq", "kafka"), "mqtt",
                doc="The protocol: mqtt, amqp (RabbitMQ, AMQP 0-9-1), redis (Streams, or pub/sub), zmq (ZeroMQ SUB "
                    "or PULL; host = * binds) or kafka (a consumer group; host may list several brokers)."),
    "host": Key(v.nonempty, doc="The broker's host name or address."),
    "port": Key(v.integer(1, 65535), None, doc="The broker's port; 1883, or 8883 with tls."),
    "protocol": Key(v.choice("3.1.1", "5"), "3.1.1", doc='The MQTT version: 3.1.1 or 5.'),
    "client_id": Key(v.text, "", doc='A stable client id keeps the persistent session across restarts; the channel name is appended. Empty: lorrygate-<hostname>.'),
    "username": Key(v.text, "", doc='The user name, if the broker asks for one.'),
    "password": Key(v.text, None, secret=True, doc='The password, from ${ENV:NAME} or ${FILE:path}; never written in the file itself.'),
    "keepalive": Key(v.integer(0, 65535), 60, doc="Seconds between keep-alives when nothing else is sent (0: off): "
                                                 "mqtt: PINGREQs; amqp: the heartbeat; redis: a PING (and TCP "
                                                 "keepalives end a connection unanswered for 30 s); zmq: ZMTP "
                                                 "heartbeats, a peer silent for 1.5 times this is taken for gone "
                                                 "and connected to again."),
    "clean_session": Key(v.boolean, False, doc='false keeps the session and the broker queues QoS 1 messages while the gateway is away.'),
    "session_expiry": Key(v.integer(0, 0xFFFFFFFF), 0xFFFFFFFF, doc='MQTT 5: how long the broker keeps the session after a disconnect, in seconds.'),
    "receive_maximum": Key(v.integer(1, 65535), 65535, doc='MQTT 5: how many unacknowledged QoS 1/2 messages the broker may send at once.'),
    "tls": Key(v.boolean, False, doc="Connect with TLS (verifying the broker's certificate and host name)."),
    "tls_ca": Key(v.text, "", doc="A PEM file of the CA that signed the broker's certificate (default: the system's); with tls = true."),
    "tls_cert": Key(v.text, "", doc='A PEM client certificate, for brokers that require one.'),
    "tls_key": Key(v.text, "", doc="The client certificate's PEM private key."),
    "connect_timeout": Key(v.duration(0.1, 600), 10.0, doc='How long a connection attempt (TCP, TLS and CONNACK) may take.'),
    "reconnect_max_delay": Key(v.duration(0.1, 3600), 30.0, doc='The longest wait between reconnection attempts (the backoff doubles up to it).'),
    "vhost": Key(v.nonempty, "/", doc="amqp: the virtual host."),
    "watch_drops": Key(v.boolean, True, doc="Follow the broker's count of the messages it dropped beyond a "
                                            "session's queue ($SYS/broker/publish/messages/dropped, Mosquitto) "
                                            "and warn when it rises: those messages never reach lorrygate."),
    "max_payload": Key(v.size, 8 << 20, doc='mqtt: a message larger than this is a dead letter by reference (its size and '
                                            'SHA-256), never held in memory; amqp: so is a larger body, and a gzip '
                                            'body that inflates beyond it is a dead letter; zmq: a peer that sends a '
                                            'larger one is disconnected (ZMQ_MAXMSGSIZE) and the message is not '
                                            'received.'),
}

STORAGE_KEYS = {
    "url": Key(v.section_storage_url, doc='sqlite:///PATH, postgresql://USER:PASSWORD@HOST:5432/DB or crate://HOST:4200/.'),
    "batch_size": Key(v.integer(1, 1_000_000), 5000, doc='The most rows one commit takes (group commit makes batches grow with the load).'),
    "linger": Key(v.duration(0, 60), 0.0, doc='How long an idle storage waits for more rows before it commits (0: the next reactor turn).'),
    "max_pending": Key(v.integer(1, 100_000_000), 20_000, doc='Rows waiting for a commit before the sources are paused (backpressure).'),
    "idempotent": Key(v.boolean, False, doc='SQL storages: rows carry a content hash as key: a message delivered twice is stored once.'),
    "merge": Key(v.duration(0, 86400), 0.0,
                 doc="SQL storages: the rows of a table with the same tags whose times fall into the same bucket of "
                     "this length (10s, 1m) are one row, at the bucket's start: the values of a device that "
                     "publishes a topic a value (OpenDTU, ESPHome, emonHub, Victron) become one row, not a row a "
                     "value. A later value of a column replaces the earlier; a column a message lacks keeps its "
                     "value. Merged in the database (a key on time and a hash of the tags), so across batches, "
                     "restarts and replays; a message delivered twice is stored once. 0: a row a record (the default)."),
    "spool": Key(v.boolean, True, doc='Spool batches to disk while the storage is down (and acknowledge them once spooled).'),
    "spool_max": Key(v.size, 1 << 30, doc='The most the disk spool holds (100MB, 1GiB); beyond it the sources are paused.'),
    "ddl": Key(v.ddl_text, "", doc='SQL storages: a CREATE TABLE template for new tables ({table}), inline or @file.'),
    "time_index": Key(v.boolean, False, doc="SQLite: an index on each table's time (on (address, time) for a shared "
                                            "table), made with a new table and at the first write into one that has "
                                            "none: a time range (Grafana, the export) reads only its rows; the writer "
                                            "takes about a third more time a row (more over thousands of tables)."),
    "retention": Key(v.retention, 0.0,
                     doc="SQLite: rows whose time is older than this (90d) are deleted, five minutes after the "
                         "start and every hour, a few thousand rows a transaction between the writes; 0: every row is "
                         "kept (the default). Every table of the database but lorrygate's own (the dead letters: "
                         "lorrygate dead-letters purge)."),
    "synchronous": Key(v.choice("OFF", "NORMAL", "FULL", "EXTRA"), "FULL", doc='SQLite: FULL survives power loss, as ack-after-commit promises; NORMAL is faster and can lose the last commits on power loss.'),
    "shards": Key(v.integer(1, 1000), 1, doc='CrateDB: shards per new table.'),
    "replicas": Key(v.replicas, "0-1", doc='CrateDB: replicas per new table: a number or a range such as 0-1.'),
    "partition": Key(v.choice("none", "day", "week", "month", "quarter", "year"), "year", doc='CrateDB: partition new tables by the time column: none, day, week, month, quarter or year.'),
    "layout": Key(v.choice(*LAYOUTS), "per-address", doc='CrateDB, PostgreSQL and SQLite: per-address makes a table per address; per-network one table per network (schema) and kind, with the address in columns and a view per address (docs/storage.rst).'),
    "tls_ca": Key(v.text, "", doc="CrateDB over https, mqtts:// and kafkas:// sinks: a PEM file of the CA that signed "
                                  "the server's certificate (default: the system's)."),
    "tls_cert": Key(v.text, "", doc="mqtts:// and kafkas:// sinks: a PEM client certificate, for brokers that require "
                                    "one."),
    "tls_key": Key(v.text, "", doc="mqtts:// and kafkas:// sinks: the client certificate's PEM private key."),
    "timeout": Key(v.duration(0.1, 600), 30.0, doc='CrateDB: how long one HTTP request may take.'),
    "flatten_depth": Key(v.integer(1, 32), 3, doc='SQL storages: nested objects become dotted column names down to this depth; deeper ones are one JSON column.'),
    "max_columns": Key(v.integer(8, 32767), 250, doc='SQL storages: the most columns a table gets; fields beyond go into the extra_fields JSON column.'),
    "max_tables": Key(v.integer(0, 100_000_000), 100_000,
                      doc="SQL storages: the most tables the storage holds (all of its database's, ~4 KB of the "
                          "gateway's memory each); a new table beyond is not made and its messages are dead letters "
                          "(a runaway topic level). 0: no limit."),
    "topic": Key(v.nonempty, "{topic}", doc="mqtt: the topic template of what is published ({topic}, {realm}, "
                 "{network}, {gateway}, {node}, {kind}, {rest}, {schema}, {table})."),
    "payload": Key(v.choice("message", "records"), "message",
                   doc="mqtt: message publishes each payload as it came; records each record as JSON."),
    "dead_letter_topic": Key(v.nonempty, "lorrygate/dead-letters", doc="mqtt: where dead letters are published."),
    "max_series": Key(v.integer(1, 10_000_000), 10_000,
                      doc="prometheus: the most series (address and field) the sink exports."),
    "hooks": Key(v.names, (), doc='First-sample hooks ([hook:NAME] sections) run when a table stores its first row or a new field.'),
    "graph": Key(v.callable_ref, "", doc="tributary: module:function that takes the node of the records and "
                                         "returns the streaming graph's last node."),
}
#: keys only some storage kinds take
STORAGE_KIND_KEYS = {
    "synchronous": ("sqlite",),
    "time_index": ("sqlite",),
    "retention": ("sqlite",),
    "shards": ("crate",),
    "replicas": ("crate",),
    "partition": ("crate",),
    "layout": ("crate", "sqlite", "postgresql"),
    "tls_ca": ("crate", "mqtt", "kafka"),
    "tls_cert": ("mqtt", "kafka"),
    "tls_key": ("mqtt", "kafka"),
    "timeout": ("crate",),
    "flatten_depth": ("sqlite", "postgresql"),
    "max_columns": ("sqlite", "postgresql"),
    "max_tables": ("sqlite", "postgresql"),
    "merge": ("sqlite", "postgresql", "crate"),
    # (a sink has no tables: its ddl and idempotent were taken and did nothing)
    "ddl": ("sqlite", "postgresql", "crate"),
    "idempotent": ("sqlite", "postgresql", "crate"),
    "topic": ("mqtt", "kafka"),
    "payload": ("mqtt", "kafka"),
    "dead_letter_topic": ("mqtt", "kafka"),
    "max_series": ("prometheus",),
    "graph": ("tributary",),
}

CHANNEL_KEYS = {
    "source": Key(v.nonempty, "", doc='The [broker:NAME] to read from (may be left out with a single broker).'),
    "topics": Key(v.topic_filters, (), doc="MQTT topic filters to subscribe to, separated by commas (required for a broker; a channel of a [source:NAME] takes every message of it when left out)."),
    "qos": Key(v.integer(0, 2), 1, doc="The subscription's QoS: 1 (at least once) is what ack-after-commit needs."),
    "strategy": Key(v.nonempty, "wan", doc='How topics become addresses and tables: wan, lan, tasmota, homie, ttn, chirpstack, zigbee2mqtt, shelly, sparkplug, homeassistant, esphome, owntracks, rtl_433, victron, openmqttgateway, opendtu, ahoy, ruuvi, meshtastic, emon, a [strategy:NAME] or a module.'),
    "decoders": Key(v.names, (), doc="The decoder chain, tried in order (default: the strategy's chain)."),
    "storage": Key(v.distinct_names, (), doc='The [storage:NAME] to write to; several names write every record to '
                                            'each (a tee).'),
    "timezone": Key(v.timezone, "UTC", doc='The time zone of device times given without one (IANA name).'),
    "retained": Key(v.choice("new", "always", "never"), "",
                    doc='Retained messages: new (only those published while the gateway runs), always or never. '
                        'Default: new; always for the victron strategy, whose installations are known by a '
                        'retained message (N/<portal ID>/system/0/Serial).'),
    "error_topic": Key(v.boolean, None, doc="Publish a report of each bad message to its topic's error.json sibling (default: on for wan and lan); mqtt, amqp and redis channels."),
    "decode_timeout": Key(v.duration(0.01, 3600), 30.0, doc='How long an asynchronous decoder may take before the message is a dead letter.'),
    "values": Key(v.choice("kotori", "as-sent"), None, doc='kotori turns numeric strings into numbers and drops nulls and NaN (default for wan and lan); as-sent stores values as they came.'),
    "max_records": Key(v.integer(1, 100_000_000), 100_000, doc='The most records one message may decode to; more is a dead letter.'),
    "ignore": Key(v.topic_filters, (), doc='Topic filters whose messages are acknowledged and not stored (commands, say).'),
    "metadata": Key(v.boolean, False, doc='Add the topic, QoS and receive time as tags.'),
    "headers": Key(v.header_tags, (), doc='Headers the publisher sent (MQTT 5 user properties, AMQP headers, Kafka '
                   "record headers, a Redis stream entry's other fields, an HTTP request's headers) to store as "
                   'tags: names, each with :tag for another tag name.'),
    "rename": Key(v.renames, (), doc="Rename fields: old:new pairs, applied together (``a:b, b:a`` swaps); a "
                                     "renamed field replaces a field of its new name."),
    "drop": Key(v.names, (), doc='Fields to leave out.'),
    "tags": Key(v.pairs("=", "name=value pairs"), (), doc='Tags to add to every record: name=value pairs.'),
    "convert": Key(v.conversions, (), doc='Convert fields with arithmetic: name = expression pairs (docs/decoding.rst).'),
    "hook": Key(v.callable_ref, "", doc='A module:function called with each record before it is stored.'),
    "ddl": Key(v.ddl_text, "", doc="A CREATE TABLE template for this channel's new tables ({table}), inline or @file."),
    "merge": Key(v.duration(0, 86400), None,
                 doc="The storage's merge for this channel's rows (SQL storages): the rows of a table with the same "
                     "tags in one time bucket of this length (10s) are one row, for a channel of devices that "
                     "publish a topic a value, while the storage's other channels keep a row a record; 0: a row a "
                     "record (default: the storage's merge)."),
    "transform": Key(v.text, "", doc="A [transform:NAME] dataflow the records go through before they are stored "
                                     "(after the keys above)."),
    "exchange": Key(v.nonempty, "amq.topic", doc="amqp: the topic exchange the channel's queue is bound to."),
    "queue": Key(v.text, "", doc="amqp: the channel's durable queue (default lorrygate.<channel>)."),
    "prefetch": Key(v.integer(1, 65535), 2000, doc="amqp: unacknowledged messages RabbitMQ sends at once."),
    "mode": Key(v.choice("streams", "pubsub", "sub", "pull"), "",
                doc="redis: streams (consumer groups, at least once; the default) or pubsub (at most once); zmq: sub "
                    "(the default) or pull (both at most once)."),
    "group": Key(v.text, "", doc="mqtt: a gateway group: the channel subscribes through shared subscriptions "
                                 "($share/NAME/<filter>), and the gateways of one group split the stream (docs/"
                                 "scaling.rst); redis streams, kafka: the consumer group (default lorrygate)."),
    "start": Key(v.choice("earliest", "latest"), "earliest",
                 doc="kafka: where a group without a committed offset starts (earliest: nothing lost)."),
    "consumer": Key(v.text, "", doc="redis streams: this gateway's consumer name (default <host>-<channel>)."),
    "topic_field": Key(v.nonempty, "topic", doc="redis streams: the entry field that holds the topic (else the "
                                                "stream's key)."),
    "payload_field": Key(v.nonempty, "payload", doc="redis streams: the entry field that holds the payload (else "
                                                    "the entry's fields as a JSON object)."),
    "claim_idle": Key(v.duration(1, 86400), 60.0, doc="redis streams: entries other consumers left pending longer "
                                                      "than this are claimed (at start and every claim_idle); "
                                                      "the entries this one holds are kept its own."),
}
#: the broker types whose sources publish a channel's error reports (the others' ``publish`` is None)
REPORTING_BROKERS = ("mqtt", "amqp", "redis")
#: channel keys only a source of one broker type takes
CHANNEL_TYPE_KEYS = {"qos": "mqtt", "retained": "mqtt", "exchange": "amqp", "queue": "amqp", "prefetch": "amqp",
                     "mode": "redis, zmq", "group": "mqtt, redis, kafka", "start": "kafka", "consumer": "redis", "topic_field": "redis",
                     "payload_field": "redis", "claim_idle": "redis",
                     "headers": "mqtt, amqp, kafka, redis"}
#: channel keys that make up its transformer step
TRANSFORM_KEYS = ("metadata", "rename", "drop", "tags", "convert", "hook", "ddl", "transform", "headers")

DECODER_KEYS = {
    "type": Key(v.nonempty, doc='javascript, or a built-in decoder to configure (csv).'),
    "columns": Key(v.names, (), doc='csv: the column names of header-less CSV.'),
    "delimiter": Key(v.choice(",", ";", "|", "tab"), ",", doc='csv: the delimiter: , ; | or tab.'),
    "file": Key(v.nonempty, "", doc='javascript: the codec file (decodeUplink(input) or decode(payload, topic)).'),
    "timeout": Key(v.duration(0.001, 60), 0.5, doc='javascript: how long one decode may run.'),
    "memory": Key(v.integer(4, 4096), 64, doc="javascript: the codec's heap limit in MiB."),
    "fport": Key(v.integer(0, 255), 1, doc='javascript: the LoRaWAN FPort handed to the codec when the message has none.'),
    "keepalive": Key(v.duration(0, 50), 30.0,
                     doc="victron: how often each Venus OS installation heard from is sent a keep-alive (R/<portal "
                         "ID>/keepalive) on the channel's connection, without which it publishes nothing; 0: never "
                         "(another client keeps it alive)."),
    "keys": Key(v.text, None, secret=True,
                doc="meshtastic: the keys of channels that do not use the default key, as the app shows them "
                    "(base64): <channel>:<key>, separated by commas; from ${ENV:...} or ${FILE:...}."),
    "receptions": Key(v.choice("first", "each"), "first",
                      doc="meshtastic: first stores a packet once, from the gateway that delivers it first, and "
                          "ignores the other gateways' copies (within an hour); each stores a row a gateway that "
                          "heard it, with its rssi and snr."),
    "rebirth": Key(v.boolean, False, doc="sparkplug: ask an edge node whose aliases no birth declared (it was born "
                                         "before the gateway subscribed) for a rebirth, with an NCMD on the channel's "
                                         "connection, as a Sparkplug host application does."),
}
#: which decoder keys each ``type`` takes
DECODER_TYPE_KEYS = {"csv": ("columns", "delimiter"), "javascript": ("file", "timeout", "memory", "fport"),
                     "sparkplug": ("rebirth",), "victron": ("keepalive",), "meshtastic": ("keys", "receptions")}

#: the values of a strategy's ``output`` by its type
OUTPUTS = {"zigbee2mqtt": ("json", "attribute", "attribute_and_json"), "rtl_433": ("events", "devices"),
           "meshtastic": ("protobuf", "json")}

STRATEGY_KEYS = {
    "type": Key(v.nonempty, "template", doc='template, or a built-in strategy to configure (wan, zigbee2mqtt, homeassistant, owntracks, tasmota, rtl_433, openmqttgateway, opendtu, ahoy, ruuvi, meshtastic, emon).'),
    "topic": Key(v.text, "", doc='template: the topic pattern, such as {realm}/{network}/{gateway}/{node}/data.json.'),
    "schema": Key(v.text, "", doc="template: the schema (database) of the table, from the pattern's names."),
    "table": Key(v.text, "", doc="template: the table name, from the pattern's names."),
    "kind": Key(v.choice(*KINDS), DATA, doc='template: what the messages are: data, event or error.'),
    "networks": Key(v.names, (), doc='wan: the networks to accept (default: any).'),
    "base": Key(v.nonempty, "", doc='zigbee2mqtt, homeassistant, owntracks, rtl_433, openmqttgateway, opendtu, ahoy, ruuvi, meshtastic, emon: the base topic '
                                    '(default zigbee2mqtt; homeassistant: the base_topic of mqtt_statestream, default '
                                    'homeassistant; owntracks: the app\'s topic prefix, default owntracks; rtl_433: '
                                    'the topics\' levels before the hostname, default rtl_433; openmqttgateway: the '
                                    'gateways\' mqtt_topic, default home; opendtu: the DTU\'s base topic, default solar; ahoy: '
                                    'the DTU\'s topic, default inverter; for both a + level matches any; ruuvi: the '
                                    'levels before the gateway\'s, default ruuvi; meshtastic: the root topic\'s levels before the region\'s, '
                                    'default msh, a + level matching any; emon: emonHub\'s base topic, default emon, a + '
                                    'level matching any).'),
    "full_topic": Key(v.tasmota_full_topic, "%prefix%/%topic%/",
                      doc="tasmota: the devices' FullTopic, its levels %prefix% (tele, stat, cmnd), %topic% (or "
                          "%hostname%, %id%: the device) and literal text, such as %topic%/%prefix%/ or "
                          "tasmota/%topic%/%prefix%/."),
    "output": Key(v.choice(*OUTPUTS["zigbee2mqtt"], *OUTPUTS["rtl_433"], "protobuf"), "",
                  doc="zigbee2mqtt: its advanced.output: json (a device's state as one JSON object; the default), "
                      "attribute (a topic a value, <friendly name>/<attribute>) or attribute_and_json (both: the "
                      "JSON is stored, the copies ignored); rtl_433: which of its outputs of the same readings is "
                      "stored, events (the default) or devices (a topic a value); meshtastic: which of a gateway "
                      "node's copies of a packet is stored, protobuf (<root>/2/e/..., which every node publishes; "
                      "the default) or json (<root>/2/json/..., its JSON output)."),
}
#: which strategy keys each ``type`` takes; other keys are errors
STRATEGY_TYPE_KEYS = {
    "template": ("topic", "schema", "table", "kind"),
    "wan": ("networks",),
    "zigbee2mqtt": ("base", "output"),
    "homeassistant": ("base",),
    "owntracks": ("base",),
    "tasmota": ("full_topic",),
    "rtl_433": ("base", "output"),
    "openmqttgateway": ("base",),
    "opendtu": ("base",),
    "ahoy": ("base",),
    "ruuvi": ("base",),
    "meshtastic": ("base", "output"),
    "emon": ("base",),
}

HOOK_KEYS = {
    "type": Key(v.choice("python", "command", "grafana"), doc='python, command or grafana (docs/hooks.rst).'),
    "callable": Key(v.callable_ref, "", doc='python: module:function called with the sample.'),
    "command": Key(v.command, "", doc='command: the command line; {table}, {schema}, {storage}, {realm}, {network}, {gateway}, {node} are replaced; the sample comes on stdin as JSON.'),
    "url": Key(v.http_url, "", doc="grafana: Grafana's URL, with user:password@ unless a token is given."),
    "token": Key(v.text, None, secret=True, doc='grafana: a service account token, from ${ENV:...} or ${FILE:...}.'),
    "folder": Key(v.nonempty, "lorrygate", doc='grafana: the folder of the dashboards.'),
    "datasource_url": Key(v.text, "", doc='grafana: where Grafana reaches the database (host:port, or the SQLite path as Grafana sees it), if not as the storage URL says.'),
    "timeout": Key(v.duration(0.1, 3600), 30.0, doc='How long one run may take before it counts as failed.'),
    "retry_max": Key(v.duration(1, 86400), 300.0, doc='The longest wait between tries of a failing run.'),
}
#: which hook keys each ``type`` takes, and which of them it needs
HOOK_TYPE_KEYS = {
    "python": (("callable",), ()),
    "command": (("command",), ()),
    "grafana": (("url",), ("token", "folder", "datasource_url")),
}

SOURCE_KEYS = {
    "type": Key(v.choice("poll", "iio", "socket", "http", "pgcdc", "files", "tributary"),
                doc="poll: an HTTP(S) url or a command on an interval; iio: Linux IIO sensors through sysfs; socket: "
                    "a Unix socket local programs write to; http: devices POST their payloads to /api/<topic> "
                    "(Kotori's HTTP API); pgcdc: PostgreSQL change data capture (wal2json); "
                    "files: the lines of files, followed across rotation; tributary: the values of a Tributary "
                    "streaming graph."),
    "listen": Key(v.listen, ("127.0.0.1", 24642),
                  doc="http: where it listens: PORT (on 127.0.0.1), HOST:PORT or [IPv6]:PORT (0.0.0.0:24642 for "
                      "every interface)."),
    "token": Key(v.text, None, secret=True,
                 doc="http: clients must send Authorization: Bearer <token> (from ${ENV:...} or ${FILE:...})."),
    "tls_cert": Key(v.text, "", doc="http: the server's PEM certificate (with its chain): HTTPS, with tls_key."),
    "tls_key": Key(v.text, "", doc="http: the PEM private key of tls_cert."),
    "max_connections": Key(v.integer(1, 1_000_000), 1000,
                           doc="http: connections open at once, at most; one more is closed at once (its client "
                               "tries again), so that clients holding connections open cannot take the file "
                               "descriptors the storages and brokers need."),
    "export": Key(v.boolean, False,
                  doc="http: Kotori's data export: GET /api/<topic> with the suffix .csv, .txt, .tsv, .json or "
                      ".ndjson answers that topic's rows from the channel's storage (SQLite, PostgreSQL, CrateDB), "
                      "from= and to= Kotori's times (default the last 10 days), include= and exclude= columns, "
                      "sort=, direction=, limit=, scalar= and pad= as Kotori's."),
    "export_token": Key(v.text, None, secret=True,
                        doc="http: the token an export needs (Authorization: Bearer <token>; default: token): "
                            "the devices that post need not be able to read the fleet's data."),
    "export_stall": Key(v.duration(1, 86400), 300.0,
                        doc="http: an export whose client takes none of the answer for this long is cut (the "
                            "export holds a read of the storage: SQLite's WAL cannot be checkpointed past it, "
                            "PostgreSQL cannot vacuum past it); the client may send it again."),
    "graph": Key(v.callable_ref, "", doc="tributary: module:function that returns the streaming graph's last node "
                                         "(a module of the strategies directory or an installed one)."),
    "database": Key(v.text, None, secret=True, doc="pgcdc: the source database, postgresql://USER:PASSWORD@HOST/DB "
                                                   "(from ${ENV:...} or ${FILE:...} when it has a password)."),
    "slot": Key(v.nonempty, "lorrygate", doc="pgcdc: the logical replication slot (wal2json)."),
    "tables": Key(v.names, (), doc="pgcdc: the tables to capture, schema.table, comma-separated (default: all)."),
    "create_slot": Key(v.boolean, True, doc="pgcdc: create the slot when it is missing (it is never dropped)."),
    "path": Key(v.text, "", doc="socket: the socket file (at most 107 bytes); files: a file or a glob (** for subdirectories)."),
    "exclude": Key(v.text, "", doc="files: a glob of file names to leave out (such as *.gz)."),
    "start": Key(v.choice("beginning", "end"), "beginning",
                 doc="files: where files that exist at the first start are read from (later ones: their start)."),
    "header": Key(v.boolean, False, doc="files: each file's first line is a header (CSV) put before every line; a line that begins with its first column's name and a delimiter is a new header for the lines after it."),
    "charset": Key(v.line_charset, "utf-8",
                   doc="files: the character set the files are written in (latin-1, cp1252, iso-8859-15: a logger "
                       "on Windows, an older device); their lines are read in it. Not utf-16 or utf-32."),
    "window": Key(v.integer(1, 1_000_000), 10_000, doc="files: lines read but not yet committed, at most; "
                                                       "tributary: values taken from the graph but not yet committed."),
    "max_line": Key(v.size, 8 << 20, doc="files: the longest line; a longer one is a dead letter (kept by "
                                                 "its size and SHA-256); http: the largest body (413 beyond); "
                                                 "poll: the largest answer or output (a dead letter by reference "
                                                 "beyond)."),
    "framing": Key(v.choice("lines", "length", "datagram"), "lines",
                   doc="socket: lines (one message a line), length (a 4-byte big-endian length before each) or "
                       "datagram (a datagram socket)."),
    "mode": Key(v.octal_mode, "660", doc="socket: the socket file's permissions (octal)."),
    "group": Key(v.text, "", doc="socket: the group the socket file belongs to."),
    "url": Key(v.http_url, "", doc="poll: the URL to GET (ETag and Last-Modified are sent back)."),
    "command": Key(v.command_line, "", doc="poll: a command whose standard output is the payload."),
    "root": Key(v.nonempty, "/sys/bus/iio/devices", doc="iio: the sysfs directory of the IIO devices."),
    "interval": Key(v.duration(0.01, 86400), 10.0, doc="Time between two polls (files: between two looks at the "
                                                        "glob for new and rotated files, default 1 s)."),
    "jitter": Key(v.duration(0, 3600), 0.0, doc="Up to this much is added to each interval, at random."),
    "timeout": Key(v.duration(0.1, 3600), 30.0, doc="poll: how long a poll may take, the whole answer read (then "
                                                    "the connection is closed, the command stopped); http: how long "
                                                    "a request waits for its message to be stored (503 after)."),
    "topic": Key(v.text, "", doc="The topic the payloads get (iio: the prefix; the device name follows; files: "
                                 "{stem}, {name}, {dir}, {path} are filled in, default <source>/{stem}); "
                                 "default: the source's name."),
}
#: which source keys each ``type`` takes
SOURCE_TYPE_KEYS = {"poll": ("url", "command", "interval", "jitter", "timeout", "topic", "max_line"),
                    "iio": ("root", "interval", "jitter", "topic"),
                    "socket": ("path", "framing", "mode", "group", "topic"),
                    "http": ("listen", "token", "tls_cert", "tls_key", "timeout", "max_line", "max_connections",
                             "export", "export_token", "export_stall"),
                    "pgcdc": ("database", "slot", "tables", "create_slot", "interval", "topic"),
                    "files": ("path", "exclude", "start", "header", "charset", "interval", "jitter", "topic", "window",
                              "max_line"),
                    "tributary": ("graph", "topic", "window")}

DATAFLOW_KEYS = {
    "type": Key(v.choice("hamilton"), doc="hamilton: a Hamilton dataflow (apache-hamilton) over each batch of an "
                                          "address's records (docs/transform.rst)."),
    "modules": Key(v.names, doc="The dataflow's Python files (relative to the config's directory) or importable "
                                "module names, comma-separated."),
    "inputs": Key(v.names, doc="The record fields the dataflow reads: each a pandas Series over the rows."),
    "outputs": Key(v.names, doc="The dataflow's functions whose values are stored."),
    "constants": Key(v.pairs("=", "name=value pairs"), (), doc="Scalar inputs of the dataflow: name=value pairs."),
    "history": Key(v.integer(0, 1_000_000), 0, doc="Rows of each address handed to the dataflow before the new "
                                                   "ones (rolling computations across messages); only new rows are "
                                                   "stored."),
    "into": Key(v.choice("fields", "table"), "fields", doc="fields: the outputs become fields of the stored rows; "
                                                           "table: rows of a derived table <table>_<transform>."),
    "timeout": Key(v.duration(0.01, 3600), 10.0, doc="How long one run may take before its messages are dead "
                                                     "letters."),
    "max_pending": Key(v.integer(1, 10_000_000), 10_000, doc="Messages waiting for the dataflow at which the "
                                                             "channel's source pauses."),
}

SECTION_KINDS = {
    "broker": BROKER_KEYS,
    "storage": STORAGE_KEYS,
    "strategy": STRATEGY_KEYS,
    "decoder": DECODER_KEYS,
    "channel": CHANNEL_KEYS,
    "hook": HOOK_KEYS,
    "source": SOURCE_KEYS,
    "transform": DATAFLOW_KEYS,
}


#: the broker types that authenticate and encrypt (lorrygate's ZeroMQ does neither: no CURVE, no ZAP)
_SECURED = ("mqtt", "amqp", "redis", "kafka")

#: broker keys only some types take (a key a type does not read is refused, never silently ignored: a zmq
#: broker's tls = true and password connected in plain text, without either)
BROKER_TYPE_KEYS = {
    "protocol": ("mqtt",), "client_id": ("mqtt",), "clean_session": ("mqtt",), "session_expiry": ("mqtt",),
    "receive_maximum": ("mqtt",), "max_payload": ("mqtt", "amqp", "zmq"), "vhost": ("amqp",),
    "watch_drops": ("mqtt",), "keepalive": ("mqtt", "amqp", "redis", "zmq"),
    "username": _SECURED, "password": _SECURED, "tls": _SECURED, "tls_ca": _SECURED, "tls_cert": _SECURED,
    "tls_key": _SECURED,
}

#: why a zmq broker takes none of the keys of authentication and encryption
ZMQ_UNSECURED = ("lorrygate's ZeroMQ source neither authenticates nor encrypts (no CURVE): keep its peers on a "
                 "network of their own, or reach them through a tunnel (WireGuard, SSH, stunnel)")


def _host_problem(host: str) -> str:
    """What a broker's host is expected to be, when it is a URL or carries a port (``localhost:1883`` was
    taken for a host name, which no resolver finds); "" when it looks like a host name or an address."""
    if "://" in host:
        return "a host name or address, not a URL (the port, tls and the credentials are keys of their own)"
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and (name.count(":") == 0 or name.endswith("]")):
        return f"a host name or address without a port (host = {name.strip('[]')}, port = {port})"
    return ""


def make_broker(name: str, values: dict, section: str = "", problem=None) -> BrokerSettings | None:
    kind = values["type"]
    if kind == "amqp" and not installed("pika") and problem is not None:
        problem(section, "type", needs("pika", "an amqp broker"), "amqp")
        return None
    if kind == "redis" and not installed("redis") and problem is not None:
        problem(section, "type", needs("redis", "a redis broker"), "redis")
        return None
    if kind == "kafka" and not installed("confluent_kafka") and problem is not None:
        problem(section, "type", needs("confluent_kafka", "a kafka broker"), "kafka")
        return None
    if kind == "zmq" and problem is not None:
        if not installed("zmq"):
            problem(section, "type", needs("zmq", "a zmq source"), "zmq")
            return None
        if values["port"] is None:
            problem(section, "port", "the port of the ZeroMQ peer (or to bind, with host = *)", "nothing")
            return None
    if kind in ("mqtt", "amqp", "redis") and problem is not None:
        wrong = _host_problem(values["host"])
        if wrong:
            problem(section, "host", wrong, repr(v.mask_url(values["host"])))  # (a URL may carry a password)
            return None
    for key, only in BROKER_TYPE_KEYS.items():
        if kind not in only and values[key] != BROKER_KEYS[key].default and problem is not None:
            why = f"; {ZMQ_UNSECURED}" if kind == "zmq" and only is _SECURED else ""
            problem(section, key, f"no {key} for a broker of type {kind} (it is for {', '.join(only[:-1]) + ' and ' if only[1:] else ''}{only[-1]}{why})",
                    "a secret" if BROKER_KEYS[key].secret else repr(values[key]))
            return None
    given = [key for key in ("tls_ca", "tls_cert", "tls_key") if values.get(key)]
    if given and not values["tls"] and problem is not None:
        # (the certificate was unread, and the connection went in plain text: the password too)
        problem(section, "tls", f"tls = true ({given[0]} is for TLS connections; without it the connection, "
                "and its password, go in plain text)", "tls = false")
        return None
    if values["port"] is None:
        values["port"] = {("mqtt", False): 1883, ("mqtt", True): 8883, ("amqp", False): 5672,
                          ("amqp", True): 5671, ("redis", False): 6379, ("redis", True): 6379,
                          ("kafka", False): 9092, ("kafka", True): 9093}[kind, values["tls"]]
    return BrokerSettings(name=name, **values)


def ddl_template(text: str, kind: str):
    """Parse a DDL template for a storage kind; ValueError says what is wrong."""
    from lorrygate.storage.ddl import DdlTemplate, crate_validator

    if kind == "sqlite":
        from lorrygate.storage.sqlite import table_name

        return DdlTemplate.parse(text, lambda table: quote(table_name(table)))
    if kind == "postgresql":
        from lorrygate.storage.postgresql import qualified, schema_name, table_part

        return DdlTemplate.parse(text, qualified, schema_of=schema_name, table_of=table_part)
    from lorrygate.storage.shared_layout import qualified as crate_qualified

    # (the writer gives it the table as CrateDB takes it, `lorrygate.storage.shared_layout.crate_table`)
    return DdlTemplate.parse(text, crate_qualified, crate_validator() if kind == "crate" else None,
                             schema_of=lambda table: table.schema or "doc")


def installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent of a dotted name (``google`` of ``google.protobuf``)
        return False


#: optional packages: module -> (package, the extra that installs it)
EXTRAS = {"psycopg": ("psycopg", "postgresql"), "py_mini_racer": ("mini-racer", "javascript"),
          "cratedb_sqlparse": ("cratedb-sqlparse", "cratedb"), "watchdog": ("watchdog", "reload"),
          "prometheus_client": ("prometheus-client", "metrics"), "pika": ("pika", "amqp"),
          "redis": ("redis", "redis"), "zmq": ("pyzmq", "zmq"), "confluent_kafka": ("confluent-kafka", "kafka"),
          "autobahn": ("autobahn", "websocket"), "zstandard": ("zstandard", "files"),
          "hamilton": ("apache-hamilton", "hamilton"), "tributary": ("tributary", "tributary"),
          "line_protocol_parser": ("line-protocol-parser", "influx"), "google.protobuf": ("protobuf", "sparkplug"),
          "meshtastic": ("meshtastic", "meshtastic")}


def needs(module: str, what: str) -> str:
    """What to say when ``what`` needs an optional package that is not installed."""
    package, extra = EXTRAS[module]
    return f"{what} needs the {package} package: pip install 'lorrygate[{extra}]'"


def make_storage(name: str, values: dict, section: str, problem):
    url = values.pop("url")
    if url.kind == "postgresql" and not installed("psycopg"):
        problem(section, "url", needs("psycopg", "a postgresql storage"), "a postgresql:// URL")
        return None
    for key, kinds in STORAGE_KIND_KEYS.items():
        if values[key] != STORAGE_KEYS[key].default and url.kind not in kinds:
            problem(section, key, f"no {key} for a {url.kind} storage (it is for {', '.join(kinds)})",
                    repr(values[key]))
            return None
    if url.kind in ("mqtt", "kafka"):
        given = [key for key in ("tls_ca", "tls_cert", "tls_key") if values[key]]
        if given and not url.raw.lower().startswith(f"{url.kind}s://"):
            problem(section, given[0], f"{url.kind}s:// in the URL ({given[0]} is for TLS connections)", repr(str(url)))
            return None
        if values["tls_key"] and not values["tls_cert"]:
            problem(section, "tls_cert", "the client certificate tls_key belongs to", "nothing")
            return None
    if values["merge"] and values["layout"] != "per-address":
        problem(section, "merge", "per-address tables (layout = per-address): rows are merged in a table of their "
                "address", f"layout = {values['layout']}")
        return None
    text = values.pop("ddl")
    ddl = None
    if text:
        try:
            ddl = ddl_template(text, url.kind)
        except ValueError as exc:
            problem(section, "ddl", "a DDL template", f"one that fails: {exc}")
            return None
    if url.kind in ("mqtt", "kafka"):
        invalid = topic_template_problem(values["topic"], url.kind)
        if invalid is not None:
            problem(section, "topic", *invalid)
            return None
    if url.kind == "mqtt":
        from lorrygate.storage.mqtt_sink import topic_problem

        values["broker"] = sink_broker(name, url.raw, values["tls_ca"], values["tls_cert"], values["tls_key"])
        why = topic_problem(values["dead_letter_topic"])
        if why is not None:
            problem(section, "dead_letter_topic", "an MQTT topic name to publish to", f"one where {why}")
            return None
    if url.kind == "prometheus":
        if not installed("prometheus_client"):
            problem(section, "url", needs("prometheus_client", "a prometheus storage"), repr(str(url)))
            return None
        values["spool"] = False  # the latest values: nothing to keep for later
    if url.kind == "websocket":
        if not installed("autobahn"):
            problem(section, "url", needs("autobahn", "a websocket storage"), "a ws:// URL")
            return None
        values["spool"] = False  # a live view: nothing to keep for later
    if url.kind == "tributary":
        if not installed("tributary"):
            problem(section, "url", needs("tributary", "a tributary storage"), "tributary://")
            return None
        if not values["graph"]:
            problem(section, "graph", "module:function that builds the graph on the records' node", "nothing")
            return None
    if url.kind == "kafka":
        if not installed("confluent_kafka"):
            problem(section, "url", needs("confluent_kafka", "a kafka storage"), "a kafka:// URL")
            return None
        values["broker"] = kafka_broker(name, url.raw, values["tls_ca"], values["tls_cert"], values["tls_key"])
        if values["topic"] == STORAGE_KEYS["topic"].default:
            values["topic"] = "lorrygate"  # Kafka topics take no "/": the MQTT topic goes in the key
        if values["dead_letter_topic"] == STORAGE_KEYS["dead_letter_topic"].default:
            values["dead_letter_topic"] = "lorrygate-dead-letters"
    return StorageSettings(name=name, url=url, kind=url.kind, path=url.path, ddl=ddl, **values)


#: what a publishing sink's topic template may name (lorrygate.storage.mqtt_sink.topic_for)
TOPIC_PLACEHOLDERS = ("topic", "realm", "network", "gateway", "node", "kind", "rest", "schema", "table")


def topic_template_problem(template: str, kind: str) -> tuple[str, str] | None:
    """(expected, got) if a publishing sink's topic template could give no topic: a placeholder of no value
    (which gave an empty level in silence), ``{node.x}`` or a lone ``{`` (which failed every batch, and so
    stopped the sink), or text no MQTT topic name may hold; None if it is fine."""
    from lorrygate.storage.mqtt_sink import topic_problem

    try:
        literal = "".join(text for text, *_ in string.Formatter().parse(template))
        template.format_map({name: "x" for name in TOPIC_PLACEHOLDERS})
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        return ("a topic template of the placeholders " + ", ".join(f"{{{name}}}" for name in TOPIC_PLACEHOLDERS),
                f"{template!r}: {type(exc).__name__}: {exc}")
    why = topic_problem(literal) if literal and kind == "mqtt" else None
    if why is not None:
        return ("a topic template whose own text may be in a topic name (the placeholders fill in the rest)",
                f"{template!r}: {why}")
    return None


def kafka_broker(name: str, url: str, tls_ca: str = "", tls_cert: str = "", tls_key: str = "") -> BrokerSettings:
    """The connection of a Kafka sink: ``kafka[s]://[USER:PASSWORD@]HOST[:PORT][,HOST:PORT...]/``; with
    ``kafkas``, the CA (default: the system's) and the client certificate and key, if any."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    tls = parts.scheme == "kafkas"
    hosts = parts.netloc.rpartition("@")[2]
    return BrokerSettings(name=f"storage {name}", host=hosts, port=9093 if tls else 9092, type="kafka",
                          username=unquote(parts.username or ""),
                          password=v.Secret(unquote(parts.password)) if parts.password else None, tls=tls,
                          tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)


def sink_broker(name: str, url: str, tls_ca: str = "", tls_cert: str = "", tls_key: str = "") -> BrokerSettings:
    """The connection of an MQTT sink: ``mqtt[s]://[USER:PASSWORD@]HOST[:PORT]/[?protocol=5&client-id=ID]``;
    with ``mqtts``, the CA (default: the system's) and the client certificate and key, if any."""
    import socket
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    tls = parts.scheme == "mqtts"
    return BrokerSettings(
        name=f"storage {name}", host=parts.hostname or "localhost", port=parts.port or (8883 if tls else 1883),
        protocol=query.get("protocol", "3.1.1"), client_id=query.get("client-id") or f"lorrygate-{socket.gethostname()}-{name}",
        username=unquote(parts.username or ""), password=v.Secret(unquote(parts.password)) if parts.password else None,
        tls=tls, clean_session=True, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)


#: a channel's decoders when it names none, by its strategy
STRATEGY_DECODERS = {
    "tasmota": ("tasmota", "json", "value"),
    "homie": ("homie",),
    "ttn": ("ttn", "json"),
    "chirpstack": ("chirpstack", "json"),
    "zigbee2mqtt": ("json", "value"),
    "shelly": ("shelly", "json", "value"),
    "homeassistant": ("homeassistant",),
    # ESPHome: a light's JSON state under its name; values as text
    "esphome": ("esphome", "json", "value"),
    "owntracks": ("owntracks", "json"),
    # rtl_433: its events; the values of devices/... topics (output = devices), one a topic
    "rtl_433": ("rtl_433", "json", "value"),
    # OpenMQTTGateway, Theengs Gateway: its modules' JSON, RTL_433toMQTT's rtl_433 events; LWT as text
    "openmqttgateway": ("openmqttgateway", "rtl_433", "json", "value"),
    # OpenDTU: a value a topic, as text
    "opendtu": ("json", "value"),
    # AhoyDTU: a value a topic, as text; a channel's values as JSON (its "JSON" option); an inverter's firmware,
    # hardware and radio statistics as JSON objects
    "ahoy": ("ahoy", "json", "value"),
    # Ruuvi Gateway: its relayed advertisements, RuuviTags' decoded; gw_status as JSON
    "ruuvi": ("ruuvi", "json"),
    # Meshtastic: its gateway nodes' packets, as protobuf or their JSON output; the status (firmware before 2.3)
    # as text
    "meshtastic": ("meshtastic", "value"),
    # emonHub: an input a topic, as text; a node's JSON at its time
    "emon": ("json", "value"),
    # Venus OS: {"value": ...}; N/<portal ID>/keepalive's 1 is JSON
    "victron": ("victron", "json", "value"),
    # a host application's STATE is JSON (3.0) or text (2.2)
    "sparkplug": ("sparkplug", "json", "value"),
    # Kotori decodes a TTS uplink sent to .../data.json with its TTS decoder
    "wan": ("ttn", "json", "value"),
    # topic trees as Telegraf's mqtt_consumer reads them: its own formats too (influx where line-protocol-parser
    # is installed, `strategy_decoders`), and those of the industrial connectivity servers and IoT platforms
    "topic": ("telegraf", "kepware", "neuron", "thingsboard", "json", "influx", "value"),
}
DEFAULT_DECODERS = ("json", "value")


def strategy_decoders(strategy: str) -> tuple:
    """A strategy's chain, without the decoders whose optional package is not installed."""
    chain = STRATEGY_DECODERS.get(strategy, DEFAULT_DECODERS)
    if "influx" in chain and not installed("line_protocol_parser"):
        chain = tuple(name for name in chain if name != "influx")
    return chain


def strategy_retained(strategy: str) -> str:
    """A strategy's retained messages: Venus OS installations are heard from at every subscription by their retained
    ``N/<portal ID>/system/0/Serial`` (they publish nothing else until kept alive: `VictronDecoder`)."""
    return "always" if strategy == "victron" else "new"


def strategy_values(strategy: str) -> str:
    """A strategy's values policy: Kotori's for Kotori's conventions, the values as sent for the others."""
    return "kotori" if strategy in ("wan", "lan") else "as-sent"


def make_channel(name: str, values: dict) -> Channel:
    """A channel; its transform keys stay in ``values`` for `make_transform`.

    ``storage = a, b`` writes every record to both (the first also takes the
    dead letters).
    """
    options = {key: values[key] for key in values if key not in TRANSFORM_KEYS}
    options["decoders"] = options["decoders"] or strategy_decoders(options["strategy"])
    options["values"] = options["values"] or strategy_values(options["strategy"])
    options["retained"] = options["retained"] or strategy_retained(options["strategy"])
    storages = options.pop("storage") or ("",)
    return Channel(name=name, storage=storages[0], tee=tuple(storages[1:]), **options)


def make_transform(values: dict, source: str, hook):
    from lorrygate.decoding.transform import Transform

    transform = Transform(
        rename=values["rename"],
        drop=frozenset(values["drop"]),
        convert=values["convert"],
        tags=values["tags"],
        hook=hook,
        metadata=values["metadata"],
        source=source,
        headers=values["headers"],
    )
    return transform if transform.active else None


def make_dataflow(name: str, values: dict, section: str, problem, base_dir: str):
    """A ``[transform:NAME]`` section's `DataflowSettings`, its DAG validated; None after reporting problems."""
    from lorrygate.decoding.dataflow import DataflowSettings, build_driver, load_modules
    from lorrygate.decoding.records import scalar

    if not installed("hamilton"):
        problem(section, "type", needs("hamilton", "a hamilton transform"), "hamilton")
        return None
    references = tuple(os.path.join(base_dir, m) if m.endswith(".py") and not os.path.isabs(m) else m
                       for m in values["modules"])
    settings = DataflowSettings(name, values["type"], references, values["inputs"], values["outputs"],
                                tuple((key, scalar(text)) for key, text in values["constants"]), values["history"],
                                values["into"], values["timeout"], values["max_pending"])
    try:
        modules = load_modules(settings)
    except ValueError as exc:
        problem(section, "modules", "Python files or module names that import cleanly", str(exc))
        return None
    try:
        build_driver(settings, modules)
    except ValueError as exc:
        key = "modules" if str(exc).startswith("Hamilton cannot build") else "outputs"
        problem(section, key, "a dataflow that computes the outputs from the inputs", str(exc))
        return None
    return settings


def meshtastic_keys(given, section: str, problem) -> dict | None:
    """A meshtastic decoder's ``keys`` (``<channel>:<base64 key>, ...``) by the channel's name in lower case; None
    after a problem, which never shows a key."""
    from lorrygate.decoding.meshtastic_protobuf import parse_key

    keys: dict = {}
    text = given.reveal() if isinstance(given, v.Secret) else given
    for item in (text or "").split(","):
        if not item.strip():
            continue
        channel, colon, key = item.partition(":")
        channel = channel.strip()
        try:
            if not colon or not channel:
                raise ValueError("each key is <channel>:<key>, as LongFast:AQ==")
            keys[channel.lower()] = parse_key(key)
        except ValueError as exc:
            problem(section, "keys", str(exc), f"a hidden value (channel {channel!r})" if colon else "a hidden value")
            return None
    return keys


def make_decoder(name: str, values: dict, section: str, problem, base_dir: str):
    """A factory ``f(timezone, reactor) -> IDecoder`` for a ``[decoder:NAME]`` section."""
    from lorrygate.decoding import DECODERS
    from lorrygate.decoding.javascript import JavaScriptDecoder, load_codec

    kind = values["type"]
    if kind != "javascript" and kind not in DECODERS:
        problem(section, "type", "javascript or a built-in decoder (" + ", ".join(sorted(DECODERS)) + ")", repr(kind))
        return None
    allowed = DECODER_TYPE_KEYS.get(kind, ())
    given = [key for key in DECODER_KEYS if key != "type" and values[key] != DECODER_KEYS[key].default]
    bad = [key for key in given if key not in allowed]
    for key in bad:
        problem(section, key, f"no {key} for type {kind} (it takes: {', '.join(allowed) or 'no options'})", repr(values[key]))
    if bad:
        return None
    if kind == "csv":
        delimiter = "\t" if values["delimiter"] == "tab" else values["delimiter"]
        return lambda timezone, reactor: DECODERS["csv"](name=name, timezone=timezone, columns=values["columns"], delimiter=delimiter)
    if kind == "sparkplug":
        return lambda timezone, reactor: DECODERS[kind](name=name, timezone=timezone, rebirth=values["rebirth"],
                                                        clock=reactor)
    if kind == "meshtastic":
        keys = meshtastic_keys(values["keys"], section, problem)
        if keys is None:
            return None
        return lambda timezone, reactor: DECODERS[kind](name=name, timezone=timezone, keys=keys,
                                                        receptions=values["receptions"])
    if kind == "victron":
        def victron(timezone, reactor):
            return DECODERS[kind](name=name, timezone=timezone, keepalive=values["keepalive"], clock=reactor)

        victron.keepalive = values["keepalive"]  # type: ignore[attr-defined]  # (for describe)
        return victron
    if kind != "javascript":
        return lambda timezone, reactor: DECODERS[kind](name=name, timezone=timezone)
    if not values["file"]:
        problem(section, "file", "the path of a JavaScript codec file (this key is required for type javascript)", "nothing")
        return None
    path = values["file"]
    if not installed("py_mini_racer"):
        problem(section, "type", needs("py_mini_racer", "a javascript decoder"), "javascript")
        return None
    try:
        source = load_codec(path)
    except OSError as exc:
        problem(section, "file", "a readable JavaScript codec file", f"{path!r}: {exc.strerror}")
        return None
    except ValueError as exc:
        problem(section, "file", "a codec that defines decodeUplink(input) or decode(payload, topic)", f"{path!r}: {exc}")
        return None
    return lambda timezone, reactor: JavaScriptDecoder(
        name, source, reactor, timezone, path, values["fport"], values["timeout"], values["memory"] * 2**20
    )


def make_strategy(name: str, values: dict, section: str, problem):
    """A factory for a ``[strategy:NAME]`` section, or None after reporting problems."""
    from lorrygate.topology import STRATEGIES
    from lorrygate.topology.template import TemplateError, TemplateStrategy

    kind = values["type"]
    if kind != "template" and kind not in STRATEGIES:
        problem(section, "type", "template or a built-in strategy (" + ", ".join(sorted(STRATEGIES)) + ")", repr(kind))
        return None
    allowed = STRATEGY_TYPE_KEYS.get(kind, ())
    given = [key for key in STRATEGY_KEYS if key != "type" and values[key] != STRATEGY_KEYS[key].default]
    bad = [key for key in given if key not in allowed]
    for key in bad:
        problem(section, key, f"no {key} for type {kind} (it takes: {', '.join(allowed) or 'no options'})", repr(values[key]))
    if bad:
        return None
    if "output" in given and values["output"] not in OUTPUTS[kind]:
        problem(section, "output", f"one of {', '.join(OUTPUTS[kind])} for type {kind}", repr(values["output"]))
        return None
    if "base" in given:
        levels = values["base"].rstrip("/").split("/")  # (OpenDTU shows its base topic as "solar/")
        plus = kind in ("opendtu", "ahoy", "meshtastic", "emon")  # (a + level matches any)
        wildcards = ("#",) if plus else ("+", "#")
        if not all(levels[1:]) or levels == [""] or any(level in wildcards for level in levels):
            which = "# (a + level matches any: solar/+)" if plus else "wildcard (+, #)"
            problem(section, "base", f"topic levels, none empty and no {which}", repr(values["base"]))
            return None
        values = dict(values, base="/".join(levels))
    if kind != "template":
        options = {key: values[key] for key in given}
        return functools.partial(STRATEGIES[kind], name=name, **options)
    missing = [key for key in ("topic", "schema", "table") if not values[key].strip()]
    for key in missing:
        problem(section, key, "a template (this key is required for type template)", "nothing")
    if missing:
        return None
    try:
        strategy = TemplateStrategy.from_texts(name, values["topic"], values["schema"], values["table"], values["kind"])
    except TemplateError as exc:
        which = next(key for key in ("topic", "schema", "table") if values[key] == exc.template)
        problem(section, which, "a valid template", "\n    " + exc.explain.replace("\n", "\n    "))
        return None
    return functools.partial(_same, strategy)


def _same(strategy):
    return strategy

"""
The validated configuration, as frozen values, and the keys each ini section
accepts.

An ini file has one optional ``[lorrygate]`` section and any number of named
``[broker:NAME]``, ``[storage:NAME]`` and ``[channel:NAME]`` sections. Every
key below is documented in ``etc/gateway.ini``.
"""

import functools

import attrs

from lorrygate.config import values as v
from lorrygate.model import DATA, KINDS, Channel
from lorrygate.topology.naming import quote

REQUIRED = object()
DEFAULT_STRATEGIES = "strategies"


@attrs.frozen
class Key:
    """One key of a section: how to parse it, its default, whether it is secret."""

    parse: object
    default: object = REQUIRED
    secret: bool = False


@attrs.frozen
class GatewaySettings:
    data_dir: str = "var"
    log_format: str = "text"
    log_level: str = "info"
    stats_interval: float = 60.0
    strategies: str = DEFAULT_STRATEGIES
    #: the control endpoint (``lorrygate status``/``flush``): a Twisted
    #: endpoint string, "" for ``unix:<data_dir>/lorrygate.sock``, or "off"
    control: str = ""
    #: the token a TCP control endpoint asks for (``Authorization: Bearer ...``)
    control_token: v.Secret | None = attrs.field(default=None, repr=False)
    #: where Prometheus scrapes ``/metrics``: (host, port), or None (off)
    metrics: tuple | None = None

    @property
    def control_endpoint(self) -> str | None:
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


@attrs.frozen
class StorageSettings:
    name: str
    url: object  # lorrygate.config.values.StorageUrl; str() masks the password
    kind: str
    path: str = ""
    batch_size: int = 5000
    linger: float = 0.0
    max_pending: int = 20_000
    synchronous: str = "FULL"
    idempotent: bool = False
    #: a `lorrygate.storage.ddl.DdlTemplate`, or None
    ddl: object = None
    shards: int = 1
    replicas: str = "0-1"
    partition: str = "year"
    flatten_depth: int = 3
    max_columns: int = 250
    tls_ca: str = ""
    timeout: float = 30.0
    spool: bool = True
    spool_max: int = 1 << 30
    #: textsink: ndjson or csv
    text_format: str = "ndjson"
    #: appsink: the callable that takes the rows
    callback: object = attrs.field(default=None, repr=False)
    #: names of ``[hook:NAME]`` sections run on the first sample of each table
    hooks: tuple = ()


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
    function: object = attrs.field(default=None, eq=False, repr=False)


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
    "data_dir": Key(v.nonempty, "var"),
    "log_format": Key(v.choice("text", "json"), "text"),
    "log_level": Key(v.choice("debug", "info", "warn", "error"), "info"),
    "stats_interval": Key(v.duration(1, 86400), 60.0),
    "strategies": Key(v.nonempty, DEFAULT_STRATEGIES),
    "control": Key(v.control_endpoint, ""),
    "control_token": Key(v.text, None, secret=True),
    "metrics": Key(v.listen_address, None),
}

BROKER_KEYS = {
    "host": Key(v.nonempty),
    "port": Key(v.integer(1, 65535), None),
    "protocol": Key(v.choice("3.1.1", "5"), "3.1.1"),
    "client_id": Key(v.text, ""),
    "username": Key(v.text, ""),
    "password": Key(v.text, None, secret=True),
    "keepalive": Key(v.integer(0, 65535), 60),
    "clean_session": Key(v.boolean, False),
    "session_expiry": Key(v.integer(0, 0xFFFFFFFF), 0xFFFFFFFF),
    "receive_maximum": Key(v.integer(1, 65535), 65535),
    "tls": Key(v.boolean, False),
    "tls_ca": Key(v.text, ""),
    "tls_cert": Key(v.text, ""),
    "tls_key": Key(v.text, ""),
    "connect_timeout": Key(v.duration(0.1, 600), 10.0),
    "reconnect_max_delay": Key(v.duration(0.1, 3600), 30.0),
    "max_payload": Key(v.size, 8 << 20),
}

STORAGE_KEYS = {
    "url": Key(v.storage_url),
    "batch_size": Key(v.integer(1, 1_000_000), 5000),
    "linger": Key(v.duration(0, 60), 0.0),
    "max_pending": Key(v.integer(1, 100_000_000), 20_000),
    "idempotent": Key(v.boolean, False),
    "spool": Key(v.boolean, True),
    "spool_max": Key(v.size, 1 << 30),
    "ddl": Key(v.ddl_text, ""),
    "synchronous": Key(v.choice("OFF", "NORMAL", "FULL", "EXTRA"), "FULL"),
    "shards": Key(v.integer(1, 1000), 1),
    "replicas": Key(v.replicas, "0-1"),
    "partition": Key(v.choice("none", "day", "week", "month", "quarter", "year"), "year"),
    "tls_ca": Key(v.text, ""),
    "timeout": Key(v.duration(0.1, 600), 30.0),
    "flatten_depth": Key(v.integer(1, 32), 3),
    "max_columns": Key(v.integer(8, 32767), 250),
    "hooks": Key(v.names, ()),
}
#: keys only some storage kinds take
STORAGE_KIND_KEYS = {
    "synchronous": ("sqlite",),
    "shards": ("crate",),
    "replicas": ("crate",),
    "partition": ("crate",),
    "tls_ca": ("crate",),
    "timeout": ("crate",),
    "flatten_depth": ("sqlite", "postgresql"),
    "max_columns": ("sqlite", "postgresql"),
}

CHANNEL_KEYS = {
    "source": Key(v.nonempty, ""),
    "topics": Key(v.topic_filters),
    "qos": Key(v.integer(0, 2), 1),
    "strategy": Key(v.nonempty, "wan"),
    "decoders": Key(v.names, ()),
    "storage": Key(v.names, ()),
    "timezone": Key(v.timezone, "UTC"),
    "retained": Key(v.choice("new", "always", "never"), "new"),
    "error_topic": Key(v.boolean, None),
    "decode_timeout": Key(v.duration(0.01, 3600), 30.0),
    "values": Key(v.choice("kotori", "as-sent"), None),
    "max_records": Key(v.integer(1, 100_000_000), 100_000),
    "ignore": Key(v.topic_filters, ()),
    "metadata": Key(v.boolean, False),
    "rename": Key(v.pairs(":", "old:new pairs"), ()),
    "drop": Key(v.names, ()),
    "tags": Key(v.pairs("=", "name=value pairs"), ()),
    "convert": Key(v.conversions, ()),
    "hook": Key(v.callable_ref, ""),
    "ddl": Key(v.ddl_text, ""),
}
#: channel keys that make up its transformer step
TRANSFORM_KEYS = ("metadata", "rename", "drop", "tags", "convert", "hook", "ddl")

DECODER_KEYS = {
    "type": Key(v.nonempty),
    "columns": Key(v.names, ()),
    "delimiter": Key(v.choice(",", ";", "|", "tab"), ","),
    "file": Key(v.nonempty, ""),
    "timeout": Key(v.duration(0.001, 60), 0.5),
    "memory": Key(v.integer(4, 4096), 64),
    "fport": Key(v.integer(0, 255), 1),
}
#: which decoder keys each ``type`` takes
DECODER_TYPE_KEYS = {"csv": ("columns", "delimiter"), "javascript": ("file", "timeout", "memory", "fport")}

STRATEGY_KEYS = {
    "type": Key(v.nonempty, "template"),
    "topic": Key(v.text, ""),
    "schema": Key(v.text, ""),
    "table": Key(v.text, ""),
    "kind": Key(v.choice(*KINDS), DATA),
    "networks": Key(v.names, ()),
    "base": Key(v.nonempty, ""),
}
#: which strategy keys each ``type`` takes; other keys are errors
STRATEGY_TYPE_KEYS = {
    "template": ("topic", "schema", "table", "kind"),
    "wan": ("networks",),
    "zigbee2mqtt": ("base",),
}

HOOK_KEYS = {
    "type": Key(v.choice("python", "command", "grafana")),
    "callable": Key(v.callable_ref, ""),
    "command": Key(v.command, ""),
    "url": Key(v.http_url, ""),
    "token": Key(v.text, None, secret=True),
    "folder": Key(v.nonempty, "lorrygate"),
    "datasource_url": Key(v.text, ""),
    "timeout": Key(v.duration(0.1, 3600), 30.0),
    "retry_max": Key(v.duration(1, 86400), 300.0),
}
#: which hook keys each ``type`` takes, and which of them it needs
HOOK_TYPE_KEYS = {
    "python": (("callable",), ()),
    "command": (("command",), ()),
    "grafana": (("url",), ("token", "folder", "datasource_url")),
}

SECTION_KINDS = {
    "broker": BROKER_KEYS,
    "storage": STORAGE_KEYS,
    "strategy": STRATEGY_KEYS,
    "decoder": DECODER_KEYS,
    "channel": CHANNEL_KEYS,
    "hook": HOOK_KEYS,
}


def make_broker(name: str, values: dict) -> BrokerSettings:
    if values["port"] is None:
        values["port"] = 8883 if values["tls"] else 1883
    return BrokerSettings(name=name, **values)


def ddl_template(text: str, kind: str):
    """Parse a DDL template for a storage kind; ValueError says what is wrong."""
    from lorrygate.storage.ddl import DdlTemplate, crate_validator

    if kind == "sqlite":
        from lorrygate.storage.sqlite import table_name

        return DdlTemplate.parse(text, lambda table: quote(table_name(table)))
    if kind == "postgresql":
        from lorrygate.storage.postgresql import qualified as qualify
    else:
        qualify = lambda table: f"{quote(table.schema)}.{quote(table.table)}"  # noqa: E731
    return DdlTemplate.parse(text, qualify, crate_validator() if kind == "crate" else None)


def make_storage(name: str, values: dict, section: str, problem):
    url = values.pop("url")
    for key, kinds in STORAGE_KIND_KEYS.items():
        if values[key] != STORAGE_KEYS[key].default and url.kind not in kinds:
            problem(section, key, f"no {key} for a {url.kind} storage (it is for {', '.join(kinds)})", repr(values[key]))
            return None
    text = values.pop("ddl")
    ddl = None
    if text:
        try:
            ddl = ddl_template(text, url.kind)
        except ValueError as exc:
            problem(section, "ddl", "a DDL template", f"one that fails: {exc}")
            return None
    return StorageSettings(name=name, url=url, kind=url.kind, path=url.path, ddl=ddl, **values)


#: a channel's decoders when it names none, by its strategy
STRATEGY_DECODERS = {
    "tasmota": ("tasmota", "json", "value"),
    "homie": ("homie",),
    "ttn": ("ttn", "json"),
    "chirpstack": ("chirpstack", "json"),
    "zigbee2mqtt": ("json", "value"),
    "shelly": ("json", "value"),
    # Kotori decodes a TTS uplink sent to .../data.json with its TTS decoder
    "wan": ("ttn", "json", "value"),
}
DEFAULT_DECODERS = ("json", "value")


def make_channel(name: str, values: dict) -> Channel:
    """A channel; its transform keys stay in ``values`` for `make_transform`.

    ``storage = a, b`` writes every record to both (the first also takes the
    dead letters).
    """
    options = {key: values[key] for key in values if key not in TRANSFORM_KEYS}
    options["decoders"] = options["decoders"] or STRATEGY_DECODERS.get(options["strategy"], DEFAULT_DECODERS)
    options["values"] = options["values"] or ("kotori" if options["strategy"] in ("wan", "lan") else "as-sent")
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
    )
    return transform if transform.active else None


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
    if kind != "javascript":
        return lambda timezone, reactor: DECODERS[kind](name=name, timezone=timezone)
    if not values["file"]:
        problem(section, "file", "the path of a JavaScript codec file (this key is required for type javascript)", "nothing")
        return None
    path = values["file"]
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

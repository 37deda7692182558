"""
The pipeline model: what ``lorrygate -c FILE``, ``lorrygate launch "..."``
and the Python API all run.

A `Pipeline` is a validated `Settings` (brokers, storages, channels) with a
way to run it. `parse_launch` builds one from the launch language, each
chain ``source ! [strategy] ! [decode] ! [transform] ! sink-or-tee`` becoming
a channel; `Pipeline.from_config` builds one from an ini file, each
``[channel:...]`` section being such a chain. Both then start the same
`Gateway`. Nothing connects until `start` or `run`.
"""

import hashlib
import os
import socket
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import attrs
from twisted.internet.defer import Deferred

from lorrygate.config import settings as s
from lorrygate.config import values as v
from lorrygate.config.paths import root_meant
from lorrygate.config.values import Invalid
from lorrygate.errors import LorrygateError, did_you_mean
from lorrygate.model import Address, Channel, TableName
from lorrygate.pipeline.elements import ELEMENTS, REQUIRED, URL_KINDS
from lorrygate.pipeline.grammar import hide_passwords, parse

#: launch elements of ``[source:NAME]`` kinds, by their type
LOCAL_SOURCES = {"filesrc": "files", "socketsrc": "socket", "pgcdcsrc": "pgcdc", "tributarysrc": "tributary"}


class PipelineError(LorrygateError):
    """A launch text that parses but does not make a pipeline; names the line and column. Passwords in it (of a
    URL's user info or a ``password=``/``token=`` query) are shown as ``*``, one for each character, so that
    the caret still points where it should."""

    def __init__(self, message: str, text: str, loc: int):
        import pyparsing as pp

        self.lineno, self.col = pp.lineno(loc, text), pp.col(loc, text)
        shown = f"line {self.lineno}, column {self.col}: {message}\n{pp.line(loc, text)}\n{' ' * (self.col - 1)}^"
        super().__init__(hide_passwords(shown))




@contextmanager
def _url_errors(text: str, element):
    """urllib's ValueError for a URL it cannot split (a port that is no number or out of range, a broken IPv6
    address) as a `PipelineError` that points at the element (it was a traceback)."""
    try:
        yield
    except ValueError as exc:
        raise PipelineError(f"a URL that cannot be read: {exc}", text, element.loc) from None


@attrs.frozen
class FixedTable:
    """The strategy of a sink URL with ``?table=NAME``: every record into that one table."""

    table: str
    name: str = "fixed"

    def match(self, topic: str) -> Address:
        return Address("", None, None, None, "data", topic)

    def table_for(self, address) -> TableName:
        return TableName("", self.table)


def _properties(element, text: str) -> dict:
    spec = ELEMENTS.get(element.factory)
    if spec is None:
        raise PipelineError(f"unknown element {element.factory!r}{did_you_mean(element.factory, ELEMENTS)} (lorrygate "
                            "inspect lists them)", text, element.loc)
    values = {}
    for key, raw in element.properties:
        prop = spec.properties.get(key)
        if prop is None:
            known = ", ".join(spec.properties) or "none"
            raise PipelineError(f"{element.factory} has no property {key!r}{did_you_mean(key, spec.properties)} (it "
                                f"has: {known})", text, element.loc)
        if key in values:
            raise PipelineError(f"{element.factory} has {key}= twice: which one is meant?", text, element.loc)
        try:
            values[key] = prop.parse(v.interpolate(raw, "."))
        except Invalid as exc:
            raise PipelineError(f"{element.factory} {key}: expected {exc.expected}, got {raw!r}", text, element.loc) from None
    for key, prop in spec.properties.items():
        if key not in values:
            if prop.default is REQUIRED:
                raise PipelineError(f"{element.factory} needs {key}=...", text, element.loc)
            values[key] = prop.default
    return values


def _kind(element, head: bool = True) -> str:
    if element.factory == "url":
        scheme = element.url.split("://", 1)[0].lower()
        if scheme in ("mqtt", "mqtts", "kafka", "kafkas") and not head:
            return "sink"  # an MQTT or Kafka URL after the source publishes
        return URL_KINDS.get(scheme, "unknown")
    if element.factory == "reference":
        return "reference"
    spec = ELEMENTS.get(element.factory)
    return spec.kind if spec else "unknown"


def _options(query: str, what: str, allowed: dict) -> dict:
    """A URL's ``?options``, each one that ``what`` reads (``allowed``: its name and values, empty: any value);
    Invalid for another, which was left unread in silence (``?client_id=`` read, ``?clientid=`` not: each start
    then had another MQTT session)."""
    options = dict(parse_qsl(query, keep_blank_values=True))
    for key, value in options.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise Invalid(f"{what} with the options it reads ({known}), not {key!r}")
        if allowed[key] and value not in allowed[key]:
            raise Invalid(f"{key}={' or '.join(allowed[key])} in {what}, not {value!r}")
    return options


#: a TLS URL's files, as a [broker:NAME] section's keys
_TLS_OPTIONS = {"tls_ca": (), "tls_cert": (), "tls_key": ()}
_MQTT_OPTIONS = {"qos": (), "client-id": (), "client_id": (), "protocol": ("3.1.1", "5"),
                 "retained": ("new", "always", "never"), "content-type": (), **_TLS_OPTIONS}


def tls_files(given: dict, secure: bool) -> dict:
    """``tls_ca``, ``tls_cert`` and ``tls_key`` of a URL's options or an element's properties (``tls-ca``, ...),
    as absolute paths; Invalid for one without TLS, a file that cannot be read, or a key without its
    certificate (checked here: the connection found it only when it was first made)."""
    files = {key: os.path.abspath(given[name]) for key in _TLS_OPTIONS
             for name in (key, key.replace("_", "-")) if given.get(name)}
    if files and not secure:
        raise Invalid(f"TLS for {', '.join(files)} (mqtts://, kafkas://, or tls=true)")
    for key, path in files.items():
        if not os.access(path, os.R_OK):
            raise Invalid(f"a readable PEM file for {key}, not {path!r}")
    if "tls_key" in files and "tls_cert" not in files:
        raise Invalid("tls_cert, the client certificate tls_key belongs to")
    return files


def _mqtt_url(url: str) -> dict:
    """LorryStream-compatible MQTT URLs: the path is the topic (%23 or a raw # both work)."""
    parts = urlsplit(url.replace("#", "%23"))
    query = _options(parts.query, "an mqtt:// source URL", _MQTT_OPTIONS)
    topic = unquote(parts.path[1:])
    if not topic:
        raise Invalid("an MQTT URL with a topic, such as mqtt://localhost/testdrive/%23")
    v.topic_filters(topic)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port,
        "topic": tuple(t.strip() for t in topic.split(",")),
        "qos": v.integer(0, 2)(query.get("qos", "1")),
        "client-id": query.get("client-id", query.get("client_id", "")),
        "username": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "protocol": query.get("protocol", "3.1.1"),
        "tls": parts.scheme == "mqtts",
        **tls_files(query, parts.scheme == "mqtts"),
        "retained": query.get("retained", ""),  # (by the strategy: `strategy_retained`)
        "content-type": query.get("content-type", "json"),
        "content-type-given": "content-type" in query,
    }


def _amqp_url(url: str) -> dict:
    """``amqp[s]://USER:PASSWORD@HOST[:PORT]/[VHOST]?exchange=amq.topic&topic=a/%23&queue=NAME&prefetch=2000``
    (the vhost percent-encoded: %2F is /, the default)."""
    parts = urlsplit(url.replace("#", "%23"))
    if not parts.hostname:
        raise Invalid("an AMQP URL such as amqp://guest:guest@localhost:5672/%2F?exchange=amq.topic&topic=sensors/%23")
    query = _options(parts.query, "an amqp:// URL",
                     {"exchange": (), "topic": (), "queue": (), "prefetch": (), **_TLS_OPTIONS})
    topic = query.get("topic", "#")
    v.topic_filters(topic)
    return {
        "host": parts.hostname,
        "port": parts.port,
        "vhost": unquote(parts.path[1:]) or "/",
        "exchange": query.get("exchange", "amq.topic"),
        "topic": tuple(t.strip() for t in topic.split(",")),
        "queue": query.get("queue", ""),
        "prefetch": v.integer(1, 65535)(query.get("prefetch", "2000")),
        "username": unquote(parts.username or "guest"),
        "password": unquote(parts.password or "guest"),
        "tls": parts.scheme == "amqps",
        **tls_files(query, parts.scheme == "amqps"),
    }


@attrs.define
class _Builder:
    text: str
    callbacks: dict
    brokers: dict = attrs.Factory(dict)
    storages: dict = attrs.Factory(dict)
    strategies: dict = attrs.Factory(dict)
    channels: list = attrs.Factory(list)
    tees: dict = attrs.Factory(dict)  # tee name -> index into channels
    #: ``[source:NAME]`` equivalents of pollsrc and iiosrc elements
    sources: dict = attrs.Factory(dict)
    #: where a prometheus sink's values are scraped (the gateway's metrics listener), or None
    metrics: tuple | None = None
    #: per channel, where in the text its source, strategy, decoders, transform and tee are (for the errors of
    #: checks made once every chain is read): {"source": loc, "strategy": loc, ...}
    places: list = attrs.Factory(list)

    def options(self, element, what: str, allowed: dict) -> dict:
        """The ``?options`` of an element's URL (`_options`), a PipelineError at the element for one not read."""
        try:
            return _options(urlsplit(element.url.replace("#", "%23")).query, what, allowed)
        except Invalid as exc:
            raise PipelineError(f"expected {exc.expected}", self.text, element.loc) from None

    def sink(self, element) -> tuple[str, str | None]:
        """Register a sink element; return its storage name."""
        text = self.text
        name = f"sink{len(self.storages)}"
        if element.factory in ("kafkasink", "wssink", "prometheussink"):
            props = _properties(element, text)
            name = props.get("name") or name
            if element.factory == "prometheussink" and not props["pushgateway"]:
                self.listen_metrics(props["listen"], element)
            element = self.as_url(element)
        elif element.factory == "url" and element.url.strip() in ("prometheus://", "prometheus:"):
            self.listen_metrics(ELEMENTS["prometheussink"].properties["listen"].default, element)
        element = self.resolved(element)
        table = None
        if element.factory == "mqttsink" or (element.factory == "url" and element.url.split("://", 1)[0].lower() in
                                               ("mqtt", "mqtts")):
            settings = self.mqtt_sink(element, name)
            name = settings.name
        elif element.factory == "url" and element.url.split("://", 1)[0].lower() in ("kafka", "kafkas"):
            parts = urlsplit(element.url)
            query = self.options(element, "a kafka:// sink URL", {"payload": ("message", "records"), **_TLS_OPTIONS})
            files = self.tls(query, parts.scheme == "kafkas", element)
            base = element.url.split("?", 1)[0]
            base = base[: base.index("/", base.index("://") + 3)] + "/" if "/" in base[base.index("://") + 3:] else base + "/"
            invalid = s.topic_template_problem(unquote(parts.path[1:]), "kafka")
            if invalid is not None:
                raise PipelineError(f"expected {invalid[0]}, got {invalid[1]}", text, element.loc)
            settings = s.StorageSettings(name, v.storage_url(base), "kafka", spool=True,
                                         topic=unquote(parts.path[1:]) or "lorrygate",
                                         payload=query.get("payload", "message"),
                                         dead_letter_topic="lorrygate-dead-letters",
                                         broker=s.kafka_broker(name, base, **files))
        elif element.factory == "url":
            url = element.url
            if url.startswith("file://"):
                path = unquote(urlsplit(url).path)
                settings = s.StorageSettings(name, v.StorageUrl("file", url, path), "file", path, spool=False)
            else:
                parts = urlsplit(url)
                query = dict(parse_qsl(parts.query))
                table = query.pop("table", None)
                bare = url.split("?", 1)[0] + ("?" + "&".join(f"{k}={val}" for k, val in query.items()) if query else "")
                try:
                    parsed = v.section_storage_url(bare)  # (an option it does not read is an error, not ignored)
                except Invalid as exc:
                    raise PipelineError(f"expected {exc.expected}, got {url!r}", text, element.loc) from None
                settings = s.StorageSettings(name, parsed, parsed.kind, parsed.path,
                                             spool=parsed.kind not in ("sqlite", "websocket", "prometheus"))
        else:
            props = _properties(element, text)
            name = props.get("name") or name
            if name in self.storages:
                raise PipelineError(f"a second storage named {name!r}", text, element.loc)
            factory = element.factory
            if props.get("merge") and props["layout"] != "per-address":
                raise PipelineError(f"merge: expected per-address tables (layout=per-address), got "
                                    f"layout={props['layout']}", text, element.loc)
            if factory == "sqlite":
                settings = s.StorageSettings(name, v.storage_url("sqlite:///" + props["location"]), "sqlite",
                                             props["location"], spool=False, layout=props["layout"],
                                             time_index=props["time-index"], retention=props["retention"],
                                             merge=props["merge"])
            elif factory in ("postgresql", "crate"):
                url = props["url"]
                if url.kind != factory:
                    raise PipelineError(f"{factory} url: expected a {factory} URL, got {str(url)!r}", text, element.loc)
                extra = ({"shards": props["shards"], "replicas": props["replicas"], "layout": props["layout"]}
                         if factory == "crate" else {"layout": props["layout"]})
                settings = s.StorageSettings(name, url, factory, merge=props["merge"], **extra)
            elif factory == "textsink":
                path = props["location"]
                settings = s.StorageSettings(name, v.StorageUrl("file", f"file://{path}", path), "file", path,
                                             spool=False, text_format=props["format"])
            elif factory == "tributarysink":
                graph = props["graph"]
                settings = s.StorageSettings(name, v.StorageUrl("tributary", "tributary://"), "tributary",
                                             spool=False, graph=graph,
                                             callback=_import(graph, text, element.loc, "tributarysink graph"))
            else:  # appsink
                callback = self.callbacks.get(props["name"]) if props["name"] else None
                if callback is None and props["callback"]:
                    callback = _import(props["callback"], text, element.loc)
                if callback is None:
                    raise PipelineError("appsink needs callback=module:function, or a name=... that "
                                        "parse_launch(callbacks={...}) provides", text, element.loc)
                settings = s.StorageSettings(name, v.StorageUrl("app", f"app:{name}"), "app", spool=False,
                                             callback=callback)
        self.storages[name] = settings
        if table is not None:
            strategy = f"fixed:{table}"
            self.strategies[strategy] = lambda t=table: FixedTable(t)
            return name, strategy
        return name, None

    def mqtt_sink(self, element, name: str):
        """An MQTT sink from ``mqtt[s]://[USER:PASSWORD@]HOST[:PORT]/TOPIC-TEMPLATE?payload=message|records``
        or an mqttsink element."""
        text = self.text
        if element.factory == "url":
            parts = urlsplit(element.url)
            query = self.options(element, "an mqtt:// sink URL", {"payload": ("message", "records"),
                                                                  "protocol": ("3.1.1", "5"), "client-id": (),
                                                                  "client_id": (), **_TLS_OPTIONS})
            secure, given = parts.scheme == "mqtts", query
            template = unquote(parts.path[1:]) or "{topic}"
            payload = query.get("payload", "message")
            connection = {"protocol": query.get("protocol", "3.1.1"),
                          "client-id": query.get("client-id") or query.get("client_id", "")}
            url = element.url.split("?", 1)[0]
            url = url[: url.index("/", url.index("://") + 3)] + "/" if "/" in url[url.index("://") + 3:] else url + "/"
        else:
            props = _properties(element, text)
            name = props["name"] or name
            template, payload = props["topic"], props["payload"]
            auth = f"{quote(props['username'], safe='')}:{quote(props['password'], safe='')}@" if props["username"] \
                else ""
            port = props["port"] or (8883 if props["tls"] else 1883)
            url = f"{'mqtts' if props['tls'] else 'mqtt'}://{auth}{props['host']}:{port}/"
            connection = {"protocol": props["protocol"], "client-id": props["client-id"]}
            secure, given = props["tls"], props
        files = self.tls(given, secure, element)
        invalid = s.topic_template_problem(template, "mqtt")
        if invalid is not None:
            raise PipelineError(f"expected {invalid[0]}, got {invalid[1]}", text, element.loc)
        parsed = v.storage_url(url)
        options = urlencode({key: value for key, value in connection.items() if value and value != "3.1.1"})
        return s.StorageSettings(name, parsed, "mqtt", spool=True, topic=template, payload=payload,
                                 broker=s.sink_broker(name, url + ("?" + options if options else ""), **files))

    def chain(self, chain, following=None) -> None:
        """Add ``chain``; ``following`` is the head of the chain after it in the text, if one is."""
        text = self.text
        elements = list(chain.elements)
        head = elements[0]
        kind = _kind(head)
        if kind == "reference":
            if head.reference not in self.tees:
                raise PipelineError(f"no element is named {head.reference!r} (name a tee: tee name={head.reference})",
                                    text, head.loc)
            index = self.tees[head.reference]
            sinks = [e for e in elements[1:] if _kind(e, False) != "queue"]
            if len(sinks) != 1 or _kind(sinks[0], False) != "sink":
                at = sinks[0].loc if sinks else head.loc
                raise PipelineError("a branch is: NAME. ! [queue !] sink", text, at)
            with _url_errors(text, sinks[0]):
                name, strategy = self.sink(sinks[0])
            if strategy:
                raise PipelineError("?table= is for a chain's only sink, not for a tee branch", text, sinks[0].loc)
            channel = self.channels[index]
            self.channels[index] = attrs.evolve(channel, tee=channel.tee + (name,)) if channel.storage else attrs.evolve(
                channel, storage=name)
            return
        if kind != "source":
            sources = ", ".join(name for name, spec in ELEMENTS.items() if spec.kind == "source")
            schemes = ", ".join(f"{scheme}://" for scheme, of in URL_KINDS.items() if of == "source")
            got = head.factory if head.factory != "url" else head.url
            hint = ""
            if head.factory == "url" and head.url.startswith("file:"):
                hint = (f" (file:// is the sink that writes lines; files are read by the element filesrc "
                        f"location={head.url[7:]} of lorrygate launch)")
            elif kind == "sink":
                hint = " (a sink: it goes at the end of a chain)"
            raise PipelineError(f"a chain starts with a source ({sources}; or a URL: {schemes}) or a branch NAME., "
                                f"got {got!r}{hint}", text, head.loc)
        with _url_errors(text, head):
            source = self.source(head)
        strategy, decoders, timezone, transform, storages, tee = "wan", source.pop("decoders"), "UTC", None, [], None
        chosen = source.pop("chosen", False)
        dataflow = None
        places = {"source": head.loc, "strategy": head.loc, "decode": head.loc, "transform": head.loc,
                  "tee": head.loc}
        order = ["strategy", "decode", "transform", "dataflow", "queue", "sink"]
        last = -1
        for element in elements[1:]:
            kind = _kind(element, False)
            if kind == "unknown":
                what = element.url if element.factory == "url" else element.factory
                raise PipelineError(f"unknown element {what!r}{did_you_mean(what, ELEMENTS)} (lorrygate inspect lists "
                                    "them)", text, element.loc)
            if kind == "source":
                raise PipelineError("a source only starts a chain", text, element.loc)
            step = order.index("sink" if kind == "tee" else kind)
            if step < last or (kind in ("sink", "tee") and (storages or tee)):
                raise PipelineError(f"{element.factory if element.factory != 'url' else 'this sink'} is out of order: "
                                    "source ! strategy ! decode ! transform ! sink (or tee)", text, element.loc)
            last = step
            if kind in ("strategy", "decode", "transform", "tee"):
                places[kind] = element.loc
            if kind == "strategy":
                strategy = _properties(element, text)["name"]
            elif kind == "decode":
                props = _properties(element, text)
                decoders, timezone = props["chain"], props["timezone"]
            elif kind == "transform":
                transform = self.transform(element)
            elif kind == "dataflow":
                dataflow = self.dataflow(element, len(self.channels))
            elif kind == "tee":
                tee = _properties(element, text)["name"]
            elif kind == "sink":
                with _url_errors(text, element):
                    name, fixed = self.sink(element)
                storages.append(name)
                strategy = fixed or strategy
        if not storages and tee is None:
            if following is not None and "\n" not in text[elements[-1].loc:following.loc]:
                # (``decode jsn ! sqlite:///x``: the word after decode began a chain of its own, and that one was
                # the mistake)
                word = following.url if following.factory == "url" else following.reference or following.factory
                raise PipelineError(f"{word!r} begins another chain on this line, and the chain before it has no "
                                    "sink: write a property as name=value (decode chain=json), join elements with "
                                    "'!', and begin each chain on a line of its own", text, following.loc)
            raise PipelineError("this chain has no sink: end it with a storage, a textsink, an appsink or a tee",
                                text, elements[-1].loc)
        index = len(self.channels)
        name = f"launch{index}"
        relayed = [self.storages[n] for n in storages if self.storages[n].kind in ("mqtt", "kafka")]
        if relayed and not any(_kind(e, False) == "strategy" for e in elements[1:]):
            strategy = "topic"  # a relay takes any topic
        if relayed and not any(_kind(e, False) == "decode" for e in elements[1:]) and \
                all(sink.payload == "message" for sink in relayed):
            decoders = ("raw",)  # passed on as it came: any payload
        values = "as-sent"
        if any(_kind(e, False) == "strategy" for e in elements[1:]):
            # a strategy element brings its chain (unless a decode element or the source URL chose one) and its
            # values policy, as a channel of an ini file that names it: strategy name=sparkplug decoded JSON only
            values = s.strategy_values(strategy)
            if not chosen and not any(_kind(e, False) == "decode" for e in elements[1:]):
                decoders = s.strategy_decoders(strategy)
        self.places.append(places)
        self.channels.append(Channel(name=name, source=source["broker"], topics=source["topics"], qos=source["qos"],
                                     strategy=strategy, decoders=tuple(decoders), storage=storages[0] if storages else "",
                                     timezone=timezone, retained=source["retained"] or s.strategy_retained(strategy),
                                     transform=transform, values=values,
                                     dataflow=dataflow, **source.get("amqp", {})))  # source-type options (amqp, redis)
        if tee is not None:
            if tee in self.tees:
                raise PipelineError(f"a second element named {tee!r}", text, elements[-1].loc)
            self.tees[tee] = index

    def resolved(self, element):
        """A URL element with the ``${ENV:NAME}`` and ``${FILE:path}`` references of its URL replaced (in the user
        info and the query percent-encoded), as a config's values are: a password kept in the environment,
        not on a command line every user of the machine sees in ``ps``. The launch text, which errors show
        (passwords masked), keeps the references."""
        if element.factory != "url" or "${" not in element.url:
            return element
        try:
            return attrs.evolve(element, url=v.interpolate(element.url, "."))
        except Invalid as exc:
            raise PipelineError(f"expected {exc.expected}", self.text, element.loc) from None

    def tls(self, given: dict, secure: bool, element, what: str = "") -> dict:
        """`tls_files` of a URL's options or an element's properties, or a PipelineError at the element."""
        try:
            return tls_files(given, secure)
        except Invalid as exc:
            raise PipelineError(f"{what}expected {exc.expected}", self.text, element.loc) from None

    def listen_metrics(self, address, element) -> None:
        """A prometheus sink's values are served on the metrics listener: this one (one for the pipeline)."""
        if isinstance(address, str):  # (the default, as written)
            try:
                address = v.listen_address(address)
            except Invalid as exc:
                raise PipelineError(f"expected {exc.expected}", self.text, element.loc) from None
        if self.metrics is not None and self.metrics != address:
            raise PipelineError(f"prometheus sinks on one metrics listener: got {address[0]}:{address[1]} beside "
                                f"{self.metrics[0]}:{self.metrics[1]}", self.text, element.loc)
        self.metrics = address

    def as_url(self, element):
        """The URL element that a redissrc, zmqsrc, kafkasrc, kafkasink, wssink or prometheussink stands for."""
        from urllib.parse import quote

        factory = element.factory
        if factory not in ("redissrc", "zmqsrc", "kafkasrc", "kafkasink", "wssink", "prometheussink"):
            return element
        props = _properties(element, self.text)
        secure = "s" if props.get("tls") else ""
        # the TLS files as the URL's options (checked there, as a URL's are)
        files = "".join(f"&{key.replace('-', '_')}={quote(props[key], safe='/')}"
                        for key in ("tls-ca", "tls-cert", "tls-key") if props.get(key))
        if factory == "redissrc":
            auth = f":{quote(props['password'], safe='')}@" if props["password"] else ""
            url = (f"redis{secure}://{auth}{props['host']}:{props['port']}/{quote(props['stream'], safe=',')}"
                   f"?mode={props['mode']}&group={quote(props['group'])}&consumer={quote(props['consumer'])}{files}")
        elif factory == "zmqsrc":
            url = (f"zmq+tcp://{props['host']}:{props['port']}/{quote(','.join(props['topic']), safe=',/+')}"
                   f"?mode={props['mode']}")
        elif factory == "kafkasrc":
            url = (f"kafka{secure}://{props['servers']}/{props['topic']}?group={quote(props['group'])}"
                   f"&start={props['start']}{files}")
        elif factory == "kafkasink":
            url = (f"kafka{secure}://{props['servers']}/{quote(props['topic'], safe='{}')}?payload={props['payload']}"
                   f"{files}")
        elif factory == "wssink":
            url = f"ws://{props['host']}:{props['port']}/"
        else:
            url = f"pushgateway://{props['pushgateway']}/{props['job']}" if props["pushgateway"] else "prometheus://"
        return attrs.evolve(element, factory="url", url=url, properties=())

    def source(self, element) -> dict:
        if element.factory in ("pollsrc", "iiosrc"):
            return self.periodic_source(element)
        if element.factory in LOCAL_SOURCES:
            return self.local_source(element)
        element = self.resolved(self.as_url(element))
        text = self.text
        is_amqp = element.factory == "amqpsrc" or (
            element.factory == "url" and element.url.split("://", 1)[0].lower() in ("amqp", "amqps"))
        if is_amqp:
            return self.amqp_source(element)
        if element.factory == "url" and element.url.split("://", 1)[0].lower() in ("redis", "rediss"):
            return self.redis_source(element)
        if element.factory == "url" and element.url.split("://", 1)[0].lower() == "zmq+tcp":
            return self.zmq_source(element)
        if element.factory == "url" and element.url.split("://", 1)[0].lower() in ("kafka", "kafkas"):
            return self.kafka_source(element)
        if element.factory == "url":
            try:
                props = _mqtt_url(element.url)
            except Invalid as exc:
                raise PipelineError(f"expected {exc.expected}, got {element.url!r}", text, element.loc) from None
            # a content-type the URL gives chooses the decoders (a strategy element's chain does not replace them)
            chosen = props.pop("content-type-given")
            decoders = ("json",) if props.pop("content-type") in ("json", "application/json") else ("json", "csv", "kv")
        else:
            props = _properties(element, text)
            decoders, chosen = ("json",), False
            props.update(self.tls(props, props["tls"], element, "mqttsrc: "))
        name = f"source{len(self.brokers)}"
        identity = hashlib.sha256(f"{props['host']}|{props['port']}|{props['topic']}".encode()).hexdigest()[:8]
        client_id = props["client-id"] or f"lorrygate-{socket.gethostname()}-{identity}"
        port = props["port"] or (8883 if props["tls"] else 1883)
        self.brokers[name] = s.BrokerSettings(
            name=name, host=props["host"], port=port, protocol=props["protocol"], client_id=client_id,
            username=props["username"], password=v.Secret(props["password"]) if props["password"] else None,
            tls=props["tls"], tls_ca=props.get("tls_ca", ""), tls_cert=props.get("tls_cert", ""),
            tls_key=props.get("tls_key", ""))
        return {"broker": name, "topics": props["topic"], "qos": props["qos"], "retained": props["retained"],
                "decoders": decoders, "chosen": chosen}

    def amqp_source(self, element) -> dict:
        text = self.text
        if element.factory == "url":
            try:
                props = _amqp_url(element.url)
            except Invalid as exc:
                raise PipelineError(f"expected {exc.expected}, got {element.url!r}", text, element.loc) from None
        else:
            props = _properties(element, text)
            props.update(self.tls(props, props["tls"], element, "amqpsrc: "))
        name = f"source{len(self.brokers)}"
        port = props["port"] or (5671 if props["tls"] else 5672)
        if not props["queue"]:
            # stable across restarts (a durable queue keeps what arrives meanwhile), distinct per relay
            identity = hashlib.sha256(f"{props['host']}|{port}|{props['vhost']}|{props['exchange']}|{props['topic']}"
                                      .encode()).hexdigest()[:8]
            props["queue"] = f"lorrygate-{socket.gethostname()}-{identity}"
        self.brokers[name] = s.BrokerSettings(
            name=name, host=props["host"], port=port, type="amqp", vhost=props["vhost"], username=props["username"],
            password=v.Secret(props["password"]) if props["password"] else None, tls=props["tls"],
            tls_ca=props.get("tls_ca", ""), tls_cert=props.get("tls_cert", ""), tls_key=props.get("tls_key", ""))
        return {"broker": name, "topics": props["topic"], "qos": 1, "retained": "new", "decoders": ("json",),
                "amqp": {"exchange": props["exchange"], "queue": props["queue"], "prefetch": props["prefetch"]}}

    def redis_source(self, element) -> dict:
        """``redis[s]://[USER:PASSWORD@]HOST[:PORT]/STREAM[,STREAM]?mode=streams&group=lorrygate&consumer=NAME``;
        with ``mode=pubsub`` the path is a topic pattern (``sensors/%23``)."""
        parts = urlsplit(element.url.replace("#", "%23"))
        query = self.options(element, "a redis:// URL", {"mode": (), "group": (), "consumer": (), **_TLS_OPTIONS})
        files = self.tls(query, parts.scheme == "rediss", element)
        keys = unquote(parts.path[1:])
        mode = query.get("mode", "streams")
        if not keys or mode not in ("streams", "pubsub"):
            raise PipelineError("expected redis://HOST/STREAM?mode=streams (or a pattern with mode=pubsub), got "
                                f"{element.url!r}", self.text, element.loc)
        name = f"source{len(self.brokers)}"
        self.brokers[name] = s.BrokerSettings(
            name=name, host=parts.hostname or "localhost", port=parts.port or 6379, type="redis",
            username=unquote(parts.username or ""),
            password=v.Secret(unquote(parts.password)) if parts.password else None, tls=parts.scheme == "rediss",
            **files)
        return {"broker": name, "topics": tuple(k.strip() for k in keys.split(",")), "qos": 1, "retained": "new",
                "decoders": ("json",),
                "amqp": {"mode": mode, "group": query.get("group", "lorrygate"), "consumer": query.get("consumer", "")}}

    def periodic_source(self, element) -> dict:
        props = _properties(element, self.text)
        name = f"source{len(self.brokers) + len(self.sources)}"
        values = {"type": "poll" if element.factory == "pollsrc" else "iio", "interval": props["interval"],
                  "topic": props["topic"] or name}
        if element.factory == "pollsrc":
            values.update(url=props["url"], command=props["command"], timeout=props["timeout"])
            if bool(values["url"]) == bool(values["command"]):
                raise PipelineError("pollsrc needs url=... or command=... (one of them)", self.text, element.loc)
        else:
            values["root"] = props["root"]
        self.sources[name] = s.SourceSettings(name=name, **values)
        return {"broker": name, "topics": ("#",), "qos": 0, "retained": "new", "decoders": ("json", "csv", "kv", "value")}

    def local_source(self, element) -> dict:
        """A filesrc, socketsrc or pgcdcsrc: a ``[source:NAME]`` checked as a config section would be."""
        props = _properties(element, self.text)
        name = f"source{len(self.brokers) + len(self.sources)}"
        values = {key: key_spec.default for key, key_spec in s.SOURCE_KEYS.items()}
        values["type"] = LOCAL_SOURCES[element.factory]
        for key, value in props.items():
            values[{"location": "path"}.get(key, key)] = value
        if values["database"] is not None:
            values["database"] = v.Secret(values["database"])
        if values["type"] == "files":
            values["path"] = os.path.abspath(values["path"])

        def problem(section, key, expected, got):
            raise PipelineError(f"{element.factory} {key}: expected {expected}, got {got}", self.text, element.loc)

        made = s.make_source(name, values, element.factory, problem)
        if made.type == "tributary":
            made = attrs.evolve(made, function=_import(made.graph, self.text, element.loc, "tributarysrc graph"))
        self.sources[name] = made
        return {"broker": name, "topics": ("#",), "qos": 1, "retained": "new", "decoders": ("json", "csv", "kv", "value")}

    def kafka_source(self, element) -> dict:
        """``kafka[s]://[USER:PASSWORD@]HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]?group=lorrygate&start=earliest``."""
        parts = urlsplit(element.url)
        query = self.options(element, "a kafka:// source URL", {"group": (), "start": (), **_TLS_OPTIONS})
        files = self.tls(query, parts.scheme == "kafkas", element)
        names = unquote(parts.path[1:])
        if not names or query.get("start", "earliest") not in ("earliest", "latest"):
            raise PipelineError(f"expected kafka://HOST:9092/TOPIC?group=NAME, got {element.url!r}", self.text,
                                element.loc)
        name = f"source{len(self.brokers)}"
        self.brokers[name] = s.kafka_broker(name, element.url.split("?", 1)[0].rsplit("/", 1)[0] + "/", **files)
        self.brokers[name] = attrs.evolve(self.brokers[name], name=name)
        return {"broker": name, "topics": tuple(t.strip() for t in names.split(",")), "qos": 1, "retained": "new",
                "decoders": ("json",), "amqp": {"group": query.get("group", "lorrygate"),
                                                 "start": query.get("start", "earliest")}}

    def zmq_source(self, element) -> dict:
        """``zmq+tcp://HOST:PORT/TOPIC-FILTER?mode=sub|pull`` (HOST ``*`` binds)."""
        parts = urlsplit(element.url.replace("#", "%23").replace("://*:", "://0.0.0.0:"))
        query = self.options(element, "a zmq+tcp:// URL", {"mode": ()})
        mode = query.get("mode", "sub")
        topic = unquote(parts.path[1:]) or "#"
        if not parts.port or mode not in ("sub", "pull"):
            raise PipelineError(f"expected zmq+tcp://HOST:PORT/TOPIC?mode=sub|pull, got {element.url!r}", self.text,
                                element.loc)
        if parts.username is not None or parts.password is not None:
            raise PipelineError(f"expected a zmq+tcp:// URL without a user or password ({s.ZMQ_UNSECURED})", self.text,
                                element.loc)
        host = "*" if "://*:" in element.url else parts.hostname or "localhost"
        name = f"source{len(self.brokers)}"
        self.brokers[name] = s.BrokerSettings(name=name, host=host, port=parts.port, type="zmq")
        return {"broker": name, "topics": tuple(t.strip() for t in topic.split(",")), "qos": 0, "retained": "new",
                "decoders": ("json",), "amqp": {"mode": mode}}

    def dataflow(self, element, index: int):
        """A hamilton element: its dataflow validated as a ``[transform:NAME]`` section would be."""
        props = _properties(element, self.text)
        values = {key: props[key] for key in ("modules", "inputs", "outputs", "constants", "history", "into",
                                              "timeout")}
        values["type"], values["max_pending"] = "hamilton", s.DATAFLOW_KEYS["max_pending"].default
        values["modules"] = tuple(os.path.abspath(m) if m.endswith(".py") else m for m in values["modules"])

        def problem(section, key, expected, got):
            raise PipelineError(f"hamilton {key}: expected {expected}, got {got}", self.text, element.loc)

        return s.make_dataflow(f"launch{index}", values, "hamilton", problem, os.getcwd())

    def transform(self, element):
        props = _properties(element, self.text)
        values = {"rename": (), "drop": (), "tags": (), "convert": (), "metadata": props["metadata"], "headers": ()}
        try:
            if props["rename"]:
                values["rename"] = v.renames(props["rename"])
            if props["drop"]:
                values["drop"] = v.names(props["drop"])
            if props["tags"]:
                values["tags"] = v.pairs("=", "name=value pairs")(props["tags"])
            if props["convert"]:
                values["convert"] = v.conversions(props["convert"])
            if props["headers"]:
                values["headers"] = v.header_tags(props["headers"])
        except Invalid as exc:
            raise PipelineError(f"transform: expected {exc.expected}", self.text, element.loc) from None
        return s.make_transform(values, "launch", None)


def _import(reference: str, text: str, loc: int, what: str = "appsink callback"):
    import importlib

    module, _, function = reference.partition(":")
    try:
        loaded = importlib.import_module(module)
    except Exception as exc:  # (a relative name, "..", was a TypeError past the pipeline's errors: a traceback)
        raise PipelineError(f"{what} {reference!r}: {type(exc).__name__}: {exc}", text, loc) from None
    found = getattr(loaded, function, None)
    if not callable(found):
        raise PipelineError(f"{what} {reference!r}: module {module!r} has no function {function!r} (MODULE:FUNCTION)",
                            text, loc)
    return found


def build_settings(text: str, callbacks=None, data_dir: str = "var", strategies_dir: str = "strategies") -> s.Settings:
    """Settings of a launch text; raise LaunchSyntaxError or PipelineError."""
    from lorrygate.config.loader import loads

    builder = _Builder(text, dict(callbacks or {}))
    chains = parse(text)
    for chain, following in zip(chains, chains[1:] + [None]):
        builder.chain(chain, following and following.elements[0])
    if not builder.channels:
        raise PipelineError("a pipeline needs a chain that starts with a source", text, 0)
    for channel, places in zip(builder.channels, builder.places):
        if not channel.storage:
            raise PipelineError(f"tee of chain {channel.name} has no branch (add NAME. ! sink)", text, places["tee"])
    # Strategies and decoders come from the same registries as in ini files.
    base = loads(f"[lorrygate]\nstrategies = {strategies_dir}\n[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///x\n"
                 "[channel:c]\ntopics = #\n", source="<launch>")
    registry = dict(base.strategies, **builder.strategies)
    for channel, places in zip(builder.channels, builder.places):
        if channel.strategy not in registry:
            raise PipelineError(f"unknown strategy {channel.strategy!r}{did_you_mean(channel.strategy, registry)} (one of "
                                f"{', '.join(sorted(registry))})", text, places["strategy"])
        unknown = [name for name in channel.decoders if name not in base.decoders]
        if unknown:
            raise PipelineError(f"unknown decoder {unknown[0]!r}{did_you_mean(unknown[0], base.decoders)} (one of "
                                f"{', '.join(sorted(base.decoders))})", text, places["decode"])
    from lorrygate.config.loader import feedback_cycles, feedback_loops, plain_text_passwords

    for name, _, what in feedback_loops(builder.channels, builder.brokers, builder.storages):
        at = next(places["source"] for channel, places in zip(builder.channels, builder.places) if channel.name == name)
        raise PipelineError(f"a sink that feeds its source: {what}", text, at)
    from lorrygate.config.loader import check_tag_placeholders

    for channel, places in zip(builder.channels, builder.places):
        def problem(section, key, expected, got, at=places["transform"]):
            raise PipelineError(f"transform {key}: expected {expected}, got {got}", text, at)

        if channel.transform is not None and channel.transform.tags:
            check_tag_placeholders("", channel.transform.tags, registry[channel.strategy], problem)
        broker = builder.brokers.get(channel.source)
        if channel.transform is not None and channel.transform.headers and (
                broker is None or broker.type not in ("mqtt", "amqp", "kafka", "redis")
                or (broker.type == "mqtt" and broker.protocol != "5")
                or (broker.type == "redis" and channel.mode == "pubsub")):
            raise PipelineError("transform headers: expected a source that sends headers (mqtt:// with protocol=5: "
                                "MQTT 5's user properties; amqp://; kafka://; redis:// streams: an entry's fields "
                                "beside its payload)", text, places["transform"])
    gateway = s.GatewaySettings(data_dir=data_dir, control="off", log_format="text", strategies=strategies_dir,
                                metrics=builder.metrics)
    # chains that feed each other round: a warning, as in a config
    warnings = tuple(feedback_cycles("<launch>", builder.channels, builder.brokers, builder.storages)) + tuple(
        f"<launch> {name}: {meant}" for name, storage in builder.storages.items()
        if storage.kind == "sqlite" and (meant := root_meant(storage.url.path, os.getcwd()))) + tuple(
        plain_text_passwords("<launch>", builder.brokers, builder.storages))
    return s.Settings("<launch>", gateway, builder.brokers, builder.storages, tuple(builder.channels), registry,
                      base.decoders, sources=builder.sources, warnings=warnings)


@attrs.define(eq=False)
class Pipeline:
    """A runnable pipeline; nothing connects before `start` or `run`."""

    settings: s.Settings
    text: str | None = None
    _gateway: Any = None

    @classmethod
    def from_config(cls, path: str) -> "Pipeline":
        from lorrygate.config import load

        return cls(load(path))

    @property
    def channels(self) -> tuple:
        return self.settings.channels

    def start(self, reactor=None) -> Deferred:
        """Start on the reactor; the Deferred fires once sources are connecting."""
        from lorrygate.service.gateway import Gateway

        if reactor is None:
            from twisted.internet import reactor
        self._gateway = Gateway.from_settings(self.settings, reactor)
        return Deferred.fromCoroutine(self._gateway.start())

    def when_ready(self) -> Deferred:
        """After `start`: fires once every source has subscribed (MQTT: the broker acknowledged every
        subscription; AMQP: the queue is bound), so that what is published from then on reaches the pipeline.
        `start` fires earlier, while the sources are still connecting."""
        if self._gateway is None:
            raise RuntimeError("when_ready() is for a started pipeline: call start() first")
        return self._gateway.when_ready()

    def stop(self) -> Deferred:
        """Commit what is buffered, acknowledge it, disconnect."""
        gateway, self._gateway = self._gateway, None
        if gateway is None:
            from twisted.internet.defer import succeed

            return succeed(None)
        return Deferred.fromCoroutine(gateway.stop())

    def run(self, log_format: str = "text", log_level: str = "info") -> int:
        """Run until SIGTERM or SIGINT (blocking); return the exit code."""
        from lorrygate.cli import run

        return run(self.settings, log_format, log_level)

    def describe(self, topics=(), fields=()) -> str:
        from lorrygate.pipeline.describe import describe

        return describe(self.settings, topics, fields)


def parse_launch(text: str, callbacks=None, data_dir: str = "var", strategies_dir: str = "strategies") -> Pipeline:
    """A `Pipeline` from the launch language, without running it.

    ``callbacks`` maps appsink names to Python callables.
    """
    return Pipeline(build_settings(text, callbacks, data_dir, strategies_dir), text)

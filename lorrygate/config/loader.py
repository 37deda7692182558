"""
Read an ini file into `Settings`, reporting every problem in one go.

Each problem reads ``etc/gateway.ini [section] key: expected ..., got ...``.
Unknown sections and keys are problems; values of secret keys never appear in
a message.
"""

import configparser
import difflib
import importlib
import os
import re
from collections import deque
from typing import Any

import attrs

from lorrygate.config import settings as s
from lorrygate.config.paths import files_read, moved, resolve, resolve_value, root_meant
from lorrygate.config.values import Invalid, Secret, address_text, interpolate, mask_url
from lorrygate.errors import ConfigError, ConfigProblem, did_you_mean

_NO_DEFAULT_SECTION = "\0lorrygate-no-default-section"


def load(path: str, on_storage=None) -> s.Settings:
    """Load and validate a config file; raise `ConfigError` listing every problem.

    ``on_storage(storage)`` is called with each valid storage section as soon as it is read, before the
    decoders and strategies are imported and the channels checked (``lorrygate run`` starts reading an
    SQLite database's schema then, `lorrygate.storage.sqlite_schema.read_ahead`)."""
    try:
        # (utf-8-sig: a file saved by Windows' Notepad starts with a byte order mark, which was a key before the
        # first section's header)
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, "", None, "a readable config file", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(path, "", None, "a UTF-8 text file",
                                         f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}, which is not UTF-8")
                           ]) from None
    return loads(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)), on_storage=on_storage)


def load_gateway(path: str) -> s.GatewaySettings:
    """Only the ``[lorrygate]`` section of a config file, for ``status`` and
    ``flush``: they need the control endpoint, not the secrets of brokers and
    storages. Raise `ConfigError` for that section's problems."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(path, "", None, "a readable UTF-8 config file", str(exc))]) from None
    parser = configparser.ConfigParser(interpolation=None, strict=False, default_section=_NO_DEFAULT_SECTION)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError([_syntax_problem(path, exc)]) from None
    items = parser["lorrygate"].items() if parser.has_section("lorrygate") else ()
    section = "\n".join(f"{key} = {value}" for key, value in items)
    minimal = f"[lorrygate]\n{section}\n[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///x\n[channel:c]\ntopics = #\n"
    # (without importing the drop-in modules: a module being edited, broken on disk, made status and flush fail to
    # reach the gateway that runs the one it imported at its start)
    return loads(minimal, source=path, base_dir=os.path.dirname(os.path.abspath(path)), drop_ins=False).gateway


def loads(text: str, source: str = "<string>", base_dir: str = ".", on_storage=None, drop_ins: bool = True
          ) -> s.Settings:
    """Validate config text; ``source`` names it in messages (``on_storage``: see `load`; ``drop_ins``: whether
    the modules of the strategies directory are imported, not for `load_gateway`)."""
    problems = []
    parser = configparser.ConfigParser(
        interpolation=None,
        strict=True,
        default_section=_NO_DEFAULT_SECTION,
        empty_lines_in_values=False,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    unclosed = _unclosed_header(source, text)
    if unclosed is not None:
        raise ConfigError([unclosed])
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError([_syntax_problem(source, exc)]) from None

    def problem(section, key, expected, got):
        problems.append(ConfigProblem(source, section, key, expected, got))

    notes: list = []  # warnings found while reading the sections
    read_files: list = []  # the files the values make the gateway read (`paths.files_read`): --reload watches them

    def read_section(section: str, keys: dict) -> dict:
        raw = parser[section]
        result = {}
        for key in raw:
            if key not in keys:
                known = _keys_of(section, raw, keys)
                problem(section, key, f"one of the keys {', '.join(sorted(known))}",
                        f"unknown key {key!r}{_key_meant(section, raw, key) or did_you_mean(key, known)}")
        for key, spec in keys.items():
            if key not in raw or (raw[key].strip() == "" and spec.default is not s.REQUIRED):
                if spec.default is s.REQUIRED:
                    kind = section.partition(":")[0].strip()
                    problem(section, key, "a value (this key is required)", "nothing" + _required_hint(kind, key, raw))
                    result[key] = None
                else:
                    result[key] = spec.default
                continue
            value = raw[key]
            # (a URL may carry a password in its user info or its query: shown masked)
            shown = "a hidden value" if spec.secret else repr(mask_url(value) if "://" in value else value)
            kind = section.partition(":")[0].strip()
            try:
                value = interpolate(value, base_dir)
                given = value.strip()
                value = resolve_value(kind, key, value, base_dir)
                read_files.extend(files_read(kind, key, raw[key], value, base_dir))
                why = None
                if (kind, key) == ("lorrygate", "data_dir"):
                    why = moved(given, base_dir, "data_dir")
                elif (kind, key) == ("storage", "url") and given.startswith("sqlite:///"):
                    why = moved(given[len("sqlite:///"):], base_dir, "sqlite")
                    meant = root_meant(given[len("sqlite:///"):].split("?", 1)[0], os.path.abspath(base_dir))
                    if meant:
                        notes.append(f"{source} [{section}] url: {meant}")
                if why:
                    problem(section, key, "a path that names lorrygate's files", why)
                    result[key] = None
                    continue
                parsed = spec.parse(value)
            except Invalid as exc:
                if not spec.secret and re.search(r"\s[#;]", raw[key]):
                    shown += " (comments go on their own line, not after a value)"
                problem(section, key, exc.expected, shown)
                result[key] = None
                continue
            result[key] = Secret(parsed) if spec.secret else parsed
            if "${" not in raw[key] and (spec.secret or ("://" in given and mask_url(given) != given)):
                notes.append(f"{source} [{section}] {key}: a secret written in the file itself (whoever reads the "
                             "file, or a copy of it shared for help, reads it): give it as ${ENV:NAME} or "
                             "${FILE:path}" + (", the whole URL or its password" if not spec.secret else ""))
        return result

    gateway = s.GatewaySettings()
    brokers, storages, channels, strategy_sections, decoder_sections, hook_sections = {}, {}, [], {}, {}, {}
    sources, dataflows = {}, {}
    broken_channels: list = []  # (section, values) of the channels with a value that is invalid
    for section in parser.sections():
        if section == "lorrygate":
            values = read_section(section, s.GATEWAY_KEYS)
            control = values.get("control") or ""
            interface = control.partition(":interface=")[2]
            if control.startswith("tcp:") and interface not in s.LOOPBACK \
                    and not values.get("control_token"):
                problem(section, "control", "a loopback interface (tcp:PORT:interface=127.0.0.1), or a "
                        "control_token (from ${FILE:path}) for an endpoint others can reach", repr(control))
            gateway = s.GatewaySettings(**values)
            socket_path = (gateway.control_endpoint or "").partition("unix:")[2]
            if len(os.fsencode(socket_path)) > s.UNIX_PATH_LIMIT:
                # (the gateway ran without its control endpoint: no status, no flush, no /health for a probe)
                problem(section, "control" if control else "data_dir",
                        f"a Unix socket path of at most {s.UNIX_PATH_LIMIT} bytes for the control endpoint: "
                        + ("give a shorter one, or control = tcp:PORT" if control else
                           "give control = unix:/run/lorrygate/control.sock (or tcp:PORT), or a shorter data_dir "
                           "(the socket is <data_dir>/lorrygate.sock)"),
                        f"the socket {socket_path!r} ({len(os.fsencode(socket_path))} bytes)")
            continue
        kind, _, name = section.partition(":")
        kind, name = kind.strip(), name.strip()
        if kind not in s.SECTION_KINDS or not name:
            problem(
                section,
                None,
                "a section named [lorrygate], [broker:NAME], [source:NAME], [storage:NAME], [strategy:NAME], "
                "[decoder:NAME], [hook:NAME], [transform:NAME] or [channel:NAME]",
                f"[{section}]{_section_meant(kind, name)}",
            )
            continue
        values = read_section(section, s.SECTION_KINDS[kind])
        if any(value is None and s.SECTION_KINDS[kind][key].default is not None for key, value in values.items()):
            if kind == "channel":
                broken_channels.append((section, values))  # (its names are still checked: every problem at once)
            continue
        if kind == "broker":
            _check_tls_files(section, values, problem)
            if values.get("type") == "mqtt" and values.get("protocol") == "3.1.1" and values.get("password") is not None \
                    and not values.get("username"):
                problem(section, "password", "a username too: MQTT 3.1.1 sends a password only with a user name "
                        "(MQTT-3.1.2-22), or protocol = 5", "a password without a username")
            broker = s.make_broker(name, values, section, problem)
            if broker is not None:
                brokers[name] = broker
        elif kind == "storage":
            _check_tls_files(section, values, problem)
            storage = s.make_storage(name, values, section, problem)
            if storage is not None:
                storages[name] = storage
                if on_storage is not None:
                    on_storage(storage)
        elif kind == "strategy":
            strategy_sections[name] = (section, values)
        elif kind == "decoder":
            decoder_sections[name] = (section, values)
        elif kind == "hook":
            hook_sections[name] = (section, values)
        elif kind == "transform":
            dataflow = s.make_dataflow(name, values, section, problem, base_dir)
            if dataflow is not None:
                dataflows[name] = dataflow
        elif kind == "source":
            _check_tls_files(section, values, problem)
            made = s.make_source(name, values, section, problem)
            if made is not None:
                if f"broker:{name}" in parser.sections():
                    problem(section, None, "a source name no [broker:NAME] has too", repr(name))
                sources[name] = made
        else:
            channels.append((section, s.make_channel(name, values), values))

    _check_metrics(gateway, storages, problem)
    # Defaults are paths too: relative to the config's folder.
    base = os.path.abspath(base_dir)
    default_strategies = gateway.strategies == s.DEFAULT_STRATEGIES
    if not (parser.has_section("lorrygate") and "data_dir" in parser["lorrygate"]):
        why = moved("var", base, "data_dir")
        if why:
            problem("lorrygate", "data_dir", "a path that names lorrygate's files (data_dir is var when not given)", why)
    gateway = attrs.evolve(gateway, data_dir=resolve(gateway.data_dir or "var", base),
                           strategies=resolve(gateway.strategies, base))
    # imported here, not with this module: the storages above are read first (see `load`)
    from lorrygate import plugins

    modules = plugins.load_modules(gateway.strategies, problems) if drop_ins else []
    unimported = tuple(p.source for p in problems if p.expected == plugins.IMPORTS_CLEANLY)
    available = plugins.installed()
    strategies = build_strategies(gateway, modules, strategy_sections, problem, problems, default_strategies, available)
    decoders = build_decoders(modules, decoder_sections, problem, problems, base_dir, available)
    for section, values in broken_channels:
        _check_channel(section, _named_parts(values), parser, strategies, decoders, problem, modules, unimported,
                       gateway.strategies if drop_ins else None)
    built = []
    for section, channel, values in channels:
        # With a single broker or storage, a channel may leave it out.
        for key, kind in (("source", "broker"), ("storage", "storage")):
            if not getattr(channel, key):
                only = _only(parser, kind) or (_only(parser, "source") if kind == "broker" else "")
                if not only:
                    problem(section, key, f"a value (required unless exactly one [{kind}:NAME] is defined)", "nothing")
                    continue
                channel = attrs.evolve(channel, source=only) if key == "source" else attrs.evolve(channel, storage=only)
        strategy_type = strategy_sections[channel.strategy][1]["type"] if channel.strategy in strategy_sections else None
        if strategy_type is not None:
            # a declared strategy of a built-in type (a wan strategy that accepts some networks only) has the
            # chain and the values policy of its type: it had the defaults of any other name (json, value;
            # as-sent), so Kotori's numbers from text were lost by naming the networks
            if not values["decoders"]:
                chain = s.strategy_decoders(strategy_type)
                if strategy_type == "zigbee2mqtt" and strategy_sections[channel.strategy][1]["output"] == "attribute_and_json":
                    chain = ("zigbee2mqtt",) + chain  # it ignores the copies of the values
                channel = attrs.evolve(channel, decoders=chain)
            if not values["values"]:
                channel = attrs.evolve(channel, values=s.strategy_values(strategy_type))
            if not values["retained"]:
                channel = attrs.evolve(channel, retained=s.strategy_retained(strategy_type))
        if not channel.topics:
            if channel.source in sources:  # files, a poll, a socket, ...: every message of its source
                channel = attrs.evolve(channel, topics=("#",))
            elif channel.source and f"source:{channel.source}" in parser.sections():
                pass  # a [source:NAME] whose own problems were said: no broker's topics to ask for
            elif channel.source:
                problem(section, "topics", "a value (required for a channel of a broker: the filters to subscribe "
                        "to, such as mqttkit-1/#)", "nothing")
        _check_channel(section, channel, parser, strategies, decoders, problem, modules, unimported,
                       gateway.strategies if drop_ins else None)
        broker = brokers.get(channel.source)
        if broker is not None:
            for key, only in s.CHANNEL_TYPE_KEYS.items():
                if broker.type not in only.split(", ") and key in parser[section]:
                    article = "an" if broker.type in ("amqp", "mqtt") else "a"
                    problem(section, key, f"no {key} for a channel of {article} {broker.type} broker (it is for {only})",
                            repr(parser[section][key]))
            if broker.type == "mqtt" and broker.protocol != "5" and values["headers"]:
                problem(section, "headers", f"protocol = 5 on [broker:{broker.name}] (headers are MQTT 5's user "
                        "properties; MQTT 3.1.1 sends none)", repr(parser[section]["headers"]))
            if broker.type == "redis" and channel.mode == "pubsub" and values["headers"]:
                problem(section, "headers", "mode = streams (headers are the fields of a stream's entries beside "
                        "its payload; a pub/sub message has none)", repr(parser[section]["headers"]))
            if broker.type == "mqtt" and channel.group and any(c in channel.group for c in "/+#"):
                problem(section, "group", "a group name without / + or # (it becomes $share/<group>/<filter>)",
                        repr(channel.group))
            modes = {"redis": ("streams", "pubsub"), "zmq": ("sub", "pull")}.get(broker.type, ())
            if channel.mode and channel.mode not in modes:
                problem(section, "mode", f"one of {', '.join(modes)} for a {broker.type} broker", repr(channel.mode))
            if values["error_topic"] and broker.type not in s.REPORTING_BROKERS:
                problem(section, "error_topic", f"no error_topic = true for a channel of a {broker.type} broker "
                        f"({NO_REPORTS})", repr(parser[section]["error_topic"]))
        made = sources.get(channel.source)
        if made is not None:
            # (taken without a word, and nothing read them: a poll source's qos = 2, a files source's group)
            for key, only in s.CHANNEL_TYPE_KEYS.items():
                if key != "headers" and key in parser[section]:
                    problem(section, key, f"no {key} for a channel of a {made.type} source (it is for the channels "
                            f"of {only} brokers)", repr(parser[section][key]))
            if values["error_topic"]:
                problem(section, "error_topic", f"no error_topic = true for a channel of a {made.type} source "
                        f"({NO_REPORTS})", repr(parser[section]["error_topic"]))
        if made is not None and values["headers"]:
            if made.type == "http":  # (HTTP's field names are compared without case)
                values["headers"] = tuple((name.lower(), tag) for name, tag in values["headers"])
            else:
                problem(section, "headers", f"no headers for a channel of a {made.type} source (they are for "
                        "http sources and the channels of mqtt, amqp, kafka and redis brokers)",
                        repr(parser[section]["headers"]))
        if values["tags"] and channel.strategy in strategies:
            check_tag_placeholders(section, values["tags"], strategies[channel.strategy], problem)
        hook = _resolve_hook(section, values["hook"], modules, problem) if values["hook"] else None
        ddl = None
        if values["ddl"] and channel.storage in storages:
            try:
                ddl = s.ddl_template(values["ddl"], storages[channel.storage].kind)
            except ValueError as exc:
                problem(section, "ddl", "a DDL template", f"one that fails: {exc}")
        dataflow = None
        if values["transform"]:
            dataflow = dataflows.get(values["transform"])
            if dataflow is None and f"transform:{values['transform']}" not in parser.sections():
                known = ", ".join(sorted(dataflows)) or "none defined"
                problem(section, "transform", f"the name of a [transform:NAME] section ({known})",
                        repr(values["transform"]))
        built.append(attrs.evolve(channel, transform=s.make_transform(values, channel.source, hook), ddl=ddl,
                                  dataflow=dataflow))
    hooks = build_hooks(hook_sections, storages, modules, problem)
    # a source that listens (a Unix socket, an HTTP port) serves one channel: a second would listen there too
    listeners: dict = {}
    for channel in built:
        made = sources.get(channel.source)
        if made is not None and made.type in ("socket", "http"):
            if channel.source in listeners:
                problem(f"channel:{channel.name}", "source", f"a source no other channel reads (a {made.type} source "
                        f"listens for one channel; {listeners[channel.source]!r} reads {channel.source!r})",
                        repr(channel.source))
            listeners.setdefault(channel.source, channel.name)
    # Tributary graphs: module:function of the strategies directory or an installed module
    for name, made in list(sources.items()):
        if made.type == "tributary":
            function = _resolve_hook(f"source:{name}", made.graph, modules, problem, key="graph")
            sources[name] = attrs.evolve(made, function=function)
    for name, storage in list(storages.items()):
        if storage.kind == "tributary":
            function = _resolve_hook(f"storage:{name}", storage.graph, modules, problem, key="graph")
            storages[name] = attrs.evolve(storage, callback=function)
    for channel in built:
        kinds = [storages[name].kind for name in channel.storages if name in storages]
        if channel.ddl is not None and kinds and not set(kinds) & set(s.STORAGE_KIND_KEYS["ddl"]):
            # (a sink has no tables: the template was taken and did nothing)
            problem(f"channel:{channel.name}", "ddl", "a channel that writes to a SQLite, PostgreSQL or CrateDB "
                    "storage", f"storage = {', '.join(channel.storages)}")
    merging = [channel for channel in built if channel.merge is not None]
    for channel in merging:
        kinds = [storages[name] for name in channel.storages if name in storages]
        if kinds and not any(storage.kind in s.STORAGE_KIND_KEYS["merge"] for storage in kinds):
            problem(f"channel:{channel.name}", "merge", "a channel that writes to a SQLite, PostgreSQL or CrateDB "
                    "storage", f"storage = {', '.join(channel.storages)}")
        for storage in kinds:
            if storage.kind in s.STORAGE_KIND_KEYS["merge"] and storage.layout != "per-address":
                problem(f"channel:{channel.name}", "merge", "per-address tables (layout = per-address in "
                        f"[storage:{storage.name}]): rows are merged in a table of their address",
                        f"layout = {storage.layout}")
    for name, storage in list(storages.items()):
        own = tuple((channel.name, channel.merge) for channel in merging if name in channel.storages)
        if own and storage.kind in s.STORAGE_KIND_KEYS["merge"]:
            storages[name] = attrs.evolve(storage, channel_merge=own)
    for channel_name, _, what in feedback_loops(built, brokers, storages):
        problem(f"channel:{channel_name}", "storage", "storages that do not feed the channel its own messages",
                what)
    if not channels and not any(section.startswith("channel:") for section in parser.sections()):
        problem("channel:NAME", None, "at least one [channel:NAME] section", "none")
    if problems:
        raise ConfigError(problems)
    fingerprints: dict[str, Any] = {section: tuple(parser[section].items()) for section in parser.sections()
                    if section.partition(":")[0].strip() in ("strategy", "decoder", "transform")}
    # (the channels' own code: a reload restarts a channel whose code changed, not every channel for any edit)
    from lorrygate.config.code_identity import code_of, files_digest

    channel_codes, hook_codes, graph_codes = code_of(
        gateway.strategies, modules, built, hooks, parser, decoder_sections,
        [m for d in dataflows.values() for m in d.modules if m.endswith(".py")], storages)
    for name, digest in channel_codes.items():
        fingerprints[f"code:{name}"] = digest
    for name, digest in hook_codes.items():
        hooks[name] = attrs.evolve(hooks[name], code=digest)
    for name, digest in graph_codes.items():
        storages[name] = attrs.evolve(storages[name], code=digest)
    # (a certificate renewed on disk: a reload restarts what connects or listens with it, which reads it again)
    for kind, parts in (("broker", brokers), ("source", sources), ("storage", storages)):
        for name, part in parts.items():
            paths = [getattr(part, key, "") for key in ("tls_ca", "tls_cert", "tls_key")]
            if any(paths):
                fingerprints[f"tls:{kind}:{name}"] = files_digest(paths)
    read_files += [os.path.abspath(m) for d in dataflows.values() for m in d.modules if m.endswith(".py")]
    return s.Settings(source, gateway, brokers, storages, tuple(built), strategies, decoders, fingerprints, hooks,
                      sources, files=tuple(sorted(set(read_files))),
                      warnings=tuple(doubled_routes(source, built, brokers)
                                     + feedback_cycles(source, built, brokers, storages)
                                     + unfit_source_topics(source, built, sources, strategies)
                                     + unread_headers(source, built, sources, decoder_sections)
                                     + budgets_beyond_limits(source, storages) + open_live_views(source, storages)
                                     + open_http_sources(source, sources)
                                     + plain_text_passwords(source, brokers, storages) + notes))


def column_limit(kind: str) -> int | None:
    """The most columns a table of a storage of this kind can have (None: no such limit that lorrygate knows)."""
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(":memory:")
        try:
            return conn.getlimit(sqlite3.SQLITE_LIMIT_COLUMN)
        finally:
            conn.close()
    from lorrygate.storage.layout import POSTGRESQL_COLUMN_LIMIT

    return POSTGRESQL_COLUMN_LIMIT if kind == "postgresql" else None


def budgets_beyond_limits(source: str, storages: dict) -> list:
    """Warnings for a ``max_columns`` above what a table of the database can have: the storage holds it to that."""
    warnings = []
    for storage in storages.values():
        limit = column_limit(storage.kind)
        if limit is not None and storage.max_columns > limit:
            database = "SQLite" if storage.kind == "sqlite" else "PostgreSQL"
            warnings.append(f"{source} [storage:{storage.name}] max_columns: {storage.max_columns} is more columns than "
                            f"a {database} table can have ({limit}): a table gets at most {limit}, the fields beyond "
                            f"go into extra_fields. Set max_columns = {limit} or less")
    return warnings


def unread_headers(source: str, channels, sources: dict, decoder_sections: dict) -> list:
    """Warnings for a channel of a files source with ``header = true`` whose decoders have no CSV one: each line
    goes out behind its file's header line, which only a csv decoder reads, so every line was a dead letter."""
    from lorrygate.decoding import DECODERS

    kinds = {name: values.get("type") for name, (_, values) in decoder_sections.items()}
    warnings = []
    for channel in channels:
        made = sources.get(channel.source)
        if made is None or made.type != "files" or not made.header or made.topic.endswith("data.csv"):
            continue  # (data.csv: the suffix picks the csv decoder)
        names = channel.decoders
        if any(name == "csv" or kinds.get(name) == "csv" for name in names):
            continue
        if any(name not in DECODERS and kinds.get(name) in (None, "javascript") for name in names):
            continue  # a decoder of your own may read them
        warnings.append(f"{source} [channel:{channel.name}]: source {made.name} has header = true, so each line "
                        f"comes behind its file's header line, which only a csv decoder reads; the channel's "
                        f"decoders ({', '.join(names)}) have none, so every line would be a dead letter. Set "
                        f"decoders = csv (or name a [decoder:NAME] of type = csv)")
    return warnings


def open_live_views(source: str, storages: dict) -> list:
    """Warnings for a WebSocket sink that listens beyond loopback: it has no authentication of its own, and serves
    every row it is given to whoever reaches the address."""
    from urllib.parse import urlsplit

    warnings = []
    for storage in storages.values():
        if storage.kind != "websocket":
            continue
        host = urlsplit(storage.url.raw).hostname or "127.0.0.1"
        if host not in s.LOOPBACK:
            warnings.append(f"{source} [storage:{storage.name}] url: the live view on {host} serves every row its "
                            f"channels store to whoever reaches that address, without authentication; keep it on "
                            f"127.0.0.1 behind a reverse proxy that authenticates, where others than this machine "
                            f"look at it")
    return warnings


def open_http_sources(source: str, sources: dict) -> list:
    """Warnings for an HTTP source that listens beyond loopback without a token (whoever reaches it stores what
    they like: devices that send none, an Ecowitt station, belong on a network of their own), or with a token
    but plain HTTP (the token travels in clear)."""
    warnings = []
    for made in sources.values():
        if made.type != "http" or made.listen[0] in s.LOOPBACK:
            continue
        where = f"{source} [source:{made.name}] listen: the HTTP source on {address_text(*made.listen)}"
        if not made.token:
            warnings.append(f"{where} stores whatever anyone who reaches it posts, without authentication; set "
                            f"token = ${{ENV:...}} (devices that send no token belong on a network of their own, "
                            f"or keep it on 127.0.0.1 behind a reverse proxy that authenticates)")
        elif not made.tls_cert:
            warnings.append(f"{where} takes its token over plain HTTP, where anyone on the way reads it; set "
                            f"tls_cert and tls_key (HTTPS), or keep it on 127.0.0.1 behind a reverse proxy that "
                            f"speaks HTTPS")
    return warnings


def plain_text_passwords(source: str, brokers: dict, storages: dict) -> list:
    """Warnings for a password that goes in plain text beyond loopback: a broker's without ``tls = true``, and a
    sink URL's whose scheme has no TLS (crate://, mqtt://, kafka://, pushgateway://). Anyone on the way reads
    it; nothing said so. (PostgreSQL's libpq tries TLS first of its own: ``sslmode`` is the URL's to set.)"""
    from urllib.parse import urlsplit

    warnings = []
    for broker in brokers.values():
        if broker.password and not broker.tls and broker.host not in s.LOOPBACK:
            warnings.append(f"{source} [broker:{broker.name}] password: it goes in plain text to {broker.host} "
                            f"(tls = false), where anyone on the way reads it; set tls = true and the broker's TLS "
                            f"port (in a URL: mqtts://, amqps://, rediss://, kafkas://)")
    secure = {"crate": "crate+https://", "mqtt": "mqtts://", "kafka": "kafkas://"}
    for storage in storages.values():
        if storage.kind not in ("crate", "mqtt", "kafka", "prometheus"):
            continue
        parts = urlsplit(storage.url.raw)
        if parts.password and parts.scheme in ("crate", "crate+http", "mqtt", "kafka", "pushgateway") \
                and (parts.hostname or "") not in s.LOOPBACK:
            better = (f"use {secure[storage.kind]}" if storage.kind in secure else
                      "keep the Pushgateway on this machine or a network of its own (pushes go over HTTP)")
            warnings.append(f"{source} [storage:{storage.name}] url: its password goes in plain text to "
                            f"{parts.hostname}, where anyone on the way reads it; {better}")
    return warnings


def unfit_source_topics(source: str, channels, sources: dict, strategies: dict) -> list:
    """Warnings for a channel of a [source:NAME] whose topics its strategy refuses: every message of the source
    would be a dead letter (a files source's default topic, ``<source>/{stem}``, under the default strategy, wan,
    which wants realm/network/gateway/node/data.json). The topic is tried with each placeholder filled in."""
    from lorrygate.errors import Ignored, TopologyError

    warnings = []
    for channel in channels:
        made = sources.get(channel.source)
        if made is None or channel.strategy not in strategies or made.type == "http":
            continue  # (an HTTP source's topics are its clients' paths)
        template = {"iio": "{topic}/{{device}}", "pgcdc": "{topic}/{{schema}}/{{table}}"}.get(
            made.type, "{topic}").format(topic=made.topic)
        if "{path}" in template:
            continue  # as many levels as the directories below the glob
        topic = re.sub(r"\{[^{}]*\}", "x", template)
        try:
            strategies[channel.strategy]().match(topic)
        except Ignored:
            continue
        except TopologyError as exc:
            such = "" if "strategy = topic" in exc.reason else " (such as strategy = topic)"
            warnings.append(f"{source} [channel:{channel.name}]: the strategy {channel.strategy} refuses the topics of "
                            f"source {made.name} ({template}: {exc.reason}), so every message of it is a dead letter. "
                            f"Set [source:{made.name}] topic to one it takes, or the channel's strategy{such}")
        except Exception:  # noqa: S112 - a user's strategy: what it does with a made-up topic proves nothing
            continue
    return warnings


def doubled_routes(source: str, channels, brokers: dict) -> list:
    """Warnings for two channels that store the same messages twice: they subscribe overlapping topic filters on one
    MQTT broker (each gets its own copy of a message) outside a gateway group they share, or bind queues of their
    own to one AMQP exchange with overlapping filters, and hand them to the same strategy and a storage they share,
    so that each message becomes its rows twice in the same tables (a channel section copied and its topics not
    changed). Overlaps that an ``ignore`` filter of either channel covers are none."""
    from lorrygate.mqtt.topics import covers, intersection, parse_filter

    warnings = []
    for index, first in enumerate(channels):
        broker = brokers.get(first.source)
        if broker is None or broker.type not in ("mqtt", "amqp"):
            continue
        for second in channels[index + 1:]:
            if second.source != first.source or second.strategy != first.strategy:
                continue
            if broker.type == "mqtt" and first.group and first.group == second.group:
                continue  # members of one group: the broker gives each message to one of them
            if broker.type == "amqp" and ((first.queue or f"lorrygate.{first.name}")
                                          == (second.queue or f"lorrygate.{second.name}")
                                          or first.exchange != second.exchange):
                continue  # one queue: its consumers take turns; another exchange: other messages
            shared = [name for name in first.storages if name in second.storages]
            if not shared:
                continue
            ignores = [parse_filter(f).pattern for f in first.ignore + second.ignore]
            for a in first.topics:
                for b in second.topics:
                    fa, fb = parse_filter(a), parse_filter(b)
                    if fa.share_group is not None and fa.share_group == fb.share_group:
                        continue  # written as $share/<group>/...: one group, as above
                    both = intersection(fa.pattern, fb.pattern)
                    if both is None or any(covers(ignore, both) for ignore in ignores):
                        continue
                    warnings.append(
                        f"{source} [channel:{first.name}] and [channel:{second.name}]: both subscribe {both!r} on "
                        f"broker {first.source} ({a!r}, {b!r}) and store into {shared[0]} with the strategy "
                        f"{first.strategy}: each such message is stored twice. Give one of them other topics, or an "
                        f"ignore filter")
    return warnings


#: host names that are this machine, one broker whichever a URL names
_THIS_MACHINE = frozenset({"", "localhost", "127.0.0.1", "::1", "ip6-localhost", "localhost.localdomain"})


def _same_broker(first, second) -> bool:
    def where(broker) -> tuple:
        host = broker.host.lower().strip("[]")
        return "localhost" if host in _THIS_MACHINE else host, broker.port

    return where(first) == where(second)


def _looping_topic(template: str, filters: list, ignores: list, inputs: list | None = None) -> tuple[str, str] | None:
    """(a topic ``template`` gives for a message of one of ``inputs`` (default: ``filters``), the filter of
    ``filters`` that matches it), if there is one that no ``ignores`` filter matches; the placeholders are tried
    with each level of a topic of the input filter (and ``x``), ``#`` as one to five levels."""
    import itertools
    import string

    from lorrygate.mqtt.topics import topic_matches

    names = list(dict.fromkeys(field for _, field, _, _ in string.Formatter().parse(template) if field))
    others = [name for name in names if name != "topic"]
    samples = [pattern.replace("+", "x").replace("#", "/".join(["x"] * depth))
               for pattern in (inputs or filters) for depth in ((1, 2, 3, 5) if pattern.endswith("#") else (1,))]
    for sample in samples:
        levels = sorted(set(sample.split("/")) | {"x"})
        # (at most ~2,000 topics in all: a template of every placeholder over five filters took 0.8 s a load)
        for combination in itertools.islice(itertools.product(levels, repeat=len(others)), 2_000 // len(samples) + 1):
            topic = template.format_map(dict(zip(others, combination), topic=sample))
            again = next((other for other in filters if topic_matches(other, topic)), None)
            if again is not None and not any(topic_matches(ignore, topic) for ignore in ignores):
                return topic, again
    return None


#: why a channel of a source that cannot publish takes no error_topic = true
NO_REPORTS = ("error reports are published to the brokers of mqtt, amqp and redis channels; a bad message is kept as a "
              "dead letter in any case: lorrygate dead-letters list")


def feedback_loops(channels, brokers: dict, storages: dict) -> list:
    """(channel, storage, what) for each MQTT sink of a channel that publishes, on the broker the channel
    subscribes, to a topic the channel's own filters match: each message it publishes would come back to it
    and be published again, without end (``loop/#`` relayed to ``loop/relayed/{topic}`` went on until the
    topic had 200 levels and the broker closed the connection)."""
    from lorrygate.mqtt.topics import parse_filter

    found = []
    for channel in channels:
        broker = brokers.get(channel.source)
        if broker is None or broker.type != "mqtt":
            continue
        filters = [parse_filter(text).pattern for text in channel.topics]
        ignores = [parse_filter(text).pattern for text in channel.ignore]
        for name in channel.storages:
            storage = storages.get(name)
            if storage is None or storage.kind != "mqtt" or storage.broker is None:
                continue
            if not _same_broker(storage.broker, broker):
                continue
            loop = _looping_topic(storage.topic, filters, ignores)
            if loop is not None:
                found.append((channel.name, name, (
                    f"storage {name!r} publishes {storage.topic!r} to the broker this channel subscribes "
                    f"({broker.host}:{broker.port}), and a message it publishes there, such as {loop[0]!r}, "
                    f"matches this channel's {loop[1]!r}: it would come back and be published again, without end. "
                    f"Publish outside the channel's topics, or add an ignore filter for them")))
    return found


def feedback_cycles(source: str, channels, brokers: dict, storages: dict) -> list:
    """Warnings for channels that feed each other round (channel A's MQTT sink publishes to topics channel B
    subscribes on that broker, and B's to A's, maybe through more channels): a message can go round without
    end, a topic longer each time. A warning, not an error as a channel that feeds itself is: the topics are
    sampled from the templates and the filters, and whether a message really comes back can depend on
    values a sample does not have."""
    from lorrygate.mqtt.topics import parse_filter

    mqtt = [channel for channel in channels if getattr(brokers.get(channel.source), "type", "") == "mqtt"]
    feeds: dict = {}  # channel name -> [(channel name it feeds, storage, a topic that does, the filter)]
    for channel in mqtt:
        inputs = [parse_filter(text).pattern for text in channel.topics]
        for name in channel.storages:
            storage = storages.get(name)
            if storage is None or storage.kind != "mqtt" or storage.broker is None:
                continue
            for other in mqtt:
                if other is channel or not _same_broker(storage.broker, brokers[other.source]):
                    continue
                filters = [parse_filter(text).pattern for text in other.topics]
                ignores = [parse_filter(text).pattern for text in other.ignore]
                loop = _looping_topic(storage.topic, filters, ignores, inputs)
                if loop is not None:
                    feeds.setdefault(channel.name, []).append((other.name, name, *loop))
    warnings: list = []
    seen: set = set()
    for channel in mqtt:
        # the shortest way round from this channel back to it (breadth first: every path of a config of many
        # channels that feed each other would be too many to walk)
        reached: dict = {channel.name: None}  # channel -> (the channel before, storage, topic, filter)
        queue = deque([channel.name])
        back = None
        while queue and back is None:
            current = queue.popleft()
            for target, storage, topic, matched in feeds.get(current, ()):
                if target == channel.name:
                    back = (current, storage, topic, matched)
                    break
                if target not in reached:
                    reached[target] = (current, storage, topic, matched)
                    queue.append(target)
        if back is None:
            continue
        hops: list = []  # (before, storage, topic, filter, after), from the channel round to it
        after, step = channel.name, back
        while step is not None:
            before, storage, topic, matched = step
            hops.insert(0, (before, storage, topic, matched, after))
            after, step = before, reached[before]
        cycle = frozenset(hop[0] for hop in hops)
        if cycle in seen:
            continue
        seen.add(cycle)
        said = "; ".join(f"[channel:{before}] publishes through storage {via!r} such as {example!r}, which "
                         f"[channel:{after}] subscribes ({f!r})" for before, via, example, f, after in hops)
        warnings.append(f"{source}: {said}: a message can go round these channels without end, a topic longer "
                        "each time. Give one of them an ignore filter for what the other publishes, or publish "
                        "outside its topics")
    return warnings


def build_hooks(sections: dict, storages: dict, modules: list, problem) -> dict:
    """The ``[hook:NAME]`` sections, and the storages' ``hooks`` checked against them."""
    hooks = {}
    for name, (section, values) in sections.items():
        hook = s.make_hook(name, values, section, problem)
        if hook is None:
            continue
        if hook.type == "python":
            function = _resolve_hook(section, hook.callable, modules, problem, key="callable")
            if function is None:
                continue
            hook = attrs.evolve(hook, function=function)
        hooks[name] = hook
    for name, storage in storages.items():
        for hook in storage.hooks:
            if hook not in hooks:
                if f"hook:{hook}" not in sections:
                    known = ", ".join(sorted(sections)) or "none defined"
                    problem(f"storage:{name}", "hooks", f"names of [hook:NAME] sections ({known})", repr(hook))
            elif hooks[hook].type == "grafana" and storage.kind not in ("sqlite", "postgresql", "crate"):
                problem(f"storage:{name}", "hooks", "a grafana hook only on a sqlite, postgresql or crate storage",
                        f"{hook!r} on a {storage.kind} storage")
    return hooks


def _builtin_decoder(cls):
    fields = {field.name: field for field in getattr(cls, "__attrs_attrs__", ())}
    if "clock" not in fields:
        return lambda timezone, reactor: cls(timezone=timezone)

    def make(timezone, reactor):  # (timers: the victron keep-alive)
        return cls(timezone=timezone, clock=reactor)

    if "keepalive" in fields:
        make.keepalive = fields["keepalive"].default  # (for describe)
    return make


def _user_decoder(cls):
    from lorrygate.decoding.functions import LimitedDecoder

    def make(timezone, reactor):
        if any(field.name == "timezone" for field in getattr(cls, "__attrs_attrs__", ())):
            return LimitedDecoder(cls(timezone=timezone))
        return LimitedDecoder(cls())

    return make


def _function_decoder(name, function):
    from lorrygate.decoding.functions import FunctionDecoder

    return lambda timezone, reactor: FunctionDecoder(name, function, timezone, reactor)


def build_decoders(modules: list, sections: dict, problem, problems: list, base_dir: str, available=None) -> dict:
    """Every decoder a chain can name: built-in, drop-in class or function, entry point (of ``available``,
    `plugins.installed`), declared."""
    from lorrygate import plugins
    from lorrygate.decoding import DECODERS
    from lorrygate.decoding.functions import MARKER
    from lorrygate.interfaces import IDecoder

    registry = {name: _builtin_decoder(cls) for name, cls in DECODERS.items()}
    origins = {name: "built-in" for name in registry}
    found = {name: (_user_decoder(cls), origin) for name, (cls, origin) in plugins.load_entry_points("decoder", IDecoder, problems, available).items()}
    found.update((name, (_user_decoder(cls), origin)) for name, (cls, origin) in plugins.collect(modules, IDecoder, "decoder", problems).items())
    for name, (function, origin) in plugins.collect_functions(modules, MARKER, "decoder", problems).items():
        if name in found:
            problems.append(ConfigProblem(origin, "", None, "a decoder name not used before", f"{name!r}, already defined by {found[name][1]}"))
            continue
        found[name] = (_function_decoder(name, function), origin)
    for name, (factory, origin) in found.items():
        if name in registry:
            problems.append(ConfigProblem(origin, "", None, "a decoder name not used before", f"{name!r}, already {origins[name]}"))
            continue
        registry[name], origins[name] = factory, origin
    for name, (section, values) in sections.items():
        if name in registry:
            problem(section, None, "a decoder name not used before", f"{name!r}, already {origins[name]}")
            continue
        registry[name] = s.make_decoder(name, values, section, problem, base_dir)
        origins[name] = f"defined in [{section}]"
    return registry


def _resolve_hook(section: str, reference: str, modules: list, problem, key: str = "hook"):
    module_name, _, function_name = reference.partition(":")
    module = next((m for path, m in modules if os.path.basename(path)[:-3] == module_name), None)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            problem(section, key, "module:function of a module in the strategies directory or an installed one",
                    f"{reference!r} ({type(exc).__name__}: {exc})")
            return None
    function = getattr(module, function_name, None)
    if not callable(function):
        problem(section, key, f"a function {function_name!r} in module {module_name!r}", repr(reference))
        return None
    return function


def build_strategies(gateway, modules: list, sections: dict, problem, problems: list, default: bool = False,
                     available=None) -> dict:
    """Every strategy a channel can name: built-in, drop-in, entry point (of ``available``, `plugins.installed`),
    declared."""
    from lorrygate import plugins
    from lorrygate.interfaces import IStrategy
    from lorrygate.topology import STRATEGIES

    registry = {name: factory for name, factory in STRATEGIES.items()}
    origins = {name: "built-in" for name in registry}
    directory = gateway.strategies
    if not default and not os.path.isdir(directory):
        problem("lorrygate", "strategies", "a directory of strategy modules", repr(directory))
    loaded = plugins.load_entry_points("strategy", IStrategy, problems, available)
    loaded.update(plugins.collect(modules, IStrategy, "strategy", problems))
    for name, (cls, origin) in loaded.items():
        if name in registry:
            problems.append(
                ConfigProblem(origin, "", None, "a strategy name not used before", f"{name!r}, already {origins[name]}")
            )
            continue
        registry[name], origins[name] = cls, origin
    for name, (section, values) in sections.items():
        if name in registry:
            problem(section, None, "a strategy name not used before", f"{name!r}, already {origins[name]}")
            continue
        # A broken section still claims its name, so that channels using it
        # do not add a second, misleading problem.
        registry[name] = s.make_strategy(name, values, section, problem)
        origins[name] = f"defined in [{section}]"
    return registry


def _unimported(paths: tuple) -> str:
    """`` (it may be in <path>, which did not import: see its problem)`` where drop-in modules did not import."""
    if not paths:
        return ""
    return f" (it may be in {' or '.join(paths)}, which did not import: see {'its' if len(paths) == 1 else 'their'} " \
           "problem)"


def _unclosed_header(source: str, text: str) -> ConfigProblem | None:
    """A line that opens a section header and does not close it (``[channel:b``): configparser reads it as the
    key ``[channel`` of the section before it (``:`` separates keys from values too)."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("[") and "]" not in line:
            return ConfigProblem(f"{source} line {number}", "", None, "a [section] header closed by ']'",
                                 repr(line.strip()))
    return None


def _syntax_problem(source: str, exc: configparser.Error) -> ConfigProblem:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return ConfigProblem(
            f"{source} line {exc.lineno}", "", None, "a [section] header before the first key", repr(exc.line.strip())
        )
    if isinstance(exc, configparser.DuplicateSectionError):
        return ConfigProblem(f"{source} line {exc.lineno}", exc.section, None, "each section once", "a second one")
    if isinstance(exc, configparser.DuplicateOptionError):
        return ConfigProblem(f"{source} line {exc.lineno}", exc.section, exc.option, "each key once", "a second one")
    if isinstance(exc, configparser.ParsingError):
        lineno, line = exc.errors[0]
        line = line.strip().strip("'").replace("\\n", "")
        return ConfigProblem(f"{source} line {lineno}", "", None, "'key = value' or a [section] header", repr(line))
    return ConfigProblem(source, "", None, "a well-formed ini file", " ".join(str(exc).split()))


def _check_tls_files(section, values, problem) -> None:
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = values.get(key)
        if path and not os.access(path, os.R_OK):
            problem(section, key, "a readable PEM file", repr(path))


#: the names other tools give a storage's kind, by the scheme of lorrygate's url
_STORAGE_SCHEMES = {"sqlite": "sqlite", "sqlite3": "sqlite", "postgresql": "postgresql", "postgres": "postgresql",
                    "pg": "postgresql", "psql": "postgresql", "timescaledb": "postgresql", "crate": "crate",
                    "cratedb": "crate"}


def _required_hint(kind: str, key: str, raw) -> str:
    """For a storage written as other tools write one (``type = sqlite`` and ``path = ...``): the ``url`` it
    means; for another required key, nothing."""
    if (kind, key) != ("storage", "url"):
        return ""
    scheme = _STORAGE_SCHEMES.get(raw.get("type", raw.get("driver", "")).strip().lower())
    if scheme == "sqlite":
        path = (raw.get("path") or raw.get("file") or raw.get("database") or "PATH").strip()
        return f" (a storage is named by its url's scheme and place: url = sqlite:///{path})"
    if scheme is not None:
        host = raw.get("host", "HOST").strip()
        port = raw.get("port", "4200" if scheme == "crate" else "5432").strip()
        database = "" if scheme == "crate" else (raw.get("database") or raw.get("dbname") or "DB").strip()
        user = raw.get("user", raw.get("username", "" if scheme == "crate" else "USER")).strip()
        login, where = (f"{user}:PASSWORD@", ", the password from the environment as ${ENV:NAME}") if user else ("", "")
        return f" (a storage is named by its url's scheme and place: url = {scheme}://{login}{host}:{port}/{database}{where})"
    return " (its url's scheme names the kind of storage: sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB or " \
        "crate://HOST:4200/)"


def _only(parser, kind: str) -> str:
    names = [x.partition(":")[2].strip() for x in parser.sections() if x.startswith(kind + ":")]
    return names[0] if len(names) == 1 else ""


def _keys_of(section: str, raw, keys: dict):
    """The keys a section takes: of a source of a known ``type``, those of its type (the others' are no help)."""
    if section.partition(":")[0].strip() == "source":
        taken = s.SOURCE_TYPE_KEYS.get(raw.get("type", "").strip().lower())
        if taken is not None:
            return ("type", *taken)
    return keys


#: keys as other tools (or a guess) name them: (section kind, source type or None, key) -> what lorrygate takes
_MEANT = {
    ("source", "http", "port"): "listen = PORT, or HOST:PORT",
    ("source", "http", "host"): "listen = HOST:PORT",
    ("source", "http", "bind"): "listen = HOST:PORT",
    ("source", "http", "address"): "listen = HOST:PORT",
    ("source", "files", "glob"): "path = GLOB",
    ("source", "files", "pattern"): "path = GLOB",
    ("source", "files", "files"): "path = GLOB",
    ("source", "poll", "cmd"): "command",
    ("source", "poll", "uri"): "url",
    ("source", "poll", "endpoint"): "url",
    ("broker", None, "server"): "host",
    ("broker", None, "user"): "username",
    ("broker", None, "pass"): "password",
    ("broker", None, "passwd"): "password",
}


def _key_meant(section: str, raw, key: str) -> str:
    """`` (did you mean listen = PORT?)`` for a key another tool names so (``port`` of an HTTP source), else
    nothing."""
    kind = section.partition(":")[0].strip()
    if kind == "broker" and key.lower() in ("url", "uri"):
        return f" (a broker is given by its keys: {_broker_keys(raw[key])})"
    kind_of = raw.get("type", "").strip().lower() if kind == "source" else None
    meant = _MEANT.get((kind, kind_of, key.lower()))
    if meant:
        return f" (did you mean {meant}?)"
    return _key_elsewhere(key) if kind == "channel" else ""


#: the sections a channel names, their keys, which of their types take which key, and the channel's key that
#: names such a section
_NAMED_SECTIONS = (
    ("decoder", s.DECODER_KEYS, s.DECODER_TYPE_KEYS, "decoders = NAME, json"),
    ("strategy", s.STRATEGY_KEYS, s.STRATEGY_TYPE_KEYS, "strategy = NAME"),
    ("source", s.SOURCE_KEYS, s.SOURCE_TYPE_KEYS, "source = NAME"),
    ("broker", s.BROKER_KEYS, {}, "source = NAME"),
    ("storage", s.STORAGE_KEYS, {}, "storage = NAME"),
)


def _key_elsewhere(key: str) -> str:
    """`` (columns is a key of a [decoder:NAME] section of type = csv, which the channel names: decoders = NAME,
    json)`` for a channel's key that belongs in a section the channel names; else nothing."""
    places = []
    for kind, keys, by_type, naming in _NAMED_SECTIONS:
        if key == "type" or key not in keys:
            continue
        types = sorted(name for name, names in by_type.items() if key in names)
        of_type = f" of type = {' or '.join(types)}" if types and len(types) < 4 else ""
        places.append(f"a [{kind}:NAME] section{of_type}, which the channel names: {naming}")
    return f" ({key} is a key of {'; or of '.join(places)})" if places else ""


def _broker_keys(url: str) -> str:
    """The keys of a broker written as a URL (``mqtts://user@host:8883``): ``host = host, port = 8883, ...``."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "host = HOST, port = PORT"
    scheme = parts.scheme.lower()
    keys = [f"host = {parts.hostname or 'HOST'}"] + ([f"port = {port}"] if port else [])
    if scheme in ("mqtts", "amqps", "rediss", "kafkas", "ssl"):
        keys.append("tls = true")
    kind = {"mqtt": "mqtt", "mqtts": "mqtt", "tcp": "mqtt", "ssl": "mqtt", "amqp": "amqp", "amqps": "amqp",
            "redis": "redis", "rediss": "redis", "kafka": "kafka", "kafkas": "kafka"}.get(scheme)
    if kind not in (None, "mqtt"):
        keys.insert(0, f"type = {kind}")
    if kind == "amqp" and parts.path not in ("", "/"):
        keys.append(f"vhost = {unquote(parts.path[1:])}")
    if parts.username:
        keys.append(f"username = {parts.username}")
    if parts.password:
        keys.append("password = ${ENV:NAME}")
    return ", ".join(keys)


def _section_meant(kind: str, name: str) -> str:
    """`` (did you mean [channel:c]?)`` for a section whose kind is a typo of a known one's, else nothing."""
    close = difflib.get_close_matches(kind, ["lorrygate", *s.SECTION_KINDS], n=1, cutoff=0.75)
    if not close:
        return ""
    meant = close[0] if close[0] == "lorrygate" else f"{close[0]}:{name or 'NAME'}"
    return f" (did you mean [{meant}]?)"


def check_tag_placeholders(section, tags: tuple, factory, problem) -> None:
    """A ``{name}`` of a ``tags`` value that the channel's strategy never fills: the tag was empty on every row.
    Only for the built-in and the declared strategies, which say what they fill; a drop-in module's may fill
    any."""
    from lorrygate.decoding.transform import placeholders

    try:
        strategy = factory()
    except Exception:  # (a drop-in module's problem, said elsewhere)
        return
    if not type(strategy).__module__.startswith("lorrygate."):
        return
    known = ("realm", "network", "gateway", "node", "kind", "field", "topic", *getattr(strategy, "label_names", ()))
    for name, template in tags:
        for found in placeholders(template):
            if found not in known:
                problem(section, "tags", f"placeholders the strategy {strategy.name} fills ("
                        + ", ".join("{" + k + "}" for k in dict.fromkeys(known)) + ")",
                        f"{{{found}}} in {name}={template}" + did_you_mean(found, known))


def _reads_meshtastic_protobuf(factory) -> bool:
    """Whether a strategy's factory makes the meshtastic strategy of ``output = protobuf``."""
    from lorrygate.topology.meshtastic import MeshtasticStrategy

    target = getattr(factory, "func", factory)
    if target is not MeshtasticStrategy:
        return False
    return getattr(factory, "keywords", {}).get("output", "protobuf") == "protobuf"


def _named_parts(values: dict):
    """What `_check_channel` reads of a channel whose section has an invalid value (``qos = 7``), from the values
    that are valid: its references were not checked until the rest was mended, so ``lorrygate check`` told a typo
    in ``storage`` only in its second run."""
    from types import SimpleNamespace

    return SimpleNamespace(source=values["source"] or "", storages=tuple(values["storage"] or ()),
                           strategy=s.CHANNEL_KEYS["strategy"].default if values["strategy"] is None
                           else values["strategy"], decoders=tuple(values["decoders"] or ()))


def _check_channel(section, channel, parser, strategies, decoders, problem, modules=(), unimported=(),
                   folder: str | None = None) -> None:
    """A channel's names of other sections, strategies and decoders; ``modules``, the drop-in modules imported,
    ``unimported``, those that did not import, and the helper modules of the drop-in ``folder`` tell a name that
    may be one of theirs."""
    from lorrygate.plugins import in_helper, undeclared

    def helper(name: str) -> str:
        return in_helper(folder, name) if folder else ""

    sections = set(parser.sections())
    if channel.source and f"broker:{channel.source}" not in sections and f"source:{channel.source}" not in sections:
        names = ", ".join(sorted(x.partition(":")[2] for x in sections if x.startswith(("broker:", "source:"))))
        problem(section, "source", f"the name of a [broker:NAME] or [source:NAME] section ({names or 'none defined'})",
                repr(channel.source) + did_you_mean(channel.source, names.split(", ")))
    for name in channel.storages:
        if name and f"storage:{name}" not in sections:
            storages = ", ".join(sorted(x[8:] for x in sections if x.startswith("storage:"))) or "none defined"
            problem(section, "storage", f"the name of a [storage:NAME] section ({storages})",
                    repr(name) + did_you_mean(name, storages.split(", ")))
    if channel.strategy not in strategies:
        from lorrygate.interfaces import IStrategy

        problem(section, "strategy", "one of the strategies " + ", ".join(sorted(strategies)),
                repr(channel.strategy) + (undeclared(modules, IStrategy, channel.strategy) or _unimported(unimported)
                                          or helper(channel.strategy) or did_you_mean(channel.strategy, strategies)))
    unknown = [name for name in channel.decoders if name not in decoders]
    if unknown:
        from lorrygate.interfaces import IDecoder

        problem(
            section,
            "decoders",
            "decoder names from " + ", ".join(sorted(decoders)),
            ", ".join(repr(name) + (undeclared(modules, IDecoder, name) or _unimported(unimported)
                                    or helper(name) or did_you_mean(name, decoders)) for name in unknown),
        )
    if "influx" in channel.decoders and not s.installed("line_protocol_parser"):
        problem(section, "decoders", s.needs("line_protocol_parser", "the influx decoder"), "influx")
    if "sparkplug" in channel.decoders and not s.installed("google.protobuf"):
        problem(section, "decoders", s.needs("google.protobuf", "the sparkplug decoder"), "sparkplug")
    if _reads_meshtastic_protobuf(strategies.get(channel.strategy)) and not s.installed("meshtastic"):
        problem(section, "strategy", s.needs("meshtastic", "a Meshtastic gateway node's packets as protobuf "
                                                           "(<root>/2/e/...)") + ", or a [strategy:NAME] of type "
                "meshtastic with output = json (its JSON output)", channel.strategy)


def _check_metrics(gateway, storages: dict, problem) -> None:
    """A ``prometheus://`` storage is served on the metrics listener: with that off its values went nowhere, and
    nothing said so. Beyond loopback it serves the fleet's values to anyone who asks, so it needs its
    metrics_token, as an export and a control endpoint do."""
    served = [name for name, storage in storages.items()
              if storage.kind == "prometheus" and storage.url.raw == "prometheus://"]
    if not served:
        return
    if gateway.metrics is None:
        for name in served:
            problem(f"storage:{name}", "url", "a metrics listener to serve it on ([lorrygate] metrics = "
                    "127.0.0.1:9481, scraped at /metrics), or pushgateway://HOST:9091/JOB to push the values",
                    "prometheus:// with [lorrygate] metrics off")
        return
    host, port = gateway.metrics
    if host not in s.LOOPBACK and not gateway.metrics_token:
        problem("lorrygate", "metrics", "a metrics_token (from ${ENV:...} or ${FILE:...}) for a listener others can "
                f"reach that serves the fleet's values (storage {served[0]}, prometheus://), or a loopback address "
                "(127.0.0.1:PORT)", f"metrics = {host}:{port} without a token")

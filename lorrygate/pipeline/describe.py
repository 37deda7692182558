"""
``--describe``: the resolved pipeline, and for sample topics the address,
schema, table and the DDL that would be issued, without connecting anywhere.
"""

from typing import Any

import attrs

from lorrygate.config.values import mask_url
from lorrygate.storage.cratedb import default_ddl
from lorrygate.storage.sqlite import index_statement, table_name
from lorrygate.topology.naming import quote


def _keyed(storage, channel) -> bool:
    """Whether a channel's tables in a storage are made with the key (time, lorrygate_id): idempotent rows, and
    merged ones (the channel's merge, else the storage's)."""
    merge = storage.merge if getattr(channel, "merge", None) is None else channel.merge
    return storage.idempotent or bool(merge)


def _time_index(storage, table, shared: bool, keyed: bool = False) -> list:
    """SQLite's ``time_index``: the index made with the table (not with an idempotent table's key, which is one)."""
    if storage.kind != "sqlite" or not storage.time_index or (keyed and not shared):
        return []
    return [index_statement(_physical(storage, table), shared)]


def _ddl(storage, table, channel, address=None) -> list:
    if storage.kind == "crate":
        from lorrygate.storage.shared_layout import crate_table

        table = crate_table(table)  # (as the writer names it)
    if storage.layout == "per-network":
        from lorrygate.storage.shared_layout import shared_table, sqlite_view_statement, view_statement

        shared = shared_table(table, address)
        if shared is not None:
            # the shared table's DDL: as a per-address table's, with the address columns
            create = _ddl(attrs.evolve(storage, layout="per-address", time_index=False), shared, channel)
            custom = (channel.ddl or storage.ddl) is not None
            if storage.kind == "crate":
                if not custom:
                    create[0] = default_ddl(shared, storage.partition, storage.shards, storage.replicas,
                                            storage.idempotent, shared=True)
                view = view_statement(table, shared)
            elif storage.kind == "postgresql":
                from lorrygate.storage.postgresql import view_statement as pg_view_statement

                if not custom:
                    create[1] = create[1].replace('("time" TIMESTAMPTZ NOT NULL)', '("time" TIMESTAMPTZ NOT NULL, '
                                                  '"address" TEXT, "gateway" TEXT, "node" TEXT)')
                    create.insert(2, f'CREATE INDEX IF NOT EXISTS "{shared.table}_address_time_idx" ON '
                                     f'{create[1].split()[5]} ("address", "time")')
                view = (pg_view_statement(table, shared, ["time", "..."]).replace('"..."', "...") +
                        "  -- the shared table's columns but address, gateway and node; made beside the writes, "
                        "and again when a field adds a column")
            else:
                if not custom:
                    create[0] = create[0].replace("(time TEXT NOT NULL)",
                                                  "(time TEXT NOT NULL, address TEXT, gateway TEXT, node TEXT)")
                view = sqlite_view_statement(_physical(storage, table), _physical(storage, shared), table.table)
                create += _time_index(storage, shared, True)
            return create + ([view] if shared != table else [])
    template = channel.ddl or storage.ddl
    if template is not None:
        return template.render(table, None, _physical(storage, table) if storage.kind == "sqlite" else None) + \
            _time_index(storage, table, False, _keyed(storage, channel))
    if storage.kind == "sqlite":
        return [f"CREATE TABLE IF NOT EXISTS {quote(_physical(storage, table))} (time TEXT NOT NULL)",
                *_time_index(storage, table, False, _keyed(storage, channel)),
                "-- then ALTER TABLE ... ADD COLUMN per field, on its first appearance"]
    if storage.kind == "postgresql":
        from lorrygate.storage.postgresql import qualified, schema_name

        return [f"CREATE SCHEMA IF NOT EXISTS {quote(schema_name(table))}",
                f'CREATE TABLE IF NOT EXISTS {qualified(table)} ("time" TIMESTAMPTZ NOT NULL)',
                "-- then ALTER TABLE ... ADD COLUMN IF NOT EXISTS per field, on its first appearance"]
    if storage.kind == "crate":
        return [default_ddl(table, storage.partition, storage.shards, storage.replicas,
                            _keyed(storage, channel)),
                "-- fields: every number as DOUBLE, NaN/Infinity as null, keys with . [ ] renamed with _; "
                "the shard budget is checked first"]
    return [f"-- {storage.kind} sink: no DDL"]


def _columns(storage, fields) -> list:
    """What column each field name gets in a storage (`lorrygate.storage.layout.column_names`)."""
    from lorrygate.storage.layout import column_names

    dialect: Any
    if storage.kind == "sqlite":
        from lorrygate.storage.sqlite import SQLiteDialect as dialect

        rule = "SQLite compares names without ASCII case"
    elif storage.kind == "postgresql":
        from lorrygate.storage.postgresql import PostgresDialect as dialect

        rule = "PostgreSQL keeps 63 bytes of a name"
    elif storage.kind == "crate":
        from lorrygate.storage.crate_values import FORBIDDEN, Conversions, crate_object

        keys = list(crate_object(dict.fromkeys(fields), Conversions()))
        return [f"      field {name!r} -> fields[{key!r}]" + (
                "" if key == name else " (CrateDB refuses . [ ] tab CR LF in keys)" if FORBIDDEN.search(name)
                else " (another key of the row took it)") for name, key in zip(fields, keys)]
    else:
        return []
    names = column_names(tuple(fields), dialect.fold, dialect.reserved, dialect.identifier_limit)
    return [f"      field {name!r} -> column {column!r}" + ("" if column == name else f" ({rule}; another name "
                                                                                      "of the row or time took it)")
            for name, column in zip(fields, names)]


def describe(settings, topics=(), fields=()) -> str:
    lines = [f"pipeline from {settings.source}:"]
    for channel in settings.channels:
        broker = settings.brokers.get(channel.source)
        if broker is None:
            polled = settings.sources[channel.source]
            if polled.type == "files":
                lines.append(f"  channel {channel.name}: files source {polled.name} ({polled.path}, from the "
                             f"{polled.start}), topic {polled.topic} (exactly once into SQLite and PostgreSQL, at "
                             "least once elsewhere)")
            elif polled.type == "pgcdc":
                lines.append(f"  channel {channel.name}: pgcdc source {polled.name} (slot {polled.slot}), topic "
                             f"{polled.topic} (at least once)")
            elif polled.type == "tributary":
                lines.append(f"  channel {channel.name}: tributary source {polled.name} (graph {polled.graph}, window "
                             f"{polled.window}), topic {polled.topic} (at most once)")
            elif polled.type == "http":
                host, port = polled.listen
                lines.append(f"  channel {channel.name}: http source {polled.name} "
                             f"({'https' if polled.tls_cert else 'http'}://{host}:{port}/api/<topic>, "
                             f"{'a token asked' if polled.token is not None else 'no token'}"
                             f"{', export' if polled.export else ''}) (at least once for a client that sends again "
                             "until a 2xx)")
            elif polled.type == "socket":
                lines.append(f"  channel {channel.name}: socket source {polled.name} ({polled.path}, {polled.framing}), "
                             f"topic {polled.topic} (at most once)")
            else:
                lines.append(f"  channel {channel.name}: {polled.type} source {polled.name} "
                             f"({mask_url(polled.url) if polled.url else polled.command or polled.root}) every "
                             f"{polled.interval:g} s, topic "
                             f"{polled.topic} (at most once)")
        elif broker.type == "kafka":
            lines.append(f"  channel {channel.name}: kafka {broker.host} topics {','.join(channel.topics)}, consumer "
                         f"group {channel.group or 'lorrygate'} (from the {channel.start} without a committed offset)")
        elif broker.type == "zmq":
            lines.append(f"  channel {channel.name}: zmq {(channel.mode or 'sub').upper()} "
                         f"{'bound to' if broker.host == '*' else 'connected to'} tcp://{broker.host}:{broker.port} "
                         f"{','.join(channel.topics)} (at most once)")
        elif broker.type == "redis":
            lines.append(f"  channel {channel.name}: redis {broker.host}:{broker.port} "
                         + (f"streams {','.join(channel.topics)}, consumer group {channel.group or 'lorrygate'}"
                            if channel.mode != "pubsub" else f"pub/sub {','.join(channel.topics)} (at most once)"))
        elif broker.type == "amqp":
            lines.append(f"  channel {channel.name}: amqp {broker.host}:{broker.port} vhost {broker.vhost}, queue "
                         f"{channel.queue or 'lorrygate.' + channel.name} bound to {channel.exchange} with "
                         f"{','.join(channel.topics)} (prefetch {channel.prefetch})")
        else:
            lines.append(f"  channel {channel.name}: mqtt {broker.host}:{broker.port} {','.join(channel.topics)} "
                         f"(QoS {channel.qos}, MQTT {broker.protocol}"
                         + (f", gateway group {channel.group}: $share/{channel.group}/..." if channel.group else "")
                         + (f", retained {channel.retained}" if channel.retained != "new" else "")
                         + ")")
        lines.append(f"    ! strategy {channel.strategy} ! decode {','.join(channel.decoders)}"
                     + "".join(_keeps_alive(settings, name) for name in channel.decoders)
                     + (" ! transform" if channel.transform is not None else "")
                     + (f" ! hamilton {channel.dataflow.name} ({', '.join(channel.dataflow.outputs)})"
                        if channel.dataflow is not None else ""))
        for name in channel.storages:
            storage = settings.storages[name]
            lines.append(f"    ! {storage.kind} {name} ({storage.url})" if storage.kind != "tributary"
                         else f"    ! tributary {name} (graph {storage.graph}, at least once)")
    routers: dict = {}
    for topic in topics:
        lines.append(f"topic {topic}:")
        if "+" in topic.split("/") or "#" in topic.split("/"):
            # (a device publishes on a topic, never on a filter: each channel said "refused" or "not subscribed")
            lines.append("  a topic filter (a level + or #), not a topic: give the topic of one message, as a device "
                         "publishes it")
            continue
        for channel in settings.channels:
            if not any(_matches(pattern, topic) for pattern in channel.topics):
                lines.append(f"  channel {channel.name}: not subscribed")
                continue
            if channel.name not in routers:
                routers[channel.name] = _router(settings, channel)
            address, table, problem, decoders = routers[channel.name].explain(topic)
            if problem is not None:
                reason, what = problem
                lines.append(f"  channel {channel.name}: ignored (acknowledged, not stored): {what}"
                             if reason == "ignored" else
                             f"  channel {channel.name}: refused by strategy {channel.strategy}: {reason} (a dead letter)")
                continue
            lines.append(f"  channel {channel.name}: address realm={address.realm} network={address.network} "
                         f"gateway={address.gateway} node={address.node} kind={address.kind}"
                         + (f" field={address.field}" if address.field else ""))
            lines.append(f"    decoders {','.join(decoders)}")
            tag_names = getattr(routers[channel.name].strategy, "tag_names", ())
            if tag_names:
                labels = dict(address.labels)
                lines.append("    tags from the topic: " + ", ".join(
                    f"{name}={labels[name] if name in labels else getattr(address, name, None)}"
                    for name in sorted(tag_names)))
            if "csv" in decoders:
                lines.append(f"    {_announced(settings, address)}")
            for name in channel.storages:
                storage = settings.storages[name]
                physical = _physical(storage, table)
                lines.append(f"    storage {name} ({storage.kind}): schema {table.schema}, table {table.table} "
                             f"-> {physical}" + (" (another case of the name is a table there, which SQLite "
                                                 "would take for it)" if storage.kind == "sqlite"
                                                 and physical != table_name(table) else ""))
                for statement in _ddl(storage, table, channel, address):
                    lines.append(f"      {statement}")
                lines.extend(_columns(storage, list(fields)))
    return "\n".join(lines)


def _physical(storage, table) -> str:
    """The table a storage writes ``table``'s rows into: SQLite's ``schema__table`` (of its own where another
    case of that is a table in the database file already, `lorrygate.storage.sqlite_schema.own_table`), and the
    names each database takes no table of made so (`lorrygate.storage.sqlite.table_name`,
    `lorrygate.storage.postgresql.schema_name`, `lorrygate.storage.shared_layout.crate_table`)."""
    kind = storage.kind
    if kind == "sqlite":
        from lorrygate.storage.sqlite_schema import own_table

        name = table_name(table)
        return own_table(storage.path, name) or name
    if kind == "postgresql":
        from lorrygate.storage.postgresql import physical_name

        return physical_name(table)
    if kind == "crate":
        from lorrygate.storage.shared_layout import crate_table

        table = crate_table(table)
        return f"{table.schema or 'doc'}.{table.table}"
    return f"{table.schema}.{table.table}"


def _announced(settings, address) -> str:
    """The CSV header announced for an address (`lorrygate.decoding.csvheaders`), as a line of the description."""
    import datetime as dt
    import sqlite3

    from lorrygate.decoding.csvheaders import HeaderStore

    store = HeaderStore(settings.gateway.data_dir)
    try:
        announced = store.get(address)
    except sqlite3.Error as exc:
        return f"csv header announced: unknown ({store.path}: {exc})"
    finally:
        store.stop()
    if announced is None:
        return "csv header announced: none (data lines alone are a dead letter until one is: '## name,name')"
    when = dt.datetime.fromtimestamp(announced.received, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"csv header announced: {', '.join(announced.columns)} (delimiter {announced.delimiter!r}; on {when} "
            f"by {announced.topic})")


def _keeps_alive(settings, name: str) -> str:
    """What a decoder that keeps devices publishing sends on the channel's connection (victron)."""
    every = getattr(settings.decoders.get(name), "keepalive", None)  # (told by its factory: none is made here)
    if every is None:
        return ""
    return f" (keep-alive R/<portal ID>/keepalive every {every:g} s)" if every else " (no keep-alive)"


def _router(settings, channel):
    """The channel's router, made as the gateway makes it (its decoders are made, never started)."""
    from lorrygate.service.channel_service import make_router

    return make_router(settings, channel, (None,), None)[0]


def _matches(pattern: str, topic: str) -> bool:
    from lorrygate.mqtt.topics import parse_filter

    return parse_filter(pattern).matches(topic)

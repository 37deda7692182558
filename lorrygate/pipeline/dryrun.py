"""
``--dry-run``: decode messages and print the rows that would be written,
writing nothing.

- With ``--messages FILE``: a file of recorded messages, one JSON object a
  line: ``{"topic": "...", "payload": "..."}`` (or ``"payload_base64"``).
  No network, no reactor.
- Without: from the configured brokers, under a separate client id with a
  clean session (the gateway's own persistent session is not touched),
  until Ctrl-C.

Each row is printed as one JSON line: channel, topic, storage, schema, table,
time, fields and tags; a message that would be a dead letter as
``{"dead_letter": true, "stage": ..., "error": ...}``.
"""

import base64
import json
import sys
import time
from zoneinfo import ZoneInfo

import attrs

from lorrygate.config import values as v
from lorrygate.decoding import DecoderChain
from lorrygate.decoding.timestamps import to_iso
from lorrygate.errors import DecodeError, Ignored, TopologyError
from lorrygate.model import Message
from lorrygate.mqtt.topics import parse_filter


def _print(document, out) -> None:
    out.write(json.dumps(document, default=lambda value: base64.b64encode(value).decode() if isinstance(value, bytes)
                         else str(value), ensure_ascii=False) + "\n")


def _rows(settings, channel, strategy, chain, message, out) -> None:
    try:
        address = strategy.match(message.topic)
        table = strategy.table_for(address)
        decoder, records = chain.decode(message, address)
        if channel.transform is not None:
            records = channel.transform.apply(records, message, address, decoder)
    except Ignored as exc:
        _print({"channel": channel.name, "topic": message.topic, "ignored": True, "reason": exc.reason}, out)
        return
    except (TopologyError, DecodeError) as exc:
        stage = "topology" if isinstance(exc, TopologyError) else "decode"
        _print({"channel": channel.name, "topic": message.topic, "dead_letter": True, "stage": stage,
                "error": getattr(exc, "reason", str(exc)) if stage == "topology" else str(exc)}, out)
        return
    for record in records:
        _print({"channel": channel.name, "topic": message.topic, "storage": ",".join(channel.storages),
                "schema": table.schema, "table": table.table, "decoder": decoder, "time": to_iso(record.time),
                "fields": record.fields, "tags": record.tags}, out)


def dry_run(settings, messages_path: str | None, out=None) -> int:
    out = out or sys.stdout
    if messages_path is None:
        return _live(settings)
    pipelines = []
    for channel in settings.channels:
        decoders = tuple(settings.decoders[name](ZoneInfo(channel.timezone), None) for name in channel.decoders)
        filters = [parse_filter(topic) for topic in channel.topics]
        pipelines.append((channel, settings.strategies[channel.strategy](), DecoderChain(decoders), filters))
    with open(messages_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                recorded = json.loads(line)
                payload = (base64.b64decode(recorded["payload_base64"]) if "payload_base64" in recorded
                           else recorded["payload"].encode("utf-8") if isinstance(recorded["payload"], str)
                           else json.dumps(recorded["payload"]).encode("utf-8"))
                message = Message(recorded["topic"], payload, 1, False, recorded.get("received", time.time()), "")
            except (ValueError, KeyError, TypeError) as exc:
                print(f"{messages_path} line {number}: expected {{\"topic\": ..., \"payload\": ...}}, got {line.strip()[:80]!r} "
                      f"({type(exc).__name__}: {exc})", file=sys.stderr)
                return 2
            for channel, strategy, chain, filters in pipelines:
                if any(f.matches(message.topic) for f in filters):
                    _rows(settings, channel, strategy, chain, message, out)
    return 0


def _live(settings) -> int:
    from lorrygate.cli import run
    from lorrygate.config.settings import StorageSettings

    def show(rows):
        for row in rows:
            _print(row, sys.stdout)
        sys.stdout.flush()

    storages = {name: StorageSettings(name, v.StorageUrl("app", f"app:{name}"), "app", spool=False, callback=show)
                for name in settings.storages}
    brokers = {name: attrs.evolve(broker, client_id=f"{broker.client_id or 'lorrygate'}-dry-run", clean_session=True)
               for name, broker in settings.brokers.items()}
    import tempfile

    # Its own data directory: the running gateway holds the configured one.
    gateway = attrs.evolve(settings.gateway, control="off", data_dir=tempfile.mkdtemp(prefix="lorrygate-dry-run-"))
    dry = attrs.evolve(settings, brokers=brokers, storages=storages, gateway=gateway,
                       channels=tuple(attrs.evolve(c, ddl=None, error_topic=False) for c in settings.channels))
    print("dry run: rows are printed, nothing is written; Ctrl-C stops", file=sys.stderr)
    return run(dry, "text", "warn")

"""
``--dry-run``: decode messages and print the rows that would be written,
writing nothing.

- With ``--messages FILE``: a file of recorded messages, one JSON object a
  line: ``{"topic": "...", "payload": "..."}`` (or ``"payload_base64"``;
  ``mosquitto_sub -F %J`` writes such lines), or a topic and a payload as
  ``mosquitto_sub -v`` prints them. No network, no reactor.
- Without: from the configured brokers, under a separate client id with a
  clean session (the gateway's own persistent session is not touched),
  until Ctrl-C.

Each row is printed as one JSON line: channel, topic, storage, schema, table,
time, fields and tags; a message that would be a dead letter as
``{"dead_letter": true, "stage": ..., "error": ...}``.
"""

import base64
import binascii
import contextlib
import json
import sys
import time
from typing import Any

import attrs

from lorrygate.config import values as v
from lorrygate.decoding.timestamps import to_iso
from lorrygate.model import Message
from lorrygate.mqtt.topics import parse_filter


def _print(document, out) -> None:
    out.write(json.dumps(document, default=lambda value: base64.b64encode(value).decode() if isinstance(value, bytes)
                         else str(value), ensure_ascii=False) + "\n")


@attrs.define(eq=False)
class _Printer:
    """Stands for a channel's batcher: prints what the router hands it, as the gateway would store it."""

    channel: Any
    out: Any

    def add(self, entry) -> None:
        for record in entry.records:
            _print({"channel": self.channel.name, "topic": entry.message.topic,
                    "storage": ",".join(self.channel.storages), "schema": entry.table.schema,
                    "table": entry.table.table, "decoder": entry.decoder, "time": to_iso(record.time),
                    "fields": record.fields, "tags": record.tags}, self.out)

    def add_dead_letter(self, dead) -> None:
        _print({"channel": self.channel.name, "topic": dead.message.topic, "dead_letter": True, "stage": dead.stage,
                "error": dead.error}, self.out)

    def add_together(self, entries: list, dead) -> None:
        for entry in entries:
            self.add(entry)
        self.add_dead_letter(dead)


@contextlib.contextmanager
def _own_data_dir(settings):
    """``settings`` with a data directory of the dry run's own, holding a copy of the CSV headers announced to
    the gateway: a dry run writes nothing of the gateway's. The directory is removed when the dry run ends (each
    run left one in the temporary directory)."""
    import tempfile

    from lorrygate.decoding.csvheaders import copy_headers

    with tempfile.TemporaryDirectory(prefix="lorrygate-dry-run-") as directory:
        copy_headers(settings.gateway.data_dir, directory)
        yield attrs.evolve(settings, gateway=attrs.evolve(settings.gateway, data_dir=directory))


def _routers(settings, out) -> list:
    """Each channel's router, made as the gateway makes it (suffix decoders, event values, ignore filters,
    ``values``, transforms), printing instead of storing; decoders run on the calling thread."""
    from twisted.internet.task import Clock

    from lorrygate.service.channel_service import make_router

    routers = []
    for channel in settings.channels:
        router, _ = make_router(settings, channel, (_Printer(channel, out),), None)
        router.clock = router._complaints.clock = Clock()
        if router.dataflow is not None:
            print(f"channel {channel.name}: its dataflow does not run in a dry run from --messages; the rows are "
                  f"those before it", file=sys.stderr)
            router.dataflow = None
        routers.append((router, [parse_filter(topic) for topic in channel.topics]))
    return routers


def _route(router, message, out) -> None:
    """Route one message and say what became of a message that left no row and no dead letter."""
    before = (router.stats.ignored, router.stats.empty, router.stats.own_reports)
    router.deliver(message)
    ignored, empty, own = (after - first for after, first in zip(
        (router.stats.ignored, router.stats.empty, router.stats.own_reports), before))
    if ignored:
        _, _, problem, _ = router.explain(message.topic)
        reason = problem[1] if problem is not None else router.last_ignored  # (a decoder's)
        _print({"channel": router.channel.name, "topic": message.topic, "ignored": True, "reason": reason}, out)
    elif empty:
        _print({"channel": router.channel.name, "topic": message.topic, "empty": True,
                "reason": "an empty payload (a cleared retained message): acknowledged, nothing stored"}, out)
    elif own:
        _print({"channel": router.channel.name, "topic": message.topic, "own_report": True}, out)


def _recorded(line: str) -> Message:
    if not line.lstrip().startswith("{"):
        # as `mosquitto_sub -v` prints a message: the topic, a space, the payload (a payload with a line break
        # in it is not one line there: record those with -F %J)
        topic, space, rest = line.rstrip("\r\n").partition(" ")
        if not topic or not space:
            raise ValueError("neither a JSON object nor a topic and a payload")
        return Message(topic, rest.encode("utf-8", "surrogateescape"), 1, False, time.time(), "")
    recorded = json.loads(line)
    if type(recorded) is not dict:
        raise TypeError(f"a JSON {type(recorded).__name__}, not an object")
    if "payload_base64" in recorded:
        try:
            payload = base64.b64decode(recorded["payload_base64"], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"payload_base64 is not base64: {exc}") from None
    elif isinstance(recorded["payload"], str):
        payload = recorded["payload"].encode("utf-8")
    else:
        payload = json.dumps(recorded["payload"]).encode("utf-8")
    topic = recorded["topic"]
    if not isinstance(topic, str):
        raise TypeError(f"the topic is a JSON {type(topic).__name__}, not a string")
    return Message(topic, payload, 1, False, float(recorded.get("received", time.time())), "")


def dry_run(settings, messages_path: str | None, out=None) -> int:
    """Print what each message would become; 2 when lines of the file are no recorded messages (each is named,
    and the lines after it still run)."""
    out = out or sys.stdout
    if messages_path is None:
        return _live(settings)
    try:
        handle = open(messages_path, encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        print(f"lorrygate --dry-run: cannot read the recorded messages {messages_path!r}: {exc.strerror}",
              file=sys.stderr)
        return 2
    bad = 0
    with handle, _own_data_dir(settings) as own:
        routers = _routers(own, out)
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                message = _recorded(line)
            except (ValueError, KeyError, TypeError) as exc:
                bad += 1
                what = f"no {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
                print(f"{messages_path} line {number}: expected {{\"topic\": ..., \"payload\": ...}} (or "
                      f"\"payload_base64\"), or a topic and a payload as mosquitto_sub -v prints them, got "
                      f"{line.strip()[:80]!r} ({what}); skipped", file=sys.stderr)
                continue
            matched = False
            for router, filters in routers:
                if any(f.matches(message.topic) for f in filters):
                    matched = True
                    _route(router, message, out)
            if not matched:
                _print({"topic": message.topic, "channel": None, "unmatched": True,
                        "reason": "no channel subscribes to this topic"}, out)
    return 2 if bad else 0


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
    # Its own data directory: the running gateway holds the configured one.
    with _own_data_dir(settings) as own:
        dry = attrs.evolve(settings, brokers=brokers, storages=storages,
                           gateway=attrs.evolve(own.gateway, control="off"),
                           channels=tuple(attrs.evolve(c, ddl=None, error_topic=False) for c in settings.channels))
        print("dry run: rows are printed, nothing is written; Ctrl-C stops", file=sys.stderr)
        return run(dry, "text", "warn")

"""
A channel's router: message -> address -> records -> batch.

Whatever goes wrong with one message (a topic the strategy cannot route, a
payload no decoder accepts, a strategy or decoder that raises) is counted,
logged (rate-limited) and kept as a dead letter in the channel's storage; the
stream goes on, and the message is acknowledged once its dead letter is
committed.
"""

import json
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger

from lorrygate import time_limit
from lorrygate.decoding import DecoderChain
from lorrygate.decoding.charsets import as_utf8
from lorrygate.decoding.dataflow import apply_outputs, derived_table
from lorrygate.decoding.events import EventValueDecoder
from lorrygate.decoding.timestamps import seconds_to_ns, to_iso
from lorrygate.decoding.values import KotoriValues
from lorrygate.errors import DecodeError, Ignored, NoDecoderMatched, PartlyDecoded, TopologyError, reason_kind
from lorrygate.model import EVENT, Address, Events, TableName
from lorrygate.mqtt.topics import parse_filter
from lorrygate.storage.batch import DeadLetter, Entry
from lorrygate.where_raised import where_raised

if TYPE_CHECKING:
    from lorrygate.model import Channel



class FanInAck:
    """Acknowledges a message once every storage of a tee committed it."""

    __slots__ = ("_handle", "_remaining")

    def __init__(self, handle, count: int):
        self._handle = handle
        self._remaining = count

    def ack(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self._handle.ack()


@attrs.define
class ChannelStats:
    received: int = 0
    routed: int = 0
    unmatched: int = 0
    undecodable: int = 0
    #: addresses that sanitize to a table another address already uses
    collisions: int = 0
    #: reports published to error topics
    error_reports: int = 0
    #: our own reports received back (not stored)
    own_reports: int = 0
    #: commands and topics matching the channel's ignore filters (acknowledged, not stored)
    ignored: int = 0
    #: messages over the broker's max_payload (dead letters by reference)
    too_large: int = 0
    #: reports not published because their topic would be too long for MQTT
    reports_skipped: int = 0
    #: reports not published because the channel sent REPORTS_PER_SECOND already
    reports_limited: int = 0
    #: NaN and infinities left out by the kotori value policy
    values_dropped: int = 0
    #: empty or blank payloads that no decoder took (a cleared retained message): acknowledged, nothing stored
    empty: int = 0
    #: messages whose sequence number says that messages before them never came (lost before the gateway;
    #: Sparkplug B's ``seq``)
    seq_gaps: int = 0
    #: keep-alives sent to devices that publish only while kept alive (Venus OS: the victron decoder)
    keepalives: int = 0
    #: messages stored but for lines that could not be decoded, which are dead letters (`PartlyDecoded`)
    partly: int = 0
    #: dead letters by stage (``topology``, ``decode``, ``transform``, ``size``, ``internal``)
    dead_letters: dict = attrs.Factory(dict)

    def asdict(self) -> dict:
        return attrs.asdict(self)


@attrs.define(eq=False)
class Complaints:
    """Logs each distinct problem at most once per ``interval``, counting the rest."""

    clock: Any
    interval: float = 5.0
    _last: dict = attrs.Factory(dict)
    _suppressed: dict = attrs.Factory(dict)

    _examples: dict = attrs.Factory(dict)

    def allow(self, key, example: Any = "") -> int | None:
        """Return how many were suppressed since the last line, or None to stay quiet."""
        now = self.clock.seconds()
        if len(self._last) > 1000:
            self._last.clear()
            self._suppressed.clear()
            self._examples.clear()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._examples[key] = example  # the latest
            return None
        self._last[key] = now
        self._examples.pop(key, None)
        return self._suppressed.pop(key, 0)

    def pending(self) -> list:
        """``(key, count, example)`` of what was suppressed and not yet mentioned; forgets them."""
        found = [(key, count, self._examples.get(key, "")) for key, count in self._suppressed.items() if count]
        self._suppressed.clear()
        self._examples.clear()
        return found


#: strategies whose topic trees expect error reports beside the data (Kotori's)
REPORTING_CONVENTIONS = frozenset({"wan", "lan"})
#: a topic whose chain is the channel's own: no suffix decoder, not an event
_PLAIN = (None, False)
#: topic suffixes (Kotori's slots) that pick a decoder, tried before the channel's chain
SUFFIX_DECODERS = (
    ("data.csv", "csv"), ("data.ndjson", "ndjson"), ("data.kv", "kv"), ("data.msgpack", "msgpack"),
    ("data.cbor", "cbor"), ("airrohr.json", "airrohr"), ("ecowitt.json", "ecowitt"),
    ("tele/SENSOR", "tasmota"), ("tele/STATE", "tasmota"),
)

#: media types (MQTT 5's Content Type) that pick a decoder, tried before the channel's chain (whose decoders
#: follow it: a payload the type does not fit is still stored)
CONTENT_TYPES = {
    "application/json": "json", "text/json": "json", "application/senml+json": "json",
    "application/x-ndjson": "ndjson", "application/ndjson": "ndjson", "application/jsonl": "ndjson",
    "text/csv": "csv", "application/x-www-form-urlencoded": "kv",
    "application/cbor": "cbor", "application/senml+cbor": "cbor",
    "application/msgpack": "msgpack", "application/x-msgpack": "msgpack", "application/vnd.msgpack": "msgpack",
    "application/muon": "muon",
}
#: the built-in decoders that read JSON (a vendor's JSON, more of it than the json decoder reads): a JSON
#: Content Type leaves them in front of json (`Router._typed_chain`)
JSON_READERS = frozenset({
    "json", "ttn", "chirpstack", "airrohr", "tasmota", "ecowitt", "telegraf", "kepware", "neuron", "thingsboard",
    "homie", "shelly", "owntracks", "homeassistant", "esphome", "ahoy", "openmqttgateway", "zigbee2mqtt",
    "victron", "rtl_433", "ruuvi", "meshtastic", "senml",
})
#: most chains with a Content Type's decoder first a router remembers
MAX_TYPED_CHAINS = 1000

#: the UTF-8 byte order mark
BOM = b"\xef\xbb\xbf"
#: the route of a topic that is ignored
IGNORED = ("ignored", "")

#: how many topics a router remembers the route of (a fleet's device count),
#: and how many characters of topics at most (hostile 60 KB topics)
ROUTE_CACHE_SIZE = 100_000
ROUTE_CACHE_BYTES = 8 * 1024 * 1024


def _topic_tags(records: list, address, names: frozenset) -> list:
    """The records with the topic's ``names`` (labels, or parts of the address) as tags; a record's own tag of
    the same name wins."""
    labels = dict(address.labels)
    tags = {}
    for name in names:
        value = labels[name] if name in labels else getattr(address, name, None)
        if value is not None:
            tags[name] = value
    return [attrs.evolve(record, tags={**tags, **record.tags}) for record in records] if tags else records


@attrs.define(eq=False)
class ChannelRouter:
    """Routes one channel's messages.

    A strategy is a pure function of the topic, so each topic's route (or the
    reason it has none) is computed once and remembered.
    """

    channel: "Channel"
    strategy: Any
    chain: Any
    batcher: Any
    clock: Any
    stats: ChannelStats = attrs.Factory(ChannelStats)
    #: made in __attrs_post_init__
    _complaints: Any = None
    #: ``publish(topic, payload)``: how error reports reach the broker
    publish: Any = None
    #: batchers of the channel's further storages (a tee)
    tee: tuple = ()
    #: why a decoder last ignored a message (the dry run says it)
    last_ignored: str = ""
    #: the topic of the message last ignored, and why where a decoder ignored it (None: its topic is ignored)
    _last_ignored: tuple = attrs.field(default=("", None), init=False)
    _routes: dict = attrs.Factory(dict)
    _route_bytes: int = 0
    _ignore: tuple = ()
    _owners: dict = attrs.Factory(dict)
    #: an address -> the address and table of its events (`_events_of`)
    _event_routes: dict = attrs.Factory(dict)
    _pending: set = attrs.Factory(set)
    _idle: list = attrs.Factory(list)
    #: what marks this channel's own error reports (see `reporter_id`)
    reporter_id: str = ""
    mark: bytes = b""
    #: decoder name -> decoder, for the decoders a topic's suffix (`SUFFIX_DECODERS`) or a Content Type
    #: (`CONTENT_TYPES`) picks
    suffix_decoders: dict = attrs.Factory(dict)
    #: (id of a chain, a Content Type's decoder name) -> (that chain, the chain with that decoder first)
    _typed: dict = attrs.Factory(dict)
    #: (address rest, kind) -> (suffix decoder name, is an event); such a pair -> its chain
    _chains: dict = attrs.Factory(dict)
    _made: dict = attrs.Factory(dict)
    _values: Any = None
    _report_second: int = -1
    _reports_this_second: int = 0
    #: the channel's dataflow step (`lorrygate.decoding.dataflow.DataflowStep`), or None
    dataflow: Any = None
    #: the names of a topic that its strategy stores as tags (`TemplateStrategy.tag_names`); empty: none
    _tag_names: frozenset = frozenset()

    log = Logger()

    def __attrs_post_init__(self):
        if self._complaints is None:
            self._complaints = Complaints(self.clock)
        self._ignore = tuple(parse_filter(text) for text in self.channel.ignore)
        self._tag_names = frozenset(getattr(self.strategy, "tag_names", ()))
        if self.channel.values == "kotori":
            self._values = KotoriValues()
        self.identify(self.channel.name)

    @property
    def reports(self) -> bool:
        """Whether rejected messages are reported on the broker: where the channel says so, else only in topic
        trees whose convention expects reports (Kotori's ``.../error.json``), never into a vendor's own tree."""
        if self.channel.error_topic is not None:
            return self.channel.error_topic
        return self.channel.strategy in REPORTING_CONVENTIONS

    def identify(self, identity: str) -> None:
        """Mark this channel's reports as coming from ``identity`` (its client id)."""
        self.reporter_id = reporter_id(identity)
        self.mark = f'"reporter_id": "{self.reporter_id}"'.encode()

    def route(self, topic: str):
        """Return ``(address, table, None)`` or ``(None, None, (reason, what))``."""
        return (self._routes.get(topic) or self._resolve(topic))[:3]

    def explain(self, topic: str) -> tuple:
        """``(address, table, problem, decoder names)`` of a topic, as its messages are routed: problem is None,
        ``("ignored", why)`` or ``(reason, what)``; for ``describe``."""
        address, table, problem, chain, _ = self._resolve(topic)
        if problem is IGNORED:
            why = "matches the channel's ignore filters"
            if not any(f.matches(topic) for f in self._ignore):
                try:
                    time_limit.call(f"strategy {self.strategy.name!r}", self.strategy.match, topic)
                except Ignored as exc:
                    why = exc.reason
            problem = ("ignored", why)
        return address, table, problem, chain.names if chain is not None else ()

    def why_ignored(self) -> str:
        """``<topic>: <why>`` of the message last ignored, or "" (for the status: a channel whose messages are all
        ignored, the copies of a format it does not store say, shows why)."""
        topic, why = self._last_ignored
        if not topic:
            return ""
        if why is None:
            try:
                why = self.explain(topic)[2][1]
            except Exception:  # (a strategy of your own that ignored the topic and now raises)
                why = "ignored"
        return f"{topic}: {why}"

    def table_for_topic(self, topic: str) -> tuple:
        """``(address, table, None)`` of the topic as its messages would be stored, or ``(None, None, why not)``;
        for a reader (the HTTP source's export): nothing is cached, counted or logged."""
        if any(f.matches(topic) for f in self._ignore):
            return None, None, "it matches the channel's ignore filters"
        try:
            return (*time_limit.call(f"strategy {self.strategy.name!r}", self._match, topic), None)
        except Ignored as exc:
            return None, None, exc.reason
        except TopologyError:
            return None, None, "it does not fit the topology"
        except Exception as exc:
            return None, None, self._raised(exc)

    def _resolve(self, topic: str):
        """`route` for a topic not in the cache: ask the strategy, and cache the answer with the topic's
        decoder chain (`_chain_for`) and the topic itself, which the messages of the topic then share."""
        route: tuple
        try:
            if any(f.matches(topic) for f in self._ignore):
                raise Ignored("ignore", topic, "matches the channel's ignore filters")
            route = (*time_limit.call(f"strategy {self.strategy.name!r}", self._match, topic), None)
        except Ignored:
            route = (None, None, IGNORED)
        except TopologyError as exc:
            route = (None, None, (exc.reason, "does not fit the topology"))
        except Exception as exc:
            route = (None, None, (self._raised(exc), "broke the strategy"))
        route += (self._chain_for(route[0]) if route[2] is None else None, topic)
        if len(self._routes) >= ROUTE_CACHE_SIZE or self._route_bytes > ROUTE_CACHE_BYTES:
            self._routes.clear()
            self._owners.clear()
            self._route_bytes = 0
        self._routes[topic] = route
        self._route_bytes += len(topic)
        if route[1] is not None:
            self._check_collision(topic, route[0], route[1])
        return route

    def _raised(self, exc: Exception) -> str:
        """What a strategy raised, and where in its code (`where_raised`)."""
        if isinstance(exc, StrategyAnswer):
            return str(exc)
        where = where_raised(exc, self.strategy.match)
        if isinstance(exc, time_limit.CodeStopped):
            return exc.told(where)
        return f"strategy {self.strategy.name!r} raised {exc!r}{where}"

    def _match(self, topic: str) -> tuple:
        """(address, table) of a topic, by the strategy (under the time limit of the user's code)."""
        address = self.strategy.match(topic)
        if not isinstance(address, Address) or type(address.rest) is not str:  # (a rest of None broke a decoder)
            raise StrategyAnswer(self.strategy.name, f"match({topic!r})", address, "an Address (lorrygate.model."
                                 "Address(realm, network, gateway, node, kind, rest), rest the text of the levels "
                                 "after the address, '' for none), or TopologyError raised for a topic that does not "
                                 "fit")
        return address, checked_table(self.strategy, address, self.strategy.table_for(address))

    def _check_collision(self, topic: str, address, table) -> None:
        # What tells two addresses of one table apart, but for the parts that are tags in its rows (a Meshtastic
        # gateway: every gateway of a mesh channel shares its table, no collision), and with the levels that name
        # the table where the strategy names it after them (the topic strategy: plant/a-b and plant/a_b collide)
        tagged = self._tag_names
        if getattr(self.strategy, "labels_as_tags", False):
            tagged = tagged.union(name for name, _ in address.labels)
            labels: tuple = ()
        else:
            labels = tuple(pair for pair in address.labels if pair[0] not in tagged)
        identity = tuple(None if name in tagged else getattr(address, name)
                         for name in ("realm", "network", "gateway", "node")) + (labels,)
        if getattr(self.strategy, "rest_names_table", False):
            identity += (address.rest,)
        owner = self._owners.setdefault(table, (identity, topic))
        if owner[0] != identity:
            self.stats.collisions += 1
            self.log.warn(
                "channel {channel}: topic {topic!r} and topic {other!r} are different addresses that "
                "sanitize to the same table {table}; their rows share it",
                channel=self.channel.name,
                topic=topic,
                other=owner[1],
                table=str(table),
            )

    def deliver(self, message) -> None:
        """Route one message (a source's ``deliver``, the router's bound method: a call of the router itself
        costs ~800 instructions more a message); nothing a message carries can make this raise."""
        try:
            self.stats.received += 1
            if message.oversize is not None:
                size, digest = message.oversize[:2]
                # (the limit's name: a source's max_line, else the broker's max_payload)
                limit = f"source's {message.oversize[2]}" if len(message.oversize) > 2 else "broker's max_payload"
                self.stats.too_large += 1
                self._reject(message, "size", f"a payload of {size} bytes is larger than the {limit}; kept "
                             f"by reference, not by copy: sha256 {digest}", "is too large", error_type="PayloadTooLarge")
                return
            if message.refused is not None:
                self.stats.undecodable += 1
                self._reject(message, "decode", message.refused, "could not be decoded", error_type="ContentEncoding")
                return
            # find(), not `in`: `bytes in bytes` first tries the operand as an integer and formats (then drops) a
            # TypeError, twice the cost of the search (~1,800 instructions a message, measured with callgrind)
            if message.payload.find(self.mark) >= 0:
                # Our own report, back through our subscription (on whatever topic
                # the broker delivers it): nothing to store, nothing to report.
                self.stats.own_reports += 1
                self.batcher.add(Entry(None, [], self.channel.name, message, ""))
                return
            topic = message.topic
            # (the message takes the cached text of its topic: one string for all the topic's waiting messages)
            address, table, problem, chain, message.topic = self._routes.get(topic) or self._resolve(topic)
            if problem is IGNORED:
                # A command, or a topic the channel ignores: acknowledged with the
                # next commit, counted, and nothing else.
                self.stats.ignored += 1
                self._last_ignored = (topic, None)
                self._nothing_to_store(message, IGNORED)
                return
            if problem is not None:
                self.stats.unmatched += 1
                reason, what = problem
                self._reject(message, "topology", reason, what, error_type="TopologyError")
                return
            if message.content_type is not None:
                if ";" in message.content_type:  # (a charset other than UTF-8: the decoders read UTF-8)
                    payload, content_type = as_utf8(message.payload, message.content_type)
                    if payload is not message.payload:
                        message = attrs.evolve(message, payload=payload, content_type=content_type)
                chain = self._typed_chain(chain, message.content_type)
            try:
                result = chain.decode(message, address)
            except PartlyDecoded as exc:
                self._decoded((exc.decoder, exc.records), message, address, table, exc)
                return
            except DecodeError as exc:
                self._undecodable(message, exc)
                return
            except Ignored as exc:
                self._ignored(message, exc)
                return
            if type(result) is not tuple:
                # A decoder whose Deferred never fires must not hold its channel.
                result.addTimeout(self.channel.decode_timeout, self.clock)
                self._pending.add(result)
                result.addCallbacks(self._decoded, self._failed, (message, address, table), None,
                                    (message, address, table))
                result.addErrback(self._broke, message)
                # settled after the rows are with the batcher: a stop's barrier then covers them
                result.addBoth(self._settled, result)
                return
            self._decoded(result, message, address, table)
        except Exception as exc:
            self._reject(message, "internal", f"{type(exc).__name__}: {exc}", "broke the gateway",
                         error_type=type(exc).__name__)

    __call__ = deliver

    def _broke(self, failure, message) -> None:
        """What a decoder's or a dataflow's Deferred fired with broke the router (a decoder of your own that
        gave no list of records): the message is a dead letter, as `deliver` makes it at once, not left
        unacknowledged."""
        error = failure.value
        self._reject(message, "internal", f"{type(error).__name__}: {error}", "broke the gateway",
                     error_type=type(error).__name__)

    def _typed_chain(self, chain, content_type: str):
        """``chain`` with the decoder of the payload's Content Type first (``application/cbor; x=y``: cbor),
        where the channel has it; else ``chain``. A JSON type leaves a chain alone whose decoders in front of
        json all read JSON (`JSON_READERS`: a vendor's JSON is JSON too, and they read more of it). Remembered by
        the decoder's name, not by the type's text (a hostile publisher's ever new types of 64 KB each held
        memory)."""
        name = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if name is None:
            return chain
        if name == "json":
            names = [decoder.name for decoder in chain.decoders]
            if "json" in names and JSON_READERS.issuperset(names[:names.index("json")]):
                return chain
        key = (id(chain), name)
        made = self._typed.get(key)
        if made is None:
            decoder = self.suffix_decoders.get(name) or next((d for d in chain.decoders if d.name == name), None)
            typed = chain
            if decoder is not None and chain.decoders[:1] != (decoder,):
                typed = DecoderChain((decoder,) + tuple(d for d in chain.decoders if d.name != name))
            if len(self._typed) >= MAX_TYPED_CHAINS:
                self._typed.clear()
            self._typed[key] = made = (chain, typed)
        return made[1]

    def _chain_for(self, address):
        """The channel's chain; behind the decoder a suffix picks (``data.csv``: csv), and ended by the
        event value decoder on event topics."""
        key = (address.rest, address.kind)
        choice = self._chains.get(key)
        if choice is None:
            picked = None
            for suffix, name in SUFFIX_DECODERS:
                if address.rest.endswith(suffix) and name in self.suffix_decoders:
                    picked = name
                    break
            choice = (picked, address.kind == EVENT)
            if len(self._chains) >= 10_000:  # topics of some strategies carry ids in their rest
                self._chains.clear()
            self._chains[key] = choice
        if choice == _PLAIN:
            return self.chain
        chain = self._made.get(choice)
        if chain is None:
            picked, event = choice
            decoders = tuple(self.chain.decoders)
            if picked is not None:
                decoders = (self.suffix_decoders[picked],) + tuple(d for d in decoders if d.name != picked)
            if event:
                decoders += (EventValueDecoder(),)
            self._made[choice] = chain = DecoderChain(decoders)
        return chain

    def _decoded(self, result, message, address, table, partly: PartlyDecoded | None = None) -> None:
        """Store what a decoder made of a message; ``partly``: the lines of it that failed, to keep as a dead
        letter with the rows (a `PartlyDecoded` whose ``records`` are ``result``'s)."""
        decoder, records = result
        if type(records) is Events:
            address, table = self._events_of(address, table)
        if len(records) > self.channel.max_records:
            self._undecodable(message, DecodeError(decoder, f"{len(records)} records from one message, more than "
                                                            f"max_records = {self.channel.max_records}"))
            return
        if self._values is not None:
            values = self._values
            before = values.dropped
            try:
                records = values.apply(records, message)
            except DecodeError as exc:
                self._undecodable(message, exc)
                return
            self.stats.values_dropped += values.dropped - before
        if address.labels and getattr(self.strategy, "labels_as_tags", False):
            labels = dict(address.labels)
            records = [attrs.evolve(record, tags={**labels, **record.tags}) for record in records]
        elif self._tag_names:
            records = _topic_tags(records, address, self._tag_names)
        transform = self.channel.transform
        if transform is not None:
            try:
                records = transform.apply(records, message, address, decoder)
            except DecodeError as exc:
                self._undecodable(message, exc, stage="transform")
                return
        if self.dataflow is not None and records:
            pending = self.dataflow.submit(records, table)
            self._pending.add(pending)
            pending.addCallbacks(self._dataflowed, self._dataflow_failed,
                                 (records, message, address, table, decoder, partly), None, (message,))
            pending.addErrback(self._broke, message)
            pending.addBoth(self._settled, pending)
            return
        if not self.tee and partly is None:  # `_store`'s hot path written out: one storage, one table
            self.stats.routed += 1
            self.batcher.add(Entry(table, records, self.channel.name, message, decoder, address))
            return
        self._store(records, message, address, table, decoder, partly=partly)

    def _events_of(self, address, table) -> tuple:
        """The address and table of a message's events (`Events`): its address as an event, in the table the
        strategy gives it; the data table where the strategy has none (a strategy of your own that raises)."""
        found = self._event_routes.get(address)
        if found is None:
            event = attrs.evolve(address, kind=EVENT)
            try:
                found = (event, checked_table(self.strategy, event, time_limit.call(
                    f"strategy {self.strategy.name!r}", self.strategy.table_for, event)))
            except Exception as exc:
                self.log.warn("channel {channel}: strategy {strategy!r} gave no events table for {address} "
                              "({error}); its events are stored in {table}", channel=self.channel.name,
                              strategy=self.strategy.name, address=str(address),
                              error=repr(exc) + where_raised(exc, self.strategy.table_for), table=str(table))
                found = (address, table)
            if len(self._event_routes) >= ROUTE_CACHE_SIZE:
                self._event_routes.clear()
            self._event_routes[address] = found
        return found

    def _dataflowed(self, outputs, records, message, address, table, decoder, partly) -> None:
        records, derived = apply_outputs(self.dataflow.settings, records, outputs)
        extra = ((derived_table(table, self.dataflow.settings.name), derived),) if derived else ()
        self._store(records, message, address, table, decoder, extra, partly)

    def _dataflow_failed(self, failure, message) -> None:
        error = failure.value
        if not isinstance(error, DecodeError):
            error = DecodeError(self.dataflow.name, f"{type(error).__name__}: {error}")
        self._undecodable(message, error, stage="transform")

    def _store(self, records, message, address, table, decoder, extra: tuple = (), partly=None) -> None:
        """Hand a message's rows to the storage (and the tee's); ``extra``: (table, records) pairs of the same
        message for other tables (a dataflow's derived table); ``partly``: its lines that failed (a
        `PartlyDecoded`), kept as a dead letter in the same commit as its rows. The message is acknowledged once
        all are stored."""
        self.stats.routed += 1
        if not self.tee and not extra and partly is None:  # the hot path: one storage, one table
            self.batcher.add(Entry(table, records, self.channel.name, message, decoder, address))
            return
        batchers = (self.batcher,) + self.tee
        parts = ((table, records),) + extra
        count = len(batchers) * len(parts) + (partly is not None)
        sent = message
        if count > 1:
            message = attrs.evolve(message, ack=FanInAck(message.ack, count))
        entries = [Entry(part_table, part_records, self.channel.name, message, decoder, address)
                   for part_table, part_records in parts]
        if partly is None:
            for entry in entries:
                self.batcher.add(entry)
        else:
            self._stored_in_part(sent, partly)  # (first: a source that answers its sender is told before the commit)
            self.batcher.add_together(entries, DeadLetter(self.channel.name, message, "decode", partly.reason,
                                                          partly.decoder, partly.payload))
        for batcher in self.tee:
            for part_table, part_records in parts:
                batcher.add(Entry(part_table, part_records, self.channel.name, message, decoder, address))

    def _ignored(self, message, exc: Ignored) -> None:
        """A decoder told the message carries no measurement: acknowledged with the next commit, and counted."""
        self.stats.ignored += 1
        self.last_ignored = exc.reason
        self._last_ignored = (message.topic, exc.reason)
        self._nothing_to_store(message, f"ignored: {exc.reason}")

    def _nothing_to_store(self, message, why) -> None:
        """Acknowledge ``message`` with the next commit, storing nothing; a source that answers its sender (HTTP)
        is told ``why`` (`IGNORED`: the topic's reason, looked up only then)."""
        told = getattr(message.ack, "not_stored", None)
        if told is not None:
            if why is IGNORED:
                try:
                    why = f"ignored: {self.explain(message.topic)[2][1]}"
                except Exception:  # (a strategy of your own that ignored the topic and now raises)
                    why = "ignored"
            told(why)
        self.batcher.add(Entry(None, [], self.channel.name, message, ""))

    def _failed(self, failure, message, address, table) -> None:
        if failure.check(Ignored):
            self._ignored(message, failure.value)
            return
        if failure.check(PartlyDecoded):
            self._decoded((failure.value.decoder, failure.value.records), message, address, table, failure.value)
            return
        if failure.check(DeferredTimeout):
            error = DecodeError("chain", f"no decoder answered within decode_timeout = {self.channel.decode_timeout} s")
        elif failure.check(DecodeError):
            error = failure.value
        else:
            error = DecodeError("chain", failure.getErrorMessage())
        self._undecodable(message, error)

    def _settled(self, result, pending):
        self._pending.discard(pending)
        if not self._pending:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def settle(self) -> Deferred:
        """A Deferred that fires once no asynchronous decode is in flight."""
        d = Deferred()
        if self._pending:
            self._idle.append(d)
        else:
            d.callback(None)
        return d

    def _undecodable(self, message, exc: DecodeError, stage: str = "decode") -> None:
        if type(exc) is NoDecoderMatched and not message.payload.strip().removeprefix(BOM).strip():
            # Nothing to store, and nothing wrong: clearing a retained message publishes an empty payload to
            # every subscriber (MQTT 3.3.1.3), and with MQTT 3.1.1 it comes without the retain flag. Telegraf's
            # parsers, too, read an empty payload as no metrics. A decoder that takes empty payloads (raw, a
            # user's) still gets them first.
            self.stats.empty += 1
            self._nothing_to_store(message, "an empty payload: nothing to store")
            return
        self.stats.undecodable += 1
        self._reject(message, stage, str(exc), "could not be decoded", decoder=exc.decoder, error_type=type(exc).__name__)

    def _reject(self, message, stage: str, reason: str, what: str, decoder: str = "", error_type: str = "") -> None:
        rejected = getattr(message.ack, "rejected", None)
        if rejected is not None:  # a source that answers its sender (HTTP) says why
            rejected(stage, reason)
        self.batcher.add_dead_letter(DeadLetter(self.channel.name, message, stage, reason, decoder))
        self._complain(message, stage, reason, what, error_type)

    def _stored_in_part(self, message, partly: PartlyDecoded) -> None:
        """Count and tell of a message whose good lines are stored and whose bad ones are a dead letter."""
        self.stats.partly += 1
        told = getattr(message.ack, "partly", None)
        if told is not None:  # a source that answers its sender (HTTP) says which lines were not stored
            told(f"decode: {partly.reason}")
        self._complain(message, "decode", partly.reason, f"was stored except for {partly.failed} that could not be "
                       "decoded", type(partly).__name__, f"lorrygate stored this message except for {partly.failed} "
                       f"that could not be decoded; {'it is' if partly.bad == 1 else 'they are'} kept in the "
                       "dead-letter table of storage "
                       f"{self.channel.storage!r}")

    def _complain(self, message, stage: str, reason: str, what: str, error_type: str, told: str = "") -> None:
        """Count a dead letter, report it on the error topic (``told``: what the report says of the message,
        else that it could not be stored), and log it (once per kind and interval)."""
        counts = self.stats.dead_letters
        counts[stage] = counts.get(stage, 0) + 1
        if self.reports and self.publish is not None:
            self._report(message, stage, reason, error_type, told)
        # The key leaves out the topic, which a reason may quote, and the values and names a reason quotes
        # from the payload: 2,000 bad topics or payloads of one kind are one complaint, not 2,000.
        suppressed = self._complaints.allow((stage, reason_kind(reason.replace(message.topic, "<topic>"))),
                                            (message.topic, reason))
        if suppressed is None:
            return
        self.log.warn(
            "channel {channel}: message on topic {topic!r} {what}: {reason}; "
            "kept in the dead-letter table of storage {storage}{more}",
            channel=self.channel.name,
            topic=message.topic,
            what=what,
            reason=reason,
            storage=self.channel.storage,
            stage=stage,
            more=f" ({suppressed} more like it since the last report)" if suppressed else "",
        )

    def summarize(self) -> None:
        """Log the rejections not yet mentioned (each stats interval and at stop), one line per kind."""
        for (stage, _kind), count, (topic, reason) in self._complaints.pending():
            # The reason of one of them, as it was: the key's kind masks what the reasons quote
            self.log.warn(
                "channel {channel}: {count} more message(s) rejected at {stage} since the last report, such as: "
                "{reason} (on topic {topic!r}); kept in the dead-letter table of storage {storage}",
                channel=self.channel.name, count=count, stage=stage, reason=reason, topic=topic[:500],
                storage=self.channel.storage,
            )

    def _report(self, message, stage: str, reason: str, error_type: str, told: str = "") -> None:
        topic = error_topic(message.topic)
        if topic is None:
            return
        if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
            self.stats.reports_skipped += 1
            return
        second = int(self.clock.seconds())
        if second != self._report_second:
            self._report_second, self._reports_this_second = second, 0
        if self._reports_this_second >= REPORTS_PER_SECOND:
            self.stats.reports_limited += 1
            return
        self._reports_this_second += 1
        payload = json.dumps(
            {
                "type": error_type or "Error",
                "message": reason,
                "description": told or f"lorrygate could not store this message ({stage}); it is kept in the "
                f"dead-letter table of storage {self.channel.storage!r} with its payload",
                "timestamp": to_iso(seconds_to_ns(message.received)),
                "topic": message.topic,
                "reporter": "lorrygate",
                "reporter_id": self.reporter_id,
            }
        ).encode("utf-8")
        self.stats.error_reports += 1
        self.publish(topic, payload)


#: error reports a channel publishes per second at most (a flood of bad
#: messages is counted, not echoed)
REPORTS_PER_SECOND = 10

#: the longest topic MQTT can carry (a UTF-8 string with a 16-bit length)
MAX_TOPIC_BYTES = 65535

def reporter_id(identity: str) -> str:
    """The bytes that mark the reports of one channel (its client id): a
    device's own ``error.json`` that says ``"reporter": "lorrygate"`` is not
    taken for ours, and ours are recognised whatever a broker does to the
    topic (RabbitMQ turns ``a/error.json`` into ``a/error/json``)."""
    import hashlib

    return "lg-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


def error_topic(topic: str):
    """Where a rejected message's report goes: its topic with the last level
    replaced by ``error.json``. None for a message on an ``error.json`` topic
    itself, so that reports never feed back into reports."""
    base, _, last = topic.rpartition("/")
    if last == "error.json":
        return None
    return f"{base}/error.json" if base else "error.json"


class StrategyAnswer(TypeError):
    """A strategy (of your own) answered with something no storage can take: a table name that is no
    `TableName` of text (a plain string, None, a tuple), an address that is no `Address`. The storage failed on
    it with ``AttributeError: 'str' object has no attribute 'schema'``, which told neither the strategy nor the
    fix."""

    def __init__(self, strategy: str, call: str, answer, wanted: str):
        super().__init__(f"strategy {strategy!r}: {call} returned {answer!r:.200}, not {wanted}")


def checked_table(strategy, address, table) -> TableName:
    """``table``, the strategy's ``table_for(address)``, if it is a `TableName` of text with a table; else
    `StrategyAnswer` saying so."""
    if (type(table) is TableName or isinstance(table, TableName)) and type(table.table) is str and table.table \
            and (table.schema is None or type(table.schema) is str):
        return table
    raise StrategyAnswer(strategy.name, f"table_for({address!r:.200})", table,
                         "a TableName(schema, table) of text with a table name (lorrygate.model.TableName; schema "
                         "None for the storage's default)")

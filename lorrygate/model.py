"""
The values that flow through lorrygate, as frozen attrs classes.

A source produces a `Message`; a topology strategy turns its topic into an
`Address` and the address into a `TableName`; a decoder turns its payload into
`Record`s; a `Channel` names the route between them.
"""

from collections.abc import Mapping
from typing import Any

import attrs

#: message kinds a strategy can recognise
DATA = "data"
EVENT = "event"
ERROR = "error"
KINDS = (DATA, EVENT, ERROR)


class NoAck:
    """The ack handle of a message that needs no acknowledgement (QoS 0)."""

    __slots__ = ()

    def ack(self) -> None:
        pass

    def __repr__(self) -> str:
        return "<NoAck>"


NO_ACK = NoAck()


#: Message and Record are not frozen: the hot path makes one of each for every message, and a frozen
#: attrs class costs 0.2-0.5 us more to make (measured); code treats them as immutable all the same
#: (`attrs.evolve` for a changed copy)
@attrs.define(slots=True, unsafe_hash=True)
class Message:
    """A message as a source received it."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    #: receive time, seconds since the epoch, from the source's clock
    received: float = 0.0
    #: the subscription (topic filter) this message arrived through
    subscription: str = ""
    #: call ``ack.ack()`` once the message is stored: the source then
    #: acknowledges it to the broker
    ack: Any = attrs.field(default=NO_ACK, eq=False, repr=False)
    #: for a payload over the source's ``max_payload``: ``(size, sha256 hex)``;
    #: the payload itself is empty, it was never held in memory
    oversize: tuple | None = None
    #: for sources that read a stream at known offsets (files):
    #: ``(stream, start, end)``; storages that keep positions store a message
    #: once, however often it is read (`lorrygate.storage.positions`)
    position: tuple | None = None
    #: the media type the publisher gave the payload (MQTT 5's Content Type), or None
    content_type: str | None = None
    #: what the publisher sent beside the payload, as ``(name, text)`` pairs in the order sent (a name may repeat):
    #: MQTT 5 user properties, AMQP headers, Kafka record headers, a Redis stream entry's fields beside its payload;
    #: a channel's ``headers`` stores them as tags
    headers: tuple = ()
    #: the time the bus gives the message, seconds since the epoch, or None: a Kafka record's timestamp, the time
    #: of a Redis stream entry's id, RabbitMQ's ``timestamp_in_ms`` (its message timestamp plugin). A row whose payload has no time of its own takes it rather than the receive
    #: time: a backlog is stored at the times its messages were sent, and a redelivered copy has the same time
    #: (and so, with idempotent rows, the same row id)
    sent: float | None = None
    #: why the source could not read the payload as it was sent (an AMQP ``content_encoding`` it does not know, a
    #: gzip payload that is no gzip or inflates beyond the limit), or None: the channel keeps the message, its
    #: payload as it came, as a dead letter of stage ``decode`` with this reason
    refused: str | None = None


@attrs.frozen(slots=True)
class Address:
    """Where a message belongs, as a topology strategy read it from the topic."""

    realm: str
    network: str | None
    gateway: str | None
    node: str | None
    kind: str
    #: the topic levels after the address, e.g. ``data.json`` or ``data/temperature``
    rest: str = ""
    #: for per-field topics such as ``.../data/temperature``: the field name
    field: str | None = None
    #: further named parts of the topic, as sorted ``(name, value)`` pairs
    #: (declarative strategies capture them for their table names)
    labels: tuple = ()


@attrs.frozen(slots=True)
class TableName:
    """A storage location: schema (database) and table, already sanitized."""

    #: None: the storage's own (SQLite: none, PostgreSQL: ``public``, CrateDB: ``doc``)
    schema: str | None
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@attrs.define(slots=True)
class Record:
    """One row: a time (integer nanoseconds since the epoch, UTC), fields and tags."""

    time: int
    fields: Mapping = attrs.field(factory=dict)
    tags: Mapping = attrs.field(factory=dict)


class Events(list):
    """The records of a message that are events, whatever its topic's kind, as a decoder returns them (a Shelly
    Gen2 button push comes on ``events/rpc`` with the device's status): the router stores them in the events
    table of the message's address (``<node>_events``), where the topic's own events go."""

    __slots__ = ()


@attrs.frozen(slots=True)
class Channel:
    """A named route: source subscription -> strategy -> decoder chain -> storage."""

    name: str
    source: str
    topics: tuple
    qos: int
    strategy: str
    decoders: tuple
    storage: str
    #: IANA zone of payload times written without an offset
    timezone: str = "UTC"
    #: retained messages on (re)subscribe: new (only for a new subscription), always, never
    retained: str = "new"
    #: publish a report of each rejected message to ``<base>/error.json``
    error_topic: bool | None = None
    #: a `lorrygate.decoding.transform.Transform`, or None
    transform: Any = attrs.field(default=None, repr=False)
    #: a `lorrygate.storage.ddl.DdlTemplate` for this channel's new tables, or None
    ddl: Any = attrs.field(default=None, repr=False)
    #: a `lorrygate.decoding.dataflow.DataflowSettings` (``transform = NAME``), or None
    dataflow: Any = attrs.field(default=None, repr=False)
    #: more storages every record also goes to (a tee); a message is
    #: acknowledged once all of them committed it
    tee: tuple = ()
    #: seconds an asynchronous decoder may take before the message is a dead letter
    decode_timeout: float = 30.0
    #: records one message may make; more make it a dead letter
    max_records: int = 100_000
    #: topic filters of messages to acknowledge and count, never store (commands, say)
    ignore: tuple = ()
    #: the value policy (`lorrygate.decoding.values`): kotori or as-sent
    values: str = "as-sent"
    #: amqp sources: the exchange, the queue ("": lorrygate.<channel>) and the in-flight window
    exchange: str = "amq.topic"
    queue: str = ""
    prefetch: int = 2000
    #: redis and zmq sources: streams or pubsub, sub or pull ("": the source's default)
    mode: str = ""
    #: mqtt: the gateway group (shared subscriptions), "" for none; redis, kafka: the consumer group ("": lorrygate)
    group: str = ""
    consumer: str = ""
    topic_field: str = "topic"
    payload_field: str = "payload"
    claim_idle: float = 60.0
    #: kafka sources: where a group without a committed offset starts
    start: str = "earliest"
    #: seconds of the buckets whose rows its SQL storages merge (``merge``); None: the storage's
    merge: float | None = None

    @property
    def storages(self) -> tuple:
        return (self.storage,) + tuple(self.tee)


def unused_name(names, name: str) -> str:
    """``name``, or if ``names`` has it ``name_2``, ``name_3``, ... (the first that ``names`` has not): how a
    second value of one name keeps its value, in the decoders and in the storages' columns alike."""
    if name not in names:
        return name
    number = 2
    while f"{name}_{number}" in names:
        number += 1
    return f"{name}_{number}"

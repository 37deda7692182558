"""
The headers a publisher sends beside a payload, as `lorrygate.model.Message.headers` keeps them: ``(name, text)``
pairs in the order sent. MQTT 5 user properties are text already; AMQP header tables, Kafka record headers and the
fields of a Redis stream's entry beside its payload are made text here, so that a channel's ``headers`` stores them
as tags whatever bus they came by.
"""

import datetime
import json

#: the Kafka record header of a payload's media type (as Spring's and CloudEvents' Kafka bindings name it): the
#: Kafka source reads it as the message's Content Type, the Kafka sink writes it
CONTENT_TYPE = "content-type"


def text(value) -> str | None:
    """A header's value as text: bytes as UTF-8 (bytes that are not UTF-8 as ``\\xNN`` escapes), booleans as
    ``true``/``false``, times in ISO 8601, tables and arrays as JSON; None for a void value (no tag)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=text, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def pairs(items) -> tuple:
    """``(name, value)`` items (an AMQP header table's ``.items()``, Kafka's header list) as ``(name, text)``
    pairs, void values left out; names as text."""
    if not items:
        return ()
    out = []
    for name, value in items:
        found = text(value)
        if found is not None:
            out.append((text(name) or "", found))
    return tuple(out)


def content_type(pairs: tuple) -> str | None:
    """The ``content-type`` header among a Kafka record's headers (any case), or None."""
    for name, value in pairs:
        if name.lower() == CONTENT_TYPE:
            return value or None
    return None


def as_json(pairs: tuple) -> str | None:
    """A message's headers as a dead letter keeps them: a JSON array of ``[name, text]`` pairs in the order sent,
    or None when it had none."""
    return json.dumps([list(pair) for pair in pairs], ensure_ascii=False, separators=(",", ":")) if pairs else None


def from_json(document: str | None) -> tuple:
    """`as_json`'s text back as the pairs of `lorrygate.model.Message.headers` (a replay's message)."""
    if not document:
        return ()
    return tuple((str(name), str(value)) for name, value in json.loads(document))

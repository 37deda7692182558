"""
The ``rtl_433`` decoder: rtl_433's JSON events (``rtl_433 -F json``, or its MQTT
output's ``events`` topic). Each object is one reception of one device: its
readings are the fields; ``model``, ``id``, ``channel``, ``type``, ``subtype``,
``mic`` (the integrity check: ``CRC``, ``CHECKSUM``) and ``protocol`` are tags,
as rtl_433's own InfluxDB output tags them (it makes the model the measurement),
so that one table of a receiver's devices is queried by device. ``time`` is the
reception's time as rtl_433 writes it (a local time in the channel's
``timezone`` by default, ``-M time:utc``, ``-M time:unix`` and ``-M
time:iso`` too); a relative time (``-M time:off``'s ``@0.123s``) is the
receive time. An object without ``model`` (a report of the receiver's own) is
declined, for ``json``.
"""

import json
from typing import Any

import attrs
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.records import object_record
from lorrygate.errors import Declined
from lorrygate.interfaces import IDecoder

#: the keys rtl_433's InfluxDB output makes tags (and the model, its measurement there)
TAGS = ("model", "type", "subtype", "id", "channel", "mic", "protocol")


def _text(value) -> str:
    """A tag's text: a number as rtl_433 prints it (``1234``), anything else (never seen) as JSON."""
    return value if type(value) is str else json.dumps(value)


@implementer(IDecoder)
@attrs.frozen
class Rtl433Decoder:
    name: str = "rtl_433"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if message.payload.lstrip()[:1] != b"{":
            raise Declined("not a JSON object")
        try:
            document = loads(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Declined(f"not JSON: {exc}") from None
        if type(document) is not dict or "model" not in document:
            raise Declined("no rtl_433 event (no model)")
        tags = {key: _text(document.pop(key)) for key in TAGS if document.get(key) is not None}
        stamp = document.get("time")
        if type(stamp) is str and stamp.startswith("@"):
            del document["time"]  # (relative to the start of a file rtl_433 read: no time of day)
        return [object_record(document, message, self.name, self.timezone, tags)]

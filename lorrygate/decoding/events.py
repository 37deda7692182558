"""
The last decoder of every chain on event topics.

Vendors announce state and events with bare values: Tasmota ``tele/<dev>/LWT``
is ``Online``, ``stat/<dev>/POWER`` is ``OFF``, Shelly ``<dev>/online`` is
``true``, Zigbee2MQTT's legacy availability is ``online``. None of the
channel's decoders takes them, and they are no errors: a payload that no
decoder of the chain took on an event topic is stored as one value (a number,
a boolean or the text) in the column named after the event (``LWT``,
``POWER``, ``online``; ``value`` where the topic names none), with the receive
time. An empty payload (a cleared retained message) stores nothing.
"""

from typing import Any

import attrs
from zope.interface import implementer

from lorrygate.decoding.records import received_ns, scalar
from lorrygate.decoding.text import payload_text
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record


@implementer(IDecoder)
@attrs.frozen
class EventValueDecoder:
    name: str = "event"
    timezone: Any = None

    def decode(self, message, address) -> list:
        text = payload_text(message.payload).strip()
        if not text:
            return []
        field = address.field if address is not None and address.field else "value"
        return [Record(received_ns(message), {field: scalar(text)})]

"""
rtl_433 (a software-defined radio's decoder of 433/868/915 MHz sensors: weather
stations, thermometers, meters, tyre pressure) through its MQTT output
(``rtl_433 -F mqtt://...``), whose topics are, by default, below
``rtl_433/<hostname>``:

- ``.../events``: each reception as one JSON object (``model``, ``id``,
  ``channel``, the readings, ``time``): data of the table ``<hostname>_sensors``
  in the schema ``rtl_433``, one table per receiver, the device's ``model``,
  ``id``, ``channel`` (and ``type``, ``subtype``, ``mic``, ``protocol``) its
  tags, as rtl_433's own InfluxDB output tags them (the ``rtl_433`` decoder);
- ``.../devices[/type][/model][/subtype][/channel][/id]/<field>``: the same
  readings again, a topic a value: ignored (``output = events``, the default),
  or, with ``output = devices`` (rtl_433 run with ``devices=...`` only), data of
  the table ``<hostname>_<model>_<channel>_<id>_sensors`` (the levels between
  ``devices`` and the field), the events then ignored;
- ``.../states``: the receiver's own state (its frequencies, the decoders
  enabled), an event of ``<hostname>_events``.
"""

from typing import NoReturn

import attrs
from zope.interface import implementer

from lorrygate.errors import Ignored, TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.fleets import below
from lorrygate.topology.naming import join, sanitize
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels


@implementer(IStrategy)
@attrs.frozen
class Rtl433Strategy:
    """``<base>/<hostname>/events`` (one JSON object a reception: data of ``<hostname>_sensors``, the device its
    tags), ``.../devices/.../<field>`` (the same values a topic each: ignored, or with ``output = devices`` data
    of a table per device and the events ignored) and ``.../states`` (an event)."""

    name: str = "rtl_433"
    base: str = "rtl_433"
    #: which of rtl_433's two outputs of the same readings is stored: ``events`` or ``devices``
    output: str = "events"

    def match(self, topic: str) -> Address:
        rest = below(self.base, topic)
        if rest is None or len(rest) < 2:
            self._refuse(topic)
        host, kind = rest[0], rest[1]
        check_levels(self.name, topic, hostname=host)
        if len(rest) == 2 and kind == "events":
            if self.output == "devices":
                raise Ignored(self.name, topic, "rtl_433's events, whose values come a topic each (output = devices)")
            return Address(self.base, None, host, None, DATA, "events")
        if len(rest) == 2 and kind == "states":
            return Address(self.base, None, host, None, EVENT, "states")
        if kind == "devices" and len(rest) >= 3:
            device, field = rest[2:-1], rest[-1]
            if not all(rest[2:]) or any(level in ("+", "#") for level in rest[2:]):
                raise TopologyError(self.name, topic, "a devices topic with an empty level or a wildcard")
            if self.output == "events":
                raise Ignored(self.name, topic, f"a copy of a value of {self.base}/<hostname>/events, which is stored "
                                                "(output = events)")
            return Address(self.base, None, host, "/".join(device) or None, DATA, "/".join(rest[1:]), field)
        self._refuse(topic)

    def table_for(self, address: Address) -> TableName:
        levels = address.node.split("/") if address.node else ()
        return TableName(sanitize(address.realm), join(address.gateway, *levels, TABLE_SUFFIXES[address.kind]))

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<hostname>/events, {self.base}/<hostname>/states "
                                              f"or {self.base}/<hostname>/devices/.../<field>")

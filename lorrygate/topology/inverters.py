"""
The gateways of solar micro-inverters (Hoymiles, TSUN): an ESP32 that polls them by radio and publishes a value a
topic below its base topic. The schema is the base topic; a table an inverter, the channel (0: AC and the inverter
itself, 1-6: its DC inputs) a tag of each row; the DTU's own values and the totals of all inverters tables of their
own; its last will an event; its commands ignored.

OpenDTU (and its fork OpenDTU-OnBattery; ``base`` ``solar`` by default, the DTU's "Base Topic"):

- ``<base>/<serial>/<channel>/<field>`` (``solar/114182912345/0/power``, ``.../1/voltage``): the field
  ``<field>`` of the inverter's table ``<serial>_sensors``, the channel in the ``channel`` column, a row a message;
- ``<base>/<serial>/<level>/<field>`` and ``<base>/<serial>/<field>`` (``status/reachable``, ``radio/rssi``,
  ``device/hwversion``, ``name``): the field ``<level>.<field>`` (``status.reachable``) or ``<field>`` of the same
  table, without a channel;
- ``<base>/dtu/...`` (``uptime``, ``rssi``, ``heap/free``), ``<base>/ac/...`` and ``<base>/dc/...`` (the totals):
  the same way, the tables ``dtu_sensors``, ``ac_sensors``, ``dc_sensors``; so are the OnBattery fork's own trees
  (``battery/...``, ``huawei/...``);
- ``<base>/dtu/status`` (``online``, ``offline``): an event;
- ``<base>/<serial>/cmd/...`` (power limits, restart) and any ``<base>/<x>/cmd/...``: commands, ignored.

AhoyDTU (``base`` ``inverter`` by default):

- ``<base>/<name>/ch<channel>/<field>`` (``inverter/HM-600/ch0/P_AC``), and with "JSON" set ``<base>/<name>/ch<channel>``
  (``{"P_AC": 120.3, ..., "ts": 1717243200}``, at its ``ts``): the inverter's table ``<name>_sensors``, the channel
  a tag; ``<base>/<name>/<field>`` (``available``, ``last_success``, ``firmware``, ``radio_stat``; a JSON object
  as dotted fields, ``firmware.version``) and ``<base>/<name>/alarm/cnt`` the same table's fields; the alarms
  ``<base>/<name>/alarm/<n>`` (``{"code": ..., "str": ..., "start": ..., "end": ...}``) events;
- ``<base>/total/<field>`` and ``<base>/total`` (JSON): the table ``total_sensors``; the DTU's values one level
  below the base (``uptime``, ``wifi_rssi``, ``status``, ``ip_addr``): ``dtu_sensors``; ``<base>/mqtt`` (its last
  will, ``connected``, ``not connected``): an event;
- ``<base>/ctrl/...`` (power limits, restarts) and ``<base>/setup/...`` (``set_time``): commands, ignored.

A ``+`` level of ``base`` matches any level, for several DTUs given base topics of their own (``base = solar/+``
for ``solar/garage/...`` and ``solar/roof/...``: the schemas ``solar_garage`` and ``solar_roof``).
"""

from typing import NoReturn

import attrs
from zope.interface import implementer

from lorrygate.errors import Ignored, TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.fleets import below
from lorrygate.topology.naming import join
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels

#: the table of a DTU's own values
DTU = "dtu"


class _Dtu:
    """Shared: the levels below a base topic whose ``+`` levels match any, the schema from the base's levels."""

    name: str
    base: str
    #: the router adds the address's labels (the channel) to the rows as tags
    labels_as_tags = True
    #: the labels an address may have (a channel's ``tags`` may name them)
    label_names: tuple[str, ...] = ("channel",)

    def _below(self, topic: str, least: int) -> tuple[str, list]:
        """(the base's levels as the topic has them, the levels below); refused if fewer than ``least`` or with an
        empty level or a wildcard, ignored if a command (`_command`)."""
        rest = below(self.base, topic)
        if rest is None or len(rest) < least:
            self._refuse(topic)
        levels, prefix = topic.split("/"), self.base.split("/")
        size = len(prefix)
        command = self._command(rest)
        if command:
            raise Ignored(self.name, topic, f"{self.base}/{command}: a command, not a measurement")
        if not all(rest) or any(level in ("+", "#") for level in rest) or any(
                want == "+" and got in ("", "#") for want, got in zip(prefix, levels)):
            raise TopologyError(self.name, topic, "a topic with an empty level or a wildcard")
        return "/".join(levels[:size]), rest

    def table_for(self, address: Address) -> TableName:
        schema = join(*(level for level in address.realm.split("/") if level))
        return TableName(schema, join(address.node, TABLE_SUFFIXES[address.kind]))

    def _command(self, rest: list) -> str:
        """What a command's topic looks like if the levels below the base are one, else ''."""
        raise NotImplementedError

    def _refuse(self, topic: str) -> NoReturn:
        raise NotImplementedError


@implementer(IStrategy)
@attrs.frozen
class OpenDtuStrategy(_Dtu):
    """``<base>/<device>/[<channel>/]<field...>`` (data of ``<device>_sensors``, the channel a tag),
    ``<base>/<device>/status`` (an event), ``<base>/<device>/cmd/...`` (ignored); see the module's docstring."""

    name: str = "opendtu"
    #: the DTU's base topic without its slash; it may have levels, a ``+`` level matching any
    base: str = "solar"

    def match(self, topic: str) -> Address:
        realm, rest = self._below(topic, 2)
        device = rest[0]
        check_levels(self.name, topic, device=device)
        if len(rest) == 2 and rest[1] == "status":
            return Address(realm, None, None, device, EVENT, "status", "status")
        if len(rest) == 3 and rest[1].isascii() and rest[1].isdigit():
            return Address(realm, None, None, device, DATA, "/".join(rest[1:]), rest[2], (("channel", rest[1]),))
        return Address(realm, None, None, device, DATA, "/".join(rest[1:]), ".".join(rest[1:]))

    def _command(self, rest: list) -> str:
        return "<device>/cmd/..." if len(rest) >= 2 and rest[1] == "cmd" else ""

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<inverter serial>/<channel>/<field> "
                                              f"(.../114182912345/0/power), {self.base}/<device>/<field...> "
                                              f"(.../dtu/uptime, .../<serial>/status/reachable), "
                                              f"{self.base}/dtu/status (an event) or {self.base}/<device>/cmd/... "
                                              "(ignored)")


def _channel(level: str) -> str | None:
    """AhoyDTU's ``ch0`` -> ``0``; None for any other level."""
    number = level[2:]
    return number if level[:2] == "ch" and number.isascii() and number.isdigit() else None


@implementer(IStrategy)
@attrs.frozen
class AhoyStrategy(_Dtu):
    """``<base>/<inverter>/ch<channel>[/<field>]`` (data of ``<inverter>_sensors``, the channel a tag),
    ``<base>/<inverter>/<field...>`` (its fields), ``<base>/<inverter>/alarm/<n>`` (events), ``<base>/total[/...]``,
    ``<base>/<field>`` (the DTU's), ``<base>/mqtt`` (an event), ``<base>/ctrl/...`` and ``<base>/setup/...``
    (ignored); see the module's docstring."""

    name: str = "ahoy"
    #: the DTU's topic without its slash; it may have levels, a ``+`` level matching any
    base: str = "inverter"

    def match(self, topic: str) -> Address:
        realm, rest = self._below(topic, 1)
        first = rest[0]
        if len(rest) == 1:
            if first == "mqtt":
                return Address(realm, None, None, DTU, EVENT, first, first)
            if first == "total":  # the totals as JSON
                return Address(realm, None, None, first, DATA, first)
            return Address(realm, None, None, DTU, DATA, first, first)
        check_levels(self.name, topic, inverter=first)
        channel = _channel(rest[1])
        if channel is not None and len(rest) <= 3:
            field = rest[2] if len(rest) == 3 else None
            return Address(realm, None, None, first, DATA, "/".join(rest[1:]), field, (("channel", channel),))
        if len(rest) == 3 and rest[1] == "alarm" and rest[2].isascii() and rest[2].isdigit():
            return Address(realm, None, None, first, EVENT, "/".join(rest[1:]))
        return Address(realm, None, None, first, DATA, "/".join(rest[1:]), ".".join(rest[1:]))

    def _command(self, rest: list) -> str:
        return f"{rest[0]}/..." if rest[0] in ("ctrl", "setup") else ""

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<inverter>/ch<channel>[/<field>] "
                                              f"(.../HM-600/ch0/P_AC), {self.base}/<inverter>/<field...>, "
                                              f"{self.base}/total[/<field>], {self.base}/<field> (the DTU's), "
                                              f"{self.base}/mqtt (an event) or {self.base}/ctrl/... (ignored)")

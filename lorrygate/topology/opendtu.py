"""
OpenDTU (and its fork OpenDTU-OnBattery): an ESP32 that polls Hoymiles and TSUN micro-inverters by radio and
publishes a value a topic below its base topic (``base``, ``solar`` by default, the DTU's "Base Topic"):

- ``<base>/<serial>/<channel>/<field>`` (``solar/114182912345/0/power``, ``.../1/voltage``): the field ``<field>``
  of the inverter's table ``<serial>_sensors``, the channel (0: AC and the inverter itself, 1-6: the DC inputs) in
  the ``channel`` column, a row a message;
- ``<base>/<serial>/<level>/<field>`` and ``<base>/<serial>/<field>`` (``status/reachable``, ``radio/rssi``,
  ``device/hwversion``, ``name``): the field ``<level>.<field>`` (``status.reachable``) or ``<field>`` of the same
  table, without a channel;
- ``<base>/dtu/...`` (``uptime``, ``rssi``, ``heap/free``), ``<base>/ac/...`` and ``<base>/dc/...`` (the totals of
  all inverters): the same way, the tables ``dtu_sensors``, ``ac_sensors``, ``dc_sensors``; so are the
  OnBattery fork's own trees (``battery/...``, ``huawei/...``);
- ``<base>/dtu/status`` (the DTU's birth and last will, ``online`` and ``offline``): an event;
- ``<base>/<serial>/cmd/...`` (power limits, restart) and any ``<base>/<x>/cmd/...``: commands, ignored.

The schema is the base topic (``solar``). A ``+`` level of ``base`` matches any level, for several DTUs given
base topics of their own (``base = solar/+`` for ``solar/garage/...`` and ``solar/roof/...``: the schemas
``solar_garage`` and ``solar_roof``).
"""

from typing import NoReturn

import attrs
from zope.interface import implementer

from lorrygate.errors import Ignored, TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.naming import join
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels

#: the level of a command's topic, after the device (``<serial>/cmd/limit_persistent_absolute``)
COMMAND = "cmd"
#: the last level of the DTU's last will (its default topic: ``dtu/status``)
STATUS = "status"


@implementer(IStrategy)
@attrs.frozen
class OpenDtuStrategy:
    """``<base>/<device>/[<channel>/]<field...>`` (data of ``<device>_sensors``, the channel a tag),
    ``<base>/<device>/status`` (an event), ``<base>/<device>/cmd/...`` (ignored); see the module's docstring."""

    name: str = "opendtu"
    #: the DTU's base topic without its slash; it may have levels, a ``+`` level matching any
    base: str = "solar"
    #: the router adds the address's labels (the channel) to the rows as tags
    labels_as_tags = True

    def match(self, topic: str) -> Address:
        levels, prefix = topic.split("/"), self.base.split("/")
        size = len(prefix)
        if len(levels) < size + 2 or any(want not in ("+", got) for want, got in zip(prefix, levels)):
            self._refuse(topic)
        rest = levels[size:]
        device = rest[0]
        if rest[1] == COMMAND:
            raise Ignored(self.name, topic, f"{self.base}/<device>/cmd/...: a command, not a measurement")
        if not all(rest) or any(level in ("+", "#") for level in rest) or any(
                want == "+" and got in ("", "#") for want, got in zip(prefix, levels)):
            raise TopologyError(self.name, topic, "a topic with an empty level or a wildcard")
        check_levels(self.name, topic, device=device)
        realm = "/".join(levels[:size])
        if len(rest) == 2 and rest[1] == STATUS:
            return Address(realm, None, None, device, EVENT, STATUS, STATUS)
        if len(rest) == 3 and rest[1].isascii() and rest[1].isdigit():
            return Address(realm, None, None, device, DATA, "/".join(rest[1:]), rest[2], (("channel", rest[1]),))
        return Address(realm, None, None, device, DATA, "/".join(rest[1:]), ".".join(rest[1:]))

    def table_for(self, address: Address) -> TableName:
        return TableName(join(*(level for level in address.realm.split("/") if level)), join(address.node, TABLE_SUFFIXES[address.kind]))

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<inverter serial>/<channel>/<field> "
                                              f"(.../114182912345/0/power), {self.base}/<device>/<field...> "
                                              f"(.../dtu/uptime, .../<serial>/status/reachable), "
                                              f"{self.base}/dtu/status (an event) or {self.base}/<device>/cmd/... "
                                              "(ignored)")

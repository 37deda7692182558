"""
Victron Energy's Venus OS (GX devices: Cerbo GX, Venus GX, Ekrano): the
MQTT notifications of dbus-flashmq (Venus OS 3.20 on; dbus-mqtt before it),
as the GX device's own broker and Victron's VRM brokers carry them.

``N/<portal ID>/<service type>/<device instance>/<D-Bus path>`` is one value
of a device (``N/c0619ab1234/battery/512/Dc/0/Voltage``, ``{"value": 52.3}``):
data of the table ``<portal ID>_<service type>_<device instance>_sensors`` in
the schema ``victron``, the field the D-Bus path (``Dc/0/Voltage``).
``N/<portal ID>/keepalive`` (sent when the GX device's MQTT service starts) is
an event of ``<portal ID>_events``. What is no measurement is ignored: read
and write requests and RPC (``R/``, ``W/``, ``P/``, ``I/``), the keep-alive's
own signals (``N/<portal ID>/heartbeat`` every 3 s while kept alive,
``.../full_publish_completed``) and the GUI's customisations
(``N/<portal ID>/GuiCustomizations/...``).

The ``victron`` decoder (lorrygate/decoding/victron.py) reads the payloads
and keeps each installation publishing (its keep-alive).
"""

from typing import NoReturn

import attrs
from zope.interface import implementer

from lorrygate.errors import Ignored, TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.naming import join
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels

#: the first levels of what clients send a GX device (read and write requests, RPC)
_REQUESTS = {"R", "W", "P", "I"}
#: ``N/<portal ID>/<level>`` that are the keep-alive's signals, not values
_SIGNALS = {"heartbeat", "full_publish_completed"}
_EXPECTED = ("N/<portal ID>/<service type>/<device instance>/<D-Bus path> (dbus-flashmq's notifications) or "
             "N/<portal ID>/keepalive")


@implementer(IStrategy)
@attrs.frozen
class VictronStrategy:
    """Venus OS notifications, ``N/<portal ID>/<service type>/<device instance>/<D-Bus path>``: data of the table
    ``<portal ID>_<service type>_<device instance>_sensors`` in the schema ``victron``, the field the D-Bus path;
    requests (``R/``, ``W/``, ``P/``, ``I/``) and the keep-alive's signals are ignored."""

    name: str = "victron"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if levels[0] in _REQUESTS:
            raise Ignored(self.name, topic, f"{levels[0]}/...: a request to a GX device: a command, not a "
                                            "measurement")
        if levels[0] != "N" or len(levels) < 3:
            self._refuse(topic)
        portal = levels[1]
        check_levels(self.name, topic, **{"portal ID": portal})
        if len(levels) == 3 and levels[2] in _SIGNALS:
            raise Ignored(self.name, topic, f"N/<portal ID>/{levels[2]}: the keep-alive's signal, not a measurement")
        if levels[2] == "GuiCustomizations":
            raise Ignored(self.name, topic, "N/<portal ID>/GuiCustomizations/...: the GX device's GUI, not a "
                                            "measurement")
        if len(levels) == 3 and levels[2] == "keepalive":
            return Address("victron", None, portal, None, EVENT, "keepalive", "keepalive")
        if len(levels) < 5:
            self._refuse(topic)
        service, instance, path = levels[2], levels[3], levels[4:]
        check_levels(self.name, topic, **{"service type": service, "device instance": instance})
        if not all(path) or any(level in ("+", "#") for level in path):
            raise TopologyError(self.name, topic, "the D-Bus path has an empty level or a wildcard")
        joined = "/".join(path)
        return Address("victron", None, portal, f"{service}/{instance}", DATA, joined, joined)

    def table_for(self, address: Address) -> TableName:
        suffix = TABLE_SUFFIXES[address.kind]
        if address.node is None:
            return TableName("victron", join(address.gateway, suffix))
        service, instance = address.node.split("/", 1)
        return TableName("victron", join(address.gateway, service, instance, suffix))

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {_EXPECTED}")

"""
The WAN strategy: Kotori's ``realm/network/gateway/node/<suffix>`` convention.

========================================  ======  ==========================
topic                                     kind    notes
========================================  ======  ==========================
``realm/network/gateway/node/data.json``  data    a JSON object of fields
``realm/network/gateway/node/data/F``     data    one value of field ``F``
``realm/network/gateway/node/event.json`` event
``realm/network/gateway/node/error.json`` error
========================================  ======  ==========================

The address maps to schema ``<realm>_<network>`` and table
``<gateway>_<node>_sensors`` (``_events`` for events, ``_errors`` for errors),
every part sanitized by `lorrygate.topology.naming.sanitize`. Example:
``mqttkit-1/testdrive/area-42/node-1/data.json`` goes to
``mqttkit_1_testdrive.area_42_node_1_sensors``.
"""

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, ERROR, EVENT, Address, TableName
from lorrygate.topology.naming import join

_JSON_SUFFIXES = {"data.json": DATA, "event.json": EVENT, "error.json": ERROR}
_TABLE_SUFFIXES = {DATA: "sensors", EVENT: "events", ERROR: "errors"}


@implementer(IStrategy)
@attrs.frozen
class WanStrategy:
    """``realm/network/gateway/node/<suffix>`` -> ``realm_network.gateway_node_sensors``."""

    name: str = "wan"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) < 5:
            raise TopologyError(
                self.name,
                topic,
                f"expected realm/network/gateway/node/<suffix> (at least 5 levels), got {len(levels)} level(s)",
            )
        realm, network, gateway, node = levels[:4]
        for label, level in (("realm", realm), ("network", network), ("gateway", gateway), ("node", node)):
            if not level:
                raise TopologyError(self.name, topic, f"the {label} level is empty")
            if level in ("+", "#"):
                raise TopologyError(self.name, topic, f"the {label} level is a wildcard {level!r}")
        rest = levels[4:]
        suffix = "/".join(rest)
        if len(rest) == 1 and rest[0] in _JSON_SUFFIXES:
            return Address(realm, network, gateway, node, _JSON_SUFFIXES[rest[0]], suffix)
        if len(rest) == 2 and rest[0] == "data" and rest[1]:
            return Address(realm, network, gateway, node, DATA, suffix, field=rest[1])
        raise TopologyError(
            self.name,
            topic,
            f"unknown suffix {suffix!r}: expected data.json, data/<field>, event.json or error.json",
        )

    def table_for(self, address: Address) -> TableName:
        return TableName(
            join(address.realm, address.network),
            join(address.gateway, address.node, _TABLE_SUFFIXES[address.kind]),
        )

"""
The LAN strategy: ``realm/node/<suffix>``, for a single site.

The suffixes are the WAN strategy's (`lorrygate.topology.wan`). The address
maps to schema ``<realm>_<node>`` and table ``sensors`` (``events``,
``errors``): ``home/kitchen/data.json`` goes to ``home_kitchen.sensors``.
"""

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import Address, TableName
from lorrygate.topology.naming import join, sanitize
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels, parse_suffix, unknown_suffix


@implementer(IStrategy)
@attrs.frozen
class LanStrategy:
    name: str = "lan"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) < 3:
            raise TopologyError(
                self.name, topic, f"expected realm/node/<suffix> (at least 3 levels), got {len(levels)} level(s)"
            )
        realm, node = levels[:2]
        check_levels(self.name, topic, realm=realm, node=node)
        suffix = parse_suffix(levels[2:])
        if suffix is None:
            raise TopologyError(self.name, topic, unknown_suffix("/".join(levels[2:])))
        kind, field = suffix
        return Address(realm, None, None, node, kind, "/".join(levels[2:]), field)

    def table_for(self, address: Address) -> TableName:
        return TableName(join(address.realm, address.node), sanitize(TABLE_SUFFIXES[address.kind]))

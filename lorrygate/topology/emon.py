"""
OpenEnergyMonitor's emonHub (emonPi, emonBase: the readings of emonTx, emonTH and other nodes, which emoncms also
reads from the broker), in the two formats of its MQTT interfacer that name what they carry:

- ``<base>/<node>/<input>`` (``emon/emontx4/P1`` = ``412.5``; its "node variable" format, the default): the input
  ``<input>`` of the node's table ``<node>_sensors`` in the schema ``emon``, a row a message;
- ``<base>/<node>`` (``emon/emontx4`` = ``{"P1": 412.5, "E1": 1234, "time": 1717243200, "rssi": -60}``; its JSON
  format, ``node_JSON_enable``): one row of the same table, at its ``time``.

``base`` is the interfacer's base topic without its slash (``nodevar_format_basetopic``, ``node_JSON_basetopic``;
``emon`` on an emonPi); a ``+`` level of it matches any, for several hubs given base topics of their own. Its
oldest format, ``emonhub/rx/<node id>/values`` (the values without their names, for emoncms' former nodes module),
has no names to store: set ``nodevar_format_enable = 1`` in emonhub.conf.
"""

from typing import NoReturn

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, Address
from lorrygate.topology.inverters import _Dtu


@implementer(IStrategy)
@attrs.frozen
class EmonStrategy(_Dtu):
    """``<base>/<node>/<input>`` (the input of ``<node>_sensors``) and ``<base>/<node>`` (its JSON); see the
    module's docstring."""

    name: str = "emon"
    #: emonHub's base topic without its slash; it may have levels, a ``+`` level matching any
    base: str = "emon"
    #: the labels an address may have: none
    label_names = ()

    def match(self, topic: str) -> Address:
        realm, rest = self._below(topic, 1)
        node = rest[0]
        if len(rest) == 1:
            return Address(realm, None, None, node, DATA, "")
        return Address(realm, None, None, node, DATA, "/".join(rest[1:]), ".".join(rest[1:]))

    def _command(self, rest: list) -> str:
        return ""

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<node>/<input> (emonHub's node variable format: "
                                              f"{self.base}/emontx4/P1) or {self.base}/<node> (its JSON format)")

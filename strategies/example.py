"""
An example drop-in strategy: ``factory/<line>/<machine>/telemetry``.

Every ``*.py`` file in ``strategies/`` is loaded when lorrygate starts. A
class that declares ``@implementer(IStrategy)`` and has a ``name`` becomes a
strategy that a channel can select with ``strategy = factory``. ``match``
turns a topic into an `Address` or raises `TopologyError` saying why;
``table_for`` names the table. Sanitize every part that comes from a topic
with `join` or `sanitize`: lorrygate quotes the names, but predictable
lower-case names are what people query.
"""

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.naming import join

KINDS = {"telemetry": DATA, "alarm": EVENT}


@implementer(IStrategy)
@attrs.frozen
class FactoryStrategy:
    """``factory/<line>/<machine>/telemetry`` -> ``factory_<line>.<machine>_sensors``."""

    name: str = "factory"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) != 4 or levels[0] != "factory" or levels[3] not in KINDS:
            raise TopologyError(self.name, topic, "expected factory/<line>/<machine>/telemetry (or /alarm)")
        _, line, machine, kind = levels
        if not line or not machine:
            raise TopologyError(self.name, topic, "the line and machine levels must not be empty")
        return Address("factory", line, None, machine, KINDS[kind], kind)

    def table_for(self, address: Address) -> TableName:
        suffix = "sensors" if address.kind == DATA else "alarms"
        return TableName(join(address.realm, address.network), join(address.node, suffix))

"""
The ``topic`` strategy: any topic, for relays and for topic trees without a
convention (Telegraf's mqtt_consumer reads topics this way).

The first level is the realm, the rest is the address's ``rest``; the table
is named after the topic: ``factory/hall-2/press-7/temperature`` goes to
schema ``factory``, table ``hall_2_press_7_temperature``. A topic of one level
goes to table ``data`` of its schema. A payload of one value (``21.5``,
``ON``: a topic a value, as ESPHome and most sensor trees publish) is the
field ``value``, as Telegraf's value parser names it; a JSON object is its
fields.
"""

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, Address, TableName
from lorrygate.topology.naming import join, sanitize

#: the field of a payload of one value
VALUE_FIELD = "value"


@implementer(IStrategy)
@attrs.frozen
class TopicStrategy:
    name: str = "topic"
    #: the table is named after the levels after the first (`Address.rest`): the router tells two topics whose
    #: tables are one (``plant/a-b``, ``plant/a_b``) by them
    rest_names_table = True

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if not levels[0]:
            raise TopologyError(self.name, topic, "expected a topic whose first level names it (not empty)")
        return Address(levels[0], None, None, None, DATA, "/".join(levels[1:]), VALUE_FIELD)

    def table_for(self, address: Address) -> TableName:
        rest = [level for level in address.rest.split("/") if level]
        return TableName(sanitize(address.realm), join(*rest) if rest else "data")

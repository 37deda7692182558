"""
Ruuvi Gateway, which relays the Bluetooth advertisements of RuuviTags (and, unfiltered, of any device it hears) to
``ruuvi/<gateway MAC>/<sensor MAC>`` (its default prefix; ``base`` the levels before the gateway's):

- ``<base>/<gateway>/<sensor MAC>``: data of the table ``<gateway>_sensors`` (``c8_25_2d_8e_9c_2c_sensors``) in
  the schema named by the base (``ruuvi``), the sensor's MAC in the ``mac`` column (the ``ruuvi`` decoder): one
  table a gateway, as a gateway that relays every device it hears sees phones whose MAC changes every few minutes;
- ``<base>/<gateway>/gw_status``: the gateway's birth and last will (``{"state": "online"}``), an event;
- ``<base>/<sensor MAC>`` and ``<base>/gw_status``, a prefix without the gateway's MAC (its "Use gateway MAC"
  off): the same in the tables ``sensors`` and ``events``.
"""

from typing import NoReturn

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.fleets import below
from lorrygate.topology.naming import join
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels

#: the gateway's status topic, below its prefix
STATUS = "gw_status"


@implementer(IStrategy)
@attrs.frozen
class RuuviStrategy:
    """``<base>/<gateway>/<sensor MAC>`` (data of ``<gateway>_sensors``, the MAC a tag), ``<base>/<gateway>/gw_status``
    (an event)."""

    name: str = "ruuvi"
    #: the levels before the gateway's (``ruuvi``, Ruuvi Gateway's "Use 'ruuvi' on the prefix")
    base: str = "ruuvi"
    #: the router adds the address's labels (the sensor's MAC) to the rows as tags
    labels_as_tags = True
    #: the labels an address may have (a channel's ``tags`` may name them)
    label_names = ("mac",)

    def match(self, topic: str) -> Address:
        rest = below(self.base, topic)
        if rest is None or len(rest) not in (1, 2):
            self._refuse(topic)
        gateway, last = rest if len(rest) == 2 else (None, rest[0])
        if gateway is not None:
            check_levels(self.name, topic, gateway=gateway)
        check_levels(self.name, topic, sensor=last)
        if last == STATUS:
            return Address(self.base, None, gateway, None, EVENT, last)
        return Address(self.base, None, gateway, None, DATA, last, None, (("mac", last),))

    def table_for(self, address: Address) -> TableName:
        schema = join(*(level for level in address.realm.split("/") if level))
        gateway = (address.gateway,) if address.gateway else ()
        return TableName(schema, join(*gateway, TABLE_SUFFIXES[address.kind]))

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<gateway>/<sensor MAC> (data) or "
                                              f"{self.base}/<gateway>/gw_status (an event), or without the "
                                              "gateway's level")

"""
OpenMQTTGateway and Theengs Gateway (BLE, 433 MHz, LoRa and infrared receivers on an ESP32 or a Raspberry Pi),
whose topics are below ``<base>/<gateway name>`` (``base`` ``home`` by default, the gateways' ``mqtt_topic``):

- ``.../<Module>toMQTT[/<subtopic>...]`` (``BTtoMQTT/A4C138BB1B6E``, ``RTL_433toMQTT/...``, ``RFtoMQTT``,
  ``LORAtoMQTT``, ``SYStoMQTT``): data of the table ``<gateway>_<module>_sensors`` in the schema
  ``openmqttgateway`` (``omg_esp32_bt_sensors``), one table a gateway and module, each device a row's tags (the
  ``openmqttgateway`` decoder): a BLE gateway hears phones whose MAC address changes every few minutes, and a
  table a MAC address (the ``topic`` strategy's) made thousands of tables a day;
- ``.../LWT``: the gateway's birth and last will (``online``, ``offline``), an event, as is any other topic one
  level below the gateway;
- ``<base>/presence/<room>``: Home Assistant room presence (each BLE device a gateway hears, its ``rssi`` and
  ``distance``), data of the table ``presence_<room>_sensors``, the device's ``id`` a tag;
- ``.../commands/...``: commands to the gateway, ignored (they carry WiFi and MQTT passwords).
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

#: the schema of every gateway's tables
SCHEMA = "openmqttgateway"
#: the end of a module's topic level: ``BTtoMQTT``
MODULE_SUFFIX = "toMQTT"
#: the level of Home Assistant room presence messages below the base (``home/presence/<room>``)
PRESENCE = "presence"


@implementer(IStrategy)
@attrs.frozen
class OpenMqttGatewayStrategy:
    """``<base>/<gateway>/<Module>toMQTT[/...]`` (data of ``<gateway>_<module>_sensors``, the device its tags),
    ``<base>/presence/<room>`` (data of ``presence_<room>_sensors``), ``<base>/<gateway>/LWT`` and other topics
    one level below the gateway (events), ``.../commands/...`` (ignored)."""

    name: str = "openmqttgateway"
    #: the gateways' mqtt_topic (``home/``), without its slash; it may have levels
    base: str = "home"

    def match(self, topic: str) -> Address:
        rest = below(self.base, topic)
        if rest is None or len(rest) < 2:
            self._refuse(topic)
        gateway, level = rest[0], rest[1]
        if level == "commands":
            raise Ignored(self.name, topic, f"{self.base}/<gateway>/commands/...: a command, not a measurement")
        check_levels(self.name, topic, gateway=gateway)
        if gateway == PRESENCE and len(rest) == 2 and level not in ("+", "#"):
            return Address(SCHEMA, None, PRESENCE, level, DATA, f"{PRESENCE}/{level}")
        if level.endswith(MODULE_SUFFIX) and len(level) > len(MODULE_SUFFIX):
            if not all(rest[2:]) or any(part in ("+", "#") for part in rest[2:]):
                raise TopologyError(self.name, topic, "a module's topic with an empty level or a wildcard")
            module = level[:-len(MODULE_SUFFIX)]
            return Address(SCHEMA, None, gateway, module, DATA, "/".join(rest[1:]))
        if len(rest) == 2 and level not in ("+", "#"):
            return Address(SCHEMA, None, gateway, None, EVENT, level, level)
        self._refuse(topic)

    def table_for(self, address: Address) -> TableName:
        module = (address.node,) if address.node else ()
        return TableName(SCHEMA, join(address.gateway, *module, TABLE_SUFFIXES[address.kind]))

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<gateway>/<Module>toMQTT[/...] (data: "
                                              f"BTtoMQTT, RTL_433toMQTT, SYStoMQTT, ...), {self.base}/<gateway>/LWT "
                                              f"(an event) or {self.base}/<gateway>/commands/... (ignored)")

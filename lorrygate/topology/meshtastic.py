"""
Meshtastic, LoRa mesh radios whose gateway nodes (those with WiFi or Ethernet and the MQTT module on) uplink every
packet they hear on a channel to ``<root>/2/e/<channel>/<gateway>`` (a protobuf ServiceEnvelope, encrypted with
the channel's key unless the module's encryption is off) and, with the module's "JSON output" on, the packets they
can read again as JSON to ``<root>/2/json/<channel>/<gateway>``. The root is ``msh`` and the region levels the app
adds (``msh/EU_868``, ``msh/US/CA/Motherlode``); ``base`` is the levels before the region's (a ``+`` level matches
any), and the rest up to the ``2`` level is the region:

- ``<base>/<region>/2/e/<channel>/<gateway>`` (``msh/EU_868/2/e/LongFast/!a1b2c3d4``; ``2/c/`` before firmware
  2.3) with ``output = protobuf`` (the default), or ``<base>/<region>/2/json/<channel>/<gateway>`` with ``output =
  json``: data of the table ``<channel>_sensors`` in the schema ``<base>_<region>`` (``msh_eu_868.longfast_sensors``),
  the gateway node's id in the ``gateway`` column; the ``meshtastic`` decoder gives each row the node that sent the
  packet (``node``) and its type (``telemetry``, ``position``, ...). One table a channel, not a gateway: a node's
  readings stay in one table whichever gateway heard them (a packet that two gateways hear is one row, the
  decoder's ``receptions``). The
  other format's topic has copies of the same packets: ignored;
- ``<base>/<region>/2/json/mqtt/`` (no gateway level): what a user sends into the mesh (``sendtext``), a command;
- ``<base>/<region>/2/map/``: the gateway nodes' map reports (their names, hardware, firmware, position and how
  many nodes they hear; protobuf), data of the table ``map_sensors`` with ``output = protobuf``, else ignored;
- ``<base>/<region>/2/stat/<gateway>`` (``online``, ``offline``; firmware before 2.3): an event.
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

#: the protocol's level: the region levels end before it
VERSION = "2"
#: the formats after the version level whose payloads are protobuf
PROTOBUF = ("e", "c")


@implementer(IStrategy)
@attrs.frozen
class MeshtasticStrategy:
    """``<base>/<region>/2/e/<channel>/<gateway>`` (or ``2/json/...``, ``output = json``): data of
    ``<channel>_sensors`` in the schema ``<base>_<region>``, the gateway a tag; ``2/map/`` the table ``map_sensors``;
    the other format's copies and the JSON downlink ignored; ``2/stat/<gateway>`` an event."""

    name: str = "meshtastic"
    #: the root topic's levels before the region's (the MQTT module's root is ``msh/<region>``)
    base: str = "msh"
    #: which copy of a packet is stored: protobuf (``2/e``) or json (``2/json``); the other is ignored
    output: str = "protobuf"
    #: the router adds the address's labels (the gateway node) to the rows as tags
    labels_as_tags = True
    #: the labels an address may have (a channel's ``tags`` may name them)
    label_names = ("gateway",)

    def match(self, topic: str) -> Address:
        rest = below(self.base, topic)
        if rest is None:
            self._refuse(topic)
        realm = "/".join(topic.split("/")[:len(self.base.split("/"))])
        if len(rest) >= 4 and rest[-4] == VERSION and rest[-3] == "json":
            region, channel, gateway = rest[:-4], rest[-2], rest[-1]
            if channel == "mqtt" and gateway == "":
                raise Ignored(self.name, topic, "a message sent into the mesh (JSON downlink): a command, not a "
                                                "measurement")
            if self.output != "json":
                raise Ignored(self.name, topic, "the JSON copy of a packet that <root>/2/e/... has (output = "
                                                "protobuf, the default)")
            self._check(topic, region, channel=channel, gateway=gateway)
            return Address(realm, "/".join(region) or None, gateway, None, DATA, channel, None,
                           (("gateway", gateway),))
        if len(rest) >= 4 and rest[-4] == VERSION and rest[-3] in PROTOBUF:
            if self.output == "json":
                raise Ignored(self.name, topic, "a packet as protobuf, whose JSON copy is stored (output = json)")
            region, channel, gateway = rest[:-4], rest[-2], rest[-1]
            self._check(topic, region, channel=channel, gateway=gateway)
            return Address(realm, "/".join(region) or None, gateway, None, DATA, channel, None,
                           (("gateway", gateway),))
        if len(rest) >= 3 and rest[-3:] == [VERSION, "map", ""]:
            if self.output == "json":
                raise Ignored(self.name, topic, "a map report, as protobuf only (output = json)")
            self._check(topic, rest[:-3])
            return Address(realm, "/".join(rest[:-3]) or None, None, None, DATA, "map")
        if len(rest) >= 3 and rest[-3] == VERSION and rest[-2] == "stat":
            region, gateway = rest[:-3], rest[-1]
            self._check(topic, region, gateway=gateway)
            return Address(realm, "/".join(region) or None, gateway, None, EVENT, "stat", None,
                           (("gateway", gateway),))
        self._refuse(topic)

    def table_for(self, address: Address) -> TableName:
        region = address.network.split("/") if address.network else ()
        schema = join(*(level for level in address.realm.split("/") if level), *region)
        if address.kind == EVENT:
            return TableName(schema, TABLE_SUFFIXES[EVENT])
        return TableName(schema, join(address.rest, TABLE_SUFFIXES[address.kind]))

    def _check(self, topic: str, region: list, **levels) -> None:
        check_levels(self.name, topic, **levels)
        if not all(region) or any(level in ("+", "#") for level in region) or any(
                level in ("", "+", "#") for level in topic.split("/")[:len(self.base.split("/"))]):
            raise TopologyError(self.name, topic, "a topic with an empty level or a wildcard")

    def _refuse(self, topic: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {self.base}/<region>/2/e/<channel>/<gateway> (a Meshtastic "
                                              f"gateway node's packets), {self.base}/<region>/2/json/... or "
                                              f"{self.base}/<region>/2/stat/<gateway>")

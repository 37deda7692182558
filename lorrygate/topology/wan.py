"""
The WAN strategy: Kotori's ``realm/network/gateway/node/<suffix>`` convention,
with Kotori's direct addressing.

Addresses:

================================================  ===================================
topic prefix                                      address
================================================  ===================================
``realm/network/gateway/node/``                   as written
``realm/device/<device-id>/``                     network ``devices``, gateway
                                                  ``default``, node ``<device-id>``
``realm/channel/<network>-<gateway>-<node>/``     split on ``-``; see `split_channel`
================================================  ===================================

Suffixes (the same for every prefix):

==================================================  ======  ========================
suffix                                              kind    payload
==================================================  ======  ========================
``data.json``, ``data/__json__``, ``message-json``  data    a JSON object
``data.csv``, ``data.ndjson``, ``data.kv``,         data    that format (its decoder
``data.msgpack``, ``data.cbor``                             is tried first)
``data/<field>``, ``measure/<field>``               data    one value of ``<field>``
``loop``                                            data    a WeeWX loop packet
``airrohr.json``                                    data    an airrohr JSON object
``ecowitt.json``                                    data    a Fine Offset station's upload
``tele/SENSOR``, ``tele/STATE``                     data    a Tasmota telemetry object
``event.json``, ``event/__json__``                  event   a JSON object
``error.json``                                      error   a JSON object
==================================================  ======  ========================

As in Kotori, the suffix is read from the end: levels between the node and a
suffix are allowed and do not change the address
(``realm/network/gateway/node/custom/airrohr.json``,
``.../node/baz/data.json``).

The address maps to schema ``<realm>_<network>`` and table
``<gateway>_<node>_sensors`` (``_events`` for events, ``_errors`` for errors),
every part sanitized by `lorrygate.topology.naming`. Example:
``mqttkit-1/testdrive/area-42/node-1/data.json`` goes to
``mqttkit_1_testdrive.area_42_node_1_sensors``.
"""

import attrs
from zope.interface import implementer

from lorrygate.errors import TopologyError, did_you_mean
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, ERROR, EVENT, Address, TableName
from lorrygate.topology.naming import join

TABLE_SUFFIXES = {DATA: "sensors", EVENT: "events", ERROR: "errors"}

_ONE_LEVEL = {
    "data.json": DATA,
    "data.csv": DATA,
    "data.ndjson": DATA,
    "data.kv": DATA,
    "data.msgpack": DATA,
    "data.cbor": DATA,
    "airrohr.json": DATA,
    "ecowitt.json": DATA,
    "message-json": DATA,
    "loop": DATA,
    "event.json": EVENT,
    "error.json": ERROR,
}
_TWO_LEVELS = {
    ("data", "__json__"): DATA,
    ("event", "__json__"): EVENT,
    ("tele", "SENSOR"): DATA,
    ("tele", "STATE"): DATA,
}
_FIELD_PREFIXES = ("data", "measure")

SUFFIXES_HELP = (
    "data.json, data.csv, data.ndjson, data.kv, data.msgpack, data.cbor, data/__json__, message-json, "
    "data/<field>, measure/<field>, loop, airrohr.json, ecowitt.json, tele/SENSOR, tele/STATE, event.json, event/__json__ "
    "or error.json"
)


def unknown_suffix(suffix: str) -> str:
    """The problem of a suffix that is none of Kotori's, with the one a typo meant (``dta.json``)."""
    known = [*_ONE_LEVEL, *("/".join(pair) for pair in _TWO_LEVELS)]
    return f"unknown suffix {suffix!r}{did_you_mean(suffix, known)}: expected {SUFFIXES_HELP}"


def parse_suffix(levels, extra: bool = True):
    """Return ``(kind, field)`` of Kotori suffix levels, or None; with ``extra``,
    levels before a known suffix are allowed."""
    if len(levels) == 1:
        kind = _ONE_LEVEL.get(levels[0])
        return (kind, None) if kind else None
    if len(levels) == 2:
        kind = _TWO_LEVELS.get((levels[0], levels[1]))
        if kind:
            return kind, None
        if levels[0] in _FIELD_PREFIXES and levels[1] and levels[1] not in ("+", "#"):
            return DATA, levels[1]
    if extra and len(levels) > 1 and all(level not in ("+", "#") for level in levels):
        # Kotori reads the slot by its end: levels before a known suffix are extra.
        kind = _ONE_LEVEL.get(levels[-1])
        if kind:
            return kind, None
        kind = _TWO_LEVELS.get((levels[-2], levels[-1])) if len(levels) > 2 else None
        if kind:
            return kind, None
    return None


def check_levels(strategy: str, topic: str, **levels) -> None:
    """Raise TopologyError for an empty or wildcard address level."""
    for label, level in levels.items():
        if not level:
            raise TopologyError(strategy, topic, f"the {label} level is empty")
        if level in ("+", "#"):
            raise TopologyError(strategy, topic, f"the {label} level is a wildcard {level!r}")


def split_channel(realm: str, channel: str):
    """Kotori's channel addressing: ``<network>-<gateway>-<node>`` -> three parts.

    A leading realm (also one that contains ``-``) is dropped, missing parts
    are padded with ``default`` at the front, and parts beyond three are
    joined into the node: ``acme-area42-eui-70b3`` -> ``acme``, ``area42``,
    ``eui-70b3``.
    """
    if channel.startswith(realm + "-"):
        channel = channel[len(realm) + 1 :]
    parts = channel.split("-")
    if len(parts) > 3:
        parts = parts[:2] + ["-".join(parts[2:])]
    while len(parts) < 3:
        parts.insert(0, "default")
    return parts


@implementer(IStrategy)
@attrs.frozen
class WanStrategy:
    """``realm/network/gateway/node/<suffix>`` -> ``realm_network.gateway_node_sensors``.

    :param networks: when given, only these networks are accepted.
    """

    name: str = "wan"
    networks: tuple = ()

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) >= 4 and levels[1] in ("device", "channel"):
            suffix = parse_suffix(levels[3:], extra=False)
            if suffix is not None:
                return self._direct(topic, levels, suffix)
        if len(levels) < 5:
            raise TopologyError(
                self.name,
                topic,
                f"expected realm/network/gateway/node/<suffix> (at least 5 levels), got {len(levels)} level(s); a "
                f"tree of another shape needs a strategy of its own (strategy = topic takes any)",
            )
        realm, network, gateway, node = levels[:4]
        check_levels(self.name, topic, realm=realm, network=network, gateway=gateway, node=node)
        suffix = parse_suffix(levels[4:])
        if suffix is None:
            raise TopologyError(self.name, topic, unknown_suffix("/".join(levels[4:])))
        return self._address(topic, realm, network, gateway, node, suffix, levels[4:])

    def _direct(self, topic: str, levels, suffix) -> Address:
        realm, mode, ident = levels[0], levels[1], levels[2]
        check_levels(self.name, topic, realm=realm, **{mode: ident})
        if mode == "device":
            network, gateway, node = "devices", "default", ident
        else:
            network, gateway, node = split_channel(realm, ident)
            check_levels(self.name, topic, network=network, gateway=gateway, node=node)
        return self._address(topic, realm, network, gateway, node, suffix, levels[3:])

    def _address(self, topic, realm, network, gateway, node, suffix, rest) -> Address:
        if self.networks and network not in self.networks:
            raise TopologyError(
                self.name,
                topic,
                f"network {network!r} is not in the channel's allowed networks ({', '.join(self.networks)})",
            )
        kind, field = suffix
        return Address(realm, network, gateway, node, kind, "/".join(rest), field)

    def table_for(self, address: Address) -> TableName:
        return TableName(
            join(address.realm, address.network),
            join(address.gateway, address.node, TABLE_SUFFIXES[address.kind]),
        )

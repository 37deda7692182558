"""
Strategies for the topic layouts of common device fleets and LoRaWAN servers.

Each maps a vendor's topics to an address; the table is
``<node>_sensors`` for data and ``<node>_events`` for events, in the schema
named by the realm (and network). The full table of topics, addresses and
tables is in ``docs/topology.rst``.

Command topics (Tasmota ``cmnd/``, Homie and Zigbee2MQTT ``.../set``,
``.../get``, TTS downlink pushes, ChirpStack ``.../command/...``, Sparkplug ``NCMD`` and ``DCMD``) are
ignored (`Ignored`): they carry requests, not measurements, so they are
acknowledged and counted, never dead letters.
"""

from typing import NoReturn, cast

import attrs
from zope.interface import implementer

from lorrygate.errors import Ignored, TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, EVENT, Address, TableName
from lorrygate.topology.naming import join, sanitize
from lorrygate.topology.wan import TABLE_SUFFIXES, check_levels


class _Fleet:
    """Shared table naming: schema from realm (and network), table from node."""

    name: str

    def table_for(self, address: Address) -> TableName:
        schema = join(address.realm, address.network) if address.network else sanitize(address.realm)
        return TableName(schema, join(address.node, TABLE_SUFFIXES[address.kind]))

    def _refuse(self, topic: str, expected: str) -> NoReturn:
        raise TopologyError(self.name, topic, f"expected {expected}")

    def _ignore(self, topic: str, what: str) -> NoReturn:
        raise Ignored(self.name, topic, f"{what}: a command, not a measurement")


def below(base: str, topic: str) -> list | None:
    """The levels of ``topic`` after the levels of ``base`` (which may have several; a ``+`` level matches any
    level), or None if it is not below."""
    levels, prefix = topic.split("/"), base.split("/")
    if len(levels) < len(prefix) or any(want not in ("+", got) for want, got in zip(prefix, levels)):
        return None
    return levels[len(prefix):]




#: Tasmota's default FullTopic
DEFAULT_FULL_TOPIC = "%prefix%/%topic%/"
#: the FullTopic's names of a device (``%topic%`` first where there are several)
_DEVICE_LEVELS = ("%topic%", "%hostname%", "%id%")


def full_topic_levels(text) -> tuple:
    """A Tasmota FullTopic (``%prefix%/%topic%/``) as its levels; ValueError for one without ``%prefix%`` and a
    device (``%topic%``, ``%hostname%`` or ``%id%``), or with an empty level or an MQTT wildcard."""
    if isinstance(text, tuple):
        return text
    levels = tuple(text.strip().strip("/").split("/"))
    if "%prefix%" not in levels or not any(level in _DEVICE_LEVELS for level in levels):
        raise ValueError(f"a Tasmota FullTopic with %prefix% and %topic% (or %hostname%, %id%) as levels of their "
                         f"own, such as %prefix%/%topic%/ or %topic%/%prefix%/, got {text!r}")
    if not all(levels) or any(mark in level for level in levels for mark in "+#"):
        raise ValueError(f"a Tasmota FullTopic without empty levels and wildcards, got {text!r}")
    return levels


#: the last level of Zigbee2Tasmota's topic a device (SetOption89; SetOption118: ZbReceived)
_ZIGBEE_LAST = ("SENSOR", "ZbReceived")


def _zigbee_level(pattern: tuple) -> int:
    """Where the Zigbee device's level is in Zigbee2Tasmota's topic a device: after the bridge's %topic%."""
    return next(index for index, want in enumerate(pattern) if want in _DEVICE_LEVELS) + 1


def _show(shown: str, prefix: str, last: str) -> str:
    for device in _DEVICE_LEVELS:
        shown = shown.replace(device, "<device>")
    return shown.replace("%prefix%", prefix) + "/" + last


@implementer(IStrategy)
@attrs.frozen
class TasmotaStrategy(_Fleet):
    """Tasmota's topics by its FullTopic (``full_topic``, default ``%prefix%/%topic%/``): ``tele/<device>/SENSOR``
    and ``STATE`` are data, the other ``tele`` and ``stat`` topics events, ``cmnd`` commands (ignored), as is its
    discovery for Home Assistant (``tasmota/discovery/<MAC>/config`` and ``sensors``, retained device metadata).
    Zigbee2Tasmota's topic a Zigbee device (``tele/<bridge>/<device>/SENSOR``, SetOption89) is data of the
    bridge's table, as its ``tele/<bridge>/SENSOR`` is: the decoder tags each row with the Zigbee device. A BLE
    sensor's topic (``tele/tasmota_ble/<sensor>``) is the data of the sensor's table."""

    name: str = "tasmota"
    #: Tasmota's FullTopic: levels of ``%prefix%``, ``%topic%`` (or ``%hostname%``, ``%id%``) and literal text
    full_topic: str = attrs.field(default=DEFAULT_FULL_TOPIC, converter=lambda text: full_topic_levels(text))

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if levels[:2] == ["tasmota", "discovery"]:
            raise Ignored(self.name, topic, "tasmota/discovery/...: Tasmota's discovery for Home Assistant, device "
                                            "metadata, not a measurement")
        if len(levels) == 3 and levels[:2] == ["tele", "tasmota_ble"]:
            # a BLE sensor an ESP32 hears (MI32Option6 1, or Home Assistant discovery): a topic a sensor, whatever
            # the FullTopic, its name the BLEAlias or the type and the end of its MAC address (ATCbb1b6e)
            check_levels(self.name, topic, **{"BLE sensor": levels[2]})
            return Address("tasmota", None, None, levels[2], DATA, "tasmota_ble")
        pattern = cast(tuple, self.full_topic)  # (the converter made it the levels)
        prefix = device = zigbee = None
        if len(levels) == len(pattern) + 2 and levels[-1] in _ZIGBEE_LAST:
            # Zigbee2Tasmota's topic a Zigbee device (SetOption89): its short address or name (SetOption112) is a
            # level after the bridge's, as the bridge's %topic% is "<topic>/<device>"
            zigbee = levels.pop(_zigbee_level(pattern))
        if len(levels) == len(pattern) + 1:
            names = {}
            for want, level in zip(pattern, levels):
                if want == "%prefix%":
                    prefix = level
                elif want in _DEVICE_LEVELS:
                    names[want] = level
                elif want != level:
                    prefix = None
                    break
            device = next((names[want] for want in _DEVICE_LEVELS if want in names), None)
        elif len(levels) > pattern.index("%prefix%") and levels[pattern.index("%prefix%")] == "cmnd":
            prefix = "cmnd"  # (a command of another length: a group topic's, say)
        if prefix == "cmnd":
            self._ignore(topic, "cmnd/<device>/<command>")
        if prefix in ("tele", "stat") and device is not None:
            last = levels[-1]
            check_levels(self.name, topic, device=device, **({} if zigbee is None else {"Zigbee device": zigbee}))
            if zigbee is not None:
                if prefix == "tele":
                    # (the bridge's table: the decoder tags each row with the device's address and name)
                    return Address("tasmota", None, None, device, DATA, f"{zigbee}/{last}")
            elif prefix == "tele" and last in ("SENSOR", "STATE", "ZbReceived"):
                return Address("tasmota", None, None, device, DATA, last)
            elif last:
                # A bare value (LWT ``Online``, POWER ``OFF``) is stored in the column named after the event, and so
                # is what else a device tells: tele/RESULT (an RF bridge's or an IR receiver's codes), MARGINS,
                # UPTIME, HASS_STATE; they were dead letters, a tele/RESULT a press of a remote.
                return Address("tasmota", None, None, device, EVENT, f"{prefix}/{last}", last)
        shown = "/".join(pattern)
        at = _zigbee_level(pattern)
        zigbee_shown = "/".join(pattern[:at] + ("<zigbee device>",) + pattern[at:])
        self._refuse(topic, f"{_show(shown, 'tele', 'SENSOR')} or STATE (data), {_show(shown, 'tele', '<name>')} or "
                            f"{_show(shown, 'stat', '<name>')} (events), {_show(zigbee_shown, 'tele', 'SENSOR')} "
                            f"(Zigbee2Tasmota), by the FullTopic {shown}/")


@implementer(IStrategy)
@attrs.frozen
class HomieStrategy(_Fleet):
    """Homie 3, 4 and 5 (``homie/5/<device>/...``): property values are data, ``$`` attributes and
    ``$broadcast`` messages are events."""

    name: str = "homie"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) >= 4 and levels[:2] == ["homie", "5"]:
            levels = ["homie"] + levels[2:]  # Homie 5: homie/5/<device>/..., else as Homie 3 and 4
        if len(levels) >= 3 and levels[0] == "homie" and levels[-1] == "set":
            self._ignore(topic, "homie/.../set")
        if len(levels) >= 3 and levels[:2] == ["homie", "$broadcast"] and all(levels[2:]):
            # a message to every device (an alert): an event, in the table of the device "broadcast"
            subtopic = "/".join(levels[2:])
            return Address("homie", None, None, "broadcast", EVENT, f"$broadcast/{subtopic}", subtopic)
        if len(levels) >= 3 and levels[0] == "homie":
            device = levels[1]
            check_levels(self.name, topic, device=device)
            rest = levels[2:]
            if any(level.startswith("$") for level in rest):
                if all(rest) and len(rest) <= 3:
                    return Address("homie", None, None, device, EVENT, "/".join(rest), "/".join(rest))
            elif len(rest) == 2:
                node, prop = rest
                check_levels(self.name, topic, node=node, property=prop)
                return Address("homie", None, None, f"{device}_{node}", DATA, prop, prop)
        self._refuse(topic, "homie/[5/]<device>/<node>/<property> or a $-attribute below homie/[5/]<device>/ (not "
                            ".../set)")


_TTS_EVENTS = {"join", "down/queued", "down/sent", "down/ack", "down/nack", "down/failed", "service/data",
               "location/solved", "up/simulated"}


@implementer(IStrategy)
@attrs.frozen
class TtnStrategy(_Fleet):
    """The Things Stack v3 MQTT integration."""

    name: str = "ttn"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) >= 5 and levels[0] == "v3" and levels[2] == "devices":
            app, _, tenant = levels[1].partition("@")
            device, event = levels[3], "/".join(levels[4:])
            check_levels(self.name, topic, application=app, tenant=tenant, device=device)
            if event == "up":
                return Address(tenant, app, None, device, DATA, event)
            if event in _TTS_EVENTS:
                return Address(tenant, app, None, device, EVENT, event)
            if event in ("down/push", "down/replace"):
                self._ignore(topic, f"v3/.../devices/<device>/{event}")
        self._refuse(topic, "v3/<app>@<tenant>/devices/<device>/up (or join, down/..., service/data, location/solved)")


_CHIRPSTACK_EVENTS = {"join", "ack", "txack", "log", "status", "location", "integration", "error"}
#: the topics of LoRa App Server v2 and of ChirpStack v3 before its event topic template
#: (``application/<id>/device/<dev-eui>/<type>``): ``rx`` the uplink, ``tx`` the downlink (a command)
_CHIRPSTACK_V2_EVENTS = {"join", "ack", "txack", "status", "location", "error"}


@implementer(IStrategy)
@attrs.frozen
class ChirpStackStrategy(_Fleet):
    """ChirpStack's MQTT integration: v4 and v3 (``application/<id>/device/<dev-eui>/event/<type>``), and the
    topics of v3's first releases and LoRa App Server v2 (``.../<dev-eui>/rx``, ``.../status``, ...)."""

    name: str = "chirpstack"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) >= 5 and levels[0] == "application" and levels[2] == "device" and levels[4] == "command":
            self._ignore(topic, "application/<id>/device/<dev-eui>/command/...")
        if len(levels) == 5 and levels[0] == "application" and levels[2] == "device" and levels[4] == "tx":
            self._ignore(topic, "application/<id>/device/<dev-eui>/tx")
        if len(levels) == 6 and levels[0] == "application" and levels[2] == "device" and levels[4] == "event":
            app, dev_eui, event = levels[1], levels[3], levels[5]
            check_levels(self.name, topic, application=app, device=dev_eui)
            if event == "up":
                return Address("chirpstack", app, None, dev_eui, DATA, f"event/{event}")
            if event in _CHIRPSTACK_EVENTS:
                return Address("chirpstack", app, None, dev_eui, EVENT, f"event/{event}")
        if len(levels) == 5 and levels[0] == "application" and levels[2] == "device":
            app, dev_eui, kind = levels[1], levels[3], levels[4]
            if kind == "rx" or kind in _CHIRPSTACK_V2_EVENTS:
                check_levels(self.name, topic, application=app, device=dev_eui)
                return Address("chirpstack", app, None, dev_eui, DATA if kind == "rx" else EVENT, kind)
        self._refuse(topic, "application/<id>/device/<dev-eui>/event/up (or join, ack, txack, log, status, location, "
                            "integration, error), or v3's first topics .../<dev-eui>/rx (or join, ack, ...)")


@implementer(IStrategy)
@attrs.frozen
class Zigbee2MqttStrategy(_Fleet):
    """Zigbee2MQTT under its default base topic ``zigbee2mqtt``. With ``output = attribute`` (Zigbee2MQTT's
    ``advanced.output: attribute``) a device publishes a topic a value, ``<base>/<friendly name>/<attribute>``,
    nested values joined by ``-`` (``color-x``): the last level is the field (``color.x``, as the JSON output
    flattens it) of the device the levels before it name. With ``output = attribute_and_json`` it publishes
    both: the device's JSON state is stored, and the copies of its values in topics of their own are ignored;
    since a friendly name may have ``/`` in it, only the payload tells a copy (one value) from a device's state
    (an object), so the ``zigbee2mqtt`` decoder (first in such a channel's chain) ignores them."""

    name: str = "zigbee2mqtt"
    base: str = "zigbee2mqtt"
    #: Zigbee2MQTT's advanced.output: json (a device's state as one object) or attribute (a topic a value)
    output: str = "json"

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) >= 2 and levels[0] == self.base:
            rest = levels[1:]
            if rest[0] == "bridge":
                if len(rest) > 1 and rest[1] == "request":
                    self._ignore(topic, f"{self.base}/bridge/request/...")
                if not all(rest[1:]):
                    self._refuse(topic, f"{self.base}/bridge/<topic> with no empty levels")
                return Address(self.base, None, None, "bridge", EVENT, "/".join(rest), rest[-1])
            if rest[-1] in ("set", "get") or len(rest) > 1 and rest[-2] in ("set", "get"):
                self._ignore(topic, f"{self.base}/<friendly name>/set or /get")
            if rest[-1] == "availability" and len(rest) > 1:
                name = "/".join(rest[:-1])
                check_levels(self.name, topic, **{"friendly name": name})
                return Address(self.base, None, None, name, EVENT, "availability", "availability")
            if all(rest) and self.output == "attribute" and len(rest) > 1:
                return Address(self.base, None, None, "/".join(rest[:-1]), DATA, rest[-1], rest[-1].replace("-", "."))
            if all(rest) and self.output == "attribute_and_json" and len(rest) > 1:
                # a device with / in its friendly name, or a copy of a value of the device before the last level
                return Address(self.base, None, None, "/".join(rest), DATA, ATTRIBUTE_OR_STATE)
            name = "/".join(rest)
            if all(rest):
                return Address(self.base, None, None, name, DATA, "")
        self._refuse(topic, f"{self.base}/<friendly name> with no empty levels")


#: the rest of a Zigbee2MQTT topic of several levels under ``output = attribute_and_json``: a device's state or a
#: copy of one of its values (the ``zigbee2mqtt`` decoder tells them apart)
ATTRIBUTE_OR_STATE = "attribute_or_state"

_SHELLY_EVENTS = {"online", "announce", "info"}


@implementer(IStrategy)
@attrs.frozen
class ShellyStrategy(_Fleet):
    """Shelly Gen1 (``shellies/<device-id>/...``, one value per topic) and Gen2
    (``<prefix>/status/<component>``, ``<prefix>/events/rpc``, ``<prefix>/online``, ``<prefix>/debug/log``; the
    prefix is the device id unless set on the device, and may have levels); the
    component (``switch:0``, ``relay:0``) is the ``component`` tag."""

    name: str = "shelly"
    #: the router adds the address's labels to the rows as tags
    labels_as_tags = True
    #: the labels an address may have (a channel's ``tags`` may name them)
    label_names = ("component",)

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        gen2 = self._gen2(topic, levels)
        if gen2 is not None:
            return gen2
        if levels[0] == "shellies" and len(levels) >= 3:
            return self._gen1(topic, levels[1], levels[2:])
        if levels[0] == "shellies" and levels[1:] in (["announce"], ["command"]):
            # every Gen1 device announces itself here (its id in the payload); the command asks them to
            if levels[1] == "command":
                self._ignore(topic, "shellies/command")
            return Address("shelly", None, None, "shellies", EVENT, "announce", "announce")
        self._refuse(topic, "<prefix>/status/<component>, <prefix>/events/rpc, <prefix>/online, <prefix>/debug/log "
                            "(Gen2; the prefix is the device id unless set) or shellies/<device-id>/...")

    def _gen2(self, topic: str, levels: list) -> Address | None:
        """Gen2 topics after the device's MQTT prefix: its id, or any prefix set on the device
        (``home/kitchen/plug``), whose levels name the device; None for what is no Gen2 topic."""
        if len(levels) >= 3 and levels[-2] == "status":
            size, kind, field = 2, DATA, None
        elif len(levels) >= 3 and levels[-2:] == ["events", "rpc"]:
            # data: the device's status, as NotifyStatus (the shelly decoder), unless status/<component> is set
            size, kind, field = 2, DATA, None
        elif len(levels) >= 3 and levels[-2:] == ["debug", "log"]:
            size, kind, field = 2, EVENT, "debug_log"
        elif len(levels) >= 2 and levels[-1] == "online" and not (levels[0] == "shellies" and len(levels) == 3):
            size, kind, field = 1, EVENT, "online"  # (shellies/<device-id>/online is Gen1's)
        elif len(levels) >= 2 and (levels[-1] in ("rpc", "command") or levels[-2] == "command"):
            self._ignore(topic, "<prefix>/rpc, <prefix>/command")
        else:
            return None
        prefix, rest = levels[:-size], levels[-size:]
        device = "/".join(prefix)
        check_levels(self.name, topic, device=device)
        if not all(prefix) or not all(rest):
            self._refuse(topic, "a Gen2 topic with no empty levels")
        if kind is DATA:
            labels = (("component", rest[1]),) if rest[0] == "status" else ()
            return Address("shelly", None, None, device, DATA, "/".join(rest), labels=labels)
        return Address("shelly", None, None, device, EVENT, "/".join(rest), field)

    def _gen1(self, topic: str, device: str, rest: list) -> Address:
        check_levels(self.name, topic, device=device)
        if "command" in rest or rest[-1] == "set":
            # (a dimmer's, an RGBW2's or a bulb's JSON command: light/<i>/set, color/<i>/set, white/<i>/set)
            self._ignore(topic, "shellies/<device-id>/.../command or .../set")
        if not all(rest) or any(level in ("+", "#") for level in rest):
            self._refuse(topic, "shellies/<device-id>/<component>/<index>[/<value>] with no empty levels")
        joined = "/".join(rest)
        if len(rest) == 1 and rest[0] in _SHELLY_EVENTS:
            return Address("shelly", None, None, device, EVENT, joined, rest[0])
        if len(rest) == 2 and rest[0] == "input_event" and rest[1].isdigit():
            # a button pushed ({"event": "S", "event_cnt": 4}): an event of its input, as Gen2's NotifyEvent is
            return Address("shelly", None, None, device, EVENT, joined, "input_event", (("component", f"input:{rest[1]}"),))
        if len(rest) >= 2 and rest[1].isdigit():
            component = f"{rest[0]}:{rest[1]}"
            field = "_".join(rest[2:]) or "state"
            return Address("shelly", None, None, device, DATA, joined, field, (("component", component),))
        if len(rest) == 2:  # sensor/temperature
            return Address("shelly", None, None, device, DATA, joined, rest[1], (("component", rest[0]),))
        return Address("shelly", None, None, device, DATA, joined, "_".join(rest))


#: Sparkplug B message types, by where they come from (an edge node, a device) and what they are
_SPARKPLUG_NODE = {"NBIRTH": DATA, "NDATA": DATA, "NDEATH": EVENT}
_SPARKPLUG_DEVICE = {"DBIRTH": DATA, "DDATA": DATA, "DDEATH": EVENT}


@implementer(IStrategy)
@attrs.frozen
class SparkplugStrategy(_Fleet):
    """Sparkplug B (3.0 and 2.2): ``spBv1.0/<group>/<type>/<edge node>[/<device>]``. Births and data are data,
    deaths events, in the schema ``sparkplug_<group>``, the table ``<edge node>_sensors`` (an edge node's own
    metrics) or ``<edge node>_<device>_sensors``; commands (``NCMD``, ``DCMD``) are ignored. A host
    application's ``STATE`` (``spBv1.0/STATE/<host>``, 2.2: ``STATE/<host>``) is an event of the table
    ``<host>_events`` in the schema ``sparkplug``."""

    name: str = "sparkplug"

    def table_for(self, address: Address) -> TableName:
        if address.network is None:
            return super().table_for(address)
        return TableName(join("sparkplug", address.network),
                         join(address.gateway, address.node, TABLE_SUFFIXES[address.kind]) if address.node
                         else join(address.gateway, TABLE_SUFFIXES[address.kind]))

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) == 3 and levels[:2] == ["spBv1.0", "STATE"] or len(levels) == 2 and levels[0] == "STATE":
            host = levels[-1]
            check_levels(self.name, topic, **{"host application": host})
            return Address("sparkplug", None, None, host, EVENT, "STATE", "state")
        if len(levels) in (4, 5) and levels[0] == "spBv1.0":
            group, kind, edge = levels[1:4]
            if kind in ("NCMD", "DCMD"):
                self._ignore(topic, f"spBv1.0/<group>/{kind}/...")
            types = _SPARKPLUG_NODE if len(levels) == 4 else _SPARKPLUG_DEVICE
            if kind in types:
                device = levels[4] if len(levels) == 5 else None
                check_levels(self.name, topic, group=group, **{"edge node": edge},
                             **({"device": device} if len(levels) == 5 else {}))
                return Address("sparkplug", group, edge, device, types[kind], kind)
        self._refuse(topic, "spBv1.0/<group>/NBIRTH|NDATA|NDEATH/<edge node>, "
                            "spBv1.0/<group>/DBIRTH|DDATA|DDEATH/<edge node>/<device> or spBv1.0/STATE/<host>")


@implementer(IStrategy)
@attrs.frozen
class HomeAssistantStrategy(_Fleet):
    """Home Assistant's MQTT Statestream (``mqtt_statestream``): ``<base>/<domain>/<object id>/state`` (the state),
    ``.../last_changed``, ``.../last_updated`` (``publish_timestamps``) and ``.../<attribute>``
    (``publish_attributes``, JSON) are data of the entity ``<domain>.<object id>``, the field the last level; the
    table ``<domain>_<object id>_sensors`` in the schema of the base topic (which may have levels). MQTT discovery
    configurations (``.../config``, where discovery shares the base ``homeassistant``) are ignored; Home
    Assistant's own birth and last will there (``homeassistant/status``: ``online``, ``offline``) is an event of
    the table ``status_events``."""

    name: str = "homeassistant"
    base: str = "homeassistant"

    def match(self, topic: str) -> Address:
        rest = below(self.base, topic) or []
        if len(rest) in (3, 4) and rest[-1] == "config":
            raise Ignored(self.name, topic, "an MQTT discovery configuration, not a state")
        if rest == ["status"]:
            return Address(self.base, None, None, "status", EVENT, "status", "status")
        if len(rest) == 3:
            domain, object_id, key = rest
            check_levels(self.name, topic, domain=domain, **{"object id": object_id, "state or attribute": key})
            return Address(self.base, None, None, f"{domain}.{object_id}", DATA, key, key)
        self._refuse(topic, f"{self.base}/<domain>/<object id>/state (or last_changed, last_updated, <attribute>)")


#: OwnTracks topics after ``<base>/<user>/<device>``: events (``cmd``, a command to the device, is ignored)
_OWNTRACKS_EVENTS = {"event", "info", "waypoint", "waypoints", "step", "beacon", "dump", "status"}


@implementer(IStrategy)
@attrs.frozen
class OwnTracksStrategy(_Fleet):
    """OwnTracks (``owntracks/<user>/<device>``): locations (and the app's last will) are data of the table
    ``<user>_<device>_sensors`` in the schema ``owntracks``; ``.../event`` (entering and leaving regions),
    ``.../info`` (a card), ``.../waypoint[s]``, ``.../step``, ``.../beacon``, ``.../dump`` and ``.../status`` are
    events; ``.../cmd`` (a command to the app) is ignored. ``base`` is the app's topic prefix."""

    name: str = "owntracks"
    base: str = "owntracks"

    def match(self, topic: str) -> Address:
        rest = below(self.base, topic) or []
        if len(rest) in (2, 3):
            user, device = rest[0], rest[1]
            check_levels(self.name, topic, user=user, device=device)
            if len(rest) == 2:
                return Address(self.base, None, user, device, DATA, "")
            if rest[2] == "cmd":
                self._ignore(topic, f"{self.base}/<user>/<device>/cmd")
            if rest[2] in _OWNTRACKS_EVENTS:
                return Address(self.base, None, user, device, EVENT, rest[2])
        self._refuse(topic, f"{self.base}/<user>/<device> (locations) or {self.base}/<user>/<device>/event (or info, "
                            "waypoint, waypoints, step, beacon, dump, status)")

    def table_for(self, address: Address) -> TableName:
        return TableName(sanitize(address.realm), join(address.gateway, address.node, TABLE_SUFFIXES[address.kind]))


#: the component types ESPHome's MQTT client publishes states of (``<prefix>/<component>/<object id>/state``)
ESPHOME_COMPONENTS = frozenset({
    "sensor", "binary_sensor", "text_sensor", "switch", "light", "fan", "cover", "climate", "number", "select",
    "text", "button", "lock", "valve", "alarm_control_panel", "date", "time", "datetime", "event", "update",
})


@implementer(IStrategy)
@attrs.frozen
class EsphomeStrategy(_Fleet):
    """ESPHome's MQTT client: ``<prefix>/<component>/<object id>/state`` is the field ``<object id>`` of the
    device's table ``<prefix>_sensors`` in the schema ``esphome`` (the component, ``sensor`` or
    ``binary_sensor``, in the ``component`` column), a row a message; a climate's, cover's, fan's or valve's
    ``<prefix>/<component>/<object id>/<property>/state`` (``current_temperature``, ``position``) is the field
    ``<object id>.<property>``. The device's birth and last will (``<prefix>/status``: ``online``,
    ``offline``) and its log lines (``<prefix>/debug``) are events; commands (``.../command``) and Home
    Assistant discovery configurations (``.../config``) are ignored. The prefix (``topic_prefix``, the node's
    name unless set) may have levels."""

    name: str = "esphome"
    #: the router adds the address's labels to the rows as tags
    labels_as_tags = True
    #: the labels an address may have (a channel's ``tags`` may name them)
    label_names = ("component",)

    def match(self, topic: str) -> Address:
        levels = topic.split("/")
        if len(levels) >= 2 and levels[-1] == "command" or len(levels) >= 3 and levels[-2] == "command":
            # (a light's command/brightness_pct and the like: a command's parts)
            self._ignore(topic, "<prefix>/<component>/<object id>/command")
        if len(levels) >= 4 and levels[-1] == "config":
            raise Ignored(self.name, topic, "a Home Assistant discovery configuration, not a state")
        if len(levels) >= 2 and levels[-1] in ("status", "debug"):
            device = "/".join(levels[:-1])
            check_levels(self.name, topic, device=device)
            if not all(levels[:-1]):
                self._refuse(topic, "a topic with no empty levels")
            return Address("esphome", None, None, device, EVENT, levels[-1], levels[-1])
        if len(levels) >= 4 and levels[-1] == "state":
            if levels[-3] in ESPHOME_COMPONENTS:
                size, field = 3, levels[-2]
            elif len(levels) >= 5 and levels[-4] in ESPHOME_COMPONENTS:
                size, field = 4, f"{levels[-3]}.{levels[-2]}"
            else:
                size = 0
            if size:
                prefix, component, object_id = levels[:-size], levels[-size], levels[-size + 1]
                device = "/".join(prefix)
                check_levels(self.name, topic, device=device, **{"object id": object_id})
                if not all(prefix) or not all(levels[-size:]):
                    self._refuse(topic, "a topic with no empty levels")
                return Address("esphome", None, None, device, DATA, "/".join(levels[-size:]), field,
                               (("component", component),))
        self._refuse(topic, "<prefix>/<component>/<object id>/state (component: sensor, binary_sensor, text_sensor, "
                            "switch, light, climate, ...), <prefix>/<component>/<object id>/<property>/state, "
                            "<prefix>/status or <prefix>/debug")

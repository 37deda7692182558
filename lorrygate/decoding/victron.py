"""
The ``victron`` decoder: Venus OS's dbus-flashmq notifications, and the
keep-alive that makes a GX device send them.

A notification's payload is its D-Bus value wrapped in an object,
``{"value": 52.3}``; a setting's carries its bounds too,
``{"max": 1, "min": 0, "value": 1}``. On the ``victron`` strategy's topics the
value is the field named by the D-Bus path (``Dc/0/Voltage``), the other keys
are ``<path>.<key>`` (``Settings/LEDs/Enable.min``), at the receive time (the
notifications carry none). ``{"value": null}`` (a value the device does not
have, such as the power of a phase a single-phase inverter lacks) is no
measurement: ignored, as an empty payload (a device gone from the D-Bus) is.

dbus-flashmq publishes nothing but a few retained topics unless a client
keeps the installation alive: a read request to ``R/<portal ID>/keepalive``
at least every 60 s. So the decoder does what Victron's own clients do, on the
channel's connection: an installation heard from (its retained
``N/<portal ID>/system/0/Serial`` comes at the subscription) is sent a
keep-alive with an empty payload, which makes it publish every value once,
and then one every ``keepalive`` seconds (30) with
``{"keepalive-options": ["suppress-republish"]}``, which keeps it publishing
the values that change. After a reconnection (notifications are QoS 0: what
changed meanwhile is lost), and when the GX device's MQTT service says it
started (``N/<portal ID>/keepalive``), all values are asked for again.
``keepalive = 0`` sends nothing (another client, or ``--keep-alive 0`` on an
older dbus-mqtt, keeps the installations alive).
"""

import json
from typing import Any

import attrs
import orjson
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.decoding.records import received_ns
from lorrygate.errors import Declined, Ignored
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record

#: seconds between two keep-alives of an installation: dbus-flashmq stops publishing 60 s after the last one
KEEPALIVE = 30.0
#: the installations one channel keeps alive at most (their portal ids come from topics: a bound on what a
#: publisher of odd topics can make the gateway send)
MAX_PORTALS = 10_000
#: the longest portal id kept alive (VRM's are 12 hex digits, the GX device's MAC address): with MAX_PORTALS, what
#: the keep-alive may hold in memory
MAX_PORTAL_ID = 64
#: a keep-alive that asks for no full publication (each full one makes the GX device send all its values)
SUPPRESS = json.dumps({"keepalive-options": ["suppress-republish"]}).encode()


@implementer(IDecoder)
@attrs.define(eq=False)
class VictronDecoder:
    name: str = "victron"
    timezone: Any = None
    #: seconds between keep-alives (0: none)
    keepalive: float = KEEPALIVE
    #: the reactor (its clock runs the keep-alives); None: no keep-alives
    clock: Any = None
    #: the channel's source, whose ``publish(topic, payload, qos)`` sends them (`attach`)
    source: Any = None
    #: portal id -> the source's connection count when the installation last was asked for all its values
    portals: dict = attrs.field(factory=dict, repr=False)
    #: keep-alives sent (a full publication asked for, and not)
    keepalives_sent: int = 0
    #: the channel's counters (`ChannelStats`), which count the keep-alives too (status); set by the channel
    stats: Any = attrs.field(default=None, repr=False)
    _loop: Any = attrs.field(default=None, repr=False)
    _full_warned: bool = attrs.field(default=False, repr=False)

    log = Logger()

    def decode(self, message, address) -> list:
        topic = message.topic
        if topic[:2] == "N/":
            self._heard(topic)
        if address is None or address.field is None:
            raise Declined("not a Venus OS notification (N/<portal ID>/<service type>/<instance>/<D-Bus path>)")
        try:
            document = orjson.loads(message.payload)
        except orjson.JSONDecodeError as exc:
            raise Declined(f"not JSON: {exc}") from None
        if type(document) is not dict or "value" not in document:
            raise Declined('not a D-Bus value ({"value": ...})')
        path = address.field
        if document["value"] is None:
            raise Ignored(self.name, topic, "null: the device has no such value (an invalid D-Bus value)")
        fields = {path: document["value"]}
        for key, value in document.items():
            if key != "value":
                fields[f"{path}.{key}"] = value
        return [Record(received_ns(message), fields)]

    # -- the keep-alive --------------------------------------------------------------------------------------

    def attach(self, source) -> None:
        self.source = source

    def detach(self, source) -> None:
        if self.source is source:
            self.source = None

    def start(self) -> None:
        if self.keepalive and self.clock is not None and self._loop is None:
            self._loop = LoopingCall(self._keep_alive)
            self._loop.clock = self.clock
            self._loop.start(self.keepalive, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _heard(self, topic: str) -> None:
        """An installation's notification: a new one is asked for all its values, and so is one whose MQTT service
        just started (``N/<portal ID>/keepalive``)."""
        if not self.keepalive or self.clock is None:
            return
        parts = topic.split("/")
        portal = parts[1]
        if portal in self.portals and not (len(parts) == 3 and parts[2] == "keepalive"):
            return
        if not portal or portal in ("+", "#") or len(portal) > MAX_PORTAL_ID:
            return
        if portal not in self.portals and len(self.portals) >= MAX_PORTALS:
            if not self._full_warned:
                self._full_warned = True
                self.log.warn("victron decoder: {count} installations kept alive already; {portal} is not",
                              count=len(self.portals), portal=portal)
            return
        self.portals[portal] = None
        self._send(portal, full=True)

    def _keep_alive(self) -> None:
        for portal, connection in list(self.portals.items()):
            # after a reconnection (or a keep-alive sent while away), all values again: QoS 0 lost the changes
            self._send(portal, full=connection != self._connection())

    def _connection(self):
        source = self.source
        if source is None or not getattr(source, "connected", False):
            return None
        return getattr(source, "connections", 0)

    def _send(self, portal: str, full: bool) -> None:
        if not self.keepalive or self.clock is None:
            return
        connection = self._connection()
        publish = getattr(self.source, "publish", None)
        if connection is None or publish is None:
            self.portals[portal] = None  # (not sent: all values at the next one that is)
            return
        publish(f"R/{portal}/keepalive", b"" if full else SUPPRESS, 0)
        self.keepalives_sent += 1
        if self.stats is not None:
            self.stats.keepalives += 1
        if full:
            self.portals[portal] = connection

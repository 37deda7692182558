"""
What the broker says it dropped.

Mosquitto gives up a QoS 1 or 2 message for a session whose queue is full
(``max_queued_messages``, 1000 by default, and ``max_queued_bytes``): while
the subscriber is away, or slower than its publishers. Such a message never
reaches lorrygate, so nothing lorrygate acknowledges or stores can tell of
it. The broker counts these messages, since its start, in
``$SYS/broker/publish/messages/dropped`` (retained, every ``sys_interval``,
10 s by default). The MQTT source subscribes to it beside the channel's
topics, at QoS 0 (``watch_drops = false`` leaves it), and warns when the
count rises and when it is above 0 at the first look. The sources of one
process that connect to one broker (a channel each, and those a reload
starts) share what it said (`BrokerCount`): a rise is one warning, not one
a channel, and a reload does not warn again of what was told.

The count covers every client of the broker: a rise may be another
subscriber's loss, and the warning says so. A broker that publishes no such
topic (another make, ``sys_interval 0``) sends nothing, and a broker that
refuses the subscription (its access control) is asked once a connection.
"""

from typing import Any

import attrs

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
HOW_TO = ("a session's queue was full: messages beyond the broker's max_queued_messages (Mosquitto: 1000 by "
          "default) and max_queued_bytes, queued while a subscriber is away or slower than its publishers, are "
          "lost before any subscriber gets them. Raise both (docs/delivery.rst, \"What the broker must do\"); "
          "the count covers all the broker's clients, so this may be another subscriber's loss")


@attrs.define
class BrokerCount:
    """What one broker's reports said, for the sources of this process that connect to it."""

    #: the broker's count at its last report (None: no report yet)
    count: int | None = None
    #: the rises of the count seen (drops while the gateway ran)
    rises: int = 0


#: (host, port) -> its `BrokerCount`, for this process
_COUNTS: dict = {}


def count_of(host: str, port: int) -> BrokerCount:
    """The shared `BrokerCount` of the broker at ``host``:``port``."""
    return _COUNTS.setdefault((host, port), BrokerCount())


@attrs.define
class DropWatch:
    """The broker's count of dropped messages, as a source's connections report it."""

    #: the source's name, for the log
    source: str
    log: Any
    #: what the broker said, shared with the process's other sources of the broker (`count_of`)
    said: BrokerCount = attrs.Factory(BrokerCount)

    @property
    def count(self) -> int | None:
        return self.said.count

    @property
    def rises(self) -> int:
        return self.said.rises

    def report(self, payload: bytes) -> None:
        """A report of the count; anything but a number is not the count this watch knows, and is left."""
        try:
            count = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return
        said = self.said
        last, said.count = said.count, count
        if last is None:
            if count > 0:
                self.log.warn("MQTT source {source}: the broker has dropped {count} message(s) since it started "
                              "({topic}): {how_to}", source=self.source, count=count, topic=DROPPED_TOPIC,
                              how_to=HOW_TO)
            return
        if count <= last:
            return  # the same count again (a new connection gets it retained), or a restarted broker's
        said.rises += count - last
        self.log.warn("MQTT source {source}: the broker dropped {dropped} message(s) since its last report, "
                      "{count} since it started ({topic}): {how_to}", source=self.source, dropped=count - last,
                      count=count, topic=DROPPED_TOPIC, how_to=HOW_TO)

    def status(self) -> dict:
        return {"broker_dropped": self.count, "broker_dropped_while_watched": self.rises}

"""
What a persistent MQTT session is subscribed to, as this gateway subscribed it: one small JSON file per broker and
client id in ``<data_dir>/mqtt-sessions/``.

A broker keeps a session's subscriptions as long as the session: subscribing again on a new connection adds
filters, it removes none. A channel whose ``topics`` were narrowed (``#`` to ``plant/#``) kept receiving
everything the old filter matched, through the session its client id names, and stored it or made dead letters of
it; a watch of the broker's drops switched off kept its ``$SYS`` filter. MQTT has no request that lists a session's
subscriptions, so the source remembers what it subscribed: on a connection that finds its session, a filter that
the record has and the channel no longer does is unsubscribed (after the channel's own are acknowledged, so that
no message of a filter kept falls between the two).

The record is advice, never a reason to fail: a record that cannot be read or written is logged and taken as none.
"""

import json
import os
from urllib.parse import quote

from twisted.logger import Logger

DIRECTORY = "mqtt-sessions"

log = Logger()


class SessionRecord:
    """The filters a session (``broker`` host:port and ``client_id``) was last subscribed to by this gateway."""

    def __init__(self, data_dir: str, broker: str, client_id: str):
        self.broker, self.client_id = broker, client_id
        self.path = os.path.join(data_dir, DIRECTORY, quote(f"{broker} {client_id}", safe="") + ".json")

    def read(self) -> tuple:
        """The recorded filters; () for none (a new session, or a record that cannot be read, logged)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
            filters = document["filters"]
            if not isinstance(filters, list) or not all(isinstance(item, str) for item in filters):
                raise ValueError("filters is not a list of text")
            return tuple(filters)
        except FileNotFoundError:
            return ()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warn("MQTT session {client_id}: its record {path} cannot be read ({error}); filters an earlier config "
                     "subscribed are not unsubscribed", client_id=self.client_id, path=self.path, error=exc)
            return ()

    def write(self, filters) -> None:
        """Record ``filters`` (written to a temporary file and renamed into place)."""
        document = {"broker": self.broker, "client_id": self.client_id, "filters": list(filters)}
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warn("MQTT session {client_id}: its record {path} cannot be written ({error}); a filter this "
                     "config drops later is not unsubscribed", client_id=self.client_id, path=self.path, error=exc)

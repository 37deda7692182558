"""
A Unix socket source (``[source:NAME] type = socket``): local programs write
messages to ``path``.

``framing = lines`` (the default): one message a line; ``length``: each
message preceded by its length as 4 bytes, big-endian; ``datagram``: a
datagram socket, one message a datagram. Every message gets the source's
``topic``. The socket file is made with ``mode`` (default 660) and, when
``group`` names one, that group; a stale socket file left by a gateway that
died is replaced, a live one (another gateway listens) is an error.

Delivery: at most once: the writer gets no acknowledgement, and what the
gateway received but had not committed when it died is gone. Backpressure
stops reading from stream clients (their writes block once the kernel's
buffer is full); datagrams beyond the kernel's buffer are dropped by the
kernel.
"""

import grp
import os
import socket
import stat
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver, LineOnlyReceiver
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.interfaces import ISource
from lorrygate.model import NO_ACK, Message
from lorrygate.service.connections import SOCKET_CONNECTIONS, LimitedFactory
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: the longest message a stream client may send
MAX_MESSAGE = 8 << 20


class _Lines(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_MESSAGE
    #: a line over MAX_LENGTH closed the connection: what is left of it is no message
    _cut = False

    def connectionMade(self):
        self.factory.source._connected(self)

    def connectionLost(self, reason=None):
        # The last line of a writer that ends without a newline (printf '%s' "$json" | socat - UNIX:...) is a
        # message: its end is the connection's
        if self._buffer and not self._cut:
            self.lineReceived(self._buffer)
        self._buffer = b""
        self.factory.source._disconnected(self)

    def lineReceived(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            self.factory.source._message(line)

    def lineLengthExceeded(self, line):
        self._cut = True
        self.transport.write(f"error: a line longer than {MAX_MESSAGE} bytes; closing\n".encode())
        self.factory.source._too_long(self)


class _Framed(Int32StringReceiver):
    MAX_LENGTH = MAX_MESSAGE

    def connectionMade(self):
        self.factory.source._connected(self)

    def connectionLost(self, reason=None):
        if self._unprocessed and not self._cut:
            self.factory.source._cut_short(len(self._unprocessed))
        self.factory.source._disconnected(self)

    _cut = False

    def stringReceived(self, data):
        self.factory.source._message(data)

    def lengthLimitExceeded(self, length):
        self._cut = True
        self.transport.write(f"error: a message of {length} bytes, more than {MAX_MESSAGE}; closing\n".encode())
        self.factory.source._too_long(self)


class _Datagrams(DatagramProtocol):
    def __init__(self, source):
        self.source = source

    def datagramReceived(self, data, address):
        if self.source._pauses.paused:
            self.source.dropped += 1
            return
        self.source._message(data)


def _stale(path: str) -> bool:
    """Whether ``path`` is a socket nobody listens on any more."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except FileNotFoundError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


@implementer(ISource)
@attrs.define(eq=False)
class SocketSource(SourcePlumbing, Service):
    name: str  # type: ignore[assignment]  # Service.name, always set here
    settings: Any  # lorrygate.config.settings.SourceSettings, type socket
    deliver: Any
    _reactor: Any
    broker: Any = None
    _port: Any = None
    _clients: set = attrs.Factory(set)
    connected: bool = False
    received: int = 0
    dropped: int = 0
    #: stream clients gone in the middle of a length-prefixed message
    cut_short: int = 0

    log = Logger()

    def __attrs_post_init__(self):
        from lorrygate.sources.periodic import _Where

        self.client_id = self.client_id or self.settings.path
        self.broker = _Where(self.settings.path)
        self._pauses = Pauses(self._pause_clients, self._resume_clients)

    @property
    def claim(self) -> tuple[str, str]:
        """What this source holds alone (`lorrygate.service.locks.claim_of`)."""
        return f"the socket {self.settings.path}", "path"


    def when_subscribed(self) -> Deferred:
        return succeed(None)

    def status(self) -> dict:
        """What ``lorrygate status`` shows of it."""
        status = {"listening": self.settings.path, "received": self.received}
        if self.cut_short:
            status["cut_short"] = self.cut_short
        return status

    publish = None

    def startService(self) -> None:
        super().startService()
        settings = self.settings
        path = settings.path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if _stale(path):
            os.unlink(path)
        mode = int(settings.mode, 8)
        try:
            if settings.framing == "datagram":
                self._port = self._reactor.listenUNIXDatagram(path, _Datagrams(self), mode=mode)
            else:
                factory = Factory.forProtocol(_Lines if settings.framing == "lines" else _Framed)
                factory.noisy = False
                factory.source = self  # type: ignore[attr-defined]  # read by the protocols
                # (local programs, but one that leaks connections would take the gateway's file descriptors)
                self._port = self._reactor.listenUNIX(path, LimitedFactory(factory, SOCKET_CONNECTIONS), mode=mode)
            if settings.group:
                os.chown(path, -1, grp.getgrnam(settings.group).gr_gid)
        except Exception as exc:
            self.last_error = f"cannot listen on {path}: {exc}"
            self.log.error("source {source}: {error}", source=self.name, error=self.last_error)
            return
        self.subscribed = self.connected = True
        self.log.info("source {source}: listening on {path} ({framing}, mode {mode}; at most once)", source=self.name,
                      path=path, framing=settings.framing, mode=settings.mode)

    def stopService(self) -> Deferred:
        super().stopService()
        port, self._port = self._port, None
        for client in list(self._clients):
            client.transport.loseConnection()
        if port is None:
            return succeed(None)
        d = port.stopListening()
        return d if d is not None else succeed(None)

    def _connected(self, protocol) -> None:
        self._clients.add(protocol)
        if self._pauses.paused:
            protocol.transport.pauseProducing()

    def _disconnected(self, protocol) -> None:
        self._clients.discard(protocol)

    def _pause_clients(self) -> None:
        for client in self._clients:
            client.transport.pauseProducing()

    def _resume_clients(self) -> None:
        for client in self._clients:
            client.transport.resumeProducing()

    def _too_long(self, protocol) -> None:
        self.log.error("source {source}: a client sent a message over {limit} bytes; its connection is closed",
                       source=self.name, limit=MAX_MESSAGE)
        protocol.transport.loseConnection()

    def _cut_short(self, size: int) -> None:
        self.cut_short += 1
        self.log.warn("source {source}: a client closed its connection {size} byte(s) into a message (its length "
                      "prefix and part of it); that part is no message and is not stored", source=self.name,
                      size=size)

    def _message(self, payload: bytes) -> None:
        self.received += 1
        topic = self.settings.topic
        self.deliver(Message(topic, payload, 0, False, time_of_day(self._reactor)(), topic, NO_ACK))

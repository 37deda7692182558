"""
A TCP proxy on loopback for network faults between a client and a real server (Twisted's port forwarder):
`Proxy.blackhole` drops what the clients send from then on (written by them, never read by the server, as
on a link that died), `Proxy.cut` aborts every connection through it, `Proxy.cut_after` does so once the
server has sent so many more bytes (an MQTT broker's PUBACKs are 4 bytes each: a cut in the middle of a batch,
at a point the test chooses).
"""

from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols import portforward


class _Client(portforward.ProxyClient):
    noisy = False

    def dataReceived(self, data):
        super().dataReceived(data)
        proxy = self.peer.factory if self.peer is not None else None
        if proxy is not None and proxy.cut_at is not None:
            proxy.cut_at -= len(data)
            if proxy.cut_at <= 0:
                proxy.cut_at = None
                proxy.cut()


class _ClientFactory(portforward.ProxyClientFactory):
    noisy = False
    protocol = _Client


class _Server(portforward.ProxyServer):
    noisy = False
    clientProtocolFactory = _ClientFactory

    def connectionMade(self):
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.open.discard(self)
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self.factory.blackholed:
            self.factory.dropped += len(data)
            return
        super().dataReceived(data)


class Proxy(portforward.ProxyFactory):
    noisy = False
    protocol = _Server

    def __init__(self, host: str, port: int):
        super().__init__(host, port)
        self.open: set = set()
        self.blackholed = False
        #: bytes the clients sent while blackholed
        self.dropped = 0
        #: where the proxy listens (``port`` is the server's)
        self.listening = 0
        #: bytes the server may still send before every connection is cut (`cut_after`)
        self.cut_at: int | None = None
        self._port = None

    async def start(self, reactor) -> "Proxy":
        self._port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self)
        self.listening = self._port.getHost().port
        return self

    def blackhole(self) -> None:
        self.blackholed = True

    def cut_after(self, server_bytes: int) -> None:
        """Cut every connection once the server has sent ``server_bytes`` more bytes through the proxy."""
        self.cut_at = server_bytes

    def cut(self) -> None:
        """Abort every connection (both sides); new connections pass again."""
        self.blackholed = False
        for server in list(self.open):
            if server.peer is not None:
                server.peer.transport.abortConnection()
            server.transport.abortConnection()

    async def stop(self) -> None:
        self.cut()
        if self._port is not None:
            await self._port.stopListening()

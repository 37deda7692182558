"""
A bound on the connections a listening socket of the gateway keeps open (the HTTP source, a socket source,
the control and metrics endpoints, the WebSocket sink).

Clients that hold connections open (a script that never closes them, a slow client on purpose, a scanner) would
otherwise take file descriptors and memory without bound, until the storages, the spool and the brokers had
none. One connection past the bound is closed as soon as it is accepted (its client tries again) and counted.
"""

from twisted.protocols.policies import WrappingFactory

#: the bound of the control and metrics endpoints and of the WebSocket sink
ENDPOINT_CONNECTIONS = 100
#: the bound of a socket source's stream socket (local programs)
SOCKET_CONNECTIONS = 1000


class LimitedFactory(WrappingFactory):
    """``factory``'s connections, at most ``limit`` open at once; listen on this one, outermost (below TLS
    too: a TLS factory is wrapped, not wrapping). ``turned_away`` counts the connections closed at once."""

    noisy = False

    def __init__(self, factory, limit: int):
        super().__init__(factory)
        self.limit = limit
        self.turned_away = 0

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.limit:
            self.turned_away += 1
            return None  # (the port closes the socket)
        return super().buildProtocol(addr)

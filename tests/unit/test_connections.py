"""A listening socket keeps at most its bound of connections open; one more is closed at once and counted."""

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from lorrygate.service.connections import ENDPOINT_CONNECTIONS, SOCKET_CONNECTIONS, LimitedFactory
from lorrygate.service.control import quiet_site

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def test_one_connection_past_the_bound_is_turned_away_until_one_closes():
    limited = LimitedFactory(Factory.forProtocol(Protocol), 2)
    opened = []
    for _ in range(2):
        protocol = limited.buildProtocol(PEER)
        protocol.makeConnection(StringTransport())
        opened.append(protocol)
    assert limited.buildProtocol(PEER) is None and limited.turned_away == 1
    opened[0].connectionLost(Failure(ConnectionError("closed by the client")))
    assert limited.buildProtocol(PEER) is not None and limited.turned_away == 1


def test_the_control_and_metrics_endpoints_and_the_live_view_are_bounded():
    assert ENDPOINT_CONNECTIONS == quiet_site(Resource()).limit == 100


def test_a_socket_sources_stream_socket_is_bounded(tmp_path):
    """A local program that leaks connections to a socket source cannot take the gateway's file descriptors."""
    from twisted.internet.testing import MemoryReactor

    from lorrygate.config.settings import SourceSettings
    from lorrygate.sources.unixsocket import SocketSource

    reactor = MemoryReactor()
    settings = SourceSettings(name="local", type="socket", path=str(tmp_path / "s.sock"))
    source = SocketSource("local", settings, [].append, reactor)
    source.startService()
    [(path, factory, *_)] = reactor.unixServers
    assert isinstance(factory, LimitedFactory) and factory.limit == SOCKET_CONNECTIONS == 1000

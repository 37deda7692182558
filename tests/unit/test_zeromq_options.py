"""The ZeroMQ source's socket options that need no peer: its heartbeats, connect timeout and reconnect backoff."""

from lorrygate.config.settings import BrokerSettings
from lorrygate.sources.zeromq import connecting_options, heartbeat_options, prefix_of


def test_heartbeats_follow_the_keepalive_and_take_a_peer_silent_for_half_as_long_again_for_gone():
    assert heartbeat_options(60) == [("HEARTBEAT_IVL", 60_000), ("HEARTBEAT_TIMEOUT", 90_000),
                                     ("HEARTBEAT_TTL", 90_000)]


def test_keepalive_0_sends_no_heartbeats():
    assert heartbeat_options(0) == []


def test_the_ttl_stays_within_what_zeromq_takes():
    options = dict(heartbeat_options(65535))
    assert options["HEARTBEAT_IVL"] == 65_535_000 and options["HEARTBEAT_TTL"] == 6_553_500


def test_the_connect_timeout_and_reconnect_max_delay_are_the_brokers():
    """They were not read: a connect waited as long as the kernel let it, and ZeroMQ tried again every 0.1 s for
    good, whatever the broker said."""
    broker = BrokerSettings(name="z", host="plc", port=5556, type="zmq", connect_timeout=2.5, reconnect_max_delay=60)
    assert connecting_options(broker) == [("CONNECT_TIMEOUT", 2500), ("RECONNECT_IVL_MAX", 60_000)]


def test_the_options_are_ones_pyzmq_knows():
    import pytest

    zmq = pytest.importorskip("zmq")
    socket = zmq.Context.instance().socket(zmq.SUB)
    broker = BrokerSettings(name="z", host="plc", port=5556, type="zmq")
    try:
        for option, value in heartbeat_options(65535) + connecting_options(broker):
            socket.setsockopt(getattr(zmq, option), value)
            assert socket.getsockopt(getattr(zmq, option)) == value
    finally:
        socket.close(linger=0)


def test_a_subscription_is_the_filters_literal_prefix():
    assert prefix_of("sensors/+/data") == "sensors/"

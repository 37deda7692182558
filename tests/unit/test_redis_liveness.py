"""The Redis source's TCP liveness options (against a black hole: tests/integration/test_black_hole.py)."""

import socket
import sys

import attrs
import pytest

pytest.importorskip("redis")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the four options are Linux's")
def test_keepalives_and_user_timeout_are_the_postgresql_storages():
    from lorrygate.sources.redis import liveness_options

    assert liveness_options() == {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3,
                                  socket.TCP_USER_TIMEOUT: 30_000}


def test_each_option_is_one_a_tcp_socket_takes():
    from lorrygate.sources.redis import liveness_options

    with socket.socket() as sock:
        for option, value in liveness_options().items():
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
            assert sock.getsockopt(socket.IPPROTO_TCP, option) == value


def test_tls_verifies_the_certificate_and_the_host_name_whatever_redis_py_says():
    """redis-py before 6.0 checked no host name by default: any certificate of the CA was taken."""
    import redis

    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.redis import client_options

    broker = BrokerSettings(name="r", host="cache.example", port=6380, type="redis", tls=True, tls_ca="/etc/ca.pem")
    options = client_options(broker, "main")
    assert (options["ssl"], options["ssl_cert_reqs"], options["ssl_check_hostname"], options["ssl_ca_certs"]) == (
        True, "required", True, "/etc/ca.pem")
    kwargs = redis.Redis(**options).connection_pool.connection_kwargs
    assert kwargs["ssl_check_hostname"] is True and kwargs["host"] == "cache.example"
    plain = client_options(attrs.evolve(broker, tls=False, tls_ca=""), "main")
    assert plain["ssl"] is False and "ssl_check_hostname" not in plain
    assert redis.Redis(**plain).connection_pool.connection_class is redis.Connection

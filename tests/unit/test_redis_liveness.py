"""The Redis source's TCP liveness options (against a black hole: tests/integration/test_black_hole.py)."""

import socket
import sys

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

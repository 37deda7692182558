"""
A server behind a black hole, for tests: a network namespace joined by a veth link that a test takes down, so
that packets to the server are dropped without an answer, as when its host dies or a NAT or firewall on the way
forgets a connection. It needs root (``ip netns``): `black_hole` skips the test without.
"""

import contextlib
import subprocess
import sys
import uuid

import pytest

from tests.servers import free_port


def _ip(*words: str) -> None:
    subprocess.run(["ip", *words], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def black_hole(port: int, inside_port: int):
    """(the address at which the server on 127.0.0.1:``port`` is reached through the link, on ``inside_port``;
    a function that takes the link down, ``link(False)``, or up)."""
    tag = uuid.uuid4().hex[:6]
    namespace, outside, inside = f"lg-{tag}", f"lgo{tag}", f"lgi{tag}"
    subnet = f"10.{int(tag[:2], 16)}.{int(tag[2:4], 16)}"
    try:
        _ip("netns", "add", namespace)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no network namespace here (ip netns needs root): {exc}")
    forwarders = []
    try:
        try:
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("addr", "add", f"{subnet}.1/24", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.2/24", "dev", inside)
            _ip("netns", "exec", namespace, "ip", "link", "set", inside, "up")
            _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"no veth link into a network namespace here: {exc.stderr.strip()}")
        # the server listens on loopback: a forwarder outside on the link's address, one inside before it
        middle = free_port()
        for command in ([sys.executable, "-m", "tests.tcpforward", f"{subnet}.1", str(middle), "127.0.0.1",
                         str(port)],
                        ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.tcpforward", f"{subnet}.2",
                         str(inside_port), f"{subnet}.1", str(middle)]):
            forwarder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            forwarders.append(forwarder)
            assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "listening"

        def link(up: bool) -> None:
            _ip("link", "set", outside, "up" if up else "down")

        yield f"{subnet}.2", link
    finally:
        for forwarder in forwarders:
            forwarder.kill()
            forwarder.wait()
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "delete", outside], capture_output=True, timeout=30)

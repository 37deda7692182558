"""sd_notify: READY=1 and WATCHDOG=1 reach the socket in $NOTIFY_SOCKET; nothing is sent without it."""

import os
import socket

from twisted.internet.task import Clock

from lorrygate.service import systemd


def listening(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock, path


def test_ready_reaches_the_notify_socket(tmp_path):
    """notify() sends its state as one datagram to $NOTIFY_SOCKET."""
    sock, path = listening(tmp_path)
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(100) == b"READY=1"
    sock.close()


def test_nothing_is_sent_outside_systemd():
    """Without $NOTIFY_SOCKET notify() does nothing and says so."""
    assert systemd.notify("READY=1", {}) is False


def test_watchdog_pings_every_half_interval(tmp_path):
    """With WatchdogSec set, WATCHDOG=1 goes out at once and then every half of it, on the given clock."""
    sock, path = listening(tmp_path)
    clock = Clock()
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    loop = systemd.start_watchdog(clock, environ)
    clock.advance(2)
    assert [sock.recv(100), sock.recv(100)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    loop.stop()
    assert clock.getDelayedCalls() == []
    assert systemd.start_watchdog(clock, dict(environ, WATCHDOG_PID="1")) is None, "another process's watchdog"
    sock.close()


def test_a_reader_that_does_not_keep_up_never_holds_the_sender(tmp_path):
    """Past what the socket's queue holds, notify() says False at once instead of waiting for the reader."""
    sock, path = listening(tmp_path)
    sent = [systemd.notify("WATCHDOG=1", {"NOTIFY_SOCKET": path}) for _ in range(200)]
    assert sent[0] is True and sent[-1] is False
    sock.close()

"""
Telling systemd how the gateway is doing (``Type=notify`` units).

``READY=1`` once every channel has subscribed, ``RELOADING=1`` and
``READY=1`` around a reload, ``STOPPING=1`` when stopping, and ``WATCHDOG=1``
every half ``WatchdogSec`` while the reactor turns. The protocol is one
datagram to the UNIX socket in ``$NOTIFY_SOCKET`` (sd_notify(3)); without
that variable nothing is sent.
"""

import os
import socket

from twisted.internet.task import LoopingCall


def notify(state: str, environ=None) -> bool:
    """Send ``state`` to systemd; False when not run under a notify unit."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            # without waiting: a reader that does not keep up (its queue holds 10 datagrams) held the reactor
            # for good; a keep-alive it cannot take now is dropped, the next one comes
            sock.sendto(state.encode("utf-8"), socket.MSG_DONTWAIT, address)
        except OSError:
            return False
    return True


def watchdog_interval(environ=None) -> float | None:
    """Half of ``WatchdogSec`` in seconds when systemd asks this process for keep-alives."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or not environ.get("NOTIFY_SOCKET") or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


def start_watchdog(clock, environ=None) -> LoopingCall | None:
    """Send ``WATCHDOG=1`` on the clock while it turns; None without a watchdog."""
    interval = watchdog_interval(environ)
    if interval is None:
        return None
    loop = LoopingCall(notify, "WATCHDOG=1", environ)
    loop.clock = clock
    loop.start(interval, now=True)
    return loop

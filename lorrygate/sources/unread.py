"""
How much a connection's peer sent that this end has not read yet.

A batcher tells a drain from a live stream by it (`lorrygate.storage.batcher`):
while a broker works off a queue, bytes wait in the socket at every look
(100-500 KB, measured draining into 10,000 tables); a live stream that the
reactor keeps up with leaves a few hundred bytes at most.
"""

import struct

try:
    import fcntl
    import termios
except ImportError:  # not on Linux or another Unix: nothing to tell
    fcntl = termios = None  # type: ignore[assignment]

_INT = struct.Struct("i")
_ZERO = bytes(_INT.size)


def unread_bytes(transport) -> int | None:
    """Bytes waiting in the receive buffer of ``transport``'s socket, or None when that cannot be told.

    A TLS transport wraps the TCP one (``transport.transport``); what waits there is what the peer sent,
    encrypted, which tells just as well.
    """
    if fcntl is None:
        return None
    handle = transport
    for _ in range(3):
        sock = getattr(handle, "socket", None)
        if sock is not None:
            break
        handle = getattr(handle, "transport", None)
        if handle is None:
            return None
    else:
        return None
    try:
        return _INT.unpack(fcntl.ioctl(sock.fileno(), termios.FIONREAD, _ZERO))[0]
    except (OSError, ValueError):  # closed meanwhile (fileno -1)
        return None

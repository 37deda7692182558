"""
A TCP forwarder for tests: ``python -m tests.tcpforward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT``
accepts connections and copies their bytes both ways to a connection of its own to the target, until
either side closes. It prints ``listening`` once it accepts connections. Run in a network namespace of
its own (``ip netns exec``), it puts a peer behind a link a test can take down: a black hole, where packets
are dropped without an answer, as a dead host or a network that forgot a connection drops them.
"""

import selectors
import socket
import sys
import threading


def _pipe(one: socket.socket, other: socket.socket) -> None:
    selector = selectors.DefaultSelector()
    selector.register(one, selectors.EVENT_READ, other)
    selector.register(other, selectors.EVENT_READ, one)
    try:
        while True:
            for key, _ in selector.select():
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        one.close()
        other.close()


def main(argv: list) -> None:
    listen_host, listen_port, target_host, target_port = argv[0], int(argv[1]), argv[2], int(argv[3])
    server = socket.create_server((listen_host, listen_port), reuse_port=False)
    print("listening", flush=True)
    while True:
        client, _ = server.accept()
        try:
            target = socket.create_connection((target_host, target_port), timeout=10)
            target.settimeout(None)
        except OSError:
            client.close()
            continue
        threading.Thread(target=_pipe, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])

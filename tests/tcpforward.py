"""
A TCP forwarder for tests: ``python -m tests.tcpforward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT``
accepts connections and copies their bytes both ways to a connection of its own to the target, until
either side closes. It prints ``listening`` once it accepts connections. Run in a network namespace of
its own (``ip netns exec``), it puts a peer behind a link a test can take down: a black hole, where packets
are dropped without an answer, as a dead host or a network that forgot a connection drops them.

`Forgetful` is one in the test's own process whose `Forgetful.forget` drops the connections it carries as a
peer that lost power, or a NAT that forgot them, does: the target's side is closed, while the client's side
stays open and silent (what the client sends is taken and never answered), so that only a client that
expects answers can tell.
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


class Forgetful:
    """A forwarder in a thread to ``target`` (host, port), listening on 127.0.0.1:`port`."""

    def __init__(self, target: tuple) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._carried: list = []  # [client, target socket, forwarding]
        self._forgotten: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                target = socket.create_connection(self.target, timeout=10)
            except OSError:
                if self._server.fileno() == -1:
                    return
                continue
            target.settimeout(None)
            pair = [client, target, True]
            with self._lock:
                self._carried.append(pair)
            threading.Thread(target=self._pipe, args=(pair,), daemon=True).start()

    @staticmethod
    def _pipe(pair: list) -> None:
        client, target, _ = pair
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, target)
        selector.register(target, selectors.EVENT_READ, client)
        try:
            while pair[2]:
                for key, _ in selector.select(0.1):
                    if not pair[2]:
                        return
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        client.close()
                        target.close()
                        return
                    key.data.sendall(data)
        except OSError:
            return

    def forget(self) -> int:
        """Drop the connections carried now (see the module's text); how many there were."""
        with self._lock:
            carried, self._carried = self._carried, []
        for pair in carried:
            pair[2] = False
            pair[1].close()
            self._forgotten.append(pair[0])
        return len(carried)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            carried, self._carried = self._carried, []
        for pair in carried:
            pair[2] = False
            pair[0].close()
            pair[1].close()
        for client in self._forgotten:
            client.close()


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

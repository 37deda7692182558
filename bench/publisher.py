"""
A fast QoS 1 publisher for the benchmark: pre-encoded PUBLISH packets over a
plain socket (lorrygate's own MQTT codec), PUBACKs counted by a reader
thread. It publishes as fast as the broker takes them, or at a steady rate.
"""

import json
import socket
import threading
import time

from lorrygate.mqtt import codec


class Publisher:
    def __init__(self, port: int, client_id: str = "bench-publisher"):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(codec.encode(codec.Connect(client_id, keepalive=0)))
        self._buffer = b""
        self.acked = 0
        #: publications sent over this connection (a second publish_* call waits for its own)
        self.sent = 0
        self._packet_id = 0
        self._wait_for(codec.Connack)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _wait_for(self, kind):
        while True:
            packets, used = codec.parse(self._buffer)
            if packets:
                self._buffer = self._buffer[used:]
                assert isinstance(packets[0], kind), packets[0]
                return packets[0]
            self._buffer += self.sock.recv(65536)

    def _read(self):
        buffer = self._buffer
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buffer += data
            packets, used = codec.parse(buffer)
            buffer = buffer[used:]
            self.acked += sum(1 for p in packets if isinstance(p, codec.PubAck))

    def packet(self, topic: str, payload: bytes) -> bytes:
        self._packet_id = self._packet_id % 65535 + 1
        return codec.encode(codec.Publish(topic, payload, 1, packet_id=self._packet_id))

    def publish_all(self, messages, chunk: int = 500, window: int = 20_000) -> None:
        """Publish as fast as the broker acknowledges (at most ``window`` unacknowledged)."""
        sent = 0
        batch = []
        for topic, payload in messages:
            batch.append(self.packet(topic, payload))
            if len(batch) >= chunk:
                while self.sent + sent - self.acked > window:
                    time.sleep(0.001)
                self.sock.sendall(b"".join(batch))
                sent += len(batch)
                batch = []
        if batch:
            self.sock.sendall(b"".join(batch))
            sent += len(batch)
        self.sent += sent
        self.wait_acked(self.sent)

    def publish_steady(self, make_message, rate: float, seconds: float) -> int:
        """Publish ``rate`` messages per second for ``seconds``, in 10 ms ticks; return how many."""
        start = time.monotonic()
        sent = 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                self.sock.sendall(b"".join(self.packet(*make_message(n)) for n in range(sent, due)))
                sent = due
            time.sleep(0.005)
        self.sent += sent
        self.wait_acked(self.sent)
        return sent

    def wait_acked(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker acknowledged {self.acked} of {count} publications")
            time.sleep(0.005)

    def close(self) -> None:
        try:
            self.sock.sendall(codec.encode(codec.Disconnect()))
        finally:
            self.sock.close()


def telemetry(topic: str, n: int, sent: float | None = None) -> tuple:
    """~120-byte JSON telemetry, as the benchmark issue describes it."""
    document = {"time": round(time.time(), 3), "temperature": 20 + n % 100 / 10, "humidity": 40 + n % 50 / 5,
                "pressure": 1000 + n % 300 / 10, "sensor": "bme280", "seq": n}
    if sent is not None:
        document["sent"] = sent
    return topic, json.dumps(document).encode()

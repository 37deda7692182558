"""
Helpers of the fault tests: a steady QoS 1 stream that survives broker
restarts, and counting what arrived.
"""

import json
import threading
import time

import paho.mqtt.client as paho

from tests.servers import wait_until


class Stream:
    """Publishes ``count`` QoS 1 messages at ``rate`` per second from a thread.

    Every message carries its sequence number. A message counts as published
    once the broker acknowledged it; messages whose publication was cut by a
    broker restart are published again, so that in the end every sequence
    number is published at least once.
    """

    def __init__(self, port: int, topics, count: int, rate: float):
        self.port = port
        self.topics = topics
        self.count = count
        self.rate = rate
        self.confirmed = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"stream-{id(self)}")
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_publish = self._on_publish
        self._mids = {}
        self._early = set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # Never call into paho while holding self._lock: paho calls this with
        # its own lock held (lock-order inversion otherwise).
        with self._lock:
            seq = self._mids.pop(mid, None)
            if seq is None:
                self._early.add(mid)  # acknowledged before publish() returned
            else:
                self.confirmed.add(seq)

    def _publish(self, seq: int) -> None:
        topic = self.topics[seq % len(self.topics)]
        payload = json.dumps({"seq": seq, "time": 1_717_243_200_000 + seq, "value": seq * 0.25})
        info = self.client.publish(topic, payload, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.confirmed.add(seq)
            else:
                self._mids[info.mid] = seq

    def _run(self) -> None:
        start = time.monotonic()
        for seq in range(self.count):
            delay = start + seq / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._publish(seq)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def finish(self, timeout: float = 120) -> None:
        """Wait for the stream, then publish again what the broker never confirmed."""
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # One look under the lock: a PUBACK between two looks would make a
            # confirmed message look missing and publish it twice.
            with self._lock:
                unconfirmed = set(range(self.count)) - self.confirmed
                missing = sorted(unconfirmed - set(self._mids.values()))
            if not unconfirmed:
                break
            if self.client.is_connected():
                for seq in missing:
                    self._publish(seq)
            time.sleep(0.5)
        self.client.disconnect()
        self.client.loop_stop()
        assert self.confirmed == set(range(self.count)), "the broker did not confirm every publication"


def report(name: str, published: int, seqs, started: float, expected=None) -> int:
    """Print the outcome line the fault tests promise; return the number of duplicates.

    ``expected``: the sequence numbers that must be stored, when not all of them.
    """
    from collections import Counter

    counts = Counter(seqs)
    expected = set(range(published)) if expected is None else set(expected)
    missing = len(expected - set(counts))
    duplicates = sum(n - 1 for n in counts.values())
    excused = f" ({published - len(expected)} in a damaged spool record)" if len(expected) < published else ""
    print(f"\n{name}: published {published}, stored {len(counts)} distinct ({sum(counts.values())} rows), "
          f"missing {missing}{excused}, duplicates {duplicates}, took {time.monotonic() - started:.1f} s")
    return duplicates


def wait_for_rows(count_function, total: int, timeout: float, what: str) -> None:
    wait_until(lambda: count_function() >= total, timeout, what, interval=0.5)


def lag_held_and_released(path: str, log: str, database, produce, count: int, seqs) -> None:
    """The lag of a gateway's first source (the config at ``path``, a storage at ``database`` without a spool):
    0 once counted; ``count`` while the database is away and ``produce()`` wrote that many messages, in the
    status and in ``lorrygate_source_lag``; 0 again once the database is back and ``seqs()`` has them all."""
    import urllib.request

    from lorrygate.control_client import request
    from tests.gatewayproc import GatewayProcess
    from tests.servers import free_port

    metrics = free_port()
    text = open(path).read()
    open(path, "w").write(text.replace("[lorrygate]\n", f"[lorrygate]\nmetrics = 127.0.0.1:{metrics}\n", 1))
    endpoint = [line.split(" = ", 1)[1] for line in text.splitlines() if line.startswith("control = ")][0]
    gateway = GatewayProcess(path, log).start()

    def lag():
        return request(endpoint, "GET", "/status")["sources"][0]["details"]["lag"]

    try:
        wait_until(lambda: lag() == 0, 60, "the source counted: no lag")
        database.halt()
        produce()
        wait_until(lambda: lag() == count, 60, f"a lag of {count}")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
            assert f'lorrygate_source_lag{{source="main"}} {count}.0' in response.read().decode()
        database.resume()
        wait_until(lambda: lag() == 0, 90, "the lag back to 0 once the database is back")
        wait_for_rows(lambda: len(set(seqs())), count, 60, f"the {count} messages")
    finally:
        assert gateway.stop() == 0

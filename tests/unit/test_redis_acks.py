"""
The Redis source's acknowledgements, on a stand-in client and a Clock: an XACK that fails on a lost
connection is sent again and its entries stay in flight (never handed over twice) until it goes through;
one Redis refuses (the stream or group gone) is dropped. Against a real Redis:
tests/integration/test_redis.py.
"""

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

pytest.importorskip("redis")


class Client:
    """Answers XACK as told: an exception to raise, or None for success."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.acked = []

    def xack(self, stream, group, *entries):
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        self.acked.append((stream, entries))
        return len(entries)


def source(client, clock):
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.redis import RedisSource

    broker = BrokerSettings(name="redis", host="127.0.0.1", port=1, type="redis")
    made = RedisSource("s", broker, ("stream",), lambda message: None, clock)
    made._client = client
    made._in_pool = lambda function, *args: maybeDeferred(function, *args)
    made.running = 1
    with made._inflight_lock:
        made._take("stream", [(b"1-0", {}), (b"1-1", {})])
    return made


def test_an_xack_lost_with_the_connection_is_sent_again_and_its_entries_stay_in_flight():
    import redis

    clock = Clock()
    client = Client(redis.ConnectionError("Connection reset by peer"))
    made = source(client, clock)
    made._ack("stream", "1-0")
    made._ack("stream", "1-1")
    clock.advance(0)
    assert client.acked == []
    assert made._take("stream", [(b"1-0", {}), (b"1-1", {})]) == [], "still in flight: not handed over again"
    assert made.status()["in_flight"] == 2
    clock.advance(1.0)
    assert client.acked == [("stream", ("1-0", "1-1"))]
    assert made._inflight == {} and made.status()["in_flight"] == 0
    assert not clock.getDelayedCalls()


def test_an_xack_redis_refuses_is_dropped():
    import redis

    clock = Clock()
    client = Client(redis.ResponseError("NOGROUP No such key 'stream' or consumer group 'lorrygate'"))
    made = source(client, clock)
    made._ack("stream", "1-0")
    clock.advance(0)
    assert client.acked == [] and not clock.getDelayedCalls()
    assert ("stream", "1-0") not in made._inflight and ("stream", "1-1") in made._inflight


def test_the_groups_lag_is_what_it_has_not_read_and_what_is_pending():
    """``XINFO GROUPS`` per stream, keys as text or as bytes (as redis-py gives them): the group's ``lag`` plus
    its ``pending``; unknown where Redis cannot tell the lag (older than 7, or a stream trimmed past it)."""
    from lorrygate.sources.redis import group_lag

    groups = [{"name": "other", "lag": 99, "pending": 1}, {"name": "lorrygate", "lag": 7, "pending": 3}]
    assert group_lag(groups, "lorrygate") == 10
    assert group_lag([{b"name": b"lorrygate", b"lag": 0, b"pending": 2}], "lorrygate") == 2
    assert group_lag([{"name": "lorrygate", "lag": None, "pending": 2}], "lorrygate") is None
    assert group_lag([{"name": "lorrygate", "pending": 2}], "lorrygate") is None  # (Redis 6)
    assert group_lag(groups, "missing") is None


def test_the_lag_is_counted_while_connected_and_unknown_once_the_connection_is_gone():
    """The count runs in the thread pool even while reading is paused; a lost connection makes it unknown
    (the last count is no longer what Redis holds)."""

    class Counting(Client):
        def xinfo_groups(self, stream):
            return [{"name": "lorrygate", "lag": 4, "pending": 2}]

    made = source(Counting(), Clock())
    made.connected = True
    made._pauses.hold("storage")
    made._count()
    assert made.status()["lag"] == 6
    made.connected = False
    made._count()
    assert made.status()["lag"] is None


def test_pubsub_has_no_consumer_group_to_show():
    """Pub/sub reads no group: the status named the group of streams mode (``in group lorrygate``) all the same."""
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.redis import RedisSource

    broker = BrokerSettings(name="redis", host="127.0.0.1", port=1, type="redis")
    pubsub = RedisSource("s", broker, ("sensors/#",), lambda message: None, Clock(), mode="pubsub", consumer="gw-s")
    streams = RedisSource("s", broker, ("stream",), lambda message: None, Clock(), consumer="gw-s")
    assert (pubsub.group, pubsub.client_id) == ("", "gw-s")
    assert (streams.group, streams.client_id) == ("lorrygate", "lorrygate/gw-s")

"""A second gateway is refused what the first holds alone, told what that is and which key gives it its own."""

import uuid

import pytest
from twisted.internet.task import Clock

from lorrygate.config import loads
from lorrygate.service.locks import AlreadyRunning, InstanceLock

_TAIL = "[storage:s]\nurl=sqlite:///x\n[channel:c]\ntopics=a/#\n"


def _socket(tmp_path, host):
    from lorrygate.sources.unixsocket import SocketSource

    settings = loads(f"[source:w]\ntype=socket\npath={tmp_path}/sensors.sock\n" + _TAIL)
    return SocketSource("c", settings.sources["w"], lambda m: None, Clock())


def _files(tmp_path, host):
    from lorrygate.sources.files import FilesSource

    settings = loads(f"[source:w]\ntype=files\npath={tmp_path}/*.csv\ntopic=a/b/c/d/data.csv\n" + _TAIL)
    return FilesSource("c", settings.sources["w"], lambda m: None, Clock(), data_dir=str(tmp_path), watch=False)


def _cdc(tmp_path, host):
    from lorrygate.sources.pgcdc import CdcSource

    settings = loads(f"[source:w]\ntype=pgcdc\ndatabase=postgresql://u:secret@{host}:5433/db\nslot=fleet\n" + _TAIL)
    return CdcSource("c", settings.sources["w"], lambda m: None, Clock())


def _redis(tmp_path, host):
    from lorrygate.sources.redis import RedisSource

    settings = loads(f"[broker:b]\ntype=redis\nhost={host}\n" + _TAIL)
    return RedisSource("c", settings.brokers["b"], ("s",), lambda m: None, Clock(), group="g", consumer="gw-1")


def _zmq_bound(tmp_path, host):
    from lorrygate.sources.zeromq import ZeroMQSource

    port = 20_000 + int(host[2:], 16) % 40_000  # (the lock is the machine's: a port of this test alone)
    settings = loads(f"[broker:b]\ntype=zmq\nhost=*\nport={port}\n" + _TAIL)
    return ZeroMQSource("c", settings.brokers["b"], ("a/#",), lambda m: None, Clock())


def _zmq_connected(tmp_path, host):
    from lorrygate.sources.zeromq import ZeroMQSource

    settings = loads(f"[broker:b]\ntype=zmq\nhost={host}\nport=5556\n" + _TAIL)
    return ZeroMQSource("c", settings.brokers["b"], ("a/#",), lambda m: None, Clock())


def _mqtt(tmp_path, host):
    from lorrygate.sources.mqtt import MQTTSource

    settings = loads(f"[broker:b]\nhost={host}\nclient_id=gw\n" + _TAIL)
    return MQTTSource("c", settings.brokers["b"], ("a/#",), 1, lambda m: None, Clock())


@pytest.mark.parametrize("make, held, own", [
    (_socket, r"the socket \S+/sensors\.sock is in use", ", or give this one its own path"),
    (_files, r"the files \S+/\*\.csv is in use", ", or give this one its own path"),
    (_cdc, r"the replication slot 'fleet' at h-\w+:5433 is in use", ", or give this one its own slot"),
    (_redis, r"the Redis consumer 'gw-1' of group 'g' at h-\w+:6379 is in use", ", or give this one its own consumer"),
    (_zmq_bound, r"the port of the ZeroMQ SUB socket tcp://\*:\d+ is in use", ", or give this one its own port"),
    (_zmq_connected, r"the ZeroMQ SUB socket connected to tcp://h-\w+:5556 is in use", ""),
    (_mqtt, r"the client id 'gw-c' at h-\w+:1883 is in use", ", or give this one its own client_id"),
])
def test_a_second_gateway_is_told_what_is_held_and_the_key_that_gives_it_its_own(tmp_path, make, held, own):
    """The socket of a second gateway was "the client id '/run/x.sock' at /run/x.sock", and every source's hint
    was a data_dir and a client_id, a key only MQTT has."""
    host = f"h-{uuid.uuid4().hex[:12]}"
    first, second = InstanceLock(str(tmp_path / "a")), InstanceLock(str(tmp_path / "b"))
    try:
        first.acquire_clients([make(tmp_path, host)])
        with pytest.raises(AlreadyRunning, match=held) as raised:
            second.acquire_clients([make(tmp_path, host)])
        assert str(raised.value).endswith("; stop that gateway first" + own)
        assert "secret" not in str(raised.value)
    finally:
        first.release()
        second.release()

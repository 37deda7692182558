"""A second gateway is refused what the first holds alone, told what that is and which key gives it its own."""

import os
import re
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


def _own_tmp(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"lorrygate-client-ids-{os.getuid()}"


@pytest.mark.parametrize("plant, problem", [
    (lambda d, t: (d.mkdir(), d.chmod(0o777)), r"can be written by others \(mode 777\)"),
    (lambda d, t: ((t / "elsewhere").mkdir(mode=0o700), d.symlink_to(t / "elsewhere")), "is a symbolic link"),
    (lambda d, t: d.write_text(""), "is no directory"),
])
def test_a_lock_directory_that_is_not_the_users_own_is_refused(tmp_path, monkeypatch, plant, problem):
    """The client-id locks lived in one directory of the temporary directory, made by whoever came first and used
    as found: another user who made it first (0777) could plant a link there that a gateway run by root opened
    and truncated, and a gateway of another user met the first one's 0700 directory as a PermissionError."""
    from lorrygate.service.locks import LockUnavailable

    directory = _own_tmp(tmp_path, monkeypatch)
    plant(directory, tmp_path)
    lock = InstanceLock(str(tmp_path / "data"))
    with pytest.raises(LockUnavailable, match=f"lock directory {re.escape(str(directory))} {problem}: .* remove it"):
        lock.acquire_clients([_mqtt(tmp_path, "h")])
    assert lock._fds == {}


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the directory to another user")
def test_a_lock_directory_of_another_user_is_refused(tmp_path, monkeypatch):
    from lorrygate.service.locks import LockUnavailable

    directory = _own_tmp(tmp_path, monkeypatch)
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(LockUnavailable, match=r"belongs to uid 65534, not to this user \(uid 0\)"):
        InstanceLock(str(tmp_path / "data")).acquire_clients([_mqtt(tmp_path, "h")])


def test_a_link_in_place_of_a_lock_is_not_followed(tmp_path, monkeypatch):
    """The lock file was opened through a link and truncated: the link's target lost its content."""
    from lorrygate.service.locks import LockUnavailable, client_lock_path

    _own_tmp(tmp_path, monkeypatch)
    target = tmp_path / "precious"
    target.write_text("keep me")
    path = client_lock_path("h", 1883, "gw-c")
    os.symlink(target, path)
    with pytest.raises(LockUnavailable, match="a symbolic link stands in its place: remove it"):
        InstanceLock(str(tmp_path / "data")).acquire_clients([_mqtt(tmp_path, "h")])
    assert target.read_text() == "keep me"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a gateway's lock as another user")
def test_gateways_of_two_users_each_take_their_own_locks(tmp_path):
    """A gateway of a second user met the first one's lock directory (0700, root's) and failed to start with a
    PermissionError."""
    import tempfile

    shared = tempfile.mkdtemp(prefix="lorrygate-test-tmp-")  # (under the system's /tmp: another user can enter it)
    try:
        os.chmod(shared, 0o1777)
        held = InstanceLock(str(tmp_path / "root"))
        tempfile.tempdir, before = shared, tempfile.tempdir
        try:
            held.acquire_clients([_mqtt(tmp_path, "h")])
            child = os.fork()
            if child == 0:  # pragma: no cover (the child's exit status is the answer)
                code = 1
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    InstanceLock(os.path.join(shared, "nobody")).acquire_clients([_mqtt(tmp_path, "h")])
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            tempfile.tempdir = before
            held.release()
        assert sorted(os.listdir(shared)) == ["lorrygate-client-ids-0", "lorrygate-client-ids-65534"]
    finally:
        import shutil

        shutil.rmtree(shared)

"""
One gateway per data directory, per MQTT client id and per what else a source
holds alone (a socket, a file's lines, a replication slot, a Redis consumer).

Two processes writing one data directory number their spool files alike and
overwrite each other's acknowledged batches; two sessions with one client id
take the broker session from each other every few seconds. Both are
refused before anything connects: the data directory holds
``lorrygate.lock`` (an exclusive ``flock``, with the holder's PID), and each
client id a lock file in the system's temporary directory. A lock dies with
its process, so a crash leaves nothing to clean up.
"""

import fcntl
import hashlib
import os
import tempfile

import attrs

from lorrygate.errors import LorrygateError

LOCK_NAME = "lorrygate.lock"


class AlreadyRunning(LorrygateError):
    """Another process holds the data directory or a client id."""


def _holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or "an unknown process"
    except OSError:
        return "an unknown process"


def _take(path: str, description: str, what: str, own: str = "data_dir and client_id") -> int:
    """Lock ``path`` exclusively, writing ``description``; raise AlreadyRunning naming the holder and ``own``, what a
    second gateway is given to run beside it."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(
            f"{what} is in use by lorrygate {_holder(path)} (lock {path}); stop that gateway first"
            + (f", or give this one its own {own}" if own else "")
        ) from None
    os.ftruncate(fd, 0)
    try:
        os.write(fd, description.encode("utf-8"))
        os.fsync(fd)
    except OSError:
        # a full disk (an edge box's SD card): the lock holds all the same, only the holder's description is
        # missing ("an unknown process"); the gateway starts and holds its acknowledgements until there is room
        os.ftruncate(fd, 0)
    return fd


def claim_of(source) -> tuple[str, str]:
    """What a source holds that is its process's alone, as a refusal names it, and the key that gives a second
    gateway its own: a source's ``claim`` (a socket's path, a replication slot), else its broker's client id."""
    claim = getattr(source, "claim", None)
    if claim is not None:
        return claim
    return f"the client id {source.client_id!r} at {source.broker.host}:{source.broker.port}", "client_id"


def client_lock_path(host: str, port: int, client_id: str) -> str:
    key = hashlib.sha256(f"{host}:{port}:{client_id}".encode()).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), "lorrygate-client-ids", f"{key}.lock")


@attrs.define(eq=False)
class InstanceLock:
    """The locks a running gateway holds; `release` lets go of all of them."""

    data_dir: str
    config: str = ""
    _fds: dict = attrs.Factory(dict)

    def _description(self) -> str:
        return f"PID {os.getpid()} (config {self.config}, data_dir {os.path.abspath(self.data_dir)})"

    def acquire_data_dir(self) -> None:
        if "data_dir" in self._fds:
            return
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.data_dir, LOCK_NAME)
        self._fds["data_dir"] = _take(path, self._description(), f"data directory {self.data_dir}")

    def acquire_clients(self, sources) -> None:
        """Lock the client ids of ``sources``; let go of ids no longer used. All or nothing."""
        # Competing consumers are fine for some sources (AMQP queues, Kafka groups, polls): only the others
        # (an MQTT session, a Redis consumer, a replication slot, a socket) are this process's alone.
        wanted = {("client", s.broker.host, s.broker.port, s.client_id): s for s in sources
                  if not getattr(s, "shared", False)}
        taken = []
        try:
            for key, source in wanted.items():
                if key in self._fds:
                    continue
                path = client_lock_path(*key[1:])
                self._fds[key] = _take(path, self._description(), *claim_of(source))
                taken.append(key)
        except AlreadyRunning:
            for key in taken:
                os.close(self._fds.pop(key))
            raise
        for key in [k for k in self._fds if k != "data_dir" and k not in wanted]:
            os.close(self._fds.pop(key))

    def release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

"""
One gateway per data directory, per MQTT client id and per what else a source
holds alone (a socket, a file's lines, a replication slot, a Redis consumer).

Two processes writing one data directory number their spool files alike and
overwrite each other's acknowledged batches; two sessions with one client id
take the broker session from each other every few seconds. Both are
refused before anything connects: the data directory holds
``lorrygate.lock`` (an exclusive ``flock``, with the holder's PID), and each
client id a lock file in the user's own directory of the system's temporary
directory, ``lorrygate-client-ids-<uid>``. A lock dies with its process, so a
crash leaves nothing to clean up.

That directory is the user's alone (0700), and one that is not (another
user's, writable by others, a symbolic link) is refused: a directory another
user made first would let them plant a link that a gateway run by root
truncates. Gateways of different users, or of a systemd unit with
``PrivateTmp``, therefore do not see each other's client-id locks; the data
directory's lock still keeps them apart when they share one.
"""

import fcntl
import hashlib
import os
import stat
import tempfile

import attrs

from lorrygate.errors import LorrygateError

LOCK_NAME = "lorrygate.lock"


class AlreadyRunning(LorrygateError):
    """Another process holds the data directory or a client id."""


class LockUnavailable(LorrygateError):
    """A lock file cannot be taken at all: its directory is not the user's own, or the file cannot be opened."""


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
    try:
        # (no link followed: a link in place of the lock would have its target truncated)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LockUnavailable(
            f"cannot take the lock {path} for {what}: {exc.strerror}"
            + (" (a symbolic link stands in its place: remove it)" if os.path.islink(path) else "")
        ) from None
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


def _own_directory(path: str) -> str:
    """``path``, made 0700 if it is not there; refused unless it is a directory of this user's that no one else
    can write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LockUnavailable(f"cannot make the lock directory {path}: {exc.strerror}; set TMPDIR to a directory "
                              f"of this user's") from None
    found = os.lstat(path)
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        problem = "is a symbolic link" if stat.S_ISLNK(found.st_mode) else "is no directory"
    elif found.st_uid != os.getuid():
        problem = f"belongs to uid {found.st_uid}, not to this user (uid {os.getuid()})"
    elif found.st_mode & 0o022:
        problem = f"can be written by others (mode {stat.S_IMODE(found.st_mode):o})"
    else:
        return path
    raise LockUnavailable(f"the lock directory {path} {problem}: its locks could be planted by someone else; "
                          f"remove it (a gateway makes it anew), or set TMPDIR to a directory of this user's")


def client_lock_path(host: str, port: int, client_id: str) -> str:
    key = hashlib.sha256(f"{host}:{port}:{client_id}".encode()).hexdigest()[:24]
    directory = _own_directory(os.path.join(tempfile.gettempdir(), f"lorrygate-client-ids-{os.getuid()}"))
    return os.path.join(directory, f"{key}.lock")


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
        except LorrygateError:
            for key in taken:
                os.close(self._fds.pop(key))
            raise
        for key in [k for k in self._fds if k != "data_dir" and k not in wanted]:
            os.close(self._fds.pop(key))

    def release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

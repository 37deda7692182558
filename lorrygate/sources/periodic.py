"""
Periodic sources: things lorrygate asks for on an interval rather than
listens to.

- ``type = poll``: an HTTP(S) URL (treq), with ``If-None-Match`` /
  ``If-Modified-Since`` from the last answer (a 304 stores nothing) and
  HTTP Basic authentication from the URL's ``user:password@``, or a
  ``command`` whose standard output is the payload. The body goes through
  the channel's decoder chain under the source's ``topic``.
- ``type = iio``: Linux Industrial I/O sensors through sysfs
  (``<root>/iio:deviceN/in_<channel>_input``, the driver's processed value,
  else ``in_<channel>_raw`` with ``_scale`` and ``_offset``,
  per channel or shared by the channel's type), one message per device a
  tick: ``{"<channel>": (raw + offset) * scale, ...}`` under
  ``<topic>/<device name>``. ``root`` is a setting, so that tests read a tree
  built like the kernel's.

Every tick is ``interval`` apart, plus up to ``jitter`` at random; a tick
whose previous poll still runs is skipped (counted), so a slow server never
sees two polls at once. A poll has ``timeout`` to finish, body and all: then
its connection is closed, or its command stopped (`poll_reads`). An answer
larger than ``max_line`` is a dead letter by reference. A poll that fails is
logged with the reason (the HTTP status, the exit status), once and then once
a `FAILURE_REPEAT` while the same reason repeats, and tried again on the
next tick; the first success after failures says how many there were.

Delivery: at most once. What a poll returned and the gateway had not
committed when it died is not polled again (the next poll returns what is
current then); what is committed is committed.
"""

import glob
import json
import os
import random
import shlex
from decimal import Decimal
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.config.values import mask_url, url_credentials
from lorrygate.interfaces import ISource
from lorrygate.model import NO_ACK, Message
from lorrygate.sources.pauses import Pauses, SourcePlumbing
from lorrygate.sources.poll_reads import Answer, CommandFailed, read_body, run_command

#: seconds between two log lines of a poll that keeps failing for the same reason
FAILURE_REPEAT = 60.0


@implementer(ISource)
@attrs.define(eq=False)
class PeriodicSource(SourcePlumbing, Service):
    #: other gateways may read the same (competing consumers): no client-id lock
    shared = True
    name: str  # type: ignore[assignment]  # Service.name, always set here
    settings: Any  # lorrygate.config.settings.SourceSettings
    deliver: Any
    _reactor: Any
    broker: Any = None
    _timer: Any = None
    _running_poll: Deferred | None = None
    connected: bool = False
    polls: int = 0
    skipped: int = 0
    failures: int = 0
    not_modified: int = 0
    _etag: str = ""
    _modified: str = ""
    _random: Any = attrs.Factory(random.Random)
    #: IIO devices read at the last tick
    _devices: set = attrs.Factory(set)
    _seen_once: bool = False
    #: failed polls since the last success; the reason and the time of the last line logged
    _streak: int = 0
    _logged: tuple = ("", 0.0)
    #: ticks skipped while the poll that runs now runs
    _skipped_now: int = 0
    _shown: str = ""

    log = Logger()

    def __attrs_post_init__(self):
        # (a URL as logs and the status show it: without its password, token or API key)
        self._shown = mask_url(self.settings.url) if self.settings.url else ""
        self.client_id = self.client_id or self._shown or self.settings.command or self.settings.root
        self._pauses = Pauses(lambda: None, lambda: None)  # a paused source skips its ticks
        self.broker = _Where(self._shown or self.settings.command or self.settings.root)


    def when_subscribed(self) -> Deferred:
        return succeed(None)  # ready at once: it asks, nobody has to answer first

    publish = None

    def startService(self) -> None:
        super().startService()
        self.subscribed = True
        self._schedule(0.0)

    def stopService(self) -> Deferred:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        running, self._running_poll = self._running_poll, None
        if running is not None:
            running.cancel()
        return succeed(None)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._timer = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        settings = self.settings
        self._schedule(settings.interval + self._random.uniform(0, settings.jitter))
        if self._running_poll is not None:
            self.skipped += 1
            self._skipped_now += 1
            if self._skipped_now == 1:  # once a poll: its timeout bounds how many follow
                self.log.warn("source {source}: the last poll still runs after {interval} s; this tick is skipped "
                              "(and the next ones until it ends, within timeout = {timeout} s)",
                              source=self.name, interval=settings.interval, timeout=settings.timeout)
            return
        if self._pauses.paused:
            self.skipped += 1
            return
        d = Deferred.fromCoroutine(self._poll())
        d.addTimeout(settings.timeout, self._reactor)  # cancels what is read: the connection, the command
        self._running_poll, self._skipped_now = d, 0

        def done(result):
            if self._running_poll is d:
                self._running_poll = None
            return result

        d.addBoth(done).addErrback(self._failed)

    async def _poll(self) -> None:
        kind = self.settings.type
        if kind == "iio":
            self._deliver_iio()
        elif self.settings.command:
            await self._run_command()
        else:
            await self._get()
        self.polls += 1
        self.connected, self.last_error = True, ""
        if self._streak:
            self.log.info("source {source}: polling works again after {count} failed poll(s)", source=self.name,
                          count=self._streak)
            self._streak, self._logged = 0, ("", 0.0)

    def _failed(self, failure) -> None:
        if failure.check(CancelledError):  # the source stops
            return
        settings = self.settings
        if failure.check(TimeoutError):
            what = f"GET {self._shown}" if settings.url else (settings.command.split() or [settings.root])[0]
            error = (f"{what}: no complete answer within timeout = {settings.timeout} s; "
                     + ("the connection was closed" if settings.url else "the command was stopped"))
        else:
            error = failure.getErrorMessage() or failure.type.__name__
        self.failures += 1
        self._streak += 1
        self.connected = False
        self.last_error = error
        now = self._reactor.seconds()
        if error == self._logged[0] and now - self._logged[1] < FAILURE_REPEAT:
            return  # counted; logged again once a FAILURE_REPEAT, or when the reason changes
        self._logged = (error, now)
        self.log.error("source {source}: polling failed: {error}; the next tick tries again{more}", source=self.name,
                       error=error, more=f" ({self._streak} failed polls in a row)" if self._streak > 1 else "")

    def _message(self, topic: str, answer: Answer) -> None:
        self.deliver(Message(topic, answer.payload, 0, False, time_of_day(self._reactor)(), topic, NO_ACK,
                             answer.oversize))

    # -- HTTP ---------------------------------------------------------------------------

    async def _get(self) -> None:
        import treq

        settings = self.settings
        from twisted.web.http_headers import Headers

        headers = Headers()
        url, auth = url_credentials(settings.url)  # (HTTP Basic: every poll of such a URL failed before)
        if self._etag:
            headers.setRawHeaders(b"If-None-Match", [self._etag.encode("latin-1")])
        if self._modified:
            headers.setRawHeaders(b"If-Modified-Since", [self._modified.encode("latin-1")])
        try:
            # (the poll's timeout covers the body too: `_tick`)
            response = await treq.get(url, headers=headers, auth=auth, reactor=self._reactor)
            body = await read_body(response, settings.max_line)
        except CancelledError:
            raise
        except Exception as exc:
            raise PollFailed(f"GET {self._shown}: {type(exc).__name__}: {exc}") from None
        if response.code == 304:
            self.not_modified += 1
            return
        if response.code >= 400:
            raise PollFailed(f"GET {self._shown} answered {response.code} "
                             f"{response.phrase.decode('latin-1', 'replace')}")
        self._etag = (response.headers.getRawHeaders(b"etag") or [b""])[0].decode("latin-1")
        self._modified = (response.headers.getRawHeaders(b"last-modified") or [b""])[0].decode("latin-1")
        self._message(settings.topic, body)

    # -- a command ---------------------------------------------------------------------------

    async def _run_command(self) -> None:
        settings = self.settings
        words = shlex.split(settings.command)
        try:
            output = await run_command(self._reactor, words, dict(os.environ), settings.max_line)
        except CommandFailed as exc:
            raise PollFailed(str(exc)) from None
        self._message(settings.topic, output)

    # -- Linux IIO ---------------------------------------------------------------------------

    def _deliver_iio(self) -> None:
        found = read_iio(self.settings.root)
        gone = self._devices - set(found)
        back = set(found) - self._devices
        for device in sorted(gone):
            self.log.warn("source {source}: IIO device {device} disappeared from {root}; it is read again when it "
                          "returns", source=self.name, device=device, root=self.settings.root)
        for device in sorted(back):
            if self._seen_once:
                self.log.info("source {source}: IIO device {device} is there (again)", source=self.name, device=device)
        self._devices, self._seen_once = set(found), True
        if not found:
            raise PollFailed(f"no IIO device under {self.settings.root}")
        for device, values in found.items():
            self._message(f"{self.settings.topic}/{device}", Answer(json.dumps(values).encode("utf-8")))


class PollFailed(Exception):
    pass


@attrs.frozen
class _Where:
    """What status shows as a periodic source's "broker"."""

    host: str
    port: str = ""


def _number(path: str) -> Decimal | None:
    """The number in a sysfs file, exactly as written (``0.100000000``), or None."""
    try:
        with open(path, encoding="ascii") as handle:
            number = Decimal(handle.read().strip())
    except (OSError, ValueError, ArithmeticError):
        return None
    return number if number.is_finite() else None


def read_iio(root: str) -> dict:
    """``{device name: {channel: value}}`` of the IIO devices under ``root``: a channel's ``in_<channel>_input``
    (the value the driver computed, as the BME680's and many humidity sensors' drivers give them), else
    ``(in_<channel>_raw + offset) * scale``; both in the units the driver gives (the IIO ABI's: milli degrees
    Celsius, kilopascal)."""
    devices = {}
    for directory in sorted(glob.glob(os.path.join(glob.escape(root), "iio:device*"))):
        try:
            with open(os.path.join(directory, "name"), encoding="utf-8") as handle:
                name = handle.read().strip() or os.path.basename(directory)
        except OSError:
            name = os.path.basename(directory)
        values = {}
        for input_path in sorted(glob.glob(os.path.join(glob.escape(directory), "in_*_input"))):
            value = _number(input_path)
            if value is not None:
                values[os.path.basename(input_path)[3:-6]] = float(value)  # in_temp_input -> temp
        for raw_path in sorted(glob.glob(os.path.join(glob.escape(directory), "in_*_raw"))):
            channel = os.path.basename(raw_path)[3:-4]  # in_temp_raw -> temp, in_voltage0_raw -> voltage0
            raw = _number(raw_path)
            if raw is None or channel in values:  # (the processed value, where the driver gives it, is the value)
                continue
            kind = channel.rstrip("0123456789").split("_")[0]
            scale = _number(os.path.join(directory, f"in_{channel}_scale"))
            if scale is None:
                scale = _number(os.path.join(directory, f"in_{kind}_scale"))
            offset = _number(os.path.join(directory, f"in_{channel}_offset"))
            if offset is None:
                offset = _number(os.path.join(directory, f"in_{kind}_offset"))
            # in decimal, as the kernel writes them, then the float nearest the exact value: in floats a raw 3
            # of scale 0.1 was 0.30000000000000004
            values[channel] = float((raw + (offset or 0)) * (1 if scale is None else scale))
        if values:
            key = name if name not in devices else f"{name}_{os.path.basename(directory)}"
            devices[key] = values
    return devices

"""
The gateway's two clocks: a steady one for its timers, the time of day for its stamps.

Twisted schedules every timer (``callLater``, ``LoopingCall``) against
``reactor.seconds()``, which is the time of day (``time.time``), so every
pending timer moves when the system clock steps: an edge box without a
real-time clock whose NTP client sets it at boot, a virtual machine resumed,
``date -s``. A step back of an hour held for that hour every timer pending at
the step: the batch waiting for its flush (and every message that joined it),
the systemd watchdog's keep-alive (systemd killed the gateway), the MQTT
keep-alive, the stats. A step forward fired them at once: timeouts of
decoders, of HTTP requests, of the broker's answers.

`steady` gives the reactor a clock that does not step (``CLOCK_MONOTONIC``,
from the time of day at the start), as asyncio's loop has; what stamps a
message with the time it was received asks `time_of_day`, which still
follows the system clock (a step back of an hour stamps an hour earlier, as
the corrected clock says). A reactor left alone (library use inside an
application's own reactor) and a test's ``Clock`` tell both with
``seconds()``.
"""

import time
from collections.abc import Callable


def steady(reactor, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
    """Make ``reactor``'s timers follow ``monotonic`` (its ``seconds()`` starts at the time of day, ``wall``, and
    never steps) and keep ``wall`` as its `time_of_day`. Call it before anything is scheduled on the reactor."""
    offset = wall() - monotonic()

    def seconds() -> float:
        return monotonic() + offset

    reactor.seconds = seconds
    reactor.time_of_day = wall


def time_of_day(clock) -> Callable[[], float]:
    """The function that tells the time of day (seconds since the epoch) beside ``clock``: a `steady` reactor's
    system clock, else ``clock.seconds`` (Twisted's own reactor, whose timers follow the time of day; a test's
    ``Clock``)."""
    return getattr(clock, "time_of_day", None) or clock.seconds

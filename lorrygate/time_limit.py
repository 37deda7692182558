"""
A time limit for the user's code that runs on the reactor thread: a strategy
(once a new topic), a drop-in decoder not declared ``blocking`` and a
channel's ``hook`` and ``convert`` (once a message).

Such code that never returned (a loop whose end a payload never brings) froze
every channel of the gateway; systemd's watchdog then killed it, and the
broker sent the message, never acknowledged, again after the restart: one
message stopped the gateway for good. Under the limit the code is stopped
and the message becomes a dead letter that says so; the stream flows on.

SIGALRM's interval timer does it: its handler raises in the reactor thread,
between two bytecodes of the code that runs too long, an exception that is
no `Exception` (so that the code's own ``except Exception`` does not take
it), again every half second should the code catch it anyway. Code inside a
C extension that does not come back to the interpreter (a regular expression
that backtracks) is stopped only when it does. Off the main thread (a
library user's own reactor thread), and where there is no SIGALRM, the code
runs without a limit. A timer another part of the process had set (pytest's
timeout) is set again, less the time the call took.

The same wrapper makes the code's ``sys.exit()`` an error of the message
(`CodeExited`): SystemExit is no `Exception` either, and it ended the read of
the connection, the message held unacknowledged for good.

Cost: ~1 us a call, most of it the two ``setitimer`` calls (measured).
"""

import signal
import threading
import time
from typing import Any

try:
    # the handler as it is: signal.getsignal() looks it up as an enum member first, 2.2 us against 0.04
    from _signal import getsignal as _handler
except ImportError:  # pragma: no cover (an interpreter without CPython's _signal)
    _handler = signal.getsignal

#: seconds: ``[lorrygate] code_time_limit``, set by the gateway as it starts
LIMIT = 5.0

#: while the timer runs again and again for code that caught the first stop
AGAIN = 0.5

_MAIN = threading.main_thread().ident
_ALARM = getattr(signal, "SIGALRM", None)


class CodeStopped(Exception):
    """The user's code stopped for one message, by the limit or by itself: an error of that message."""

    def told(self, where: str = "") -> str:
        """The message, with ``where`` (`` at example.py:37 in match``) in it."""
        raise NotImplementedError


class TimeLimitExceeded(CodeStopped):
    """The user's code ran past the limit and was stopped."""

    def __init__(self, what: str = "the code", limit: float = 0.0):
        self.what = what
        self.limit = limit
        super().__init__(self.told())

    def told(self, where: str = "") -> str:
        """The message, with ``where`` (`` at example.py:37 in match``) after the time, before the advice."""
        return (f"{self.what} still ran after {self.limit:g} s{where} on the reactor thread, where it holds every "
                "channel, and was stopped: make it return sooner ([lorrygate] code_time_limit), or declare a slow "
                "decoder @decoder(..., blocking=True) to run on a thread of its own")


class CodeExited(CodeStopped):
    """The user's code called ``sys.exit()`` (raised SystemExit), which went through every ``except Exception``
    on its way: the reactor's read of the connection ended, and the message was neither stored nor a dead
    letter, held as on its way for good, the acknowledgements of every later message behind it."""

    def __init__(self, what: str = "the code", code: Any = None):
        self.what = what
        self.code = code
        super().__init__(self.told())

    def told(self, where: str = "") -> str:
        return (f"{self.what} called sys.exit({self.code!r}){where}, which ends a program, not a message: raise an "
                "exception (a ValueError) for a message it cannot take")


class _Stop(BaseException):
    """Raised inside the code that runs too long (no `Exception`: its ``except Exception`` lets it pass)."""


class _State:
    running = False
    #: the SIGALRM handler before ours, called for an alarm of its own
    previous: Any = None


def _alarm(signum, frame):
    if _State.running:
        raise _Stop()
    previous = _State.previous
    if callable(previous):
        previous(signum, frame)


def configure(seconds: float) -> None:
    global LIMIT
    LIMIT = seconds


def call(what: str, function, *args):
    """``function(*args)``, stopped with `TimeLimitExceeded` (naming ``what``) past `LIMIT` seconds; its
    ``sys.exit()`` is `CodeExited`."""
    if _State.running or _ALARM is None or threading.get_ident() != _MAIN:
        try:
            return function(*args)
        except SystemExit as exc:
            raise CodeExited(what, exc.code) from exc
    if _handler(_ALARM) is not _alarm:
        _State.previous = signal.signal(_ALARM, _alarm)
    limit = LIMIT
    before = signal.setitimer(signal.ITIMER_REAL, limit, AGAIN)[0]
    started = time.monotonic() if before else 0.0
    _State.running = True
    try:
        return function(*args)
    except _Stop:
        raise TimeLimitExceeded(what, limit) from None
    except SystemExit as exc:
        raise CodeExited(what, exc.code) from exc
    finally:
        _State.running = False
        if before:
            signal.setitimer(signal.ITIMER_REAL, max(before - (time.monotonic() - started), 0.001))
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)

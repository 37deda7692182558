"""
lorrygate with a system clock that a test steps: ``python -m tests.steppedclock -c gateway.ini``.

Each SIGUSR2 steps what ``time.time()`` and ``time.time_ns()`` tell by
``$LORRYGATE_TEST_CLOCK_STEP`` seconds, as an NTP client's step or ``date -s``
moves the system clock, while the monotonic clock goes on; then the handler
writes how many steps were taken into ``$LORRYGATE_TEST_CLOCK_STEPPED``, the
signal a test waits on. (Stepping the machine's own clock would move every
other program's too, and takes a privilege a test has not.)
"""

import os
import signal
import sys
import time

_time, _time_ns = time.time, time.time_ns
_offset = [0.0, 0]
_steps = [0]


def stepped_time() -> float:
    return _time() + _offset[0]


def stepped_time_ns() -> int:
    return _time_ns() + _offset[1]


def step(signum, frame) -> None:
    seconds = float(os.environ["LORRYGATE_TEST_CLOCK_STEP"])
    _offset[0] += seconds
    _offset[1] += int(seconds * 1e9)
    _steps[0] += 1
    with open(os.environ["LORRYGATE_TEST_CLOCK_STEPPED"], "w") as handle:
        handle.write(str(_steps[0]))


if __name__ == "__main__":
    time.time, time.time_ns = stepped_time, stepped_time_ns  # before Twisted binds time.time as its seconds
    signal.signal(signal.SIGUSR2, step)
    from lorrygate.cli import main

    sys.exit(main())

"""A steady reactor: its timers keep their delays when the system clock steps; stamps follow the system clock."""

import pytest
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock, LoopingCall

from lorrygate.clock import steady, time_of_day


class Clocks:
    """A system clock that steps and a monotonic one that does not, both moved by the test."""

    def __init__(self):
        self.wall_now = 1_800_000_000.0
        self.mono_now = 5_000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.mono_now

    def elapse(self, seconds: float, step: float = 0.0) -> None:
        """``seconds`` pass; the system clock also steps by ``step``."""
        self.mono_now += seconds
        self.wall_now += seconds + step


@pytest.fixture
def reactor():
    made = SelectReactor()  # a reactor of its own, never run: the test turns it with runUntilCurrent
    yield made
    made.waker.connectionLost(None)  # (its pipe)


@pytest.fixture
def clocks(reactor):
    clocks = Clocks()
    steady(reactor, clocks.monotonic, clocks.wall)
    return clocks


@pytest.mark.parametrize("step", [-3600.0, 3600.0, -0.5, 86400.0 * 365])
def test_a_timer_keeps_its_delay_when_the_system_clock_steps(reactor, clocks, step):
    """A timer due in 5 s fires 5 s later, neither an hour late (a step back) nor at once (a step forward)."""
    fired = []
    reactor.callLater(5, fired.append, "flush")
    clocks.elapse(1, step)
    reactor.runUntilCurrent()
    assert fired == []
    assert reactor.timeout() == pytest.approx(4)
    clocks.elapse(4)
    reactor.runUntilCurrent()
    assert fired == ["flush"]


def test_a_looping_call_keeps_its_interval_across_a_step_back(reactor, clocks):
    """A keep-alive every 10 s (the systemd watchdog's, say) comes every 10 s after the clock went back an hour."""
    beats = []
    loop = LoopingCall(lambda: beats.append(clocks.wall()))
    loop.clock = reactor
    loop.start(10, now=False)
    for _ in range(3):
        clocks.elapse(10, step=-1200)
        reactor.runUntilCurrent()
    loop.stop()
    assert len(beats) == 3


def test_the_reactor_starts_at_the_time_of_day_and_stamps_follow_the_system_clock(reactor, clocks):
    """seconds() starts at the time of day and never steps; time_of_day() steps with the system clock."""
    start = clocks.wall()
    assert reactor.seconds() == pytest.approx(start)
    clocks.elapse(2, step=-3600)
    assert reactor.seconds() == pytest.approx(start + 2)
    assert time_of_day(reactor)() == pytest.approx(start + 2 - 3600)


def test_a_reactor_left_alone_and_a_test_clock_tell_the_time_of_day_with_seconds():
    """Library use inside an application's own reactor, and tests on a Clock: one clock for both."""
    clock = Clock()
    clock.advance(42)
    assert time_of_day(clock)() == 42
    plain = SelectReactor()
    try:
        assert time_of_day(plain) == plain.seconds
    finally:
        plain.waker.connectionLost(None)


@pytest.mark.parametrize("now, says", [
    (12.0, "this machine's clock says 1970-01-01 00:00:12 UTC, before any certificate of the broker is valid"),
    (1_796_000_000.0, "check that tls_ca holds the CA that signed the broker's certificate"),
])
def test_a_tls_failure_under_a_clock_not_yet_set_says_so(now, says):
    """An edge box before NTP set its clock: every certificate is "not yet valid"; the error names the clock."""
    from OpenSSL.SSL import Error as TLSError

    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.mqtt import explain_failure

    failure = TLSError([("SSL routines", "", "certificate verify failed")])
    text = explain_failure(failure, BrokerSettings(name="b", host="broker.example"), now)
    assert text.startswith("TLS handshake failed: certificate verify failed; ") and says in text

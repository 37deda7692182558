"""
The time limit of the user's code on the reactor thread (`lorrygate.time_limit`): a strategy, a decoder or a
channel hook that never returns for one message makes that message a dead letter; before, it froze every
channel, and the watchdog's restart met the same message again.
"""

import signal
import threading
import time

import pytest
from twisted.internet.task import Clock

from lorrygate import time_limit
from lorrygate.config import loads
from lorrygate.decoding.timestamps import to_iso
from lorrygate.model import Message
from lorrygate.service.channel_service import ChannelService
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage


@pytest.fixture(autouse=True)
def short_limit():
    time_limit.configure(0.05)
    yield
    time_limit.configure(5.0)


def forever():
    while True:
        pass


def stubborn():
    """Code whose own ``except Exception`` would take an ordinary exception, and loop on."""
    while True:
        try:
            while True:
                pass
        except Exception:
            pass


def test_code_that_never_returns_is_stopped():
    started = time.monotonic()
    with pytest.raises(time_limit.TimeLimitExceeded, match="decoder 'x' still ran after 0.05 s on the reactor"):
        time_limit.call("decoder 'x'", forever)
    with pytest.raises(time_limit.TimeLimitExceeded):
        time_limit.call("decoder 'x'", stubborn)
    assert time.monotonic() - started < 5


def test_code_that_returns_gives_its_result_and_leaves_no_alarm_behind():
    assert time_limit.call("strategy 's'", lambda a, b: a + b, 1, 2) == 3
    assert signal.getitimer(signal.ITIMER_REAL)[1] == 0  # the repeating timer of the call is gone
    time.sleep(0.15)  # (an alarm left armed would fire in here and raise)


def test_a_timer_set_before_the_call_is_set_again_less_the_calls_time(monkeypatch):
    fired = []
    monkeypatch.setattr(time_limit._State, "previous", None)
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    before = signal.setitimer(signal.ITIMER_REAL, 0)  # (pytest's timeout: set again below)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(time_limit.TimeLimitExceeded):
            time_limit.call("hook", forever)
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining < 0.3
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == [signal.SIGALRM]  # the other timer's alarm reached its own handler
    finally:
        signal.signal(signal.SIGALRM, previous)
        if before[0]:
            signal.setitimer(signal.ITIMER_REAL, *before)


def test_off_the_main_thread_the_code_runs_without_a_limit():
    result = []
    thread = threading.Thread(target=lambda: result.append(time_limit.call("x", lambda: time.sleep(0.1) or 1)))
    thread.start()
    thread.join()
    assert result == [1]


MODULE = """
import attrs
from zope.interface import implementer
from lorrygate.decoding import decoder
from lorrygate.interfaces import IDecoder, IStrategy
from lorrygate.topology import WanStrategy

@implementer(IStrategy)
@attrs.frozen
class Looping:
    name: str = "looping"

    def match(self, topic):
        while topic.endswith("/stuck/data.json"):
            pass
        return WanStrategy().match(topic)

    def table_for(self, address):
        return WanStrategy().table_for(address)


@decoder("spinning")
def spin(message, address):
    while message.payload == b"spin":
        pass
    return None


@implementer(IDecoder)
class Turning:
    name = "turning"

    def decode(self, message, address):
        while message.payload == b"turn":
            pass
        raise __import__("lorrygate.errors").errors.Declined("not turning")


def adjust(record, message, address):
    while record.fields.get("v") == 13:
        pass
    return record
"""


def channel(tmp_path):
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "mine.py").write_text(MODULE)
    settings = loads(f"[lorrygate]\nstrategies = {tmp_path / 'strategies'}\ndata_dir = {tmp_path}\n"
                     "[broker:b]\nhost = localhost\n[storage:db]\nurl = sqlite:///unused.sqlite\n"
                     "[channel:main]\ntopics = r/#\nstrategy = looping\ndecoders = spinning, turning, json\n"
                     "hook = mine:adjust\n", source=str(tmp_path / "gateway.ini"))
    storage = MemoryStorage()
    clock = Clock()
    service = ChannelService.from_settings(settings, settings.channels[0], {"db": Batcher(storage, clock, max_rows=1)},
                                           clock)
    return service.router, storage


def send(router, topic, payload):
    router(Message(topic, payload, 1, False, 1_700_000_000.0, "r/#"))


def test_a_strategy_a_decoder_or_a_hook_that_never_returns_makes_its_message_a_dead_letter(tmp_path):
    router, storage = channel(tmp_path)
    send(router, "r/n/g/stuck/data.json", b'{"v": 1}')
    send(router, "r/n/g/ok/data.json", b"spin")
    send(router, "r/n/g/ok/data.json", b"turn")
    send(router, "r/n/g/ok/data.json", b'{"v": 13}')
    send(router, "r/n/g/ok/data.json", b'{"v": 2}')  # the stream flows on
    stages = [(letter.stage, letter.error) for letter in storage.dead_letters]
    assert [stage for stage, _ in stages] == ["topology", "decode", "decode", "transform"]
    assert "strategy 'looping' still ran after 0.05 s" in stages[0][1]
    assert "decoder 'spinning' still ran after 0.05 s" in stages[1][1]
    assert "decoder 'turning' still ran after 0.05 s" in stages[2][1]
    assert "the channel's hook and convert still ran after 0.05 s" in stages[3][1]
    rows = [dict(record.fields, time=to_iso(record.time)) for records in storage.tables.values() for record in records]
    assert [row["v"] for row in rows] == [2]

"""A decoder function declared blocking runs on its own thread pool, never on the reactor."""

import threading

import pytest_twisted

from lorrygate.decoding import decoder
from lorrygate.decoding.functions import FunctionDecoder
from lorrygate.model import Message


@pytest_twisted.ensureDeferred
async def test_a_blocking_decoder_runs_off_the_reactor():
    """@decoder(..., blocking=True) runs the function on a lorrygate-decoder thread and its records come back."""
    from twisted.internet import reactor

    threads = []

    @decoder("slow", blocking=True)
    def slow(message, address):
        threads.append(threading.current_thread().name)
        return {"v": len(message.payload)}

    decoding = FunctionDecoder("slow", slow, None, reactor)
    decoding.start()
    try:
        (record,) = await decoding.decode(Message("t", b"abc", received=1.0), None)
    finally:
        decoding.stop()
    assert record.fields == {"v": 3}
    assert threads and "lorrygate-decoder-slow" in threads[0] and threads[0] != threading.main_thread().name

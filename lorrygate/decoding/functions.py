"""
User decoders as plain Python functions.

In a module under ``strategies/``::

    from lorrygate.decoding import decoder

    @decoder("bme280-csv")
    def decode(message, address):
        temperature, humidity = message.payload.decode().split(";")
        return {"temperature": float(temperature), "humidity": float(humidity)}

The function returns a dict (one record), a list of dicts or `Record`s, or
None to decline (the chain tries the next decoder). A function that blocks
(file or network I/O, heavy computation) is declared so,
``@decoder("name", blocking=True)``, and then runs on the decoder's own
bounded thread pool, never on the reactor, so that it cannot freeze the
other channels; the channel's ``decode_timeout`` bounds it too. One that is
not runs on the reactor under the time limit of `lorrygate.time_limit`. Raising `DecodeError`
marks the payload as broken; any other exception is reported as a decoder
error, never a crash. A class with ``@implementer(IDecoder)`` and a ``name``
works too.
"""

import inspect
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from lorrygate import time_limit
from lorrygate.decoding.records import objects_records, storable, storable_records
from lorrygate.decoding.timestamps import check_time
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Events, Record

MARKER = "__lorrygate_decoder__"
BLOCKING = "__lorrygate_decoder_blocking__"

#: threads of a blocking function decoder
BLOCKING_THREADS = 4


def decoder(name: str, blocking: bool = False):
    """Mark a function as a decoder that chains select by ``name``; ``blocking``
    runs it on a thread pool of its own."""

    def mark(function):
        setattr(function, MARKER, name)
        setattr(function, BLOCKING, blocking)
        return function

    return mark


@implementer(IDecoder)
@attrs.define(eq=False)
class FunctionDecoder:
    name: str
    function: Any
    timezone: Any = None
    reactor: Any = None
    _pool: Any = None

    @property
    def user_code(self):
        """The function, whose folder `where_raised` looks for in a traceback."""
        return self.function

    @property
    def blocking(self) -> bool:
        return bool(getattr(self.function, BLOCKING, False))

    def start(self) -> None:
        if self.blocking and self._pool is None:
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(minthreads=0, maxthreads=BLOCKING_THREADS, name=f"lorrygate-decoder-{self.name}")
            self._pool.start()

    def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()

    def decode(self, message, address):
        if self._pool is not None:
            from twisted.internet.threads import deferToThreadPool

            return deferToThreadPool(self.reactor, self._pool, self._in_thread, message, address).addCallback(
                self._records, message)
        result = time_limit.call(f"decoder {self.name!r}", self._call, message, address)
        if isinstance(result, Deferred):
            return result.addCallback(self._records, message)
        return self._records(result, message)

    def _in_thread(self, message, address):
        """The function's result, on a thread of the pool; its ``sys.exit()`` an error of the message."""
        try:
            return self.function(message, address)
        except SystemExit as exc:
            raise time_limit.CodeExited(f"decoder {self.name!r}", exc.code) from exc

    def _call(self, message, address):
        """The function's result; a coroutine's first step is run (`Deferred.fromCoroutine`)."""
        result = self.function(message, address)
        return Deferred.fromCoroutine(result) if inspect.iscoroutine(result) else result

    def _records(self, result, message) -> list:
        if result is None:
            raise Declined("the function returned None")
        if isinstance(result, Record):
            result = [result]
        events = isinstance(result, Events)
        if isinstance(result, list) and all(isinstance(item, Record) for item in result):
            for record in result:
                try:
                    check_time(record.time)
                except ValueError as exc:
                    raise DecodeError(self.name, f"a returned Record's time: {exc}") from None
            return storable_records(result)
        if isinstance(result, dict):
            result = storable(dict(result))
        elif isinstance(result, list):
            result = [storable(dict(item)) if isinstance(item, dict) else item for item in result]
        records = objects_records(result, message, self.name, self.timezone)
        if records is None:
            raise DecodeError(self.name, f"returned {type(result).__name__}; expected a dict, a list of dicts or Records, or None")
        return Events(records) if events else records


@implementer(IDecoder)
class LimitedDecoder:
    """A drop-in decoder class's instance, whose ``decode`` runs under the time limit of the user's code
    (`lorrygate.time_limit`); everything else is the instance's own."""

    def __init__(self, decoder):
        self._decoder = decoder

    def __getattr__(self, name: str):
        return getattr(self._decoder, name)

    @property
    def user_code(self):
        """The instance's ``decode``, whose folder `where_raised` looks for in a traceback."""
        return self._decoder.decode

    def decode(self, message, address):
        result = time_limit.call(f"decoder {self._decoder.name!r}", self._decoder.decode, message, address)
        if isinstance(result, list):
            return storable_records(result)
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            return result.addCallback(storable_records)
        return result

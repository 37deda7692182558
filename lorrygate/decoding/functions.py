"""
User decoders as plain Python functions.

In a module under ``strategies/``::

    from lorrygate.decoding import decoder

    @decoder("bme280-csv")
    def decode(message, address):
        temperature, humidity = message.payload.decode().split(";")
        return {"temperature": float(temperature), "humidity": float(humidity)}

The function returns a dict (one record), a list of dicts or `Record`s, or
None to decline (the chain tries the next decoder). Raising `DecodeError`
marks the payload as broken; any other exception is reported as a decoder
error, never a crash. A class with ``@implementer(IDecoder)`` and a ``name``
works too.
"""

import inspect

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from lorrygate.decoding.records import objects_records
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import Record

MARKER = "__lorrygate_decoder__"


def decoder(name: str):
    """Mark a function as a decoder that chains select by ``name``."""

    def mark(function):
        setattr(function, MARKER, name)
        return function

    return mark


@implementer(IDecoder)
@attrs.frozen
class FunctionDecoder:
    name: str
    function: object
    timezone: object = None

    def decode(self, message, address):
        result = self.function(message, address)
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            return result.addCallback(self._records, message)
        return self._records(result, message)

    def _records(self, result, message) -> list:
        if result is None:
            raise Declined("the function returned None")
        if isinstance(result, list) and all(isinstance(item, Record) for item in result):
            return result
        if isinstance(result, Record):
            return [result]
        if isinstance(result, dict):
            result = dict(result)
        elif isinstance(result, list):
            result = [dict(item) if isinstance(item, dict) else item for item in result]
        records = objects_records(result, message, self.name, self.timezone)
        if records is None:
            raise DecodeError(self.name, f"returned {type(result).__name__}; expected a dict, a list of dicts or Records, or None")
        return records

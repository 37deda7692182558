"""
A decoder chain: decoders tried in order until one returns records.

A decoder that declines (raises `Declined`) passes the message on, and so does
one whose ``requires`` bytes (a class attribute, checked before it is called)
are not in the payload; one that
raises a `DecodeError` stops the chain: the message is bad, not foreign; one
that raises `Ignored` stops it too: the message is known to carry no
measurement (the router acknowledges and counts it). Any
other exception from a decoder is turned into a `DecodeError` naming the
decoder. Decoders may return a Deferred or a coroutine; the chain then
returns a Deferred, otherwise it answers at once.
"""

import inspect

import attrs
from twisted.internet.defer import CancelledError, Deferred

from lorrygate.errors import Declined, DecodeError, Ignored, NoDecoderMatched
from lorrygate.time_limit import CodeStopped
from lorrygate.where_raised import where_raised


def _as_decode_error(decoder, exc: Exception) -> DecodeError:
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, RecursionError):
        return DecodeError(decoder.name, "the payload is nested too deeply to decode (about 1,000 levels)")
    # (a decoder of one's own: where in its code; a wrapper names the code it calls as ``user_code``)
    where = where_raised(exc, getattr(decoder, "user_code", None) or decoder.decode)
    if isinstance(exc, CodeStopped):
        return DecodeError(decoder.name, exc.told(where))
    return DecodeError(decoder.name, f"{type(exc).__name__}: {exc}{where}")


@attrs.frozen
class DecoderChain:
    decoders: tuple
    #: (index, decoder, the bytes it requires or None, the reason when they are missing), made once
    _plan: tuple = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self):
        plan = []
        for index, decoder in enumerate(self.decoders):
            marker = getattr(decoder, "requires", None)
            plan.append((index, decoder, marker, f"no {marker.decode()!r} in the payload" if marker else ""))
        object.__setattr__(self, "_plan", tuple(plan))

    @property
    def names(self) -> tuple:
        return tuple(decoder.name for decoder in self.decoders)

    def decode(self, message, address):
        """Return ``(decoder name, records)`` or a Deferred of it; raise (or
        fail with) `DecodeError` when no decoder fits."""
        declined = None  # the reasons of decoders that declined, by index: made only when one declines
        payload = message.payload
        for index, decoder, marker, _missing in self._plan:
            if marker is not None and payload.find(marker) < 0:  # find(): see ChannelRouter._route
                # A cheap test before parsing: the format always has these bytes.
                continue
            try:
                records = decoder.decode(message, address)
            except Declined as exc:
                if declined is None:
                    declined = {}
                declined[index] = exc.reason
                continue
            except Ignored:
                raise
            except Exception as exc:
                raise _as_decode_error(decoder, exc) from exc
            if type(records) is list:
                return decoder.name, records
            if inspect.iscoroutine(records):
                records = Deferred.fromCoroutine(records)
            if isinstance(records, Deferred):
                return Deferred.fromCoroutine(self._finish(records, index, message, address, self._reasons(declined, index)))
            return decoder.name, records
        raise NoDecoderMatched(self.names, self._reasons(declined, len(self._plan)))

    def _reasons(self, declined, stop: int) -> list:
        """Why each decoder before ``stop`` passed the message on, in the chain's order (made only when needed:
        most messages are taken by a decoder and need no reasons)."""
        declined = declined or {}
        return [declined.get(index, missing) for index, _decoder, _marker, missing in self._plan[:stop]]

    async def _finish(self, pending, index, message, address, reasons):
        decoder = self.decoders[index]
        try:
            return decoder.name, await pending
        except Declined as exc:
            reasons.append(exc.reason)
        except (CancelledError, Ignored):
            raise  # (CancelledError: the channel's decode timeout)
        except Exception as exc:
            raise _as_decode_error(decoder, exc) from exc
        payload = message.payload
        for _index, later, marker, missing in self._plan[index + 1 :]:
            if marker is not None and payload.find(marker) < 0:
                reasons.append(missing)
                continue
            try:
                records = later.decode(message, address)
                if inspect.iscoroutine(records) or isinstance(records, Deferred):
                    records = await records
            except Declined as exc:
                reasons.append(exc.reason)
                continue
            except Ignored:
                raise
            except Exception as exc:
                raise _as_decode_error(later, exc) from exc
            return later.name, records
        raise NoDecoderMatched(self.names, reasons)

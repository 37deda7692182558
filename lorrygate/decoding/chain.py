"""
A decoder chain: decoders tried in order until one returns records.

A decoder that declines passes the message on; one that raises a
`DecodeError` stops the chain: the message is bad, not foreign.
"""

import attrs

from lorrygate.errors import Declined, DecodeError, NoDecoderMatched


@attrs.frozen
class DecoderChain:
    decoders: tuple

    @property
    def names(self) -> tuple:
        return tuple(decoder.name for decoder in self.decoders)

    def decode(self, message, address):
        """Return ``(decoder name, records)``; raise `DecodeError` if none fits."""
        reasons = []
        for decoder in self.decoders:
            try:
                records = decoder.decode(message, address)
            except Declined as exc:
                reasons.append(exc.reason)
                continue
            except DecodeError:
                raise
            except Exception as exc:  # a decoder bug must not stop the stream
                raise DecodeError(decoder.name, f"{type(exc).__name__}: {exc}") from exc
            return decoder.name, records
        raise NoDecoderMatched(self.names, reasons)

"""Decoding: payloads become records through a chain of decoders."""

from lorrygate.decoding.chain import DecoderChain
from lorrygate.decoding.jsonobject import JsonDecoder

#: built-in decoders by the name a chain selects them with
DECODERS = {"json": JsonDecoder}

__all__ = ["DECODERS", "DecoderChain", "JsonDecoder"]

"""
Binary decoders: MessagePack, CBOR and Muon.

Each accepts a document that is an object (one record) or a list of objects
(one record each); time fields and date-time values are read as in
`lorrygate.decoding.timestamps`.
"""

from typing import Any

import attrs
import cbor2
import msgpack
from zope.interface import implementer

from lorrygate.decoding import muon
from lorrygate.decoding.records import plain
from lorrygate.decoding.senml import cbor_pack
from lorrygate.decoding.senml import records as senml_records
from lorrygate.decoding.vendors import object_or_decline
from lorrygate.errors import Declined
from lorrygate.interfaces import IDecoder


@implementer(IDecoder)
@attrs.frozen
class MessagePackDecoder:
    name: str = "msgpack"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = msgpack.unpackb(message.payload, raw=False, strict_map_key=False, timestamp=3)
        except Exception as exc:  # msgpack raises many types for bad input
            raise Declined(f"not MessagePack: {type(exc).__name__}: {exc}") from None
        return object_or_decline(plain(document), message, self.name, self.timezone, address)


@implementer(IDecoder)
@attrs.frozen
class CborDecoder:
    name: str = "cbor"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = cbor2.loads(message.payload)
        except Exception as exc:  # cbor2 raises CBORDecodeError and friends
            raise Declined(f"not CBOR: {type(exc).__name__}: {exc}") from None
        pack = cbor_pack(document)
        if pack is not None:  # SenML (application/senml+cbor)
            return senml_records(pack, message, self.name)
        return object_or_decline(_cbor_plain(document), message, self.name, self.timezone, address)


def _cbor_plain(value):
    if isinstance(value, dict):
        return {str(key): _cbor_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cbor_plain(item) for item in value]
    if isinstance(value, (cbor2.CBORTag, cbor2.CBORSimpleValue)) or type(value).__name__ == "undefined_type":
        return repr(value)
    return value


@implementer(IDecoder)
@attrs.frozen
class MuonDecoder:
    name: str = "muon"
    timezone: Any = None

    def decode(self, message, address) -> list:
        try:
            document = muon.loads(message.payload)
        except muon.MuonError as exc:
            raise Declined(f"not Muon: {exc}") from None
        if isinstance(document, dict):
            document = {str(key): value for key, value in document.items()}
        return object_or_decline(document, message, self.name, self.timezone, address)

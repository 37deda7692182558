"""
The bad lines of a payload of lines (NDJSON, CSV, line protocol, a key=value series), or the bad objects of a
JSON, MessagePack or CBOR array: one of them does not cost the others.

A data logger or a script batches its readings, a line each; a line cut short on a serial link, or written
by a program with a bug, spoils that line alone. The decoder notes it here (`BadLines.add`) and goes on;
at the end (`BadLines.finish`) the good lines' records are stored, and the bad lines, with the lines they
need to be read (a CSV header), are kept as a dead letter of their own (`PartlyDecoded`): a replay, once the
decoder or the device is mended, decodes them alone and stores nothing twice. InfluxDB's own write API
does the same ("partial write": the valid points are written, the rest refused).
"""

from typing import Any

import attrs

from lorrygate.errors import DecodeError, PartlyDecoded

#: bad lines named in a reason (the dead letter holds all of them)
NAMED = 3


@attrs.define
class BadLines:
    decoder: str
    #: the lines kept before the bad ones in the dead letter (a CSV header, as sent)
    head: list = attrs.Factory(list)
    #: what the lines are called in a reason ("data lines": a CSV's, after its header)
    noun: str = "lines"
    #: the lines are the objects of a JSON array, kept as an array
    array: bool = False
    #: for items of a binary array (MessagePack, CBOR): the bytes kept of the bad items as they came (an array
    #: of them, in the format)
    pack: Any = None
    #: the bad lines, as text (a binary array's items: as bytes)
    found: list = attrs.Factory(list)
    #: why the first `NAMED` of them are bad ("line 3 has 1 value for 2 columns"; the rest are counted only: a
    #: payload of a million bad lines holds no million reasons)
    reasons: list = attrs.Factory(list)

    def add(self, line, why: str) -> None:
        self.found.append(line)
        if len(self.reasons) < NAMED:
            self.reasons.append(why)

    def finish(self, records: list, lines: int) -> list:
        """``records`` when no line failed; else raise `PartlyDecoded` (some records) or `DecodeError`
        (none). ``lines``: how many data lines (or objects) the payload had."""
        found = self.found
        if not found:
            return records
        named = "; ".join(self.reasons)
        if len(found) > NAMED:
            named += f"; and {len(found) - NAMED:,} more"
        reason = named if len(found) == 1 else f"{len(found):,} of {lines:,} {self.noun}: {named}"
        if not records:
            raise DecodeError(self.decoder, reason)
        if self.pack is not None:
            raise PartlyDecoded(self.decoder, reason, records, self.pack(found), len(found), self.noun)
        payload = f"[{', '.join(found)}]" if self.array else "\n".join(self.head + found) + "\n"
        raise PartlyDecoded(self.decoder, reason, records, payload.encode("utf-8", "surrogatepass"), len(found),
                            self.noun)

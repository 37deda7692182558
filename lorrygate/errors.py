"""
The errors lorrygate raises, in one small hierarchy.

Every message says what failed, where, what was expected and what arrived.
"""

import difflib
import re

import attrs


def did_you_mean(name: str, known) -> str:
    """`` (did you mean 'x'?)`` for a name that is close to one of ``known`` (a typo), else nothing."""
    close = difflib.get_close_matches(name, [str(each) for each in known], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: what differs between reasons alike: a quoted text (a value, a name; not a possessive's apostrophe), a hash (16
#: hex digits and more: a payload kept by reference names its SHA-256, and each was a kind of its own, so every
#: message over max_payload or max_line was a warning of its own) or a number
_DETAILS = re.compile(r"""(?<![A-Za-z0-9])'[^'\n]*'|"[^"\n]*"|\b[0-9A-Fa-f]{16,}\b|\d+""")


def reason_kind(reason: str) -> str:
    """A reason with its quoted texts and numbers masked: the reasons of a device that sends what nothing
    decodes embed each payload's values (``line 1 holds values (21.5, 40)``), a log line each and a line each
    in a list of 86,000 a day; alike, they are one kind (of a complaint, of ``lorrygate dead-letters``)."""
    return _DETAILS.sub(lambda match: "…" if match.group()[0] in "'\"" else "#", reason)


class LorrygateError(Exception):
    """Base class of every error lorrygate raises on purpose."""


@attrs.frozen
class ConfigProblem:
    """One problem found in a configuration file."""

    source: str
    section: str
    key: str | None
    expected: str
    got: str

    def __str__(self) -> str:
        where = f"{self.source} [{self.section}]" if self.section else self.source
        if self.key:
            where += f" {self.key}"
        return f"{where}: expected {self.expected}, got {self.got}"


class ConfigError(LorrygateError):
    """A configuration has one or more problems; all of them are listed."""

    def __init__(self, problems):
        self.problems = tuple(problems)
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}:"
        return "\n".join([head] + [f"  {problem}" for problem in self.problems])


class TopologyError(LorrygateError):
    """A topic does not fit the channel's topology strategy."""

    def __init__(self, strategy: str, topic: str, reason: str):
        self.strategy = strategy
        self.topic = topic
        self.reason = reason
        super().__init__(f"strategy {strategy!r} cannot route topic {topic!r}: {reason}")


class Ignored(TopologyError):
    """A topic that carries no measurement by its convention (a command such
    as Tasmota's ``cmnd/...`` or Zigbee2MQTT's ``.../set``): acknowledged and
    counted, never a dead letter, an error report or a log line. A decoder
    raises it (``Ignored(decoder name, topic, reason)``) for a message that its
    payload tells is none (Zigbee2MQTT's copy of a value in its own topic)."""


class DecodeError(LorrygateError):
    """A decoder recognised a payload as its own but could not decode it."""

    def __init__(self, decoder: str, reason: str):
        self.decoder = decoder
        self.reason = reason
        super().__init__(f"decoder {decoder!r}: {reason}")


class PartlyDecoded(DecodeError):
    """Some lines of a payload of lines (NDJSON, CSV, line protocol, a key=value series), or some objects of a
    JSON array, could not be decoded; the others could.

    ``records``: those of the good lines, to store; ``payload``: what to keep as the dead letter, the bad lines
    (after the lines they need, such as a CSV header) as UTF-8, so that a replay decodes them alone. Code
    that does not know it takes it for the `DecodeError` it is: the whole message a dead letter.
    """

    def __init__(self, decoder: str, reason: str, records: list, payload: bytes, bad: int, noun: str = "lines"):
        super().__init__(decoder, reason)
        self.records = records
        self.payload = payload
        #: how many lines failed, and what they are ("lines", "data lines", "objects")
        self.bad = bad
        self.noun = noun

    @property
    def failed(self) -> str:
        """What failed, as a log line says it: "the line", "the 2 data lines"."""
        return f"the {self.noun.removesuffix('s')}" if self.bad == 1 else f"the {self.bad:,} {self.noun}"


class NoDecoderMatched(DecodeError):
    """Every decoder of a chain declined a payload."""

    def __init__(self, tried, reasons):
        self.tried = tuple(tried)
        self.reasons = tuple(reasons)
        detail = "; ".join(f"{name}: {why}" for name, why in zip(self.tried, self.reasons))
        LorrygateError.__init__(self, f"no decoder of the chain [{','.join(self.tried)}] accepted the payload ({detail})")
        self.decoder = ",".join(self.tried)
        self.reason = detail


class Declined(LorrygateError):
    """Raised by a decoder that does not recognise a payload: try the next one."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ProtocolError(LorrygateError):
    """A peer sent bytes that break its protocol."""


class StorageError(LorrygateError):
    """A storage target refused or failed a write. ``passing``: the cause is the database's state, which passes
    (a full disk, a lock another program holds, a server away), not a file or a setting to fix."""

    passing: bool = False


class TableBudgetExceeded(LorrygateError):
    """A new table would take a SQL storage beyond its ``max_tables``: the entry's message is a dead letter
    (not a `StorageError`: the storage itself is well, and the rest of the batch is written)."""

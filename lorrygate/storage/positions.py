"""
Which parts of a stream a storage holds, kept in the same transaction as
the rows: what makes a files source exactly-once.

A source that reads at known offsets (a file) gives each message a
``position``: ``(stream, start, end)``, byte offsets of the line in the
stream. A storage with transactions (SQLite, PostgreSQL) records, in the
commit that stores the rows, the ranges of each stream it holds, merged
(``lorrygate_positions``: one row per stream, ``[[0, 81920]]`` for a file
read in order). A message whose range a storage already holds is left out
of its next commit and acknowledged as stored. So a source may read again
what it had not yet noted as committed when it died (it notes its offsets
after the commit, in its own state file), and nothing is stored twice,
whatever order the commits came in (a spool drains beside live batches).
"""

import json

import attrs

POSITIONS_TABLE = "lorrygate_positions"


def covers(ranges: list, start: int, end: int) -> bool:
    """Whether the merged, sorted ``ranges`` hold all of ``[start, end)``."""
    for low, high in ranges:
        if low <= start and end <= high:
            return True
        if low > start:
            return False
    return False


def merge(ranges: list, start: int, end: int) -> list:
    """``ranges`` with ``[start, end)`` added, touching ranges joined."""
    result = []
    placed = False
    for low, high in ranges:
        if high < start:
            result.append([low, high])
        elif end < low:
            if not placed:
                result.append([start, end])
                placed = True
            result.append([low, high])
        else:
            start, end = min(low, start), max(high, end)
    if not placed:
        result.append([start, end])
    result.sort()
    return result


@attrs.define
class Positions:
    """A storage's positions: loaded once, changed only by a commit."""

    #: stream -> merged ranges, as committed
    streams: dict = attrs.Factory(dict)
    loaded: bool = False

    def load(self, rows) -> None:
        self.streams = {stream: json.loads(ranges) for stream, ranges in rows}
        self.loaded = True

    def select(self, entries: list, dead_letters: list):
        """What of a batch is new: ``(entries, dead_letters, changed, skipped)``.

        ``changed`` maps each stream the new messages advance to its ranges
        after the commit (to write in the same transaction, then `apply`);
        ``skipped`` counts the messages held already.
        """
        streams = self.streams
        changed: dict = {}
        seen: dict = {}
        skipped = 0

        def new(message) -> bool:
            nonlocal skipped
            position = message.position
            if position is None:
                return True
            stream, start, end = position
            verdict = seen.get(id(message))
            if verdict is not None:
                return verdict  # several entries of one message (several tables)
            current = changed.get(stream)
            if current is None:
                current = streams.get(stream, [])
            if covers(current, start, end):
                skipped += 1
                seen[id(message)] = False
                return False
            changed[stream] = merge(current, start, end)
            seen[id(message)] = True
            return True

        entries = [entry for entry in entries if new(entry.message)]
        dead_letters = [dead for dead in dead_letters if new(dead.message)]
        return entries, dead_letters, changed, skipped

    def apply(self, changed: dict) -> None:
        self.streams.update(changed)


def encode(ranges: list) -> str:
    return json.dumps(ranges, separators=(",", ":"))

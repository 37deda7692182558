"""
Fields that CrateDB would refuse to index, kept in a column it does not index.

A CrateDB table holds at most ``mapping.total_fields.limit`` columns (1,000 by
default), and every sub-column of an object counts. An indexed text holds at
most 32,766 bytes (Lucene's term limit). A row beyond either limit was a dead
letter. Zigbee2MQTT's ``bridge/info`` of a network of 600 devices is such a
row, and it is stored in SQLite and PostgreSQL within their column budget.

When CrateDB refuses a row for one of these reasons, the row keeps in
``fields`` the top-level keys that fit, in the row's order (the table's
columns first), and the rest goes whole into ``extra_fields
OBJECT(IGNORED)``. The storage adds that column to the table once, and
CrateDB neither indexes that column's values nor adds them to the table's
schema, so they take any size and any number of keys. ``SELECT
extra_fields['config']`` reads them back. A text over the limit goes there
with its key, wherever it was nested.
"""

import re

from lorrygate.storage.layout import EXTRA_COLUMN

#: the most UTF-8 bytes of an indexed text (Lucene's immense-term limit)
TEXT_LIMIT = 32_766
EXTRA_DDL = f'"{EXTRA_COLUMN}" OBJECT(IGNORED)'
_COLUMNS = re.compile(r"Limit of total columns \[(\d+)\]")
_IMMENSE = "immense term"


def refusal(message: str) -> tuple | None:
    """``("columns", limit)`` or ``("text", None)`` for an error of a row that `split` can mend, else None."""
    found = _COLUMNS.search(message)
    if found:
        return "columns", int(found.group(1))
    if _IMMENSE in message:
        return "text", None
    return None


def paths(value, prefix: str, out: set) -> set:
    """Add to ``out`` the sub-columns a value makes as information_schema.columns names them
    (``fields['wifi']['rssi']``): each key of an object that has a value, objects in lists included."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                continue
            path = f"{prefix}['{str(key).replace(chr(39), chr(39) * 2)}']"
            out.add(path)
            paths(item, path, out)
    elif isinstance(value, list):
        for item in value:
            paths(item, prefix, out)
    return out


def has_long_text(value) -> bool:
    """A text over `TEXT_LIMIT` bytes anywhere in ``value``."""
    if type(value) is str:
        return len(value) * 4 > TEXT_LIMIT and len(value.encode("utf-8", "surrogatepass")) > TEXT_LIMIT
    if isinstance(value, dict):
        return any(has_long_text(item) for item in value.values())
    if isinstance(value, list):
        return any(has_long_text(item) for item in value)
    return False


def split(fields: dict, columns: set, limit: int | None, moved: set) -> tuple:
    """``(kept, extra)``: the top-level keys of ``fields`` that a table of ``columns`` (its columns as
    information_schema.columns names them) can take within ``limit`` columns (None: no limit to keep), and
    the others: those in ``moved`` (moved for an earlier row, so that a key stays in one place), those with a
    text over `TEXT_LIMIT`, and those whose new sub-columns the limit has no room for."""
    room = None if limit is None else limit - len(columns) - (0 if EXTRA_COLUMN in columns else 1)
    out = set()
    first = [key for key in fields if paths({key: 0}, "fields", set()) <= columns]  # (the table's columns)
    taken = set(first)
    for key in first + [key for key in fields if key not in taken]:
        value = fields[key]
        if key in moved or has_long_text(value):
            out.add(key)
        elif room is not None and value is not None:
            new = paths({key: value}, "fields", set()) - columns
            if len(new) > room:
                out.add(key)
            else:
                room -= len(new)
    kept = {key: value for key, value in fields.items() if key not in out}
    return kept, {key: value for key, value in fields.items() if key in out}

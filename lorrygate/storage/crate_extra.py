"""
Fields that CrateDB would refuse to index, kept in a column it does not index.

A CrateDB table holds at most ``mapping.total_fields.limit`` columns (1,000 by
default), and every sub-column of an object counts. An indexed text holds at
most 32,766 bytes (Lucene's term limit). A new column takes no list of lists
(a GeoJSON line's coordinates, a matrix) and no list of values of different
types (``[1, "a"]``). A row with any of these was a dead letter. Zigbee2MQTT's
``bridge/info`` of a network of 600 devices is such a row, and it is stored
in SQLite and PostgreSQL within their column budget, as lists are (JSON).

When CrateDB refuses a row for one of these reasons, the row keeps in
``fields`` the top-level keys that fit, in the row's order (the table's
columns first), and the rest goes whole into ``extra_fields
OBJECT(IGNORED)``. The storage adds that column to the table once, and
CrateDB neither indexes that column's values nor adds them to the table's
schema, so they take any size, any number of keys and any lists. ``SELECT
extra_fields['config']`` reads them back. A text over the limit, or such a
list, goes there with its key, wherever it was nested.
"""

import re

from lorrygate.storage.layout import EXTRA_COLUMN

#: the most UTF-8 bytes of an indexed text (Lucene's immense-term limit)
TEXT_LIMIT = 32_766
EXTRA_DDL = f'"{EXTRA_COLUMN}" OBJECT(IGNORED)'
_COLUMNS = re.compile(r"Limit of total columns \[(\d+)\]")
_IMMENSE = "immense term"
#: CrateDB's refusals of a list for a new column (``DataTypes.guessType``; ``Dynamic nested arrays are not
#: supported``, ``Mixed dataTypes inside a list are not supported. Found ... and ...``)
_LISTS = ("nested arrays are not supported", "Mixed dataTypes inside a list")


def refusal(message: str) -> tuple | None:
    """``("columns", limit)`` or ``("value", None)`` for an error of a row that `split` can mend, else None."""
    found = _COLUMNS.search(message)
    if found:
        return "columns", int(found.group(1))
    if _IMMENSE in message or any(text in message for text in _LISTS):
        return "value", None
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


def unindexable(value) -> bool:
    """A text over `TEXT_LIMIT` bytes, a list of lists or a list of values of different types anywhere in
    ``value`` (numbers are one type: the writer sends them all as floats)."""
    kind = type(value)
    if kind is str:
        return len(value) * 4 > TEXT_LIMIT and len(value.encode("utf-8", "surrogatepass")) > TEXT_LIMIT
    if kind is dict:
        return any(unindexable(item) for item in value.values())
    if kind is list:
        kinds = {_KINDS.get(type(item), item.__class__) for item in value if item is not None}
        return list in kinds or len(kinds) > 1 or any(unindexable(item) for item in value)
    return False


#: the types of the values of a list that CrateDB takes as one
_KINDS = {int: float, float: float}


def split(fields: dict, columns: set, limit: int | None, moved: set) -> tuple:
    """``(kept, extra)``: the top-level keys of ``fields`` that a table of ``columns`` (its columns as
    information_schema.columns names them) can take within ``limit`` columns (None: no limit to keep), and
    the others: those in ``moved`` (moved for an earlier row, so that a key stays in one place), those with a
    value CrateDB does not index (`unindexable`), and those whose new sub-columns the limit has no room for."""
    room = None if limit is None else limit - len(columns) - (0 if EXTRA_COLUMN in columns else 1)
    out = set()
    first = [key for key in fields if paths({key: 0}, "fields", set()) <= columns]  # (the table's columns)
    taken = set(first)
    for key in first + [key for key in fields if key not in taken]:
        value = fields[key]
        if key in moved or unindexable(value):
            out.add(key)
        elif room is not None and value is not None:
            new = paths({key: value}, "fields", set()) - columns
            if len(new) > room:
                out.add(key)
            else:
                room -= len(new)
    kept = {key: value for key, value in fields.items() if key not in out}
    return kept, {key: value for key, value in fields.items() if key in out}

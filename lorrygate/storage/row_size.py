"""
A PostgreSQL row's bytes, bounded from above, and a row fitted within them.

PostgreSQL keeps a row in one page (``MaxHeapTupleSize``: 8,160 bytes of an
8 kB page). TOAST moves a text, JSON or NUMERIC value of more than 24 bytes
out of the row, leaving a pointer of 18, but numbers, booleans and times stay
in it: a row of ~1,000 numbers was refused (``row is too big``, SQLSTATE
54000) within the 1,600 columns a table can have, and its message became a
dead letter. `fit` keeps the fields a row has room for, the table's columns
first, and puts the rest into the JSON column of the fields beyond a table's
budget, as `lorrygate.storage.layout.within_budget` does for columns.

The bound: a row header of 23 bytes and a bitmap of nulls of a bit a column,
eight bytes a number or time, one a boolean, a text of up to 23 bytes as its
bytes and one, anything else that TOAST may move out 24, and at most 7 bytes
of padding before each value that is aligned, as many as the values that are
not (a padding needs an unaligned value before it).
"""

from lorrygate.storage.layout import EXTRA_COLUMN, INT64, POSTGRESQL_COLUMN_LIMIT, within_budget

#: the most bytes a row can have (MaxHeapTupleSize of 8 kB pages)
ROW_BYTES = 8160
#: a value that TOAST may move out of a row stays in it up to this size (MAXALIGN(TOAST_POINTER_SIZE))
_INLINE = 24
#: the most padding before an aligned value
_PAD = 7
#: kept free for what a row gets after it is fitted: the idempotent id (32 hex digits, which TOAST may move)
_SLACK = _INLINE + _PAD
#: the bytes and alignment (padding may come before it) of a value of a fixed-size type, by ``data_type`` of
#: ``information_schema.columns``; other types are of variable size, and TOAST may move them out of the row
_FIXED = {
    "bigint": (8, True), "double precision": (8, True), "timestamp with time zone": (8, True),
    "timestamp without time zone": (8, True), "integer": (4, True), "real": (4, True), "date": (4, True),
    "smallint": (2, True), "boolean": (1, False), "uuid": (16, False),
}
_TEXT = frozenset({"text", "character varying", "character"})


def head_bytes(columns: int) -> int:
    """The header of a row of a table of ``columns`` columns, with its bitmap of nulls, aligned to 8 bytes."""
    return (23 + (columns + 7) // 8 + 7) & ~7


#: a row of at most this many fields fits, whatever its values: ~254
SAFE_FIELDS = (ROW_BYTES - head_bytes(POSTGRESQL_COLUMN_LIMIT) - 8 - _SLACK) // (_INLINE + _PAD)


def value_bytes(value, column_type: str | None) -> tuple:
    """``(bytes, aligned)``: the most bytes ``value`` takes in a row, in a column of ``column_type`` (None: the
    column that the value makes), and whether padding may come before it."""
    if column_type is None:
        kind = type(value)
        if kind is bool:
            return 1, False
        if kind is float or (kind is int and INT64[0] <= value <= INT64[1]):
            return 8, True
        return _variable(value), False
    fixed = _FIXED.get(column_type)
    if fixed is not None:
        return fixed
    return (_variable(value) if column_type in _TEXT else _INLINE), False


def _variable(value) -> int:
    if type(value) is str and len(value) < _INLINE:
        return min(len(value.encode("utf-8", "surrogatepass")) + 1, _INLINE)
    return _INLINE


def fit(flat: dict, known: dict, pending: dict, fold) -> dict | None:
    """``flat`` within `ROW_BYTES`: None when it fits as it is, or the fields that fit, the table's columns (of
    ``known`` and ``pending``, ``{folded name: data type}``) first and then the new ones, each in the row's order,
    with the rest in `EXTRA_COLUMN` (kept when the row has one already)."""
    columns = min(len(known) + len(pending) + len(flat) + 2, POSTGRESQL_COLUMN_LIMIT)
    room = ROW_BYTES - head_bytes(columns) - _SLACK - 8  # (and the time, aligned)
    sizes = []
    total, aligned, unaligned = 0, 1, 0
    for name, value in flat.items():
        column = fold(name)
        kind = pending.get(column) or known.get(column)
        size, is_aligned = value_bytes(value, kind)
        if name == EXTRA_COLUMN:
            size, is_aligned = _INLINE, False
        sizes.append((name, size, is_aligned, kind is not None))
        total += size
        if is_aligned:
            aligned += 1
        else:
            unaligned += 1
    if total + _PAD * min(aligned, unaligned) <= room:
        return None
    # the room the JSON column takes (its value moves out of the row)
    total, aligned, unaligned = _INLINE, 1, 1
    keep = set()
    order = [item for item in sizes if item[0] == EXTRA_COLUMN] + [item for item in sizes if item[3]] + [
        item for item in sizes if not item[3] and item[0] != EXTRA_COLUMN]
    for name, size, is_aligned, _ in order:
        if name == EXTRA_COLUMN:
            keep.add(name)
            continue
        after = (aligned + 1, unaligned) if is_aligned else (aligned, unaligned + 1)
        if total + size + _PAD * min(after) > room:
            break
        total += size
        aligned, unaligned = after
        keep.add(name)
    return within_budget(flat, [name for name in flat if name not in keep], 0)

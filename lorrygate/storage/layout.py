"""
The column-per-field layout that SQLite and PostgreSQL share.

A record becomes one row: ``time``, then its tags and fields as columns
(fields win over tags of the same name). Nested objects become dotted column
names (``wifi.rssi``); lists are kept as JSON. A column is created the first
time a field appears, with the type of that first value. With idempotent rows
on, a ``lorrygate_id`` column holds a hash of the address, the time and the
values, and the primary key ``(time, lorrygate_id)`` turns a redelivered
message into a no-op. With ``merge`` on, the id is a hash of the address and
the tags alone (`merge_id`) and the time its bucket's start: the rows of a
bucket are merged into one on that key.
"""

import base64
import hashlib
import json
import math

from lorrygate.model import unused_name
from lorrygate.storage.positions import POSITIONS_TABLE

#: How a field name becomes a column name that no other field of the row
#: shares, compared the way the database compares names (``fold``): SQLite
#: ignores ASCII case, PostgreSQL cuts names at 63 bytes. A name longer than
#: the database allows keeps its first bytes and gets ``_`` and 8 hex digits
#: of its SHA-256; a name that folds onto ``time``, ``lorrygate_id`` or an
#: earlier field of the same row gets ``_2``, ``_3``, ... So no value is ever
#: written over another in silence. Across rows, SQLite's columns keep their
#: spelling: a name whose fold is a column of another spelling (``temp`` in
#: a table that has ``Temp``) takes its own ``_2``, ``_3``, ... column, so
#: that a field's values stay in one column (`SqlStorage._spelled`), as they
#: do in PostgreSQL. An empty name (``{"": 1}``) is ``_``:
#: PostgreSQL has no empty identifier (the row was refused), and tools trip on
#: one elsewhere. A name goes without the character NUL, which no SQL name
#: may hold (``temp\0\0`` from a padded C string is ``temp``).

INT64 = (-(2**63), 2**63 - 1)
ID_COLUMN = "lorrygate_id"
DEAD_LETTER_TABLE = "lorrygate_dead_letter"
#: the tables lorrygate keeps for itself beside the data tables (SQLite's, PostgreSQL's ``public``, CrateDB's
#: ``doc``): a data table so named (a device ``lorrygate_positions`` under a strategy's ``table = {node}``)
#: gets the prefix ``lg_`` (`reserved`), as SQLite's ``sqlite_...`` names do
OWN_TABLES = frozenset({DEAD_LETTER_TABLE, POSITIONS_TABLE})


def reserved(name: str, fold: bool = False) -> bool:
    """Whether a data table's ``name`` beside lorrygate's own tables is one of `OWN_TABLES` (``fold``: in any
    case, as SQLite compares names)."""
    return (name.lower() if fold else name) in OWN_TABLES


#: the column of a table's fields beyond its column budget (a JSON object)
EXTRA_COLUMN = "extra_fields"
#: the most columns a PostgreSQL table can have (MaxHeapAttributeNumber)
POSTGRESQL_COLUMN_LIMIT = 1600


def flatten(fields, tags, depth: int = 1_000) -> dict:
    """Tags and fields as one flat dict: nested objects become dotted names,
    down to ``depth`` levels; an object nested deeper stays one JSON value.

    A null is no value: it makes no column and is left out of the row (a null
    first value made a TEXT column, and a sensor's later readings were stored
    in it as text), which stores what a NULL would. A field takes the name of
    a tag (fields win); a field whose dotted name an earlier field of the row
    has (``{"a.b": 1, "a": {"b": 2}}``) gets ``_2``, ``_3``, ..., as the
    column names of `column_names` do: no value is written over another."""
    out = dict(tags) if tags else {}  # (tags are text: a tag of null is a TEXT column's null, as it was)
    expected = len(out) + _leaves(out, fields, "", depth)
    if len(out) == expected:
        return out
    # a name written twice (rare): a field onto a tag, or onto an earlier field's dotted name
    out = dict(tags) if tags else {}
    _distinct_leaves(out, fields, "", depth, tags or {}, [])
    return out


def _leaves(out: dict, fields, prefix: str, depth: int) -> int:
    """Write the values of ``fields`` into ``out`` by their dotted names; returns how many were written (more than
    ``out`` grew by when a name came twice). Counted by what is not written: nothing more to do for a value."""
    count = len(fields)
    for key, value in fields.items():
        if value is None:
            count -= 1
        elif type(value) is dict and depth > 1 and value:
            count += _leaves(out, value, f"{prefix}{key}.", depth - 1) - 1
        else:
            out[f"{prefix}{key}"] = value
    return count


def _distinct_leaves(out: dict, fields, prefix: str, depth: int, tags, taken: list) -> None:
    """`_leaves`, giving a name that is taken ``_2``, ``_3``, ... (a field wins over a tag of its name, once)."""
    for key, value in fields.items():
        if value is None:
            continue
        name = f"{prefix}{key}"
        if type(value) is dict and depth > 1 and value:
            _distinct_leaves(out, value, name + ".", depth - 1, tags, taken)
            continue
        if name in out:
            if name in tags and name not in taken:
                taken.append(name)  # the field wins over the tag
            else:
                name = unused_name(out, name)
        out[name] = value


def within_budget(flat: dict, new: list, room: int) -> dict:
    """``flat`` with the new columns beyond ``room`` moved into one JSON
    object in `EXTRA_COLUMN` (the table keeps its column budget)."""
    keep = set(new[:max(room, 0)])
    out, extra = {}, {}
    surplus = set(new) - keep
    for name, value in flat.items():
        if name in surplus:
            extra[name] = value
        else:
            out[name] = value
    if extra:
        previous = out.get(EXTRA_COLUMN)
        if isinstance(previous, dict):
            extra = {**previous, **extra}
        elif previous is not None:
            extra = {EXTRA_COLUMN: previous, **extra}  # (a field of that name: kept in the object, not written over)
        out[EXTRA_COLUMN] = extra
    return out


def kind_of(value) -> str:
    """The value's kind for column typing: bool, int, float, text or json."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int:
        return "int" if INT64[0] <= value <= INT64[1] else "text"
    if kind is float:
        return "float"
    if kind is str or value is None:
        return "text"
    if kind is bytes:
        return "bytes"
    return "json"


def to_json(value, default=None) -> str:
    """JSON text of a list or an object (keys sorted: the same value is the same text). NaN and the infinities,
    which JSON has not (PostgreSQL's JSONB refused the row, SQLite's JSON functions the text), are null, as
    CrateDB stores them; keys that are not text (a decoder of your own) are their text. Bytes in it (a
    MessagePack list of bin values) are base64, as CrateDB and the sinks have them: they were Python's text of
    them, ``"b'\\x01'"``. ``default``: what makes other objects text (`row_id` keeps ``str``, the ids of
    before)."""
    default = default or _json_default
    try:
        return json.dumps(value, ensure_ascii=False, default=default, sort_keys=True, allow_nan=False)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    except (ValueError, TypeError):  # a float that is not finite; keys that do not sort (1 and "a")
        return json.dumps(_json_safe(value), ensure_ascii=False, default=default, sort_keys=True, allow_nan=False)


def json_text(value) -> str:
    """JSON text of a row for a sink that is not a database (an MQTT or Kafka topic, a file, a live page):
    strict JSON, which any reader parses (NaN and the infinities are null, as in `to_json`), bytes as base64,
    other objects (date-times, decimals) as their text."""
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    except (ValueError, TypeError):
        return json.dumps(_json_safe(value), ensure_ascii=False, default=_json_default, allow_nan=False)


TOO_DEEP = "a list or an object nested too deeply to be JSON text (about 1,000 levels)"


def _json_default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _json_safe(value):
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def row_id(table, time: int, flat: dict) -> str:
    """A stable identity of a row: the same message always gives the same id."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{table.schema}\0{table.table}\0{time}\0".encode())
    digest.update(to_json(flat, str).encode())  # (``str``: a row stored before has the id it had)
    return digest.hexdigest()


def merge_id(table, tags) -> str:
    """The key of a row that rows are merged into (``merge``): the same table and tags, whatever the values; the
    row's time (its bucket's start) is the key's other half."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{table.schema}\0{table.table}\0".encode())
    digest.update(to_json({str(name): value for name, value in tags.items()} if tags else {}, str).encode())
    return digest.hexdigest()


#: the name of the stored row in an INSERT that merges (``INSERT INTO t AS lorrygate_row``: PostgreSQL finds a bare
#: column name of ``DO UPDATE SET`` ambiguous)
MERGED_ROW = "lorrygate_row"


def merge_details(merge: int, merges: dict) -> dict:
    """For the status: the seconds of a storage's merge buckets and of its channels' own (``merge``); empty
    without any."""
    if not merge and not any(merges.values()):
        return {}
    return {"merge": merge / 1e9, "channel_merge": {channel: ns / 1e9 for channel, ns in sorted(merges.items())}}


def merge_clause(columns: tuple, quote) -> str:
    """``merge``: the end of an INSERT (SQLite, PostgreSQL) that merges a row into the row of its key, the stored
    row named `MERGED_ROW`: each of its columns replaces the stored value (a null, a tag's, leaves it); the
    columns a row lacks keep theirs."""
    names = [quote(column) for column in columns if column != ID_COLUMN]
    if not names:
        return " ON CONFLICT DO NOTHING"
    assignments = ", ".join(f"{name} = COALESCE(excluded.{name}, {MERGED_ROW}.{name})" for name in names)
    return f' ON CONFLICT ("time", {ID_COLUMN}) DO UPDATE SET {assignments}'


def shorten(name: str, limit: int) -> str:
    """``name`` within ``limit`` UTF-8 bytes: its first bytes (whole characters), ``_`` and 8 hex digits of its hash."""
    if len(name) <= limit and name.isascii():
        return name  # (one look at its length: an ASCII character is a byte)
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return name
    head = raw[: limit - 9].decode("utf-8", "ignore")
    return f"{head}_{hashlib.sha256(raw).hexdigest()[:8]}"


def column_names(names: tuple, fold, reserved, limit: int | None = None, table: dict | None = None) -> tuple:
    """Distinct column names for a row's field names, in order (see the comment at the top). ``table``: the
    columns a table has, ``{folded name: name as made}``, for a database that folds names (SQLite): a name
    whose fold is a column of another spelling takes the first of ``<name>_2``, ``_3``, ... that is a column
    of its own spelling or no column yet, so that each name keeps one column across rows."""
    used = {fold(name) for name in reserved}
    out = []
    for name in names:
        if "\0" in name:
            # no SQL name holds NUL, which firmware pads C strings with ("temp\0\0"): the whole message was a
            # dead letter for one such name; it goes without them, as PostgreSQL's text values do
            name = name.replace("\0", "")
        name = name or "_"
        candidate = shorten(name, limit) if limit else name
        folded = fold(candidate)
        number = 1
        while folded in used or (table is not None and table.get(folded) not in (None, candidate)):
            number += 1
            suffix = f"_{number}"
            candidate = (shorten(name, limit - len(suffix)) if limit else name) + suffix
            folded = fold(candidate)
        used.add(folded)
        out.append(candidate)
    return tuple(out)

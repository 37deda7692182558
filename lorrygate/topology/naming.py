"""
Safe SQL names from topic levels: one sanitizer and one quoting function.

Topic levels may hold anything MQTT allows. `sanitize` maps a level to
``[a-z0-9_]`` (lower case; every other character becomes ``_``) and shortens
names longer than `MAX_LENGTH` deterministically with a hash suffix. `quote`
makes any string a single SQL identifier. Every identifier lorrygate puts into
SQL goes through `quote`; values only ever travel as query parameters.
"""

import hashlib
import re

#: PostgreSQL truncates identifiers at 63 bytes; the shortest common limit.
MAX_LENGTH = 63

_UNSAFE = re.compile(r"[^a-z0-9_]")


def sanitize(name: str, max_length: int = MAX_LENGTH) -> str:
    """Lower-case ``name`` and replace everything outside ``[a-z0-9_]`` by ``_``."""
    safe = _UNSAFE.sub("_", name.lower())
    if len(safe) <= max_length:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return safe[: max_length - 9] + "_" + digest


def join(*parts: str, max_length: int = MAX_LENGTH) -> str:
    """Sanitize each part and join them with ``_``, shortened as a whole."""
    joined = "_".join(_UNSAFE.sub("_", part.lower()) for part in parts)
    return sanitize(joined, max_length) if len(joined) > max_length else joined


def quote(identifier: str) -> str:
    """Quote a string as one SQL identifier (standard double quotes)."""
    if "\0" in identifier:
        raise ValueError("an SQL identifier cannot contain the NUL character")
    return '"' + identifier.replace('"', '""') + '"'

"""
MQTT topic names and topic filters: validation and matching.

Messages follow MQTT 3.1.1 section 4.7 / MQTT 5 section 4.7. A shared
subscription ``$share/<group>/<filter>`` matches like its ``<filter>``.
"""

import attrs


@attrs.frozen
class TopicFilter:
    """A validated topic filter, with the part that topics are matched against."""

    text: str
    #: the filter without a ``$share/<group>/`` prefix
    pattern: str
    share_group: str | None = None

    def matches(self, topic: str) -> bool:
        return topic_matches(self.pattern, topic)


def parse_filter(text: str) -> TopicFilter:
    """Return a `TopicFilter`, or raise ValueError saying what is wrong with it."""
    if not isinstance(text, str) or text == "":
        raise ValueError("a topic filter must be at least one character long")
    if "\0" in text:
        raise ValueError("a topic filter must not contain the NUL character")
    if len(text.encode("utf-8")) > 65535:
        raise ValueError("a topic filter must be at most 65535 bytes of UTF-8")
    pattern, group = text, None
    if text.startswith("$share/"):
        parts = text.split("/", 2)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise ValueError("a shared subscription must look like $share/<group>/<filter>")
        group, pattern = parts[1], parts[2]
        if "+" in group or "#" in group:
            raise ValueError("a shared subscription's group name must not contain '+' or '#'")
    levels = pattern.split("/")
    for index, level in enumerate(levels):
        if "#" in level:
            if level != "#":
                raise ValueError("'#' must stand alone in its level, as in 'a/#'")
            if index != len(levels) - 1:
                raise ValueError("'#' must be the last level of a topic filter")
        if "+" in level and level != "+":
            raise ValueError("'+' must stand alone in its level, as in 'a/+/c'")
    return TopicFilter(text, pattern, group)


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether a topic name matches a (validated, non-shared) topic filter."""
    if pattern == topic:
        return True
    # A filter starting with a wildcard does not match topics starting with '$'.
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    filter_levels = pattern.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def intersection(first: str, second: str) -> str | None:
    """A filter of the topics that both (non-shared) filters match, or None when no topic matches both
    (``a/+/c`` and ``a/b/#`` -> ``a/b/c``; ``a/#`` and ``a`` -> ``a``, as ``#`` takes its parent level)."""
    x, y = first.split("/"), second.split("/")
    out: list = []
    for index in range(max(len(x), len(y))):
        p = x[index] if index < len(x) else None
        q = y[index] if index < len(y) else None
        if p == "#":
            return "/".join(out + y[index:])
        if q == "#":
            return "/".join(out + x[index:])
        if p is None or q is None:
            return None
        if p == "+":
            out.append(q)
        elif q == "+" or p == q:
            out.append(p)
        else:
            return None
    return "/".join(out)


def covers(outer: str, inner: str) -> bool:
    """Whether every topic that the filter ``inner`` matches, the filter ``outer`` matches."""
    o, i = outer.split("/"), inner.split("/")
    for index, level in enumerate(o):
        if level == "#":
            return True
        if index >= len(i) or i[index] == "#" or (level != "+" and level != i[index]):
            return False
    return len(o) == len(i)

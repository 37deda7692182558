"""MQTT topic filters: validation messages and matching."""

import pytest

from lorrygate.mqtt.topics import parse_filter, topic_matches


@pytest.mark.parametrize(
    "pattern, topic, expected",
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("#", "$SYS/x", False),
        ("+/b", "$SYS/b", False),
        ("+/+", "a/", True),
        ("a/+/c", "a//c", True),
        ("a/b", "a/b/", False),
    ],
    ids=lambda x: repr(x),
)
def test_matching(pattern, topic, expected):
    """Topic filters match as MQTT section 4.7 says."""
    assert topic_matches(pattern, topic) is expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "at least one character"),
        ("a/#/b", "'#' must be the last level"),
        ("a#", "'#' must stand alone"),
        ("a/b+", "'+' must stand alone"),
        ("$share/g", "$share/<group>/<filter>"),
        ("a\0b", "NUL"),
    ],
    ids=["empty", "hash-middle", "hash-glued", "plus-glued", "share-short", "nul"],
)
def test_bad_filters_say_what_is_wrong(text, message):
    """Each invalid filter is rejected with a message that names the rule."""
    with pytest.raises(ValueError, match=message.replace("$", r"\$").replace("+", r"\+")):
        parse_filter(text)


def test_shared_subscription_matches_like_its_filter():
    """$share/<group>/<filter> keeps the group and matches like <filter>."""
    shared = parse_filter("$share/gateways/mqttkit-1/#")
    assert shared.share_group == "gateways"
    assert shared.matches("mqttkit-1/a/b/c/data.json")

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


@pytest.mark.parametrize("first, second, both", [
    ("a/+/c", "a/b/#", "a/b/c"), ("a/#", "a", "a"), ("a/#", "b/#", None), ("#", "x/y", "x/y"),
    ("a/+", "a/b/c", None), ("+/+", "a/#", "a/+"), ("a/b", "a/b", "a/b"), ("a/b", "a/c", None),
])
def test_the_topics_two_filters_both_match(first, second, both):
    from lorrygate.mqtt.topics import intersection

    assert intersection(first, second) == both and intersection(second, first) == both
    if both is not None:  # a topic of the intersection (wildcards made levels) matches both filters
        topic = both.replace("#", "x").replace("+", "y")
        assert topic_matches(first, topic) and topic_matches(second, topic)


@pytest.mark.parametrize("outer, inner, covered", [
    ("a/#", "a/b/c", True), ("a/+/c", "a/b/c", True), ("a/b/c", "a/+/c", False), ("a/#", "a/#", True),
    ("a/+", "a/#", False), ("#", "a", True), ("a/#", "a", True), ("a/b", "a/b/c", False),
])
def test_a_filter_that_covers_another(outer, inner, covered):
    from lorrygate.mqtt.topics import covers

    assert covers(outer, inner) is covered

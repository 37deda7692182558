"""Safe SQL names: one sanitizer, one quoting function."""

import re

import pytest

from lorrygate.topology.naming import join, quote, sanitize


@pytest.mark.parametrize(
    "raw, safe",
    [("Area-42", "area_42"), ("a.b/c d", "a_b_c_d"), ("ok_1", "ok_1"), ('x"; --', "x_____")],
    ids=["dash", "punctuation", "clean", "quote"],
)
def test_sanitize(raw, safe):
    """Everything outside [a-z0-9_] becomes '_' after lower-casing."""
    assert sanitize(raw) == safe


def test_join_and_quote():
    """join() sanitizes each part; quote() doubles embedded quotes."""
    assert join("Area-42", "node.1", "sensors") == "area_42_node_1_sensors"
    assert quote('we"ird') == '"we""ird"'
    with pytest.raises(ValueError, match="NUL"):
        quote("a\0b")


@pytest.mark.parametrize(
    "raw, pattern",
    [("ümlaut", r"^umlaut$"), ("naïve café", r"^naive_cafe$"), ("传感器", r"^___[0-9a-f]{8}$".replace("___", "____")),
     ("Ωmega", r"^_mega_[0-9a-f]{8}$")],
    ids=["umlaut", "accents", "cjk", "greek"],
)
def test_non_latin_names(raw, pattern):
    """Accents fold to their letter; names that lose letters get a hash so they stay apart."""
    assert re.match(pattern, sanitize(raw))
    assert sanitize("传感器") != sanitize("网关")


def test_join_is_each_part_sanitized_and_joined():
    """`join` folds ASCII text in one go: the same name as sanitizing each part and joining them with ``_``,
    shortened as a whole, for any parts (upper case, unsafe characters, empty, non-Latin, very long)."""
    import random

    from lorrygate.topology.naming import _fold, _shorten

    alphabet = "aZ09_-. /#+\"'\\é传ü\x00"
    rng = random.Random(18)
    for _ in range(2000):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(rng.randrange(1, 4))]
        parts.append(rng.choice([None, "", "sensors"]))
        texts = [part or "" for part in parts]
        assert join(*parts) == _shorten("_".join(_fold(text) for text in texts), "/".join(texts), 63)

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

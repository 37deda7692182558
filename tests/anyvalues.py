"""
Field values as a fleet may send them, for property tests of the storages: keys that collide once sanitized
or that storages refuse, values whose type changes from message to message, nested lists and objects, texts
longer than an index takes, NaN, infinities and integers beyond 64 bits.
"""

from hypothesis import strategies as st

keys = st.sampled_from(["t", "T", "a.b", "list", "x[0]", "tab\tkey", "", "fields", "extra_fields", "n", "time"]) \
    | st.text(max_size=6)
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
           | st.sampled_from(["x" * 40_000, "é" * 20_000]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=8)
records = st.dictionaries(keys, values, min_size=1, max_size=5)
#: tags are texts (topic levels, a decoder's metadata), or null
tags = st.dictionaries(keys, st.none() | st.text(max_size=8) | st.just("x" * 40_000), max_size=2)
#: batches of (which of two tables, fields, tags)
batches = st.lists(st.lists(st.tuples(st.integers(0, 1), records, tags), min_size=1, max_size=6), min_size=1,
                   max_size=3)

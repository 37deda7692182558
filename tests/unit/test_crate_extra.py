"""Which fields of a row go into CrateDB's unindexed extra_fields column (`lorrygate.storage.crate_extra`);
tests/unit/test_cratedb_protocol.py and tests/integration/test_cratedb_server.py drive the writer."""

from lorrygate.storage.crate_extra import paths, refusal, split, unindexable


def test_the_refusals_it_mends_and_those_it_does_not():
    assert refusal("CrateDB error 4000: IllegalArgumentException[Limit of total columns [1000] in table "
                   "[doc.t] exceeded]") == ("columns", 1000)
    assert refusal('CrateDB error 4000: IllegalArgumentException[Document contains at least one immense term in '
                   'field="fields.note"]') == ("value", None)
    assert refusal("CrateDB error 4000: IllegalArgumentException[Dynamic nested arrays are not supported]") == (
        "value", None)
    assert refusal("CrateDB error 4000: IllegalArgumentException[Mixed dataTypes inside a list are not supported. "
                   "Found double precision and text]") == ("value", None)
    assert refusal("CrateDB error 4000: SQLParseException[Cannot cast value `warm` to type `double`]") is None


def test_sub_columns_are_named_as_information_schema_names_them():
    assert paths({"wifi": {"rssi": -60, "ssid": None}, "it's": [{"a": 1}, {"b": 2}]}, "fields", set()) == {
        "fields['wifi']", "fields['wifi']['rssi']", "fields['it''s']", "fields['it''s']['a']", "fields['it''s']['b']"}


def test_long_text_and_odd_lists_are_found_wherever_they_are_nested():
    assert unindexable({"a": [{"b": "x" * 32_767}]}) and not unindexable({"a": "x" * 32_766})
    assert unindexable("é" * 16_384)  # (32,768 bytes of UTF-8)
    assert unindexable({"geometry": {"coordinates": [[7.1, 50.7], [7.2, 50.8]]}})
    assert unindexable([1, "a"]) and unindexable([True, 1.0]) and unindexable([{"a": 1}, 2])
    assert not unindexable([1, 2.5, None]) and not unindexable([{"a": 1}, {"b": [1, 2]}]) and not unindexable([])


def test_the_tables_columns_are_kept_first_then_new_keys_while_they_fit():
    columns = {"time", "tags", "fields", "fields['old']", "fields['old']['a']"}
    fields = {"big": {f"k{n}": n for n in range(10)}, "old": {"a": 1, "b": 2}, "small": 1}
    kept, extra = split(fields, columns, limit=len(columns) + 5, moved=set())
    # room 4 (the extra column takes one): old's new b (1), then big (11) does not fit, small (1) does
    assert list(kept) == ["old", "small"] and extra == {"big": fields["big"]}
    kept, extra = split({"small": 2, "old": {"a": 3}}, columns, None, moved={"small"})
    assert kept == {"old": {"a": 3}} and extra == {"small": 2}

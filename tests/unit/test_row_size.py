"""The bound of a PostgreSQL row's bytes and the fitting of a row within it (`lorrygate.storage.row_size`);
tests/integration/test_column_budget.py holds the bound against a real PostgreSQL."""

from lorrygate.storage.layout import EXTRA_COLUMN
from lorrygate.storage.row_size import SAFE_FIELDS, fit, head_bytes, value_bytes


def test_the_header_has_a_bit_a_column_and_is_aligned():
    assert head_bytes(1) == 24 and head_bytes(8) == 24 and head_bytes(9) == 32
    assert head_bytes(1600) == 224


def test_values_by_their_type_or_their_columns():
    assert value_bytes(1.5, None) == (8, True) and value_bytes(7, None) == (8, True)
    assert value_bytes(True, None) == (1, False)
    assert value_bytes("ok", None) == (3, False) and value_bytes("é", None) == (3, False)
    assert value_bytes("x" * 500, None) == (24, False)  # (TOAST moves it out: a pointer)
    assert value_bytes(2**70, None) == (24, False)  # NUMERIC
    assert value_bytes([1, 2], None) == (24, False)
    assert value_bytes("21", "double precision") == (8, True)  # the column's type, not the value's
    assert value_bytes(21, "text") == (24, False) and value_bytes("ok", "text") == (3, False)
    assert value_bytes("ok", "jsonb") == (24, False)
    assert value_bytes(1, "boolean") == (1, False)


def test_a_row_of_the_safe_number_of_fields_fits_whatever_they_are():
    assert SAFE_FIELDS > 250  # (the default max_columns: no row of it is ever fitted)
    worst = {f"f{n}": ([n] if n % 2 else n) for n in range(SAFE_FIELDS)}
    assert fit(worst, {}, {}, str) is None


def test_the_columns_of_the_table_are_kept_first_and_nothing_is_lost():
    numbers = {f"f{n}": float(n) for n in range(1200)}
    known = {f"f{n}": "double precision" for n in range(600, 1200)}
    fitted = fit(numbers, known, {}, str)
    assert fitted is not None
    kept = [name for name in fitted if name != EXTRA_COLUMN]
    assert set(known) <= set(kept) and len(kept) < 1000
    assert {**{name: fitted[name] for name in kept}, **fitted[EXTRA_COLUMN]} == numbers
    # the new fields that fit are the first of them, in the row's order; the rest are the last ones
    moved = list(fitted[EXTRA_COLUMN])
    assert moved == [f"f{n}" for n in range(600 - len(moved), 600)]
    assert kept == list(numbers)[:600 - len(moved)] + list(known)


def test_a_json_column_of_the_row_is_merged_and_a_field_of_its_name_kept():
    numbers = {f"f{n}": float(n) for n in range(1200)}
    fitted = fit({**numbers, EXTRA_COLUMN: {"deep": 1}}, {}, {}, str)
    assert fitted[EXTRA_COLUMN]["deep"] == 1 and "f1199" in fitted[EXTRA_COLUMN]
    fitted = fit({**numbers, EXTRA_COLUMN: 5}, {}, {}, str)
    assert fitted[EXTRA_COLUMN][EXTRA_COLUMN] == 5


def test_a_field_named_as_the_json_column_is_kept_inside_it_beyond_the_column_budget():
    """within_budget (the column budget, and `fit`): a field named extra_fields that is not an object was
    written over by the fields moved there; it is kept under its name in the object."""
    from lorrygate.storage.layout import within_budget

    assert within_budget({"a": 1, "b": 2, EXTRA_COLUMN: "x"}, ["a", "b"], 1) == {
        "a": 1, EXTRA_COLUMN: {EXTRA_COLUMN: "x", "b": 2}}

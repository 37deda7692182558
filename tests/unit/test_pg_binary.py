"""PostgreSQL's choice of a binary COPY (`PostgresDialect._binary`): column by column, as row by row."""

from hypothesis import given
from hypothesis import strategies as st

from lorrygate.storage.postgresql import _BINARY, PostgresDialect

COLUMN_TYPES = sorted(_BINARY) + ["jsonb"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3),
                   st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def row_by_row(types: tuple, members: list) -> list | None:
    """The rule as it reads: every row's time an int, every value of a Python type its column takes."""
    if not all(kind in _BINARY for kind in types[1:]):
        return None
    for _, _, _, rows in members:
        for row in rows:
            if type(row[0]) is not int:
                return None
            if not all(type(value) in _BINARY[column][1] for value, column in zip(row[1:], types[1:])):
                return None
    return ["int4", "int8"] + [_BINARY[kind][0] for kind in types[1:]]


@st.composite
def shapes(draw):
    types = ("timestamp with time zone", *draw(st.lists(st.sampled_from(COLUMN_TYPES), min_size=1, max_size=4)))
    width = len(types)
    times = st.one_of(st.integers(0, 2**62), st.booleans(), st.floats(allow_nan=False))
    rows = st.tuples(times, *[VALUES] * (width - 1))
    tables = draw(st.lists(st.lists(rows, min_size=1, max_size=5), min_size=1, max_size=4))
    return types, [(f"t{i}", f"t{i}", types[1:], table) for i, table in enumerate(tables)]


@given(shapes())
def test_the_binary_copy_is_chosen_as_the_row_by_row_rule_says(shape):
    types, members = shape
    assert PostgresDialect("postgresql://nowhere")._binary(types, members) == row_by_row(types, members)


def test_an_integer_goes_binary_into_double_precision_and_a_bool_does_not():
    dialect = PostgresDialect("postgresql://nowhere")
    types = ("timestamp with time zone", "double precision", "bigint")
    assert dialect._binary(types, [("t", "t", (), [(1, 2, 3), (2, 2.5, None)])]) == ["int4", "int8", "float8", "int8"]
    assert dialect._binary(types, [("t", "t", (), [(1, 2, 3)]), ("u", "u", (), [(2, True, 3)])]) is None
    assert dialect._binary(types, [("t", "t", (), [(1, 2.5, False)])]) is None


def test_an_interrupt_asks_the_server_from_a_thread_of_its_own():
    """A stop that interrupts a write sent a cancel request from the reactor's thread: to a server that is away
    the request's connection blocked that thread, once a second, and the gateway froze in its stop. The request
    goes from a thread of its own, one at a time, with a timeout."""
    import threading

    from tests.servers import wait_until

    asked, released = [], threading.Event()

    class Connection:
        def cancel_safe(self, timeout):
            asked.append(timeout)
            released.wait(30)  # (a server that does not answer)

    dialect = PostgresDialect("postgresql://db.example/x")
    dialect.interrupt(Connection())
    wait_until(lambda: asked, 10, "the cancel request")
    dialect.interrupt(Connection())  # (the first still on its way)
    returned_before_the_answer = not released.is_set()
    released.set()
    wait_until(lambda: not dialect._cancelling, 10, "the cancel request to end")
    assert returned_before_the_answer and asked == [5.0]


def test_every_connection_has_keepalives_and_a_user_timeout_unless_its_url_says_otherwise():
    from lorrygate.storage.postgresql import LIVENESS, liveness

    assert liveness("postgresql://gw@db.example/x") == LIVENESS
    assert liveness("postgresql://gw@db.example/x?keepalives_idle=60&tcp_user_timeout=0") == {
        "keepalives": "1", "keepalives_interval": "5", "keepalives_count": "3"}
    assert liveness("host=/run/postgresql dbname=x keepalives=0")["tcp_user_timeout"] == "30000"

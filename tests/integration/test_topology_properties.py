"""Property: for any topic, every strategy refuses it or yields names that SQLite and PostgreSQL take verbatim."""

import sqlite3

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorrygate.errors import TopologyError
from lorrygate.storage.sqlite import table_name
from lorrygate.topology import STRATEGIES
from lorrygate.topology.naming import quote
from tests.unit.test_topology_table import TEMPLATE, TEMPLATE_REST, strategy

ALL = [STRATEGIES[name]() for name in sorted(STRATEGIES)] + [TEMPLATE, TEMPLATE_REST, strategy("factory")]

level = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80) | st.sampled_from(
    ["", "+", "#", "device", "channel", "data", "__json__", "data.json", "event.json", "tele", "SENSOR",
     "v3", "app@tenant", "devices", "up", "application", "event", "homie", "$state", "zigbee2mqtt", "bridge",
     "status", "switch:0", "sites", "archive", "factory", "telemetry", "a-b-c", '"; DROP TABLE x; --', "x" * 300]
)
#: topic shapes of each strategy, with arbitrary text in the levels
SHAPES = [
    "{}/{}/{}/{}/data.json", "{}/{}/{}/{}/data/{}", "{}/{}/{}/{}/event.json", "{}/device/{}/data.json",
    "{}/channel/{}-{}-{}/data.json", "{}/{}/loop", "tele/{}/SENSOR", "stat/{}/{}", "homie/{}/{}/{}",
    "homie/{}/$state", "v3/{}@{}/devices/{}/up", "application/{}/device/{}/event/up", "zigbee2mqtt/{}",
    "zigbee2mqtt/{}/availability", "{}/status/{}", "{}/events/rpc", "{}/sites/{}/{}/data.json", "archive/{}/{}",
    "factory/{}/{}/telemetry",
]
shaped = st.sampled_from(SHAPES).flatmap(
    lambda shape: st.lists(level, min_size=shape.count("{}"), max_size=shape.count("{}")).map(
        lambda parts: shape.format(*parts)
    )
)
topics = shaped | st.lists(level, min_size=1, max_size=8).map("/".join) | st.text(max_size=200)


@pytest.fixture(scope="module")
def pg(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def lite():
    conn = sqlite3.connect(":memory:")
    yield conn
    conn.close()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics)
def test_any_topic_gives_safe_identifiers(pg, lite, topic):
    """No exception but TopologyError escapes; every name is one identifier, verbatim, in SQLite and PostgreSQL."""
    for chosen in ALL:
        try:
            address = chosen.match(topic)
        except TopologyError:
            continue
        table = chosen.table_for(address)
        for ident in (table.schema, table.table):
            assert ident and len(ident.encode("utf-8")) <= 63
            assert pg.execute(f"SELECT 1 AS {quote(ident)}").description[0].name == ident
        for ident in (table.schema, table.table, table_name(table)):
            assert lite.execute(f"SELECT 1 AS {quote(ident)}").description[0][0] == ident

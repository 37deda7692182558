"""The WAN strategy: topic -> address -> (schema, table), and the topics it refuses."""

import pytest

from lorrygate.errors import TopologyError
from lorrygate.model import Address, TableName
from lorrygate.topology.naming import join, quote, sanitize
from lorrygate.topology.wan import WanStrategy

wan = WanStrategy()

ROUTED = [
    ("mqttkit-1/testdrive/area-42/node-1/data.json",
     Address("mqttkit-1", "testdrive", "area-42", "node-1", "data", "data.json"),
     TableName("mqttkit_1_testdrive", "area_42_node_1_sensors")),
    ("myrealm/acme/area-42/foo-70b3d57ed005dac6/data.json",
     Address("myrealm", "acme", "area-42", "foo-70b3d57ed005dac6", "data", "data.json"),
     TableName("myrealm_acme", "area_42_foo_70b3d57ed005dac6_sensors")),
    ("mqttkit-1/testdrive/area-42/node-1/event.json",
     Address("mqttkit-1", "testdrive", "area-42", "node-1", "event", "event.json"),
     TableName("mqttkit_1_testdrive", "area_42_node_1_events")),
    ("mqttkit-1/testdrive/area-42/node-1/error.json",
     Address("mqttkit-1", "testdrive", "area-42", "node-1", "error", "error.json"),
     TableName("mqttkit_1_testdrive", "area_42_node_1_errors")),
    ("mqttkit-1/testdrive/area-42/node-1/data/temperature",
     Address("mqttkit-1", "testdrive", "area-42", "node-1", "data", "data/temperature", "temperature"),
     TableName("mqttkit_1_testdrive", "area_42_node_1_sensors")),
    ("Realm.X/Net Work/GW/Node;DROP TABLE x/data.json",
     Address("Realm.X", "Net Work", "GW", "Node;DROP TABLE x", "data", "data.json"),
     TableName("realm_x_net_work", "gw_node_drop_table_x_sensors")),
    ("ümlaut/netz/gw/knoten/data.json",
     Address("ümlaut", "netz", "gw", "knoten", "data", "data.json"),
     TableName("_mlaut_netz", "gw_knoten_sensors")),
]


@pytest.mark.parametrize("topic, address, table", ROUTED, ids=[case[0] for case in ROUTED])
def test_routes(topic, address, table):
    """Kotori's WAN topics map to the documented address and table."""
    assert wan.match(topic) == address
    assert wan.table_for(address) == table


REFUSED = [
    ("weewx//loop", "at least 5 levels"),
    ("one", "got 1 level"),
    ("a/b/c/d", "got 4 level"),
    ("a/b//d/data.json", "gateway level is empty"),
    ("/b/c/d/data.json", "realm level is empty"),
    ("a/b/c/d/", "unknown suffix ''"),
    ("a/b/c/d/data.xml", "unknown suffix 'data.xml'"),
    ("a/b/c/d/data/", "unknown suffix 'data/'"),
    ("a/+/c/d/data.json", "network level is a wildcard"),
    ("a/b/c/#/data.json", "node level is a wildcard"),
    ("a/b/c/d/data.json/extra", "unknown suffix"),
]


@pytest.mark.parametrize("topic, reason", REFUSED, ids=[case[0] for case in REFUSED])
def test_refuses_with_a_reason(topic, reason):
    """Topics outside the convention raise TopologyError saying why, never anything else."""
    with pytest.raises(TopologyError, match=reason.replace("+", r"\+")) as info:
        wan.match(topic)
    assert info.value.topic == topic


def test_long_levels_are_shortened_deterministically():
    """A 300-character level gives a 63-character name with a stable hash suffix."""
    address = wan.match(f"r/n/g/{'x' * 300}/data.json")
    table = wan.table_for(address).table
    assert len(table) == 63
    assert table == wan.table_for(wan.match(f"r/n/g/{'x' * 300}/data.json")).table
    assert table != wan.table_for(wan.match(f"r/n/g/{'x' * 299}y/data.json")).table


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

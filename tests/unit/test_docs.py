"""The documentation's examples are checked, so they cannot rot."""

import csv
import io
import os
import re

import pytest

from lorrygate.config import loads

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")


def topology_rows():
    text = open(os.path.join(DOCS, "topology.rst"), encoding="utf-8").read()
    block = re.search(r":header: [^\n]+\n\n((?:   [^\n]+\n)+)", text).group(1)
    return list(csv.reader(io.StringIO(block.replace("\n   ", "\n").strip()), skipinitialspace=True))


STRATEGIES = loads(
    "[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\nsource=b\ntopics=#\nstorage=s\n"
).strategies


@pytest.mark.parametrize("name, topic, kind, schema, table", topology_rows(), ids=lambda v: v[:50])
def test_topology_table(name, topic, kind, schema, table):
    """Each row of docs/topology.rst routes as it says."""
    strategy = STRATEGIES[name]()
    address = strategy.match(topic)
    routed = strategy.table_for(address)
    assert (address.kind, routed.schema, routed.table) == (kind, schema, table)

"""Topology strategies: a topic becomes an address, an address a table."""

from lorrygate.topology.wan import WanStrategy

#: built-in strategies by the name a channel selects them with
STRATEGIES = {"wan": WanStrategy}

__all__ = ["STRATEGIES", "WanStrategy"]

"""Configuration: ini files parsed at the edge and validated before the reactor runs."""

from lorrygate.config.loader import load, loads

__all__ = ["load", "loads"]

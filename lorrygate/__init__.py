"""
lorrygate: a topic-routing data-acquisition gateway.

Messages arrive from brokers (MQTT), a topology strategy turns each topic into
an address, a decoder chain turns each payload into records, and the records
land in one table per address. A message is acknowledged only once its rows
(or its dead-letter row) are committed.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""
lorrygate: a topic-routing data-acquisition gateway.

Messages arrive from brokers (MQTT), a topology strategy turns each topic into
an address, a decoder chain turns each payload into records, and the records
land in one table per address. A message is acknowledged only once its rows
(or its dead-letter row) are committed.
"""

__version__ = "0.1.0"

__all__ = ["Gateway", "Pipeline", "__version__", "parse_launch"]


def __getattr__(name):
    # Imported on first use, so that "import lorrygate" stays light.
    if name in ("parse_launch", "Pipeline"):
        from lorrygate.pipeline import model

        return getattr(model, name)
    if name == "Gateway":
        from lorrygate.service.gateway import Gateway

        return Gateway
    raise AttributeError(f"module 'lorrygate' has no attribute {name!r}")

"""Storage: batching, acknowledgement after commit, and the backends."""

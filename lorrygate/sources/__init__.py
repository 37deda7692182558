"""Sources: where messages come from (MQTT first)."""

"""MQTT wire format, topic filters and a Twisted-native client protocol."""

"""
Realistic payloads of a mixed fleet, in the shapes the vendors' firmware and
servers send (Tasmota, Zigbee2MQTT, Shelly Gen1 and Gen2, Homie, The Things
Stack, ChirpStack, WeeWX, Kotori WAN), for the fleet tests.
"""

import json


def z2m_bridge_info(devices: int) -> bytes:
    """Zigbee2MQTT's retained ``bridge/info``: its whole configuration, one entry per device."""
    return json.dumps({
        "version": "1.35.1", "commit": "9bfc4ff", "coordinator": {"ieee_address": "0x00124b0021b3e21c",
                                                                  "type": "zStack3x0", "meta": {"revision": 20230507}},
        "network": {"channel": 11, "pan_id": 6754, "extended_pan_id": [221, 221, 221, 221]},
        "log_level": "info", "permit_join": False, "restart_required": False,
        "config": {
            "homeassistant": False, "permit_join": False,
            "mqtt": {"base_topic": "zigbee2mqtt", "server": "mqtt://localhost"},
            "serial": {"port": "/dev/ttyACM0"},
            "devices": {f"0x00158d00{n:08x}": {"friendly_name": f"sensor {n}", "retain": False,
                                                "optimistic": True, "qos": 1} for n in range(devices)},
            "groups": {"1": {"friendly_name": "living room", "devices": [f"0x00158d00{n:08x}" for n in range(4)]}},
            "advanced": {"log_level": "info", "pan_id": 6754, "channel": 11, "last_seen": "ISO_8601"},
        },
        "config_schema": {"type": "object", "properties": {"advanced": {"type": "object"}}},
    }).encode()

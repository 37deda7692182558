"""
Realistic payloads of a mixed fleet, in the shapes the vendors' firmware and
servers send (Tasmota, Zigbee2MQTT, Shelly Gen1 and Gen2, Homie, The Things
Stack, ChirpStack, WeeWX, Kotori WAN, Sparkplug B, Home Assistant's Statestream, OwnTracks), for
the fleet tests.
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


def z2m_bridge_devices(devices: int) -> bytes:
    """Zigbee2MQTT's retained ``bridge/devices``: a JSON array, one object per device."""
    return json.dumps([{"ieee_address": f"0x00158d00{n:08x}", "type": "EndDevice", "network_address": n,
                        "friendly_name": f"sensor {n}", "supported": True, "interview_completed": True,
                        "definition": {"model": "WSDCGQ11LM", "vendor": "Aqara", "description": "T/H sensor",
                                       "exposes": [{"type": "numeric", "name": "temperature"}]},
                        "power_source": "Battery", "model_id": "lumi.weather"} for n in range(devices)]).encode()


TTS_UPLINK = {
    "end_device_ids": {"device_id": "lht65-01", "application_ids": {"application_id": "climate"},
                       "dev_eui": "A840410001812345", "join_eui": "A000000000000100", "dev_addr": "260B1234"},
    "received_at": "2024-06-01T12:00:00.123456789Z",
    "uplink_message": {
        "f_port": 2, "f_cnt": 1234, "frm_payload": "y/YLDQN2AQrdf/8=",
        "decoded_payload": {"BatV": 3.062, "Bat_status": 3, "Ext_sensor": "Temperature Sensor", "Hum_SHT": 88.6,
                            "TempC_DS": 27.81, "TempC_SHT": 28.29},
        "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-roof"}, "rssi": -112, "snr": -4.25},
                        {"gateway_ids": {"gateway_id": "gw-office"}, "rssi": -71, "snr": 9.5}],
        "received_at": "2024-06-01T12:00:00.098765432Z",
    },
}
TTS_JOIN = {
    "end_device_ids": {"device_id": "lht65-01", "application_ids": {"application_id": "climate"},
                       "dev_eui": "A840410001812345"},
    "received_at": "2024-06-01T11:59:00.5Z",
    "join_accept": {"session_key_id": "AYfg", "received_at": "2024-06-01T11:59:00.4Z"},
}
CHIRPSTACK_UP = {
    "deduplicationId": "3ac7e3c4", "time": "2024-06-01T12:00:00.555Z",
    "deviceInfo": {"tenantName": "ChirpStack", "applicationName": "climate", "deviceName": "lht65-02",
                   "devEui": "a840410001812346", "tags": {}},
    "devAddr": "00189440", "fCnt": 77, "fPort": 2, "data": "y/YLDQN2AQrdf/8=",
    "object": {"TempC_SHT": 28.29, "Hum_SHT": 88.6},
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -36, "snr": 10.5}],
}
CHIRPSTACK_JOIN = {"deduplicationId": "9a1b", "time": "2024-06-01T11:58:00Z",
                   "deviceInfo": {"deviceName": "lht65-02", "devEui": "a840410001812346"}, "devAddr": "00189440"}
#: ChirpStack v3, "json" marshaler: ids in base64, the decoded payload as text
CHIRPSTACK_V3_UP = {
    "applicationID": "7", "applicationName": "garden", "deviceName": "soil-1", "devEUI": "AgICAgICAgI=",
    "rxInfo": [{"gatewayID": "AwMDAwMDAwM=", "time": "2024-06-01T12:00:00.25Z", "rssi": -57, "loRaSNR": 10}],
    "txInfo": {"frequency": 868100000, "modulation": "LORA"}, "adr": True, "dr": 1, "fCnt": 10, "fPort": 5,
    "data": "AQ==", "objectJSON": '{"temperature":19.5,"moisture":31}', "tags": {}, "confirmedUplink": False,
    "devAddr": "AFE5Qg==", "publishedAt": "2024-06-01T12:00:00.5Z",
}
#: LoRa App Server v2 (and ChirpStack v3's first topics): ``.../rx``, ids in hex, the decoded ``object``
CHIRPSTACK_V2_RX = {
    "applicationID": "7", "applicationName": "garden", "deviceName": "soil-2", "devEUI": "0303030303030303",
    "rxInfo": [{"gatewayID": "0303030303030303", "time": "2024-06-01T12:00:01Z", "rssi": -60, "loRaSNR": 7.5}],
    "txInfo": {"frequency": 868100000, "dr": 5}, "adr": False, "fCnt": 3, "fPort": 5, "data": "AQ==",
    "object": {"temperature": 18.5, "moisture": 40},
}
WEEWX_LOOP = {"dateTime": "1492467300.0", "outTemp_C": "3.55555555556", "outHumidity": "90.0",
              "barometer_mbar": "1018.35464712", "windSpeed_kph": "3.95409343049", "usUnits": "16.0"}


#: Sparkplug B payloads of an edge node (``Edge-7``) and its device (``PLC1``), encoded by an independent
#: encoder: pysparkplug 0.6.1's compiled schema (the Eclipse Tahu ``sparkplug_b.proto``) through Google's
#: protobuf 7.36, not lorrygate's own schema, so that they check that the schema declared in
#: lorrygate/decoding/sparkplug_schema.py reads what other Sparkplug software writes. Integers are on the wire
#: as Tahu's Java writes them (two's complement in 32 or 64 bits), except the Int16 ``Inputs/A`` (-3 as 65533,
#: pysparkplug's 16-bit form). Times from 2024-06-01T12:00:00Z. The births declare aliases that the data
#: messages use alone (no names, no datatypes).
SPARKPLUG = {
    "nbirth": "088084af9dfd31120b0a05626453657120085803121a0a144e6f646520436f6e74726f6c2f52656269727468200b700012270a"
              "1850726f706572746965732f4861726477617265204d616b651001200c7a075369656d656e7312160a0b54656d706572617475"
              "72651002200965cdcca84112170a0850726573737572651003200a690000000000aa8f4012130a07436f756e7465721004200350"
              "fbffffff0f120f0a0752756e6e696e671005200b700112140a034269671006200458feffffffffffffffff0112140a0753746172"
              "7465641007200d5880d095ffbc311800",
    "ndata": "08e88baf9dfd3112071002653333b3411208100450f9ffffff0f1212100318f487af9dfd31690000000000448f40120410053801"
             "1801",
    "dbirth": "08d093af9dfd3112120a08496e707574732f41100a200250fdff0312170a064c6576656c73100b201e8201080000c03f00001040"
              "12130a05466c616773100c202082010503000000a012120a054e616d6573100d202182010461006200123f0a06526563697065"
              "100e20108a01300802120473746570120474656d7018031809220b0a0208010a051d0000a142220f0a0608ffffffff0f0a051d"
              "cdcccc3d12390a054d6f746f72100f201392012b12120a055370656564200a690000000000a8964012080a024f6e200b700122"
              "094d6f746f725479706528001802",
    "ddata": "08b89baf9dfd311208100a50fcffffff0f1212100b18a0afab9dfd3128018201049a99993e120a100c82010501000000001209100d"
             "300182010263001803",
    "ndeath": "120b0a05626453657120085803",
    "ddeath": "08a0a3af9dfd311804",
}


def fleet(realm: str):
    """``(topic, payload, kind)`` of a mixed fleet; kind is ``data``, ``event`` or ``command``.

    Device times: Tasmota 2024-06-01T14:00:00 local (Europe/Berlin: 12:00Z),
    TTS ``received_at`` of the uplink, ChirpStack ``time``, WeeWX ``dateTime``.
    """
    j = lambda document: json.dumps(document).encode()  # noqa: E731
    out = []
    for n in range(3):
        dev = f"{realm}-plug-{n}"
        out += [
            (f"tele/{dev}/SENSOR", j({"Time": "2024-06-01T14:00:00", "ENERGY": {"Power": 12 + n, "Voltage": 230,
                                                                                "Total": 1.5}, "TempUnit": "C"}), "data"),
            (f"tele/{dev}/STATE", j({"Time": "2024-06-01T14:00:00", "Uptime": "0T01:00:00", "Vcc": 3.2, "POWER": "ON",
                                     "Wifi": {"AP": 1, "SSId": "iot", "RSSI": 80, "Signal": -60}}), "data"),
            (f"tele/{dev}/LWT", b"Online", "event"),
            (f"stat/{dev}/POWER", b"OFF", "event"),
            (f"stat/{dev}/RESULT", j({"POWER": "OFF"}), "event"),
            (f"tele/{dev}/INFO1", j({"Info1": {"Module": "Sonoff Pow R2", "Version": "13.1.0"}}), "event"),
            (f"cmnd/{dev}/POWER", b"TOGGLE", "command"),
        ]
    base = f"{realm}z2m"
    out += [
        (f"{base}/Kitchen Lamp", j({"state": "ON", "brightness": 200, "color": {"x": 0.3, "y": 0.3},
                                    "linkquality": 120}), "data"),
        (f"{base}/hall/motion", j({"occupancy": True, "battery": 97, "illuminance_lux": 12}), "data"),
        (f"{base}/hall/motion/availability", b"online", "event"),
        (f"{base}/Kitchen Lamp/availability", j({"state": "online"}), "event"),
        (f"{base}/bridge/state", j({"state": "online"}), "event"),
        (f"{base}/bridge/info", z2m_bridge_info(600), "event"),
        (f"{base}/bridge/devices", z2m_bridge_devices(40), "event"),
        (f"{base}/bridge/logging", j({"level": "info", "message": "MQTT publish"}), "event"),
        (f"{base}/Kitchen Lamp/set", j({"state": "OFF"}), "command"),
        (f"{base}/Kitchen Lamp/set/brightness", b"100", "command"),
        (f"{base}/bridge/request/permit_join", j({"value": True}), "command"),
    ]
    gen1 = f"shelly1pm-{realm}"
    gen2 = f"shellyplus1pm-{realm}"
    out += [
        (f"shellies/{gen1}/relay/0", b"on", "data"),
        (f"shellies/{gen1}/relay/0/power", b"12.3", "data"),
        (f"shellies/{gen1}/relay/0/energy", b"4711", "data"),
        (f"shellies/{gen1}/temperature", b"45.2", "data"),
        (f"shellies/{gen1}/online", b"true", "event"),
        (f"shellies/{gen1}/input_event/0", j({"event": "L", "event_cnt": 4}), "event"),
        (f"shellies/{gen1}/announce", j({"id": gen1, "model": "SHSW-PM", "fw_ver": "20230913-112003",
                                         "ip": "192.168.1.20"}), "event"),
        (f"shellies/{gen1}/relay/0/command", b"on", "command"),
        (f"{gen2}/status/switch:0", j({"id": 0, "source": "timer", "output": True, "apower": 8.9, "voltage": 237.5,
                                       "aenergy": {"total": 6.532, "by_minute": [45.3, 0, 0], "minute_ts": 1717243200},
                                       "temperature": {"tC": 41.2, "tF": 106.2}}), "data"),
        (f"{gen2}/status/wifi", j({"sta_ip": "192.168.1.21", "status": "got ip", "ssid": "iot", "rssi": -58}), "data"),
        (f"{gen2}/online", b"true", "event"),
        (f"{gen2}/events/rpc", j({"src": gen2, "dst": f"{gen2}/events", "method": "NotifyStatus",
                                  "params": {"ts": 1717243200.12, "switch:0": {"id": 0, "output": False}}}), "data"),
        # a button pushed: on the same topic as the status, an event of the device's
        (f"{gen2}/events/rpc", j({"src": gen2, "dst": f"{gen2}/events", "method": "NotifyEvent", "params": {
            "ts": 1717243205.5, "events": [{"component": "input:0", "id": 0, "event": "single_push",
                                            "ts": 1717243205.43}]}}), "event"),
        (f"{gen2}/rpc", j({"id": 1, "src": "user", "method": "Switch.Set", "params": {"id": 0, "on": True}}), "command"),
    ]
    hd = f"boiler-{realm}"
    out += [
        (f"homie/{hd}/temperature/current", b"61.5", "data"),
        (f"homie/{hd}/pump/on", b"true", "data"),
        (f"homie/{hd}/$state", b"ready", "event"),
        (f"homie/{hd}/$name", b"Boiler", "event"),
        (f"homie/{hd}/pump/on/set", b"false", "command"),
    ]
    app = f"climate-{realm}@ttn"
    out += [
        (f"v3/{app}/devices/lht65-01/up", j(TTS_UPLINK), "data"),
        (f"v3/{app}/devices/lht65-01/join", j(TTS_JOIN), "event"),
        (f"v3/{app}/devices/lht65-01/down/push", j({"downlinks": [{"f_port": 2, "frm_payload": "AQ=="}]}), "command"),
    ]
    out += [
        (f"application/{realm}/device/a840410001812346/event/up", j(CHIRPSTACK_UP), "data"),
        (f"application/{realm}/device/a840410001812346/event/join", j(CHIRPSTACK_JOIN), "event"),
        (f"application/{realm}/device/a840410001812346/command/down", j({"devEui": "a840410001812346",
                                                                        "data": "AQ=="}), "command"),
        (f"application/{realm}/device/0202020202020202/event/up", j(CHIRPSTACK_V3_UP), "data"),
        (f"application/{realm}/device/0303030303030303/rx", j(CHIRPSTACK_V2_RX), "data"),
        (f"application/{realm}/device/0303030303030303/status", j({"battery": 200, "margin": 10}), "event"),
        (f"application/{realm}/device/0303030303030303/tx", j({"confirmed": False, "fPort": 2, "data": "AQ=="}),
         "command"),
    ]
    out += [
        (f"{realm}/home/station/vantage/loop", j(WEEWX_LOOP), "data"),
        (f"{realm}/testdrive/area-42/node-1/data.json", j({"temperature": 21.5, "humidity": "48"}), "data"),
        (f"{realm}/testdrive/area-42/node-1/event.json", j({"title": "door", "text": "opened"}), "event"),
    ]
    ha = f"{realm}ha/sensor/kitchen_temperature"  # Home Assistant's mqtt_statestream, base_topic <realm>ha
    out += [
        (f"{ha}/state", b"unavailable", "data"),
        (f"{ha}/state", b"21.5", "data"),
        (f"{ha}/unit_of_measurement", '"°C"'.encode(), "data"),
        (f"{ha}/last_updated", b"2024-06-01T12:00:00.123456+00:00", "data"),
        (f"{ha}/state", b"unknown", "data"),
        (f"{ha}/state", b"22", "data"),
        (f"{realm}ha/switch/kettle/state", b"on", "data"),
        (f"{realm}ha/sensor/kitchen_temperature/config", j({"name": "Kitchen", "state_topic": "x"}), "command"),
    ]
    ot = f"{realm}ot/jane/phone"  # OwnTracks with the topic prefix <realm>ot; a location taken an hour before it came
    out += [
        (ot, j({"_type": "location", "tid": "JP", "lat": 52.52, "lon": 13.405, "acc": 12, "batt": 81,
                "tst": 1717243200, "created_at": 1717246800}), "data"),
        (f"{ot}/event", j({"_type": "transition", "event": "enter", "desc": "Home", "lat": 52.52, "lon": 13.405,
                           "tst": 1717243260, "wtst": 1700000000}), "event"),
        (f"{ot}/cmd", j({"_type": "cmd", "action": "reportLocation"}), "command"),
    ]
    node, device = f"spBv1.0/{realm}/{{}}/Edge-7", f"spBv1.0/{realm}/{{}}/Edge-7/PLC1"
    out += [
        (f"spBv1.0/STATE/host-{realm}", j({"online": True, "timestamp": 1717243199000}), "event"),
        (node.format("NBIRTH"), bytes.fromhex(SPARKPLUG["nbirth"]), "data"),
        (device.format("DBIRTH"), bytes.fromhex(SPARKPLUG["dbirth"]), "data"),
        (node.format("NDATA"), bytes.fromhex(SPARKPLUG["ndata"]), "data"),
        (device.format("DDATA"), bytes.fromhex(SPARKPLUG["ddata"]), "data"),
        (device.format("DCMD"), bytes.fromhex(SPARKPLUG["ddeath"]), "command"),
        (device.format("DDEATH"), bytes.fromhex(SPARKPLUG["ddeath"]), "event"),
        (node.format("NDEATH"), bytes.fromhex(SPARKPLUG["ndeath"]), "event"),
    ]
    return out

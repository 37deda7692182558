"""Real-world payloads, table-driven: each decoder yields exactly these records."""

import base64
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from ipaddress import ip_address, ip_network
from uuid import UUID
from zoneinfo import ZoneInfo

import cbor2
import msgpack
import pytest

from lorrygate.decoding import DECODERS
from lorrygate.model import Address, Message, Record

RECEIVED = 1_717_243_200.5  # 2024-06-01T12:00:00.5Z
R = 1_717_243_200_500_000_000
T = 1_717_243_200_000_000_000  # 2024-06-01T12:00:00Z
T2 = 1_676_908_939_000_000_000  # 2023-02-20T16:02:19Z
DATA = Address("r", "n", "g", "d", "data", "data.json")


def field(name):
    return Address("r", "n", "g", "d", "data", f"data/{name}", name)


def message(payload):
    return Message("r/n/g/d/data.json", payload, 1, False, RECEIVED, "#")


def decode(name, payload, address=DATA, tz=None):
    decoder = DECODERS[name](timezone=tz)
    return decoder.decode(Message("r/n/g/d/data.json", payload, 1, False, RECEIVED, "#"), address)


TASMOTA_SENSOR = b"""{"Time":"2024-06-01T14:00:00","ENERGY":{"TotalStartTime":"2023-01-01T00:00:00","Total":12.345,
"Yesterday":0.512,"Today":0.128,"Power":42,"ApparentPower":50,"ReactivePower":27,"Factor":0.84,"Voltage":231,
"Current":0.216}}"""
TASMOTA_DS18B20 = b'{"Time":"2024-06-01T14:00:00","DS18B20":{"Id":"0316A279B1FF","Temperature":21.4},"TempUnit":"C"}'
#: a two-channel device (a Shelly 2.5 on Tasmota; three-phase meters the same): ENERGY values a channel as lists
TASMOTA_TWO_CHANNELS = (b'{"Time":"2024-06-01T14:00:00","Switch1":"ON","Switch2":"OFF","ANALOG":{"Temperature":45.2},'
                        b'"ENERGY":{"TotalStartTime":"2023-01-01T00:00:00","Total":0.019,"Today":0.019,"Period":[0,0],'
                        b'"Power":[12,0],"Factor":[0.86,0.00],"Frequency":50,"Voltage":231,"Current":[0.060,0.000]},'
                        b'"Names":["a","b"],"TempUnit":"C"}')
TASMOTA_STATE = b"""{"Time":"2024-06-01T14:00:00","Uptime":"0T01:02:03","UptimeSec":3723,"Heap":25,"SleepMode":"Dynamic",
"Sleep":50,"LoadAvg":19,"MqttCount":1,"POWER":"ON","Wifi":{"AP":1,"SSId":"iot","BSSId":"AA:BB:CC:DD:EE:FF",
"Channel":6,"Mode":"11n","RSSI":76,"Signal":-62,"LinkCount":1,"Downtime":"0T00:00:03"}}"""
AIRROHR = b"""{"esp8266id": "12345678", "software_version": "NRZ-2020-129", "sensordatavalues":[
{"value_type":"SDS_P1","value":"14.53"},{"value_type":"SDS_P2","value":"6.27"},
{"value_type":"BME280_temperature","value":"21.84"},{"value_type":"BME280_pressure","value":"100513.56"},
{"value_type":"BME280_humidity","value":"48.12"},{"value_type":"samples","value":"868472"},
{"value_type":"signal","value":"-67"}]}"""
#: a Fine Offset (Froggit DP1500, GW1000 firmware) station's "customized upload" form, as the HTTP source makes
#: it JSON: every value text
ECOWITT = json.dumps({
    "PASSKEY": "6BB1A3F0C2D4E5F60718293A4B5C6D7E", "stationtype": "GW1000A_V1.6.8", "dateutc": "2024-06-01 12:00:00",
    "tempinf": "64.6", "humidityin": "59", "baromrelin": "28.993", "tempf": "39.6", "humidity": "90",
    "winddir": "237", "windspeedmph": "1.12", "rainratein": "0.000", "wh65batt": "0", "freq": "868M",
    "model": "GW1000_Pro"}).encode()
TTN_UPLINK = json.dumps({
    "end_device_ids": {"device_id": "lht65-01", "application_ids": {"application_id": "climate"},
                       "dev_eui": "A840410001812345", "join_eui": "A000000000000100", "dev_addr": "260B1234"},
    "correlation_ids": ["as:up:01H..."],
    "received_at": "2024-06-01T12:00:00.123456789Z",
    "uplink_message": {
        "session_key_id": "AXA=", "f_port": 2, "f_cnt": 1234, "frm_payload": "y/YLDQN2AQrdf/8=",
        "decoded_payload": {"BatV": 3.062, "Bat_status": 3, "Ext_sensor": "Temperature Sensor", "Hum_SHT": 88.6,
                            "TempC_DS": 27.81, "TempC_SHT": 28.29},
        "rx_metadata": [
            {"gateway_ids": {"gateway_id": "gw-roof", "eui": "B827EBFFFE000001"}, "rssi": -112, "channel_rssi": -112,
             "snr": -4.25},
            {"gateway_ids": {"gateway_id": "gw-office", "eui": "B827EBFFFE000002"}, "rssi": -71, "channel_rssi": -71,
             "snr": 9.5},
        ],
        "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}, "frequency": "868100000"},
        "received_at": "2024-06-01T12:00:00.098765432Z", "consumed_airtime": "0.061696s",
    },
}).encode()
TTN_NO_FORMATTER = json.dumps({"end_device_ids": {"device_id": "x"}, "uplink_message": {"f_port": 2, "frm_payload": "AQI="}}).encode()
CHIRPSTACK_UP = json.dumps({
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d", "time": "2024-06-01T12:00:00.555Z",
    "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
                   "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97", "applicationName": "climate",
                   "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad", "deviceProfileName": "LHT65",
                   "deviceName": "lht65-02", "devEui": "a840410001812346", "tags": {}},
    "devAddr": "00189440", "adr": True, "dr": 5, "fCnt": 77, "fPort": 2, "confirmed": False,
    "data": "y/YLDQN2AQrdf/8=", "object": {"TempC_SHT": 28.29, "Hum_SHT": 88.6, "battery": {"voltage": 3.062}},
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36, "snr": 10.5},
               {"gatewayId": "0016c001f153a14d", "uplinkId": 4217106256, "rssi": -90, "snr": 2.0}],
    "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7}}},
}).encode()

#: ChirpStack v3 (and LoRa App Server v2) uplinks: "json_v3" marshaler (ids in hex, the decoded ``object``) and
#: "json" (protobuf's JSON: ids in base64, the decoded object as the text ``objectJSON``)
CHIRPSTACK_V3_RX = [{"gatewayID": "0303030303030303", "name": "rooftop", "time": "2024-06-01T12:00:00.25Z", "rssi": -57,
                     "loRaSNR": 10, "location": {"latitude": 52.37, "longitude": 4.91, "altitude": 10.5}},
                    {"gatewayID": "0404040404040404", "rssi": -90, "loRaSNR": 1.5}]
CHIRPSTACK_V3_UP = json.dumps({
    "applicationID": "123", "applicationName": "climate", "deviceName": "garden-sensor", "devEUI": "0202020202020202",
    "rxInfo": CHIRPSTACK_V3_RX, "txInfo": {"frequency": 868100000, "dr": 5}, "adr": False, "fCnt": 10, "fPort": 5,
    "data": "AQ==", "object": {"temperatureSensor": {"1": 25}, "humiditySensor": {"1": 32}}, "tags": {"site": "a"},
}).encode()
CHIRPSTACK_V3_JSON_UP = json.dumps({
    "applicationID": "123", "applicationName": "climate", "deviceName": "garden-sensor", "devEUI": "AgICAgICAgI=",
    "rxInfo": [{**CHIRPSTACK_V3_RX[0], "gatewayID": "AwMDAwMDAwM=", "uplinkID": "jhMh8Gq6RAOChSKbi83RHQ=="},
               {**CHIRPSTACK_V3_RX[1], "gatewayID": "BAQEBAQEBAQ="}],
    "txInfo": {"frequency": 868100000, "modulation": "LORA"}, "adr": True, "dr": 1, "fCnt": 10, "fPort": 5, "data": "AQ==",
    "objectJSON": '{"temperatureSensor":{"1":25},"humiditySensor":{"1":32}}', "tags": {}, "confirmedUplink": False,
    "devAddr": "AFE5Qg==", "publishedAt": "2024-06-01T12:00:00.5Z",
}).encode()
CHIRPSTACK_V3_FIELDS = {"temperatureSensor.1": 25, "humiditySensor.1": 32, "fPort": 5, "fCnt": 10, "rssi": -57, "snr": 10}
CHIRPSTACK_V3_TAGS = {"devEui": "0202020202020202", "deviceName": "garden-sensor", "applicationName": "climate",
                      "gatewayId": "0303030303030303"}


def muon_dict(*pairs):
    return b"\x92" + b"".join(pairs) + b"\x93"


def mstr(text):
    return text.encode() + b"\x00"


def sleb(value):
    """Signed LEB128, written out here so the test does not trust the reader's own code."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


SAMPLES = [
    # -- JSON --
    ("json", b'{"temperature": 21.5, "humidity": 48}', DATA, [Record(R, {"temperature": 21.5, "humidity": 48})]),
    ("json", b'{"time": 1717243200, "temperature": 21.5}', DATA, [Record(T, {"temperature": 21.5})]),
    ("json", b'{"timestamp": 1717243200000, "v": 1}', DATA, [Record(T, {"v": 1})]),
    ("json", b'{"datetime": "2024-06-01T12:00:00Z", "v": 1}', DATA, [Record(T, {"v": 1})]),
    ("json", b'{"dateTime": "2024-06-01T14:00:00+02:00", "v": 1}', DATA, [Record(T, {"v": 1})]),
    ("json", b'{"ts": 1717243200000000000, "v": 1}', DATA, [Record(T, {"v": 1})]),
    ("json", b'[{"v": 1, "ts": 1717243200}, {"v": 2, "ts": 1717243201}]', DATA,
     [Record(T, {"v": 1}), Record(T + 10**9, {"v": 2})]),
    ("json", b'{"wifi": {"rssi": -60}, "tags": ["a"]}', DATA, [Record(R, {"wifi": {"rssi": -60}, "tags": ["a"]})]),
    ("json", b"21.5", field("temperature"), [Record(R, {"temperature": 21.5})]),
    # -- NDJSON --
    ("ndjson", b'{"v": 1, "time": 1717243200}\n{"v": 2, "time": 1717243201}\n', DATA,
     [Record(T, {"v": 1}), Record(T + 10**9, {"v": 2})]),
    ("ndjson", b'{"v": 1}\r\n\r\n{"v": 2}', DATA, [Record(R, {"v": 1}), Record(R, {"v": 2})]),
    ("ndjson", b'{"sensor": "bme280", "t": 21.0}', DATA, [Record(R, {"sensor": "bme280", "t": 21.0})]),
    # -- CSV --
    ("csv", b"time,temperature,humidity\n2024-06-01T12:00:00Z,21.5,48\n2024-06-01T12:00:01Z,21.6,47.5\n", DATA,
     [Record(T, {"temperature": 21.5, "humidity": 48}), Record(T + 10**9, {"temperature": 21.6, "humidity": 47.5})]),
    ("csv", b'sensor,value\n"bme280, outdoor",12.5\n', DATA, [Record(R, {"sensor": "bme280, outdoor", "value": 12.5})]),
    ("csv", b"a,b,c\n1,,3\n", DATA, [Record(R, {"a": 1, "c": 3})]),
    ("csv", b"ok,count\ntrue,7\n", DATA, [Record(R, {"ok": True, "count": 7})]),
    # -- key=value --
    ("kv", b"temperature=21.5&humidity=48&sensor=bme280", DATA,
     [Record(R, {"temperature": 21.5, "humidity": 48, "sensor": "bme280"})]),
    ("kv", b"temperature=21.5,humidity=48", DATA, [Record(R, {"temperature": 21.5, "humidity": 48})]),
    ("kv", b"a=1;b=2", DATA, [Record(R, {"a": 1, "b": 2})]),
    ("kv", b"rssi=-71 snr=9.5", DATA, [Record(R, {"rssi": -71, "snr": 9.5})]),
    ("kv", b"name=living%20room&t=20", DATA, [Record(R, {"name": "living room", "t": 20})]),
    ("kv", b"ts=1717243200&v=3", DATA, [Record(T, {"v": 3})]),
    # -- single values --
    ("value", b"21.5", field("temperature"), [Record(R, {"temperature": 21.5})]),
    ("value", b"-7", field("rssi"), [Record(R, {"rssi": -7})]),
    ("value", b"ON", field("power"), [Record(R, {"power": "ON"})]),
    ("value", b" true\n", field("door"), [Record(R, {"door": True})]),
    # -- Tasmota --
    ("tasmota", TASMOTA_SENSOR, DATA, [Record(T + 2 * 3600 * 10**9, {
        "ENERGY.TotalStartTime": "2023-01-01T00:00:00", "ENERGY.Total": 12.345, "ENERGY.Yesterday": 0.512,
        "ENERGY.Today": 0.128, "ENERGY.Power": 42, "ENERGY.ApparentPower": 50, "ENERGY.ReactivePower": 27,
        "ENERGY.Factor": 0.84, "ENERGY.Voltage": 231, "ENERGY.Current": 0.216})]),
    ("tasmota", TASMOTA_DS18B20, DATA,
     [Record(T + 2 * 3600 * 10**9, {"DS18B20.Id": "0316A279B1FF", "DS18B20.Temperature": 21.4, "TempUnit": "C"})]),
    ("tasmota", TASMOTA_TWO_CHANNELS, DATA, [Record(T + 2 * 3600 * 10**9, {
        "Switch1": "ON", "Switch2": "OFF", "ANALOG.Temperature": 45.2, "ENERGY.TotalStartTime": "2023-01-01T00:00:00",
        "ENERGY.Total": 0.019, "ENERGY.Today": 0.019, "ENERGY.Period.0": 0, "ENERGY.Period.1": 0,
        "ENERGY.Power.0": 12, "ENERGY.Power.1": 0, "ENERGY.Factor.0": 0.86, "ENERGY.Factor.1": 0.0,
        "ENERGY.Frequency": 50, "ENERGY.Voltage": 231, "ENERGY.Current.0": 0.06, "ENERGY.Current.1": 0.0,
        "Names": ["a", "b"], "TempUnit": "C"})]),
    ("tasmota", TASMOTA_STATE, DATA, [Record(T + 2 * 3600 * 10**9, {
        "Uptime": "0T01:02:03", "UptimeSec": 3723, "Heap": 25, "SleepMode": "Dynamic", "Sleep": 50, "LoadAvg": 19,
        "MqttCount": 1, "POWER": "ON", "Wifi.AP": 1, "Wifi.SSId": "iot", "Wifi.BSSId": "AA:BB:CC:DD:EE:FF",
        "Wifi.Channel": 6, "Wifi.Mode": "11n", "Wifi.RSSI": 76, "Wifi.Signal": -62, "Wifi.LinkCount": 1,
        "Wifi.Downtime": "0T00:00:03"})]),
    # -- airrohr / sensor.community --
    ("airrohr", AIRROHR, DATA, [Record(R, {
        "SDS_P1": 14.53, "SDS_P2": 6.27, "BME280_temperature": 21.84, "BME280_pressure": 100513.56,
        "BME280_humidity": 48.12, "samples": 868472, "signal": -67},
        {"esp8266id": "12345678", "software_version": "NRZ-2020-129"})]),
    ("airrohr", b'{"sensordatavalues":[{"value_type":"temperature","value":21.5}]}', DATA,
     [Record(R, {"temperature": 21.5})]),
    # -- Fine Offset (Ecowitt protocol): no PASSKEY stored, dateutc the time (UTC), "now" the receive time --
    ("ecowitt", ECOWITT, DATA, [Record(T, {
        "tempinf": 64.6, "humidityin": 59, "baromrelin": 28.993, "tempf": 39.6, "humidity": 90, "winddir": 237,
        "windspeedmph": 1.12, "rainratein": 0.0, "wh65batt": 0},
        {"stationtype": "GW1000A_V1.6.8", "model": "GW1000_Pro", "freq": "868M"})]),
    ("ecowitt", b'{"PASSKEY": "6BB1", "stationtype": "EasyWeatherV1.6.4", "dateutc": "now", "tempf": "48.4"}', DATA,
     [Record(R, {"tempf": 48.4}, {"stationtype": "EasyWeatherV1.6.4"})]),
    # the form itself, as the station posts it (a form-to-MQTT bridge publishes it as it came)
    ("ecowitt", b"PASSKEY=6BB1&stationtype=EasyWeatherV1.6.4&dateutc=2023-02-20+16%3A02%3A19&tempf=48.4&model=", DATA,
     [Record(T2, {"tempf": 48.4}, {"stationtype": "EasyWeatherV1.6.4", "model": ""})]),
    # -- The Things Stack v3 --
    ("ttn", TTN_UPLINK, DATA, [Record(1_717_243_200_098_765_432, {
        "BatV": 3.062, "Bat_status": 3, "Ext_sensor": "Temperature Sensor", "Hum_SHT": 88.6, "TempC_DS": 27.81,
        "TempC_SHT": 28.29, "f_port": 2, "f_cnt": 1234, "rssi": -71, "snr": 9.5},
        {"device_id": "lht65-01", "dev_eui": "A840410001812345", "application_id": "climate",
         "gateway_id": "gw-office"})]),
    # -- ChirpStack v4 --
    ("chirpstack", CHIRPSTACK_UP, DATA, [Record(1_717_243_200_555_000_000, {
        "TempC_SHT": 28.29, "Hum_SHT": 88.6, "battery.voltage": 3.062, "fPort": 2, "fCnt": 77, "rssi": -36,
        "snr": 10.5},
        {"devEui": "a840410001812346", "deviceName": "lht65-02", "applicationName": "climate",
         "gatewayId": "0016c001f153a14c"})]),
    # -- ChirpStack v3 and LoRa App Server v2: the time is publishedAt, else the best gateway's --
    ("chirpstack", CHIRPSTACK_V3_UP, DATA, [Record(1_717_243_200_250_000_000, CHIRPSTACK_V3_FIELDS, CHIRPSTACK_V3_TAGS)]),
    ("chirpstack", CHIRPSTACK_V3_JSON_UP, DATA,
     [Record(1_717_243_200_500_000_000, CHIRPSTACK_V3_FIELDS, CHIRPSTACK_V3_TAGS)]),
    # -- InfluxDB line protocol (Telegraf's own format) --
    ("influx", b"weather,site=roof temperature=21.5,humidity=48i,ok=t,note=\"a b\" 1717243200000000000", DATA,
     [Record(T, {"humidity": 48, "note": "a b", "ok": True, "temperature": 21.5},
             {"measurement": "weather", "site": "roof"})]),
    ("influx", b"# Telegraf\ncpu,host=gw-1 usage_idle=97.5 1717243200\nmem,host=gw-1 used_percent=41.2\n", DATA,
     [Record(T, {"usage_idle": 97.5}, {"measurement": "cpu", "host": "gw-1"}),
      Record(R, {"used_percent": 41.2}, {"measurement": "mem", "host": "gw-1"})]),
    # -- Telegraf's JSON (its MQTT output with data_format = "json"; one metric, or a batch) --
    ("telegraf", b'{"fields":{"usage_idle":97.2,"usage_user":1.5},"name":"cpu","tags":{"cpu":"cpu-total",'
                 b'"host":"gw-1"},"timestamp":1717243200}', DATA,
     [Record(T, {"usage_idle": 97.2, "usage_user": 1.5}, {"measurement": "cpu", "cpu": "cpu-total", "host": "gw-1"})]),
    ("telegraf", b'{"metrics":[{"fields":{"used_percent":41.2},"name":"mem","tags":{"host":"gw-1"},'
                 b'"timestamp":1717243200000},{"fields":{"load1":0.4},"name":"system","tags":{},'
                 b'"timestamp":1717243200500}]}', DATA,
     [Record(T, {"used_percent": 41.2}, {"measurement": "mem", "host": "gw-1"}),
      Record(R, {"load1": 0.4}, {"measurement": "system"})]),
    # -- Homie --
    ("homie", b"21.5", field("temperature"), [Record(R, {"temperature": 21.5})]),
    ("homie", b"true", field("on"), [Record(R, {"on": True})]),
    ("homie", b"True", field("label"), [Record(R, {"label": "True"})]),
    ("homie", b"255,128,0", field("color"), [Record(R, {"color": "255,128,0"})]),
    # -- MessagePack --
    ("msgpack", msgpack.packb({"temperature": 21.5, "humidity": 48, "time": 1717243200}), DATA,
     [Record(T, {"temperature": 21.5, "humidity": 48})]),
    ("msgpack", msgpack.packb([{"v": 1}, {"v": 2}]), DATA, [Record(R, {"v": 1}), Record(R, {"v": 2})]),
    ("msgpack", msgpack.packb({"time": datetime(2024, 6, 1, 12, tzinfo=UTC), "v": b"\x01"}, datetime=True),
     DATA, [Record(T, {"v": b"\x01"})]),
    # -- CBOR --
    ("cbor", cbor2.dumps({"temperature": 21.5, "humidity": 48}), DATA, [Record(R, {"temperature": 21.5, "humidity": 48})]),
    ("cbor", cbor2.dumps({"time": datetime(2024, 6, 1, 12, tzinfo=UTC), "v": 1}, datetime_as_timestamp=False),
     DATA, [Record(T, {"v": 1})]),
    ("cbor", cbor2.dumps({"ts": 1717243200, "nested": {"a": [1, 2]}}), DATA, [Record(T, {"nested": {"a": [1, 2]}})]),
    # (CBOR's typed values, tags cbor2 reads into Python's types: they were JSON text of Python's, "1.1" quoted)
    ("cbor", cbor2.dumps({"d": Decimal("1.1"), "n": Decimal("42"), "b": cbor2.CBORTag(5, [-1, 3]),
                          "f": Fraction(1, 4), "at": datetime(2024, 6, 1, 12, tzinfo=UTC), "on": date(2024, 1, 2),
                          "u": UUID(int=5), "ip": ip_address("10.0.0.1"), "net": ip_network("10.0.0.0/8"),
                          "re": re.compile("a+"), "mime": cbor2.CBORTag(36, "Subject: x\n\nhi"),
                          "odd": cbor2.CBORTag(99, 5)}, datetime_as_timestamp=True), DATA,
     [Record(R, {"d": 1.1, "n": 42, "b": 1.5, "f": 0.25, "at": "2024-06-01T12:00:00+00:00", "on": "2024-01-02",
                 "u": "00000000-0000-0000-0000-000000000005", "ip": "10.0.0.1", "net": "10.0.0.0/8", "re": "a+",
                 "mime": "Subject: x\n\nhi", "odd": "CBORTag(99, 5)"})]),
    # -- Muon --
    ("muon", muon_dict(mstr("temperature"), b"\xba" + __import__("struct").pack("<d", 21.5), mstr("humidity"),
                       b"\xbb\x30"), DATA, [Record(R, {"temperature": 21.5, "humidity": 48})]),
    ("muon", b"\x8f\xb5\x30\x31" + muon_dict(mstr("time"), b"\xbb" + sleb(1717243200),
                                              mstr("ok"), b"\xab"), DATA, [Record(T, {"ok": True})]),
    ("muon", b"\x90" + muon_dict(mstr("v"), b"\xa1") + muon_dict(mstr("v"), b"\xa2") + b"\x91", DATA,
     [Record(R, {"v": 1}), Record(R, {"v": 2})]),
]


@pytest.mark.parametrize("name, payload, address, records", SAMPLES,
                         ids=[f"{i:02d}-{s[0]}" for i, s in enumerate(SAMPLES)])
def test_samples(name, payload, address, records):
    """Each real-world payload gives exactly the documented records."""
    assert decode(name, payload, address) == records


@pytest.mark.parametrize("name, dumps", [("msgpack", lambda document: msgpack.packb(document, use_bin_type=True)),
                                          ("cbor", cbor2.dumps)])
def test_a_binary_maps_keys_are_names_each_its_own(name, dumps):
    """MessagePack's and CBOR's maps may have keys of bytes or numbers: a key of bytes was the name ``b'temp'``
    (Python's repr), and ``3`` beside ``"3"`` were one name, the first value lost. A key of bytes is its text
    (``\\xNN`` for a byte UTF-8 cannot read), a key whose text another has gets ``_2``."""
    document = {"temp": 20.5, b"temp": 21.5, 3: 1, "3": 2, b"\xffid": 7, "inner": {b"a": 1}}
    assert decode(name, dumps(document)) == [
        Record(R, {"temp": 20.5, "temp_2": 21.5, "3": 1, "3_2": 2, "\\xffid": 7, "inner": {"a": 1}})]


def test_a_cbor_set_is_a_list_in_the_same_order_each_time():
    """CBOR's sets (tag 258) were stored as Python's text of them (``"{'b', 'a'}"``), in an order that differs
    from one run to the next: a list, sorted."""
    assert decode("cbor", cbor2.dumps({"flags": {"b", "a", "c"}, "ids": frozenset([2, 1])})) == [
        Record(R, {"flags": ["a", "b", "c"], "ids": [1, 2]})]


def test_at_least_forty_samples():
    """The table holds at least 40 samples across the vendor and binary formats."""
    assert len(SAMPLES) >= 40
    assert {"tasmota", "airrohr", "ecowitt", "ttn", "chirpstack", "csv", "ndjson", "kv", "msgpack", "cbor", "muon", "influx",
            "telegraf"} <= {
        s[0] for s in SAMPLES}


def test_naive_time_in_the_channel_timezone():
    """A time without an offset is read in the channel's timezone."""
    assert decode("json", b'{"time": "2024-06-01T14:00:00", "v": 1}', tz=ZoneInfo("Europe/Berlin")) == [
        Record(T, {"v": 1})]
    assert decode("tasmota", b'{"Time": "2024-01-01T13:00:00", "v": 1}', tz=ZoneInfo("Europe/Berlin")) == [
        Record(1_704_110_400_000_000_000, {"v": 1})]


def test_epoch_nanoseconds_keep_full_precision():
    """An epoch in nanoseconds survives to the last digit; so do 9 ISO fraction digits."""
    assert decode("json", b'{"time": 1717243200123456789}')[0].time == 1_717_243_200_123_456_789
    assert decode("json", b'{"time": "2024-06-01T12:00:00.123456789Z"}')[0].time == 1_717_243_200_123_456_789


def test_offset_lands_in_utc():
    """2024-06-01T12:00:00-05:00 is stored as 17:00 UTC."""
    assert decode("json", b'{"time": "2024-06-01T12:00:00-05:00"}')[0].time == T + 5 * 3600 * 10**9


def test_ttn_without_decoded_payload_is_declined_with_a_hint():
    """An uplink without a payload formatter is declined, saying how to fix it."""
    from lorrygate.errors import Declined

    with pytest.raises(Declined, match="set a payload formatter"):
        decode("ttn", TTN_NO_FORMATTER)
    assert base64.b64decode("AQI=") == b"\x01\x02"


#: a value of each JSON type, to put where a payload has another
OTHER_TYPES = (None, True, 0, -1.5, 1e308, "", "x", [], {}, [1], {"a": 1}, 2**70)


def mutants(document):
    """``document`` with the value at each of its places (objects' keys, the first items of lists) replaced by each
    of `OTHER_TYPES` and by each of its own mutants, and (an object's) without it."""
    if type(document) is dict:
        places = list(document.items())
    elif type(document) is list:
        places = list(enumerate(document[:2]))
    else:
        return
    for key, value in places:
        for other in (*OTHER_TYPES, *mutants(value)):
            changed = json.loads(json.dumps(document))
            changed[key] = other
            yield changed
        if type(document) is dict:
            changed = json.loads(json.dumps(document))
            del changed[key]
            yield changed


@pytest.mark.parametrize("name, sample", [("ttn", TTN_UPLINK), ("chirpstack", CHIRPSTACK_UP),
                                          ("chirpstack", CHIRPSTACK_V3_UP)])
def test_an_uplink_with_a_value_of_another_type_anywhere_is_read_or_a_decode_error(name, sample):
    """A payload that looks like a network server's uplink but has a value of another type somewhere (ids that
    are a boolean, gateways that are no list): its records, their tags text, or a decode error that says why.
    The decoders broke on such envelopes with an AttributeError or a TypeError (a dead letter that named a line
    of the gateway's code) and gave tags that were no text."""
    from lorrygate.errors import Declined, DecodeError, Ignored

    tried = 0
    for mutant in mutants(json.loads(sample)):
        tried += 1
        try:
            records = decode(name, json.dumps(mutant).encode())
        except (Declined, DecodeError, Ignored):
            continue
        for record in records:
            assert all(type(tag) is str for tag in record.tags.values()), (mutant, record.tags)
            assert type(record.time) is int
    assert tried > 300


def test_a_tasmota_device_without_a_valid_clock_gets_the_receive_time():
    """Tasmota reports the time since boot as 1970 until NTP synchronised its clock (its START_VALID_TIME,
    2016-01-01): such a time is no time (rows in 1970, a CrateDB partition for January 1970), the receive
    time is. A time from 2016 on is the device's."""
    berlin = ZoneInfo("Europe/Berlin")
    assert decode("tasmota", b'{"Time": "1970-01-01T00:00:42", "v": 1}', tz=berlin) == [Record(R, {"v": 1})]
    assert decode("tasmota", b'{"Time": "2015-12-31T22:59:59", "v": 1}') == [Record(R, {"v": 1})]
    assert decode("tasmota", b'{"Time": "2016-01-01T00:00:00", "v": 1}') == [Record(1_451_606_400 * 10**9, {"v": 1})]


def test_tasmotas_epoch_beside_its_local_time_is_the_time():
    """``TimeStamp 1``: Tasmota's local time (here CEST) and ``Epoch``, UTC seconds, beside it. The local time
    read in the channel's timezone (UTC unless set) put the rows two hours off; the epoch is the time now, and
    not a field. ``TimeStamp 2`` (the epoch as ``Time``) and an unset clock's small epoch as before."""
    payload = b'{"Time": "2024-06-01T14:00:00", "Epoch": 1717243200, "ENERGY": {"Power": 42}}'
    assert decode("tasmota", payload) == [Record(T, {"ENERGY.Power": 42})]
    assert decode("tasmota", b'{"Time": 1717243200, "v": 1}') == [Record(T, {"v": 1})]
    assert decode("tasmota", b'{"Time": "1970-01-01T00:00:42", "Epoch": 42, "v": 1}') == [Record(R, {"v": 1})]
    # an Epoch that is no epoch (text, a float) stays a field, and the local time is read as before
    assert decode("tasmota", b'{"Time": "2024-06-01T12:00:00", "Epoch": "x", "v": 1}') == [
        Record(T, {"Epoch": "x", "v": 1})]


@pytest.mark.parametrize("payload", [b"temp=21 hum=48", b"21.5", b"ON", b"{\"t\": 1}", b"a,b\n1,2", b""])
def test_what_is_no_line_protocol_is_declined(payload):
    """key=value pairs (line protocol would read ``temp=21`` as a measurement), single values, JSON, CSV: declined,
    for the next decoder of the chain."""
    from lorrygate.decoding.lineprotocol import InfluxDecoder
    from lorrygate.errors import Declined

    with pytest.raises(Declined):
        InfluxDecoder().decode(message(payload), DATA)


@pytest.mark.parametrize("payload", [b'{"fields": {"a": 1}}', b'{"fields": 1, "name": "x", "timestamp": 1}',
                                     b'{"metrics": [{"a": 1}]}', b'[{"fields": {}}]', b'"fields"'])
def test_what_is_no_telegraf_json_is_declined_for_the_json_decoder(payload):
    from lorrygate.decoding.lineprotocol import TelegrafJsonDecoder
    from lorrygate.errors import Declined

    with pytest.raises(Declined):
        TelegrafJsonDecoder().decode(message(payload), DATA)


def test_a_telegraf_batch_with_an_item_that_is_no_metric_is_a_decode_error_that_names_it():
    from lorrygate.decoding.lineprotocol import TelegrafJsonDecoder
    from lorrygate.errors import DecodeError

    good = '{"fields": {"a": 1}, "name": "x", "timestamp": 1717243200}'
    with pytest.raises(DecodeError, match="metric 2 of the batch is no Telegraf metric"):
        TelegrafJsonDecoder().decode(message(f'{{"metrics": [{good}, {{"a": 1}}]}}'.encode()), DATA)
    with pytest.raises(DecodeError, match="metric 1: timestamp"):
        TelegrafJsonDecoder().decode(message(b'{"fields": {"a": 1}, "name": "x", "timestamp": "noon"}'), DATA)


def test_a_telegraf_metric_whose_timestamp_is_no_time_is_kept_alone_the_others_stored():
    """Kept as a batch of its own, which this decoder takes again on a replay (the same error, nothing stored)."""
    import json

    from lorrygate.decoding.lineprotocol import TelegrafJsonDecoder
    from lorrygate.errors import DecodeError, PartlyDecoded

    good = {"fields": {"a": 1}, "name": "x", "tags": {"host": "h1"}, "timestamp": 1717243200}
    bad = {"fields": {"a": 2}, "name": "x", "tags": {"host": "h2"}, "timestamp": "noon"}
    with pytest.raises(PartlyDecoded) as caught:
        TelegrafJsonDecoder().decode(message(json.dumps({"metrics": [good, bad, good]}).encode()), DATA)
    partly = caught.value
    assert [(record.fields, record.tags) for record in partly.records] == [
        ({"a": 1}, {"measurement": "x", "host": "h1"})] * 2
    assert (partly.failed, json.loads(partly.payload)) == ("the metric", {"metrics": [bad]})
    assert partly.reason.startswith("metric 2: timestamp: ")
    with pytest.raises(DecodeError, match="metric 1: timestamp") as again:
        TelegrafJsonDecoder().decode(message(partly.payload), DATA)
    assert not isinstance(again.value, PartlyDecoded)


def test_a_broken_line_after_good_ones_is_a_decode_error_that_names_it():
    from lorrygate.decoding.lineprotocol import InfluxDecoder
    from lorrygate.errors import DecodeError

    with pytest.raises(DecodeError, match="line 2: .*'cpu usage='"):
        InfluxDecoder().decode(message(b"cpu usage=1\ncpu usage=\n"), DATA)
    with pytest.raises(DecodeError, match="line 1: a time -99999999999 is outside the years 1 to 9999"):
        InfluxDecoder().decode(message(b"cpu usage=1 -99999999999"), DATA)


def test_a_fine_offset_upload_with_a_bad_time_is_an_error_that_says_how_to_fix_it_and_others_are_passed_on():
    """A station whose clock sends no time: a clear error (a dead letter); an upload without PASSKEY (a user's
    own JSON on the slot) is passed on to the chain's next decoder."""
    from lorrygate.errors import Declined, DecodeError

    with pytest.raises(DecodeError, match="dateutc '2024-13-45 99:00:00' is no time: .*set its clock"):
        decode("ecowitt", b'{"PASSKEY": "6BB1", "dateutc": "2024-13-45 99:00:00", "tempf": "48.4"}')
    with pytest.raises(Declined, match="no field 'PASSKEY'"):
        decode("ecowitt", b'{"passkey_like": "PASSKEY", "tempf": "48.4"}')
    with pytest.raises(Declined, match="no field 'PASSKEY'"):
        decode("ecowitt", b"passkey_like=PASSKEY&tempf=48.4")
    with pytest.raises(Declined, match="neither a JSON object nor a form"):
        decode("ecowitt", b"PASSKEY: 6BB1, tempf: 48.4")
    with pytest.raises(Declined, match="neither a JSON object nor a form"):
        decode("ecowitt", b"PASSKEY=6BB1&\xff=1")


def test_a_loggers_csv_through_the_repeated_hour_of_the_end_of_summer_time_keeps_its_order():
    """Europe/Berlin, 2026-10-25: 02:00-03:00 comes twice (CEST, then CET). Read as its first occurrence each
    time, the second hour's rows went back an hour; in order, a repeated time before the row above is the
    second. A time with an offset, an unambiguous one and one only out of order stay as written."""
    from zoneinfo import ZoneInfo

    from lorrygate.decoding import DECODERS
    from lorrygate.decoding.timestamps import to_iso
    from lorrygate.model import Message

    csv = (b"Date/Time,temp\n2026-10-25 01:50:00,1\n2026-10-25 02:20:00,2\n2026-10-25 02:50:00,3\n"
           b"2026-10-25 02:10:00,4\n2026-10-25 02:40:00,5\n2026-10-25 03:05:00,6\n2026-10-25 02:30:00+02:00,7\n"
           b"2026-06-01 12:00:00,8\n")
    decoder = DECODERS["csv"](timezone=ZoneInfo("Europe/Berlin"))
    records = decoder.decode(Message("a/b/c/d/data.csv", csv, 1, False, 1.0, "#"), None)
    assert [(to_iso(r.time)[:16], r.fields["temp"]) for r in records] == [
        ("2026-10-24T23:50", 1), ("2026-10-25T00:20", 2), ("2026-10-25T00:50", 3), ("2026-10-25T01:10", 4),
        ("2026-10-25T01:40", 5), ("2026-10-25T02:05", 6), ("2026-10-25T00:30", 7), ("2026-06-01T10:00", 8)]
    # without a zone of its own (UTC) nothing repeats
    utc = DECODERS["csv"]().decode(Message("a/b/c/d/data.csv", csv, 1, False, 1.0, "#"), None)
    assert to_iso(utc[3].time)[:16] == "2026-10-25T02:10"
    # NDJSON and a JSON array of objects alike
    tz = ZoneInfo("Europe/Berlin")
    for name, payload in (("json", b'[{"time": "2026-10-25 02:50:00", "a": 1}, {"time": "2026-10-25 02:10", "a": 2}]'),
                          ("ndjson", b'{"time": "2026-10-25 02:50:00", "a": 1}\n{"time": "2026-10-25 02:10", "a": 2}')):
        records = DECODERS[name](timezone=tz).decode(Message("a/b/c/d/data.json", payload, 1, False, 1.0, "#"), None)
        assert [to_iso(r.time)[:16] for r in records] == ["2026-10-25T00:50", "2026-10-25T01:10"], name

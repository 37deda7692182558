"""
Kotori's own test vectors (daq-tools/kotori, ``test/``), through a WAN
channel configured as a user migrating from Kotori would (no ``decoders``,
the default ``values = kotori``): each is stored as Kotori stores it, or the
difference is listed in docs/topology.rst, "Differences from Kotori", and
asserted here as what lorrygate does instead.
"""

import json

import pytest
from twisted.internet.task import Clock

from lorrygate.config import loads
from lorrygate.decoding.timestamps import to_iso
from lorrygate.model import Message
from lorrygate.service.channel_service import ChannelService
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage

CONFIG = """
[broker:b]
host = localhost
[storage:db]
url = sqlite:///unused.sqlite
[channel:main]
topics = mqttkit-1/#
timezone = Europe/Berlin
"""
RECEIVED = 1_700_000_000.0


@pytest.fixture
def channel():
    settings = loads(CONFIG)
    clock = Clock()
    storage = MemoryStorage()
    batcher = Batcher(storage, clock, max_rows=1)
    service = ChannelService.from_settings(settings, settings.channels[0], {"db": batcher}, clock)
    service.storage = storage
    return service


def send(channel, topic, payload):
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    channel.router(Message(topic, payload, 1, False, RECEIVED, "mqttkit-1/#"))
    return channel.storage


def only_row(storage):
    assert storage.dead_letters == [], storage.dead_letters
    (rows,) = storage.tables.values()
    (record,) = rows
    return dict(record.fields, time=to_iso(record.time))


TOPIC = "mqttkit-1/itest/foo/bar"


def test_json_reading(channel):
    """test_daq_mqtt: {"temperature": 42.84, "humidity": 83.1} on data.json."""
    row = only_row(send(channel, f"{TOPIC}/data.json", {"temperature": 42.84, "humidity": 83.1}))
    assert {k: row[k] for k in ("temperature", "humidity")} == {"temperature": 42.84, "humidity": 83.1}


def test_legacy_suffix(channel):
    """test_mqtt_legacy: the same on message-json."""
    row = only_row(send(channel, f"{TOPIC}/message-json", {"temperature": 42.84, "humidity": 83.1}))
    assert row["temperature"] == 42.84


def test_discrete_values(channel):
    """test_mqtt_to_influxdb_single: one value per topic on data/<field>."""
    storage = send(channel, f"{TOPIC}/data/temperature", b"42.84")
    send(channel, f"{TOPIC}/data/humidity", b"83.1")
    assert storage.dead_letters == []
    (rows,) = storage.tables.values()
    assert [r.fields for r in rows] == [{"temperature": 42.84}, {"humidity": 83.1}]


WEEWX = {"windSpeed10_kph": "5.78725803977", "cloudbase_meter": "773.082217509", "outTemp_C": "3.55555555556",
         "consBatteryVoltage_volt": "4.72", "dateTime": "1492467300.0", "usUnits": "16.0", "monthET": "1.32"}


@pytest.mark.parametrize("suffix", ["data.json", "loop"])
def test_weewx_loop_packet(channel, suffix):
    """test_weewx: every value a string; Kotori stores numbers and dateTime as the time."""
    row = only_row(send(channel, f"{TOPIC}/{suffix}", WEEWX))
    assert row["time"] == "2017-04-17T22:15:00.000000000Z"
    assert (row["outTemp_C"], row["windSpeed10_kph"], row["cloudbase_meter"], row["consBatteryVoltage_volt"]) == (
        3.55555555556, 5.78725803977, 773.082217509, 4.72)


def test_tasmota_sonoff_sc(channel):
    """test_tasmota_sonoff_sc: nested sensor values as dotted names, Time in the channel's zone."""
    payload = {"Time": "2019-06-02T22:13:07",
               "SonoffSC": {"Temperature": 25, "Humidity": 15, "Light": 20, "Noise": 10, "AirQuality": 90},
               "TempUnit": "C"}
    row = only_row(send(channel, f"{TOPIC}/tele/SENSOR", payload))
    assert row["time"] == "2019-06-02T20:13:07.000000000Z"
    assert {k: v for k, v in row.items() if k.startswith("SonoffSC.")} == {
        "SonoffSC.Temperature": 25, "SonoffSC.Humidity": 15, "SonoffSC.Light": 20, "SonoffSC.Noise": 10,
        "SonoffSC.AirQuality": 90}
    assert row["TempUnit"] == "C"  # a difference: Kotori drops top-level text


def test_tasmota_wemos_multi(channel):
    """test_tasmota_wemos_multi: DS18x20 sensors by index."""
    payload = {"Time": "2017-10-05T22:39:45", "DS18x20": {
        "DS1": {"Type": "DS18B20", "Address": "28FF4CBFA41604C4", "Temperature": 25.37},
        "DS2": {"Type": "DS18B20", "Address": "28FF1E7FA116035D", "Temperature": 30.44}},
        "DHT22": {"Temperature": 33.2, "Humidity": 30}, "TempUnit": "C"}
    row = only_row(send(channel, f"{TOPIC}/tele/SENSOR", payload))
    assert row["time"] == "2017-10-05T20:39:45.000000000Z"
    assert (row["DS18x20.DS1.Temperature"], row["DS18x20.DS2.Temperature"], row["DHT22.Temperature"],
            row["DHT22.Humidity"]) == (25.37, 30.44, 33.2, 30)
    assert row["DS18x20.DS1.Address"] == "28FF4CBFA41604C4"  # a difference: Kotori drops Type and Address


def test_tasmota_state(channel):
    """test_tasmota_state: STATE values under Device., as Kotori names them."""
    payload = {"Time": "2019-06-02T22:13:07", "Uptime": "1T18:10:35", "Vcc": 3.182, "SleepMode": "Dynamic",
               "Sleep": 50, "LoadAvg": 19, "Wifi": {"AP": 1, "SSId": "x", "BSSId": "A0:F3:C1:00:00:00",
                                                    "Channel": 1, "RSSI": 100, "LinkCount": 1,
                                                    "Downtime": "0T00:00:07"}}
    row = only_row(send(channel, f"{TOPIC}/tele/STATE", payload))
    assert row["time"] == "2019-06-02T20:13:07.000000000Z"
    kotori = {"Device.Vcc": 3.182, "Device.Sleep": 50, "Device.LoadAvg": 19, "Device.Wifi.Channel": 1,
              "Device.Wifi.RSSI": 100, "Device.Wifi.LinkCount": 1}
    assert {k: row[k] for k in kotori} == kotori
    assert row["Device.SleepMode"] == "Dynamic"  # a difference: lorrygate keeps the other STATE values too


AIRROHR = {"esp8266id": 12041741, "software_version": "NRZ-2018-123B", "sensordatavalues": [
    {"value_type": "SDS_P1", "value": "35.67"}, {"value_type": "SDS_P2", "value": "17.00"},
    {"value_type": "BME280_temperature", "value": "-2.83"}, {"value_type": "samples", "value": "3016882"},
    {"value_type": "signal", "value": "-66"}]}


@pytest.mark.parametrize("suffix", ["airrohr.json", "custom/airrohr.json"])
def test_airrohr(channel, suffix):
    """test_airrohr: sensordatavalues as numbers; on airrohr.json, also below an extra level."""
    row = only_row(send(channel, f"{TOPIC}/{suffix}", AIRROHR))
    assert {k: row[k] for k in ("SDS_P1", "SDS_P2", "BME280_temperature", "samples", "signal")} == {
        "SDS_P1": 35.67, "SDS_P2": 17.0, "BME280_temperature": -2.83, "samples": 3016882, "signal": -66}


#: Kotori's test_ecowitt (an EasyWeatherPro station's form, as the HTTP source makes it JSON), shortened
ECOWITT = {"PASSKEY": "B950C...[obliterated]", "stationtype": "EasyWeatherPro_V5.0.6", "runtime": "456128",
           "dateutc": "2023-02-20 16:02:19", "tempinf": "69.8", "humidityin": "47", "baromrelin": "29.713",
           "tempf": "48.4", "humidity": "80", "windspeedmph": "1.12", "soilbatt1": "1.6", "wh65batt": "0",
           "freq": "868M", "model": "HP1000SE-PRO_Pro_V1.8.5"}


def test_ecowitt(channel):
    """test_ecowitt: tempf 48.4, humidity 80, the model kept, PASSKEY never stored. A difference: the station's
    dateutc is the row's time (Kotori stamps the receive time) and model, stationtype and freq are tags."""
    storage = send(channel, f"{TOPIC}/ecowitt.json", ECOWITT)
    (rows,) = storage.tables.values()
    (record,) = rows
    assert (record.fields["tempf"], record.fields["humidity"], record.fields["soilbatt1"]) == (48.4, 80, 1.6)
    assert record.tags["model"] == "HP1000SE-PRO_Pro_V1.8.5"
    assert "PASSKEY" not in record.fields and "PASSKEY" not in record.tags
    assert to_iso(record.time) == "2023-02-20T16:02:19.000000000Z"


def test_tts_uplink_on_data_json(channel):
    """test_tts_ttn (minimal): a TTS uplink on data.json is decoded as one."""
    payload = {"uplink_message": {"decoded_payload": {"temperature_1": 53.3, "voltage_4": 3.3}}}
    row = only_row(send(channel, f"{TOPIC}/data.json", payload))
    assert (row["temperature_1"], row["voltage_4"]) == (53.3, 3.3)


def test_extra_levels_before_the_suffix(channel):
    """Kotori reads the slot from its end: .../node/baz/data.json is the node's data."""
    storage = send(channel, f"{TOPIC}/baz/data.json", {"v": 1})
    assert [str(t) for t in storage.tables] == ["mqttkit_1_itest.foo_bar_sensors"]


def test_nan_is_dropped_and_counted(channel):
    """{"t": "NaN", "u": 2}: the NaN is dropped (counted), the rest stored."""
    row = only_row(send(channel, f"{TOPIC}/data.json", {"t": "NaN", "u": 2}))
    assert "t" not in row and row["u"] == 2
    assert channel.router.stats.values_dropped == 1


def test_a_null_is_no_value(channel):
    """{"t": null, "u": 2}: Kotori's InfluxDB client leaves a null field out; so does values = kotori (counted)."""
    row = only_row(send(channel, f"{TOPIC}/data.json", {"t": None, "u": 2, "o": {"x": None, "y": 1}}))
    assert "t" not in row and row["u"] == 2 and row["o"] == {"y": 1}
    assert channel.router.stats.values_dropped == 1


def test_only_nulls_are_refused(channel):
    """{"t": null}: no value to store, refused as {} is."""
    storage = send(channel, f"{TOPIC}/data.json", {"t": None})
    (dead,) = storage.dead_letters
    assert "no values to store" in dead.error and "nulls" in dead.error


def test_an_empty_payload_is_refused(channel):
    """{} holds no value: refused like Kotori, as a dead letter saying why."""
    storage = send(channel, f"{TOPIC}/data.json", {})
    (dead,) = storage.dead_letters
    assert "no values to store" in dead.error


def test_a_time_of_zero_is_no_time(channel):
    """"time": 0 takes the receive time, not 1970."""
    row = only_row(send(channel, f"{TOPIC}/data.json", {"time": 0, "v": 1}))
    assert row["time"].startswith("2023-11-14")


def test_a_csv_suffix_picks_the_csv_decoder(channel):
    """data.csv: a header line and data lines, decoded as CSV."""
    storage = send(channel, f"{TOPIC}/data.csv", b"temperature,humidity\n21.5,40\n21.6,41\n")
    assert storage.dead_letters == []
    (rows,) = storage.tables.values()
    assert [r.fields for r in rows] == [{"temperature": 21.5, "humidity": 40}, {"temperature": 21.6, "humidity": 41}]


def test_http_csv_comma_valid(channel):
    """test_http_csv_comma_valid: Kotori's HTTP CSV client announces its header with ``## `` (the marker was
    part of the first column's name, ``## temperature``)."""
    row = only_row(send(channel, f"{TOPIC}/data.csv", b"## temperature,humidity\n25.26,51.8\n"))
    del row["time"]
    assert row == {"temperature": 25.26, "humidity": 51.8}


def test_http_csv_semicolon_valid(channel):
    """test_http_csv_semicolon_valid: a Variometer's CSV, its Date and Time columns joined into the time, in
    UTC (they were two text columns, and the rows had the receive time). Kotori stores every number as a
    float (Runtime 5.0); lorrygate keeps integers (docs/topology.rst)."""
    payload = b"""Runtime;BatVolt;batPercent;Date;Time;Startflag;alt[ft];Pressure[hpa];SensorTemp[Deg];QNH[hpa];VAR[m/s];Envelope Temp[Deg];HDG[deg];GS[kt];GPS_Alt[m];Lat[deg];Lon[deg];
05;4.0;75.67;21/09/21;07:21:55;0;2213.7;934.79;17.03;1013.25; +0.0;0.00;  0;0.0;  0;0.000000;0.000000;
06;4.0;75.23;21/09/21;07:21:56;0;2213.5;934.80;17.15;1013.25; +0.0;0.00;  0;0.0;  0;0.000000;0.000000;"""
    storage = send(channel, f"{TOPIC}/data.csv", payload)
    assert storage.dead_letters == []
    (rows,) = storage.tables.values()
    assert [to_iso(record.time) for record in rows] == ["2021-09-21T07:21:55.000000000Z",
                                                         "2021-09-21T07:21:56.000000000Z"]
    assert rows[0].fields == {
        "BatVolt": 4.0, "Envelope Temp[Deg]": 0.0, "GPS_Alt[m]": 0, "GS[kt]": 0.0, "HDG[deg]": 0, "Lat[deg]": 0.0,
        "Lon[deg]": 0.0, "Pressure[hpa]": 934.79, "QNH[hpa]": 1013.25, "Runtime": 5, "SensorTemp[Deg]": 17.03,
        "Startflag": 0, "VAR[m/s]": 0.0, "alt[ft]": 2213.7, "batPercent": 75.67}


@pytest.mark.parametrize("payload, time", [
    # Open Hive (docs/source/gallery/openhive.rst): Date/Time or Datum/Zeit, a local time (the channel's zone)
    (b"Datum/Zeit,Gewicht,Aussen-Temperatur\n2016/08/14 21:02:06,  58.697, 19.6\n", "2016-08-14T19:02:06"),
    (b"Date/Time,Weight,Outside Temp\n2016/08/14 21:02:06,58.697,19.6\n", "2016-08-14T19:02:06"),
    # Beelogger: Datum and Uhrzeit joined, in UTC
    (b"Datum,Uhrzeit,Gewicht,Aussen-Temperatur\n2016/08/14,21:02:06,58.697,19.6\n", "2016-08-14T21:02:06"),
    (b"Datum,Uhrzeit,Gewicht,Aussen-Temperatur\n14.08.2016,21:02:06,58.697,19.6\n", "2016-08-14T21:02:06"),
], ids=["open-hive-german", "open-hive", "beelogger", "beelogger-german-date"])
def test_the_csv_of_the_loggers_kotori_takes_has_their_time(channel, payload, time):
    """Kotori's HTTP API takes the CSV of Open Hive boxes and Beelogger loggers with their own date columns
    as the time; they were text columns, and a year of a hive's readings imported at once had the import's
    receive time."""
    row = only_row(send(channel, f"{TOPIC}/data.csv", payload))
    assert row.pop("time") == time + ".000000000Z"
    assert set(row) == ({"Gewicht", "Aussen-Temperatur"} if b"Gewicht" in payload else {"Weight", "Outside Temp"})


@pytest.mark.parametrize("payload, field", [
    (b"Date,v\nMonday,1\n", "Date"),
    (b"Date,v\n20240601,1\n", "Date"),
    (b"Datum,Uhrzeit,v\n2016/08/14,late,1\n", "Uhrzeit"),
], ids=["a-word", "a-number", "no-time-of-day"])
def test_a_loggers_date_column_that_is_no_date_stays_a_field(channel, payload, field):
    """Only a row whose date columns read as a time gets them as its time: a ``Date`` column of words or
    numbers (20240601 would be read as epoch seconds) stays a column, and the row has the receive time."""
    row = only_row(send(channel, f"{TOPIC}/data.csv", payload))
    assert field in row and row["time"].startswith("2023-11-14")

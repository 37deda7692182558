"""
rtl_433's MQTT output: its events stored (one table a receiver, the device its tags, as rtl_433's InfluxDB output
tags it), the copies of their values on devices/... ignored, or the other way round with ``output = devices``.
"""

import textwrap
from zoneinfo import ZoneInfo

import pytest

from lorrygate.config import loads
from lorrygate.decoding.rtl433 import Rtl433Decoder
from lorrygate.errors import ConfigError, Declined, Ignored, TopologyError
from lorrygate.model import Message
from lorrygate.topology import STRATEGIES

EVENT = (b'{"time" : "2026-12-05 13:00:00", "model" : "Acurite-Tower", "id" : 1234, "channel" : "A", "battery_ok" : 1, '
         b'"temperature_C" : 21.5, "humidity" : 40, "mic" : "CHECKSUM"}')


def route(topic, **options):
    strategy = STRATEGIES["rtl_433"](**options)
    address = strategy.match(topic)
    table = strategy.table_for(address)
    return address.kind, f"{table.schema}.{table.table}", address.field


def test_events_are_data_of_the_receivers_table_and_states_its_events():
    assert route("rtl_433/pi4/events") == ("data", "rtl_433.pi4_sensors", None)
    assert route("rtl_433/pi4/states") == ("event", "rtl_433.pi4_events", None)
    assert route("sdr/433/garden/events", base="sdr/433") == ("data", "sdr_433.garden_sensors", None)


def test_the_devices_copies_are_ignored_or_stored_with_output_devices_and_then_the_events_ignored():
    topic = "rtl_433/pi4/devices/Acurite-Tower/A/1234/temperature_C"
    with pytest.raises(Ignored, match="a copy of a value of rtl_433/<hostname>/events"):
        route(topic)
    assert route(topic, output="devices") == ("data", "rtl_433.pi4_acurite_tower_a_1234_sensors", "temperature_C")
    assert route("rtl_433/pi4/devices/id/time", output="devices")[1:] == ("rtl_433.pi4_id_sensors", "time")
    with pytest.raises(Ignored, match="output = devices"):
        route("rtl_433/pi4/events", output="devices")


@pytest.mark.parametrize("topic", ["rtl_433/pi4", "rtl_433/pi4/other", "rtl_433//events", "elsewhere/pi4/events",
                                   "rtl_433/pi4/devices/A//temperature_C", "rtl_433/pi4/events/x"])
def test_other_topics_are_refused(topic):
    with pytest.raises(TopologyError) as info:
        route(topic, output="devices")
    assert not isinstance(info.value, Ignored)


def decode(payload, tz="Europe/Berlin"):
    return Rtl433Decoder(timezone=ZoneInfo(tz)).decode(Message("rtl_433/pi4/events", payload, 0, False, 1e9), None)


def test_an_event_is_its_readings_with_the_device_as_tags_at_its_local_time():
    [record] = decode(EVENT)
    assert record.fields == {"battery_ok": 1, "temperature_C": 21.5, "humidity": 40}
    assert record.tags == {"model": "Acurite-Tower", "id": "1234", "channel": "A", "mic": "CHECKSUM"}
    assert record.time == 1_796_472_000 * 10**9  # 13:00 in Berlin: 12:00 UTC


@pytest.mark.parametrize("time, expected", [
    ('"1764939600"', 1_764_939_600 * 10**9),  # -M time:unix
    ('"2026-12-05T13:00:00"', 1_796_472_000 * 10**9),  # -M time:iso
    ('"2026-12-05 13:00:00.250000"', 1_796_472_000_250_000_000),  # -M time:usec
    ('"@0.262144s"', 10**18),  # relative to a file's start: the receive time
])
def test_rtl_433s_time_formats(time, expected):
    [record] = decode(b'{"time": ' + time.encode() + b', "model": "Toyota", "type": "TPMS", "pressure_PSI": 32.0}')
    assert (record.time, record.tags) == (expected, {"model": "Toyota", "type": "TPMS"})


def test_tags_are_text_as_rtl_433_prints_them():
    [record] = decode(b'{"model": "X", "id": 7, "channel": 1.5, "subtype": true, "type": {"a": [1]}, "v": 1}')
    assert record.tags == {"model": "X", "id": "7", "channel": "1.5", "subtype": "true", "type": '{"a": [1]}'}


@pytest.mark.parametrize("payload", [b'{"time": "2026-12-05 13:00:00", "enabled": 200}', b"[1]", b"21.5", b"{x"])
def test_what_is_no_devices_event_is_declined(payload):
    with pytest.raises(Declined):
        decode(payload)


BASE = """
[broker:b]
host = localhost

[storage:s]
url = sqlite:///x.sqlite

[channel:c]
source = b
topics = rtl_433/#
storage = s
strategy = {strategy}
"""


def test_the_strategy_its_chain_and_its_output_in_the_config():
    channel = loads(textwrap.dedent(BASE.format(strategy="rtl_433"))).channels[0]
    assert (channel.decoders, channel.values) == (("rtl_433", "json", "value"), "as-sent")
    section = "\n[strategy:sdr]\ntype = rtl_433\nbase = sdr\noutput = {}\n"
    settings = loads(textwrap.dedent(BASE.format(strategy="sdr")) + section.format("devices"))
    assert settings.strategies["sdr"]() == STRATEGIES["rtl_433"](name="sdr", base="sdr", output="devices")
    assert settings.channels[0].decoders == ("rtl_433", "json", "value")
    with pytest.raises(ConfigError, match="one of events, devices for type rtl_433"):
        loads(textwrap.dedent(BASE.format(strategy="sdr")) + section.format("attribute"))
    zigbee = "\n[strategy:sdr]\ntype = zigbee2mqtt\noutput = {}\n"
    with pytest.raises(ConfigError, match="one of json, attribute, attribute_and_json for type zigbee2mqtt"):
        loads(textwrap.dedent(BASE.format(strategy="sdr")) + zigbee.format("events"))
    assert loads(textwrap.dedent(BASE.format(strategy="sdr")) + zigbee.format("attribute")).strategies["sdr"]().output \
        == "attribute"

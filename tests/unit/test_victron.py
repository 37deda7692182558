"""
Venus OS (Victron GX devices): dbus-flashmq's topics routed, its payloads decoded, and the keep-alive without
which an installation publishes nothing (sent on the channel's connection, all values asked for again after a
reconnection or a restart of the GX device's MQTT service).
"""

import json
import textwrap

import pytest
from twisted.internet.task import Clock

from lorrygate.config import loads
from lorrygate.decoding import victron as victron_module
from lorrygate.decoding.victron import SUPPRESS, VictronDecoder
from lorrygate.errors import ConfigError, Declined, Ignored, TopologyError
from lorrygate.model import Message
from lorrygate.topology import STRATEGIES

PORTAL = "c0619ab1234"


def route(topic):
    strategy = STRATEGIES["victron"]()
    address = strategy.match(topic)
    table = strategy.table_for(address)
    return address.kind, f"{table.schema}.{table.table}", address.field


@pytest.mark.parametrize("topic, expected", [
    (f"N/{PORTAL}/battery/512/Dc/0/Voltage", ("data", f"victron.{PORTAL}_battery_512_sensors", "Dc/0/Voltage")),
    (f"N/{PORTAL}/system/0/Serial", ("data", f"victron.{PORTAL}_system_0_sensors", "Serial")),
    (f"N/{PORTAL}/settings/0/Settings/LEDs/Enable",
     ("data", f"victron.{PORTAL}_settings_0_sensors", "Settings/LEDs/Enable")),
    (f"N/{PORTAL}/keepalive", ("event", f"victron.{PORTAL}_events", "keepalive")),
])
def test_notifications_route_to_a_table_per_device_the_dbus_path_the_field(topic, expected):
    assert route(topic) == expected


@pytest.mark.parametrize("topic, why", [
    (f"R/{PORTAL}/keepalive", "a request to a GX device"),
    (f"W/{PORTAL}/vebus/257/Hub4/L1/AcPowerSetpoint", "a request to a GX device"),
    (f"P/{PORTAL}/in/x", "a request to a GX device"),
    (f"N/{PORTAL}/heartbeat", "the keep-alive's signal"),
    (f"N/{PORTAL}/full_publish_completed", "the keep-alive's signal"),
    (f"N/{PORTAL}/GuiCustomizations/Apps/app/Chunks/0", "the GX device's GUI"),
])
def test_requests_and_the_keepalives_signals_are_ignored_not_dead_letters(topic, why):
    with pytest.raises(Ignored, match=why):
        route(topic)


@pytest.mark.parametrize("topic", [
    f"N/{PORTAL}/vebus/276", f"N/{PORTAL}/battery", "N//battery/512/Soc", f"N/{PORTAL}/battery/512//Soc",
    "victron/x/y/z/w", "N",
])
def test_other_topics_are_refused_saying_what_is_expected(topic):
    with pytest.raises(TopologyError) as info:
        route(topic)
    assert not isinstance(info.value, Ignored)


def message(topic, payload, received=1_764_939_600.5):
    return Message(topic, payload.encode() if isinstance(payload, str) else payload, 0, False, received)


def decode(decoder, topic, payload):
    strategy = STRATEGIES["victron"]()
    return decoder.decode(message(topic, payload), strategy.match(topic))


def test_a_value_is_the_field_of_its_dbus_path_and_a_settings_bounds_are_kept_beside_it():
    decoder = VictronDecoder()
    [record] = decode(decoder, f"N/{PORTAL}/battery/512/Dc/0/Voltage", '{"value": 52.31}')
    assert (record.time, record.fields) == (1_764_939_600_500_000_000, {"Dc/0/Voltage": 52.31})
    [record] = decode(decoder, f"N/{PORTAL}/settings/0/Settings/LEDs/Enable", '{"max": 1, "min": 0, "value": 1}')
    assert record.fields == {"Settings/LEDs/Enable": 1, "Settings/LEDs/Enable.max": 1, "Settings/LEDs/Enable.min": 0}
    [record] = decode(decoder, f"N/{PORTAL}/system/0/Serial", f'{{"value": "{PORTAL}"}}')
    assert record.fields == {"Serial": PORTAL}


def test_a_null_value_is_ignored_and_what_is_no_dbus_value_is_declined():
    decoder = VictronDecoder()
    with pytest.raises(Ignored, match="no such value"):
        decode(decoder, f"N/{PORTAL}/pvinverter/20/Ac/L2/Power", '{"value": null}')
    for payload in ("1", "[1]", '{"v": 1}', "not json"):
        with pytest.raises(Declined):
            decode(decoder, f"N/{PORTAL}/battery/512/Soc", payload)


class Source:
    """What the decoder uses of a channel's source: publish, connected, connections."""

    def __init__(self):
        self.sent, self.connected, self.connections = [], True, 1

    def publish(self, topic, payload, qos=1):
        assert self.connected
        self.sent.append((topic, payload, qos))


def keeping_alive(keepalive=30.0):
    clock, source = Clock(), Source()
    decoder = VictronDecoder(keepalive=keepalive, clock=clock)
    decoder.start()
    decoder.attach(source)
    return decoder, clock, source


FULL, KEPT = b"", SUPPRESS


def test_an_installation_heard_from_is_asked_for_all_its_values_then_kept_alive():
    decoder, clock, source = keeping_alive()
    decode(decoder, f"N/{PORTAL}/system/0/Serial", f'{{"value": "{PORTAL}"}}')  # (retained: comes at subscription)
    assert source.sent == [(f"R/{PORTAL}/keepalive", FULL, 0)]
    decode(decoder, f"N/{PORTAL}/battery/512/Soc", '{"value": 80}')
    assert len(source.sent) == 1
    clock.advance(30)
    clock.advance(30)
    assert source.sent[1:] == [(f"R/{PORTAL}/keepalive", KEPT, 0)] * 2
    assert json.loads(KEPT) == {"keepalive-options": ["suppress-republish"]}


def test_after_a_reconnection_all_values_are_asked_for_again():
    """Notifications are QoS 0: what changed while the gateway was away is lost; the values come again."""
    decoder, clock, source = keeping_alive()
    decode(decoder, f"N/{PORTAL}/battery/512/Soc", '{"value": 80}')
    source.connected = False
    clock.advance(30)  # away: nothing sent
    assert source.sent == [(f"R/{PORTAL}/keepalive", FULL, 0)]
    source.connected, source.connections = True, 2
    clock.advance(30)
    clock.advance(30)
    assert [payload for _, payload, _ in source.sent] == [FULL, FULL, KEPT]
    source.connections = 3  # (a reconnection between two ticks)
    clock.advance(30)
    assert [payload for _, payload, _ in source.sent][3:] == [FULL]


def test_a_gx_devices_mqtt_service_that_started_again_is_asked_for_all_values():
    decoder, clock, source = keeping_alive()
    decode(decoder, f"N/{PORTAL}/battery/512/Soc", '{"value": 80}')
    with pytest.raises(Declined):  # ("1": the json decoder stores it as the event's field)
        decode(decoder, f"N/{PORTAL}/keepalive", "1")
    assert [payload for _, payload, _ in source.sent] == [FULL, FULL]
    decode(decoder, f"N/{PORTAL}/settings/0/Settings/Mqtt/keepalive", '{"value": 1}')  # (a D-Bus path: no)
    assert len(source.sent) == 2


def test_each_installation_is_kept_alive_and_keepalive_0_sends_nothing():
    decoder, clock, source = keeping_alive()
    for portal in ("a1", "b2"):
        decode(decoder, f"N/{portal}/battery/512/Soc", '{"value": 80}')
    clock.advance(30)
    assert sorted(source.sent) == sorted([("R/a1/keepalive", FULL, 0), ("R/b2/keepalive", FULL, 0),
                                          ("R/a1/keepalive", KEPT, 0), ("R/b2/keepalive", KEPT, 0)])
    decoder.stop()
    clock.advance(60)
    assert len(source.sent) == 4
    quiet, clock, source = keeping_alive(keepalive=0)
    decode(quiet, f"N/{PORTAL}/battery/512/Soc", '{"value": 80}')
    clock.advance(60)
    assert (source.sent, quiet.portals) == ([], {})


def test_the_installations_kept_alive_are_bounded(monkeypatch):
    monkeypatch.setattr(victron_module, "MAX_PORTALS", 2)
    decoder, clock, source = keeping_alive()
    for portal in ("a1", "b2", "c3"):
        decode(decoder, f"N/{portal}/battery/512/Soc", '{"value": 80}')
    assert sorted(decoder.portals) == ["a1", "b2"]
    assert [topic for topic, _, _ in source.sent] == ["R/a1/keepalive", "R/b2/keepalive"]
    decoder.portals.clear()
    decode(decoder, f"N/{'x' * 65}/battery/512/Soc", '{"value": 80}')  # (stored, not kept alive: no such portal id)
    assert decoder.portals == {}


BASE = """
[broker:b]
host = localhost

[storage:s]
url = sqlite:///x.sqlite

[channel:c]
source = b
topics = N/#
storage = s
strategy = victron
"""


def test_a_victron_channel_takes_retained_messages_always_and_the_victron_chain():
    """An installation is known by its retained N/<portal ID>/system/0/Serial, also after the gateway's restart
    (a persistent session's subscription is not new: retained = new skipped it, and nothing woke the installation);
    other channels keep retained = new."""
    settings = loads(textwrap.dedent(BASE))
    [channel] = settings.channels
    assert (channel.decoders, channel.values, channel.retained) == (("victron", "json", "value"), "as-sent", "always")
    other = loads(textwrap.dedent(BASE).replace("strategy = victron", "strategy = topic")).channels[0]
    assert other.retained == "new"
    given = loads(textwrap.dedent(BASE) + "retained = never\n").channels[0]
    assert given.retained == "never"
    decoder = settings.decoders["victron"](None, Clock())
    assert (decoder.keepalive, decoder.clock is not None) == (30.0, True)


def test_the_keepalive_interval_is_configured_and_checked():
    text = textwrap.dedent(BASE) + "decoders = vic, json\n\n[decoder:vic]\ntype = victron\nkeepalive = {}\n"
    decoder = loads(text.format("10s")).decoders["vic"](None, Clock())
    assert decoder.keepalive == 10.0
    assert loads(text.format("0")).decoders["vic"](None, Clock()).keepalive == 0.0
    with pytest.raises(ConfigError, match="keepalive"):
        loads(text.format("90s"))
    with pytest.raises(ConfigError, match="no keepalive for type csv"):
        loads(text.format("10s").replace("type = victron", "type = csv"))


def test_a_launch_pipeline_with_the_victron_strategy_takes_retained_messages():
    from lorrygate.pipeline.model import parse_launch

    [channel] = parse_launch("mqtt://localhost/N/%23 ! strategy name=victron ! sqlite:///x.sqlite").channels
    assert (channel.retained, channel.decoders) == ("always", ("victron", "json", "value"))
    [plain] = parse_launch("mqtt://localhost/N/%23 ! sqlite:///x.sqlite").channels
    assert plain.retained == "new"
    [given] = parse_launch("mqtt://localhost/N/%23?retained=never ! strategy name=victron ! sqlite:///x.sqlite").channels
    assert given.retained == "never"
    [element] = parse_launch("mqttsrc topic=N/# retained=new ! strategy name=victron ! sqlite:///x.sqlite").channels
    assert element.retained == "new"


def test_describe_shows_the_keepalive_and_the_retained_messages():
    from lorrygate.pipeline.describe import describe
    from lorrygate.pipeline.model import parse_launch

    pipeline = parse_launch("mqtt://localhost/N/%23 ! strategy name=victron ! sqlite:///x.sqlite")
    text = pipeline.describe([])
    assert "(QoS 1, MQTT 3.1.1, retained always)" in text
    assert "decode victron,json,value (keep-alive R/<portal ID>/keepalive every 30 s)" in text
    declared = loads(textwrap.dedent(BASE) + "decoders = vic, json\n\n[decoder:vic]\ntype = victron\nkeepalive = 0\n")
    assert "decode vic,json (no keep-alive)" in describe(declared, [])

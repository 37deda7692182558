"""Meshtastic: the packets a gateway node publishes as protobuf (a ServiceEnvelope, encrypted with the channel's key)
and as JSON (the firmware's MeshPacketSerializer), as the same rows of the mesh channel's table, the sending node
and the packet's type their tags; the other format's copies and the downlink ignored; what is no packet, or is
encrypted with a key lorrygate has not, a dead letter that says why."""

import base64
import json

import orjson
import pytest

from lorrygate.config import loads
from lorrygate.decoding.meshtastic import MeshtasticDecoder, node_id
from lorrygate.decoding.meshtastic_protobuf import DEFAULT_KEY, channel_hash, expand_key
from lorrygate.errors import Declined, DecodeError, Ignored
from lorrygate.model import Message
from lorrygate.topology.meshtastic import MeshtasticStrategy
from tests.fleet.meshtastic import envelope

TOPIC = "msh/EU_868/2/json/LongFast/!a1b2c3d4"
#: a packet as the firmware writes it: the envelope's keys around the payload
PACKET = {"channel": 0, "from": 2130636288, "hop_start": 3, "hops_away": 1, "id": 1412106178, "rssi": -94,
          "sender": "!a1b2c3d4", "snr": 6.25, "timestamp": 1716837450, "to": 4294967295}
RECEIVED = 1_700_000_000.25
#: the fields of every row that come from the packet rather than its payload
PACKET_FIELDS = ("packet_id", "rssi", "snr", "hops_away", "hop_start")


def decode(packet, topic: str = TOPIC, keys=None):
    payload = packet if isinstance(packet, bytes) else json.dumps(packet).encode()
    strategy = MeshtasticStrategy(output="protobuf" if "/2/e/" in topic else "json")
    return MeshtasticDecoder(keys=keys or {}).decode(Message(topic, payload, 1, False, RECEIVED), strategy.match(topic))


def packet(kind: str, payload, **envelope) -> dict:
    return {**PACKET, "type": kind, "payload": payload, **envelope}


def test_device_telemetry_is_a_row_of_the_node_at_the_gateways_receive_time():
    [record] = decode(packet("telemetry", {"air_util_tx": 0.83, "battery_level": 101, "channel_utilization": 5.54,
                                           "uptime_seconds": 4015, "voltage": 4.2}))
    assert record.time == 1716837450 * 10**9
    assert record.tags == {"node": "!7efeee00", "type": "telemetry"}
    assert record.fields == {"air_util_tx": 0.83, "battery_level": 101, "channel_utilization": 5.54,
                             "uptime_seconds": 4015, "voltage": 4.2, "packet_id": 1412106178, "rssi": -94,
                             "snr": 6.25, "hops_away": 1, "hop_start": 3}


def test_a_position_is_in_degrees_and_its_fixs_time_kept_beside_the_rows_time():
    [record] = decode(packet("position", {"latitude_i": 523456789, "longitude_i": -1345678900, "altitude": 40,
                                          "time": 1716837400, "timestamp": 1716837399, "precision_bits": 32}))
    assert record.fields["latitude"] == 52.3456789 and record.fields["longitude"] == -134.56789
    assert (record.fields["position_time"], record.fields["position_timestamp"]) == (1716837400, 1716837399)
    assert "latitude_i" not in record.fields and "time" not in record.fields
    assert record.time == 1716837450 * 10**9


def test_node_info_keeps_the_names_and_leaves_out_the_id_that_is_the_node():
    [record] = decode(packet("nodeinfo", {"id": "!7efeee00", "longname": "Garden", "shortname": "GRDN",
                                          "hardware": 43, "role": 0}))
    assert {key: record.fields[key] for key in ("longname", "shortname", "hardware", "role")} == {
        "longname": "Garden", "shortname": "GRDN", "hardware": 43, "role": 0}
    assert "id" not in record.fields
    [other] = decode(packet("nodeinfo", {"id": "!00000001", "longname": "Spoofed"}))
    assert other.fields["id"] == "!00000001"  # not the sender's: kept


@pytest.mark.parametrize("payload, fields", [
    ({"text": "hello mesh"}, {"text": "hello mesh"}),
    # a text that the firmware read as a JSON object: its JSON text (its keys, anyone's on the channel, no columns)
    ({"temp": 5, "unit": "C"}, {"text": '{"temp":5,"unit":"C"}'}),
    ({"text": 5}, {"text": '{"text":5}'}),
    (42, {"text": "42"}),  # a text the firmware read as a JSON number
    ([1, 2], {"text": "[1,2]"}),
])
def test_a_text_message_is_its_text(payload, fields):
    [record] = decode(packet("text", payload))
    assert {key: value for key, value in record.fields.items() if key not in PACKET_FIELDS} == fields


def test_a_text_of_an_integer_beyond_64_bits_is_its_json_text():
    """(orjson refuses to write such an integer; the standard library reads it where orjson refused the JSON: NaN)"""
    payload = (b'{"from": 2130636288, "id": 5, "type": "text", "snr": NaN, "timestamp": 1716837450, '
               b'"payload": [123456789012345678901234567890]}')
    [record] = decode(payload)
    assert record.fields["text"] == "[123456789012345678901234567890]"


def test_nested_values_are_dotted_and_lists_kept():
    [record] = decode(packet("neighborinfo", {"node_id": 2130636288, "neighbors_count": 1,
                                              "neighbors": [{"node_id": 1, "snr": 5}], "extra": {"a": 1}}))
    assert record.fields["neighbors"] == [{"node_id": 1, "snr": 5}] and record.fields["extra.a"] == 1


def test_a_direct_message_names_its_recipient_and_an_unknown_key_is_kept():
    [record] = decode(packet("text", {"text": "hi"}, to=3735928559, relay_node=17))
    assert record.fields["to"] == "!deadbeef" and record.fields["relay_node"] == 17
    [broadcast] = decode(packet("text", {"text": "hi"}))
    assert "to" not in broadcast.fields and "channel" not in broadcast.fields and "sender" not in broadcast.fields


def test_a_sender_other_than_the_topics_gateway_is_kept():
    [record] = decode(packet("text", {"text": "hi"}, sender="!00000002"))
    assert record.fields["sender"] == "!00000002"


def test_a_node_without_a_clock_sends_timestamp_0_the_receive_time_is_taken():
    [record] = decode(packet("telemetry", {"voltage": 4.2}, timestamp=0))
    assert record.time == 1_700_000_000_250_000_000


@pytest.mark.parametrize("envelope, kind", [({"type": ""}, "an app"), ({"type": "sendtext"}, "a sendtext"),
                                            ({"type": "sendposition", "payload": {}}, "a sendposition")])
def test_what_carries_no_values_is_ignored(envelope, kind):
    document = {key: value for key, value in PACKET.items()} | envelope
    with pytest.raises(Ignored, match=kind):
        decode(document)


@pytest.mark.parametrize("payload, error", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "a JSON list, not the object of a Meshtastic packet"),
    (orjson.dumps({"type": "text", "payload": {"text": "hi"}}), "no 'from'"),
    (orjson.dumps({**PACKET, "from": "!7efeee00", "type": "text", "payload": {}}), "from '!7efeee00' is not a node"),
    (orjson.dumps({**PACKET, "from": -1, "type": "text", "payload": {}}), "from -1 is not a node number"),
    (orjson.dumps({**PACKET, "to": 2**32, "type": "text", "payload": {}}), "to 4294967296 is not a node number"),
    (orjson.dumps({key: value for key, value in PACKET.items()} | {"bytes": "a1b2", "size": 2}),
     "an encrypted packet"),
    (orjson.dumps({**PACKET, "type": 3, "payload": {}}), "type 3 is not"),
    (orjson.dumps({**PACKET, "type": "telemetry"}), "a telemetry packet without its payload"),
    (orjson.dumps({**PACKET, "timestamp": "yesterday", "type": "text", "payload": {}}), "timestamp 'yesterday'"),
    (orjson.dumps({**PACKET, "timestamp": -5, "type": "text", "payload": {}}), "timestamp -5"),
    (orjson.dumps({**PACKET, "timestamp": True, "type": "text", "payload": {}}), "timestamp True"),
])
def test_what_is_no_packet_is_a_dead_letter_that_says_why(payload, error):
    with pytest.raises(DecodeError, match=error):
        decode(payload)


def test_the_status_topic_is_left_to_the_value_decoder():
    with pytest.raises(Declined):
        decode(b"online", "msh/EU_868/2/stat/!a1b2c3d4")


@pytest.mark.parametrize("output, topic, reason", [
    ("json", "msh/EU_868/2/e/LongFast/!a1b2c3d4", "whose JSON copy is stored"),
    ("json", "msh/EU_868/2/c/LongFast/!a1b2c3d4", "whose JSON copy is stored"),
    ("protobuf", "msh/EU_868/2/json/LongFast/!a1b2c3d4", "the JSON copy of a packet"),
    ("json", "msh/EU_868/2/map/", "a map report, as protobuf only"),
])
def test_the_other_formats_copies_are_ignored(output, topic, reason):
    with pytest.raises(Ignored, match=reason):
        MeshtasticStrategy(output=output).match(topic)


def test_a_base_of_its_own_with_a_plus_level():
    config = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:mesh]\ntype=meshtastic\n"
                   "base=mesh/+\noutput=json\n[channel:c]\nsource=b\ntopics=mesh/#\nstorage=s\nstrategy=mesh\n")
    strategy = config.strategies["mesh"]()
    address = strategy.match("mesh/home/EU_868/2/json/LongFast/!a1b2c3d4")
    assert str(strategy.table_for(address)) == "mesh_home_eu_868.longfast_sensors"


def test_node_ids_are_written_as_meshtastic_does():
    assert (node_id(0), node_id(2130636288), node_id(0xFFFFFFFF)) == ("!00000000", "!7efeee00", "!ffffffff")


# -- protobuf: the ServiceEnvelope every gateway node publishes to <root>/2/e/<channel>/<gateway> --

PROTOBUF_TOPIC = "msh/EU_868/2/e/LongFast/!a1b2c3d4"


def test_the_default_channels_hash_is_the_one_its_packets_carry():
    """LongFast on the default key (AQ==) is channel 8 on the air, as Meshtastic's tools know it."""
    assert channel_hash("LongFast", expand_key(b"\x01")) == 8
    assert expand_key(b"\x01") == base64.b64decode("1PG7OiApB1nwvP+rz05pAQ==") == DEFAULT_KEY
    assert expand_key(b"\x02")[-1] == DEFAULT_KEY[-1] + 1 and expand_key(b"\x00") == b""


def test_an_encrypted_telemetry_packet_is_the_same_row_as_its_json_copy():
    from meshtastic.protobuf import telemetry_pb2

    telemetry = telemetry_pb2.Telemetry(time=1716837440, environment_metrics=telemetry_pb2.EnvironmentMetrics(
        temperature=21.5, relative_humidity=48.2, barometric_pressure=1013.2))
    [record] = decode(envelope("TELEMETRY_APP", telemetry), PROTOBUF_TOPIC)
    [copy] = decode(packet("telemetry", {"temperature": 21.5, "relative_humidity": 48.2,
                                         "barometric_pressure": 1013.2}, hops_away=1, rssi=-94, snr=6.25))
    assert record.time == copy.time == 1716837450 * 10**9
    assert record.tags == copy.tags == {"node": "!7efeee00", "type": "telemetry"}
    # (32-bit floats as the decimals sent: 48.2, not 48.20000076293945); the reading's own time beside
    assert record.fields == {**copy.fields, "telemetry_time": 1716837440}


@pytest.mark.parametrize("app, make, kind, fields", [
    ("POSITION_APP", lambda pb: pb.mesh_pb2.Position(latitude_i=523456789, longitude_i=-1345678900, altitude=40,
                                                     time=1716837400),
     "position", {"latitude": 52.3456789, "longitude": -134.56789, "altitude": 40, "position_time": 1716837400}),
    ("NODEINFO_APP", lambda pb: pb.mesh_pb2.User(id="!7efeee00", long_name="Garden", short_name="GRDN", hw_model=43,
                                                 public_key=b"\x01" * 32),
     "nodeinfo", {"longname": "Garden", "shortname": "GRDN", "hardware": 43}),
    ("TELEMETRY_APP", lambda pb: pb.telemetry_pb2.Telemetry(device_metrics=pb.telemetry_pb2.DeviceMetrics(
        battery_level=101, voltage=4.2, channel_utilization=5.54, air_util_tx=0.83, uptime_seconds=4015)),
     "telemetry", {"battery_level": 101, "voltage": 4.2, "channel_utilization": 5.54, "air_util_tx": 0.83,
                   "uptime_seconds": 4015}),
    ("TELEMETRY_APP", lambda pb: pb.telemetry_pb2.Telemetry(air_quality_metrics=pb.telemetry_pb2.AirQualityMetrics(
        pm25_standard=12, pm10_environmental=7)),
     "telemetry", {"pm25": 12, "pm10_e": 7}),  # the JSON output's names
    ("TELEMETRY_APP", lambda pb: pb.telemetry_pb2.Telemetry(power_metrics=pb.telemetry_pb2.PowerMetrics(
        ch1_voltage=12.5, ch1_current=0.25)),
     "telemetry", {"voltage_ch1": 12.5, "current_ch1": 0.25}),
    ("NEIGHBORINFO_APP", lambda pb: pb.mesh_pb2.NeighborInfo(node_id=2130636288, neighbors=[
        pb.mesh_pb2.Neighbor(node_id=1, snr=5.5)]),
     "neighborinfo", {"node_id": 2130636288, "neighbors": [{"node_id": 1, "snr": 5.5}]}),
    ("PAXCOUNTER_APP", lambda pb: pb.paxcount_pb2.Paxcount(wifi=3, ble=7, uptime=60),
     "paxcounter", {"wifi_count": 3, "ble_count": 7, "uptime": 60}),
    ("TEXT_MESSAGE_APP", lambda pb: "héllo mesh".encode() + b"\xff", "text", {"text": "héllo mesh\\xff"}),
    ("DETECTION_SENSOR_APP", lambda pb: b"motion", "detection", {"text": "motion"}),
    ("RANGE_TEST_APP", lambda pb: b"seq 12", "range_test", {"text": "seq 12"}),
])
def test_each_apps_values_have_the_json_outputs_names(app, make, kind, fields):
    from lorrygate.decoding.meshtastic_protobuf import schemas

    class Modules:
        def __getattr__(self, name):
            return schemas()[name]

    [record] = decode(envelope(app, make(Modules())), PROTOBUF_TOPIC)
    assert record.tags == {"node": "!7efeee00", "type": kind}
    assert {key: value for key, value in record.fields.items() if key not in PACKET_FIELDS} == fields


def test_a_traceroutes_reply_names_the_nodes_and_its_request_is_ignored():
    from meshtastic.protobuf import mesh_pb2

    route = mesh_pb2.RouteDiscovery(route=[0xDEADBEEF], snr_towards=[24, -8]).SerializeToString()
    [record] = decode(envelope("TRACEROUTE_APP", route, request_id=5), PROTOBUF_TOPIC)
    assert (record.fields["route"], record.fields["snr_towards"]) == (["!deadbeef"], [6.0, -2.0])
    with pytest.raises(Ignored, match="TRACEROUTE_APP"):
        decode(envelope("TRACEROUTE_APP", route), PROTOBUF_TOPIC)


def test_a_packet_sent_unencrypted_is_read_as_it_is():
    [record] = decode(envelope("TEXT_MESSAGE_APP", b"hi", key=None), PROTOBUF_TOPIC)
    assert record.fields["text"] == "hi" and record.fields["packet_id"] == 1412106178


def test_a_channel_of_its_own_key_is_read_with_the_key_given():
    key = bytes(range(32))
    message = envelope("TEXT_MESSAGE_APP", b"private", channel="Family", key=key)
    topic = "msh/EU_868/2/e/Family/!a1b2c3d4"
    with pytest.raises(DecodeError, match=r"encrypted with channel 'Family''s own key: give it as keys = Family:.* in "
                                          r"a \[decoder:NAME\] of type meshtastic that the channel's decoders name"):
        decode(message, topic)
    [record] = decode(message, topic, keys={"family": key})
    assert record.fields["text"] == "private"
    with pytest.raises(DecodeError, match="encrypted with another key than the one keys gives channel 'Family'"):
        decode(message, topic, keys={"family": bytes([1]) + bytes(15)})


@pytest.mark.parametrize("payload, error", [
    (b"\x0a\xff", "not a Meshtastic ServiceEnvelope"),
    (b"\x12\x08LongFast", "a ServiceEnvelope without its packet"),
])
def test_what_is_no_envelope_is_a_dead_letter(payload, error):
    with pytest.raises(DecodeError, match=error):
        decode(payload, PROTOBUF_TOPIC)


def test_the_hash_tells_a_wrong_key_and_data_that_does_not_decrypt_says_so():
    with pytest.raises(DecodeError, match="LongFast"):
        decode(envelope("TEXT_MESSAGE_APP", b"x", channel_number=9), PROTOBUF_TOPIC)
    garbled = envelope("TEXT_MESSAGE_APP", b"x" * 40, key=bytes(16), channel_number=8)
    with pytest.raises(DecodeError, match="does not decrypt with channel 'LongFast''s key"):
        decode(garbled, PROTOBUF_TOPIC)


@pytest.mark.parametrize("make, reason", [
    (lambda: envelope("ROUTING_APP", b"\x18\x00"), "ROUTING_APP, which carries no values"),
    (lambda: envelope("ADMIN_APP", b""), "ADMIN_APP"),
    (lambda: envelope("TEXT_MESSAGE_APP", b"dm", channel="PKI", pki_encrypted=True), "a direct message encrypted"),
])
def test_apps_without_values_and_direct_messages_are_ignored(make, reason):
    with pytest.raises(Ignored, match=reason):
        decode(make(), "msh/EU_868/2/e/PKI/!a1b2c3d4" if "PKI" in reason or "direct" in reason else PROTOBUF_TOPIC)


@pytest.mark.parametrize("text, error", [
    ("LongFast", "each key is <channel>:<key>"),
    ("LongFast:not base64!", "a channel key is base64"),
    ("LongFast:AAAA", "a channel key of 3 bytes"),
])
def test_a_decoders_keys_that_are_none_are_config_problems_that_never_show_the_key(text, error):
    from lorrygate.errors import ConfigError

    with pytest.raises(ConfigError, match=error) as info:
        loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[decoder:mesh]\ntype=meshtastic\n"
              f"keys={text}\n[channel:c]\nsource=b\ntopics=msh/#\nstorage=s\nstrategy=meshtastic\ndecoders=mesh\n")
    assert "AAAA" not in str(info.value) and "not base64!" not in str(info.value)


def test_keys_from_the_environment_reach_the_decoder(monkeypatch):
    monkeypatch.setenv("MESH_KEYS", "Family:" + base64.b64encode(bytes(range(32))).decode() + ", Ops:AQ==")
    config = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[decoder:mesh]\ntype=meshtastic\n"
                   "keys=${ENV:MESH_KEYS}\n[channel:c]\nsource=b\ntopics=msh/#\nstorage=s\nstrategy=meshtastic\n"
                   "decoders=mesh\n")
    decoder = config.decoders["mesh"](None, None)
    assert decoder.keys == {"family": bytes(range(32)), "ops": b"\x01"}
    assert "Family" not in repr(decoder)


def test_without_meshtastics_package_the_protobuf_output_is_a_config_problem(monkeypatch):
    from lorrygate.config import settings
    from lorrygate.errors import ConfigError

    real = settings.installed
    monkeypatch.setattr(settings, "installed", lambda module: module != "meshtastic" and real(module))
    with pytest.raises(ConfigError, match=r"pip install 'lorrygate\[meshtastic\]', or a \[strategy:NAME\] of type "
                                          "meshtastic with output = json"):
        loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\nsource=b\ntopics=msh/#\nstorage=s\n"
              "strategy=meshtastic\n")
    loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:mesh]\ntype=meshtastic\noutput=json\n"
          "[channel:c]\nsource=b\ntopics=msh/#\nstorage=s\nstrategy=mesh\n")


# -- a packet that several gateways heard --

def test_another_gateways_copy_of_a_packet_is_ignored_and_each_keeps_them():
    first = MeshtasticDecoder()
    other_topic = "msh/EU_868/2/json/LongFast/!0000beef"
    one, other = packet("telemetry", {"voltage": 4.2}), packet("telemetry", {"voltage": 4.2}, sender="!0000beef",
                                                               rssi=-120)

    def heard(decoder, document, topic, received=RECEIVED):
        strategy = MeshtasticStrategy(output="json")
        return decoder.decode(Message(topic, orjson.dumps(document), 1, False, received), strategy.match(topic))

    [record] = heard(first, one, TOPIC)
    assert record.fields["rssi"] == -94
    with pytest.raises(Ignored, match="a copy of packet 1412106178 of !7efeee00 that another gateway delivered "
                                      "first"):
        heard(first, other, other_topic, RECEIVED + 2)
    with pytest.raises(Ignored):  # the protobuf copy too: the same packet
        first.decode(Message(PROTOBUF_TOPIC, envelope("TEXT_MESSAGE_APP", b"x"), 1, False, RECEIVED + 3),
                     MeshtasticStrategy().match(PROTOBUF_TOPIC))
    [again] = heard(first, one, TOPIC, RECEIVED + 3600)  # an hour later: a packet id the node drew again
    assert again.fields["packet_id"] == 1412106178
    each = MeshtasticDecoder(receptions="each")
    assert [r.fields["rssi"] for r in heard(each, one, TOPIC) + heard(each, other, other_topic)] == [-94, -120]


def test_a_packet_is_stored_once_only_after_it_decoded():
    """A copy that is a dead letter (its key unknown to lorrygate) marks nothing: the next copy is decoded."""
    decoder = MeshtasticDecoder()
    key = bytes(range(32))
    message = envelope("TEXT_MESSAGE_APP", b"private", channel="Family", key=key)
    topic = "msh/EU_868/2/e/Family/!a1b2c3d4"
    with pytest.raises(DecodeError):
        decoder.decode(Message(topic, message, 1, False, RECEIVED), MeshtasticStrategy().match(topic))
    decoder.keys["family"] = key  # (the key given: a reload makes a new decoder; this one keeps its memory)
    [record] = decoder.decode(Message(topic, message, 1, False, RECEIVED), MeshtasticStrategy().match(topic))
    assert record.fields["text"] == "private"


def test_the_packets_known_are_bounded():
    from lorrygate.decoding.recent import Recent

    known = Recent(3600.0, 3)
    assert [known.again((1, n), 100.0 + n) for n in range(5)] == [False] * 5
    assert (known.again((1, 0), 110.0), known.again((1, 4), 110.0)) == (False, True)  # (1, 0) was forgotten
    assert len(known) == 3
    assert known.again((1, 4), 104.0 + 3600) is False  # the window runs from the first copy


def test_with_refresh_the_window_runs_from_the_last_sighting():
    from lorrygate.decoding.recent import Recent

    seen = Recent(100.0, 10, refresh=True)
    assert [seen.again("a", t) for t in (0.0, 90.0, 180.0, 270.0, 400.0)] == [False, True, True, True, False]


def test_receptions_is_a_meshtastic_decoders_option():
    config = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[decoder:mesh]\ntype=meshtastic\n"
                   "receptions=each\n[channel:c]\nsource=b\ntopics=msh/#\nstorage=s\nstrategy=meshtastic\n"
                   "decoders=mesh\n")
    assert config.decoders["mesh"](None, None).receptions == "each"


def test_a_gateway_nodes_map_report_is_a_row_of_the_map_table():
    from meshtastic.protobuf import mqtt_pb2

    report = mqtt_pb2.MapReport(long_name="Gateway 1", short_name="GW1", role=2, hw_model=43,
                                firmware_version="2.5.6.abc", region=3, latitude_i=523456789, longitude_i=134567890,
                                num_online_local_nodes=17)
    topic = "msh/EU_868/2/map/"
    strategy = MeshtasticStrategy()
    address = strategy.match(topic)
    assert str(strategy.table_for(address)) == "msh_eu_868.map_sensors"
    [record] = MeshtasticDecoder().decode(Message(topic, envelope("MAP_REPORT_APP", report, sender=0xA1B2C3D4), 1,
                                                  False, RECEIVED), address)
    assert record.tags == {"node": "!a1b2c3d4", "type": "map_report"}
    assert {key: value for key, value in record.fields.items() if key not in PACKET_FIELDS} == {
        "longname": "Gateway 1", "shortname": "GW1", "role": 2, "hardware": 43, "firmware_version": "2.5.6.abc",
        "region": 3, "latitude": 52.3456789, "longitude": 13.456789, "num_online_local_nodes": 17}


def test_a_message_an_older_meshtastic_package_does_not_know_is_kept_to_replay(monkeypatch):
    from meshtastic.protobuf import mqtt_pb2

    from lorrygate.decoding import meshtastic_protobuf

    report = mqtt_pb2.MapReport(long_name="Gateway 1").SerializeToString()
    older = dict(meshtastic_protobuf.schemas())
    older["mqtt_pb2"] = type("mqtt_pb2", (), {"ServiceEnvelope": mqtt_pb2.ServiceEnvelope})
    monkeypatch.setattr(meshtastic_protobuf, "schemas", lambda: older)
    with pytest.raises(DecodeError, match="MapReport.* pip install -U meshtastic, and replay this dead letter"):
        decode(envelope("MAP_REPORT_APP", report), PROTOBUF_TOPIC)

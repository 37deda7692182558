"""Meshtastic: the packets a gateway node writes as JSON (the firmware's MeshPacketSerializer), as rows of the
mesh channel's table, the sending node and the packet's type their tags; the protobuf topics and the downlink
ignored; what is no packet a dead letter that says why."""

import orjson
import pytest

from lorrygate.config import loads
from lorrygate.decoding.meshtastic import MeshtasticDecoder, node_id
from lorrygate.errors import Declined, DecodeError, Ignored
from lorrygate.model import Message
from lorrygate.topology.meshtastic import MeshtasticStrategy

TOPIC = "msh/EU_868/2/json/LongFast/!a1b2c3d4"
#: a packet as the firmware writes it: the envelope's keys around the payload
PACKET = {"channel": 0, "from": 2130636288, "hop_start": 3, "hops_away": 1, "id": 1412106178, "rssi": -94,
          "sender": "!a1b2c3d4", "snr": 6.25, "timestamp": 1716837450, "to": 4294967295}
RECEIVED = 1_700_000_000.25
#: the fields of every row that come from the packet rather than its payload
PACKET_FIELDS = ("packet_id", "rssi", "snr", "hops_away", "hop_start")


def decode(packet, topic: str = TOPIC):
    payload = packet if isinstance(packet, bytes) else orjson.dumps(packet)
    return MeshtasticDecoder().decode(Message(topic, payload, 1, False, RECEIVED), MeshtasticStrategy().match(topic))


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


@pytest.mark.parametrize("topic, reason", [
    ("msh/EU_868/2/e/LongFast/!a1b2c3d4", "turn on JSON output"),
    ("msh/EU_868/2/c/LongFast/!a1b2c3d4", "turn on JSON output"),
    ("msh/EU_868/2/map/", "a map report"),
])
def test_the_protobuf_topics_are_ignored_with_the_way_to_the_json_ones(topic, reason):
    with pytest.raises(Ignored, match=reason):
        MeshtasticStrategy().match(topic)


def test_a_base_of_its_own_with_a_plus_level():
    config = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:mesh]\ntype=meshtastic\n"
                   "base=mesh/+\n[channel:c]\nsource=b\ntopics=mesh/#\nstorage=s\nstrategy=mesh\n")
    strategy = config.strategies["mesh"]()
    address = strategy.match("mesh/home/EU_868/2/json/LongFast/!a1b2c3d4")
    assert str(strategy.table_for(address)) == "mesh_home_eu_868.longfast_sensors"


def test_node_ids_are_written_as_meshtastic_does():
    assert (node_id(0), node_id(2130636288), node_id(0xFFFFFFFF)) == ("!00000000", "!7efeee00", "!ffffffff")

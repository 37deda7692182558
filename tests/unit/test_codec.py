"""The MQTT codec: round trips for every packet in both versions, spec vectors, bad bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorrygate.errors import ProtocolError
from lorrygate.mqtt import codec
from lorrygate.mqtt.codec import MQTT_3_1_1, MQTT_5

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
ids = st.integers(1, 65535)
byte = st.integers(0, 255)

v5_properties = st.fixed_dictionaries(
    {},
    optional={
        "payload_format_indicator": st.integers(0, 1),
        "message_expiry_interval": st.integers(0, 2**32 - 1),
        "content_type": texts,
        "correlation_data": st.binary(max_size=20),
        "subscription_identifier": st.tuples(st.integers(1, codec.MAX_REMAINING_LENGTH)),
        "topic_alias": st.integers(1, 65535),
        "user_property": st.lists(st.tuples(texts, texts), min_size=1, max_size=3).map(tuple),
        "reason_string": texts,
    },
)


def packets(version):
    props = v5_properties if version == MQTT_5 else st.just({})
    publish = st.builds(
        lambda topic, payload, qos, retain, dup, pid, p: codec.Publish(
            topic, payload, qos, retain, dup and qos > 0, pid if qos else None, p
        ),
        texts.filter(bool),
        st.binary(max_size=300),
        st.integers(0, 2),
        st.booleans(),
        st.booleans(),
        ids,
        props,
    )
    reason = byte if version == MQTT_5 else st.just(0)
    puback = st.builds(
        codec.PubAck,
        st.sampled_from([codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP]),
        ids,
        reason,
        props,
    ).filter(lambda p: p.reason or not p.properties)
    connect = st.builds(
        codec.Connect,
        texts,
        st.just(version),
        st.booleans(),
        st.integers(0, 65535),
        st.none() | texts,
        st.none() | st.binary(max_size=20),
        st.none() | texts.filter(bool),
        st.binary(max_size=20),
        st.integers(0, 2),
        st.booleans(),
        props,
        props,
    ).filter(lambda c: c.will_topic is not None or (not c.will_payload and not c.will_qos and not c.will_retain and not c.will_properties))
    connack = st.builds(codec.Connack, st.booleans(), byte, props)
    subscribe = st.builds(
        codec.Subscribe, ids, st.lists(st.tuples(texts.filter(bool), st.integers(0, 2)), min_size=1, max_size=4).map(tuple), props
    )
    suback = st.builds(codec.Suback, ids, st.lists(byte, min_size=1, max_size=4).map(tuple), props)
    unsubscribe = st.builds(codec.Unsubscribe, ids, st.lists(texts.filter(bool), min_size=1, max_size=4).map(tuple), props)
    if version == MQTT_5:
        unsuback = st.builds(codec.Unsuback, ids, st.lists(byte, min_size=1, max_size=4).map(tuple), props)
        disconnect = st.builds(codec.Disconnect, byte, props).filter(lambda d: d.reason or not d.properties)
    else:
        unsuback = st.builds(codec.Unsuback, ids)
        disconnect = st.just(codec.Disconnect())
    simple = st.sampled_from([codec.PingReq(), codec.PingResp()])
    return st.one_of(publish, puback, connect, connack, subscribe, suback, unsubscribe, unsuback, disconnect, simple)


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_every_packet_round_trips(data):
    """encode() then parse() gives back the same packet, also when split at any byte."""
    version = data.draw(st.sampled_from([MQTT_3_1_1, MQTT_5]))
    packet = data.draw(packets(version))
    wire = codec.encode(packet, version)
    assert codec.parse(wire, version) == ([packet], len(wire))
    cut = data.draw(st.integers(0, len(wire) - 1))
    assert codec.parse(wire[:cut], version) == ([], 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(packets(MQTT_5), min_size=1, max_size=10))
def test_a_stream_of_packets_parses_in_order(stream):
    """Packets back to back in one buffer come out in order."""
    wire = b"".join(codec.encode(p, MQTT_5) for p in stream)
    assert codec.parse(wire, MQTT_5) == (stream, len(wire))


@settings(max_examples=100, deadline=None)
@given(st.lists(packets(MQTT_3_1_1), min_size=1, max_size=10), st.sampled_from([bytearray, memoryview]))
def test_a_bytearray_or_memoryview_parses_as_bytes(stream, kind):
    """A buffer that is not bytes gives the same packets, their topics str and their payloads bytes."""
    wire = b"".join(codec.encode(p, MQTT_3_1_1) for p in stream)
    packets_, used = codec.parse(kind(wire), MQTT_3_1_1)
    assert (packets_, used) == (stream, len(wire))
    for packet in packets_:
        if isinstance(packet, codec.Publish):
            assert type(packet.payload) is bytes and type(packet.topic) is str


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([MQTT_3_1_1, MQTT_5]))
def test_arbitrary_bytes_raise_only_protocol_error(data, version):
    """Garbage from a peer yields packets, waits for more bytes, or raises ProtocolError; nothing else."""
    try:
        packets_, used = codec.parse(data, version)
    except ProtocolError:
        return
    assert 0 <= used <= len(data)


@pytest.mark.parametrize(
    "value, wire",
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
     (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f")],
    ids=lambda x: str(x)[:12],
)
def test_variable_byte_integers_match_the_spec_table(value, wire):
    """The boundary values of MQTT 5 table 1-1 encode and decode exactly."""
    assert codec.encode_varint(value) == wire
    assert codec.decode_varint(wire, 0) == (value, len(wire))


def test_connect_matches_the_spec_example():
    """A 3.1.1 CONNECT with clean session and keep-alive 60 is byte for byte the spec's layout."""
    wire = codec.encode(codec.Connect("ab", MQTT_3_1_1, clean_start=True, keepalive=60, username="u", password=b"p"))
    assert wire == b"\x10\x14\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02ab\x00\x01u\x00\x01p"


def test_puback_in_v5_omits_success_reason():
    """A v5 PUBACK with reason 0 and no properties is the short 2-byte form."""
    assert codec.encode(codec.PubAck(codec.PUBACK, 7), MQTT_5) == b"\x40\x02\x00\x07"
    assert codec.encode(codec.PubAck(codec.PUBREL, 7), MQTT_5) == b"\x62\x02\x00\x07"


@pytest.mark.parametrize(
    "wire, message",
    [
        (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
        (b"\x30\x80\x80\x80\x80\x01", "more than 4 bytes"),
        (b"\x30\x03\x00\x05a", "shorter than its fields"),
        (b"\x30\x04\x00\x02\xff\xfe", "UTF-8"),
        (b"\x40\x03\x00\x01\x00", "bytes past its fields"),
        (b"\xf0\x00", "unsupported MQTT packet type 15"),
    ],
    ids=["qos3", "long-varint", "truncated", "bad-utf8", "trailing", "auth"],
)
def test_malformed_packets_say_what_is_wrong(wire, message):
    """Malformed input raises ProtocolError with a message naming the problem."""
    with pytest.raises(ProtocolError, match=message):
        codec.parse(wire, MQTT_3_1_1)


def test_unknown_property_is_a_protocol_error():
    """An unknown v5 property identifier is rejected with its number."""
    wire = b"\x20\x05\x00\x00\x02\x7e\x00"
    with pytest.raises(ProtocolError, match="0x7e"):
        codec.parse(wire, MQTT_5)

"""Sparkplug B: the strategy's topics and the decoder, on payloads an independent encoder made
(tests/fleet/payloads.py, SPARKPLUG)."""

import pytest

pytest.importorskip("google.protobuf")

from lorrygate.decoding import DECODERS, DecoderChain  # noqa: E402
from lorrygate.decoding.sparkplug import SparkplugDecoder  # noqa: E402
from lorrygate.decoding.sparkplug_schema import Payload  # noqa: E402
from lorrygate.errors import DecodeError, NoDecoderMatched  # noqa: E402
from lorrygate.model import Message, Record  # noqa: E402
from lorrygate.topology import STRATEGIES  # noqa: E402
from tests.fleet.payloads import SPARKPLUG as VECTORS  # noqa: E402

T = 1717243200000  # the payloads' time: 2024-06-01T12:00:00Z, in milliseconds
NS = 1_000_000


NODE = "spBv1.0/Plant 1/{}/Edge-7"
DEVICE = "spBv1.0/Plant 1/{}/Edge-7/PLC1"


def message(topic: str, payload: bytes, received: float = 1800000000.0) -> Message:
    return Message(topic, payload, received=received)


def decode(decoder, topic: str, payload: bytes) -> list:
    address = STRATEGIES["sparkplug"]().match(topic)
    return decoder.decode(message(topic, payload), address)


def test_a_birth_stores_its_values_and_declares_the_aliases_that_later_data_uses():
    decoder = SparkplugDecoder()
    birth = decode(decoder, NODE.format("NBIRTH"), bytes.fromhex(VECTORS["nbirth"]))
    assert birth == [Record(T * NS, {
        "Properties/Hardware Make": "Siemens",
        "Temperature": 21.1,  # a Float as the device meant it, not 21.100000381469727
        "Pressure": 1013.25,
        "Counter": -5,
        "Running": True,
        "Big": -2,
        "Started": "2023-11-14T22:13:20Z",
    })]  # bdSeq and Node Control/Rebirth are bookkeeping and commands, not readings
    data = decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))
    # aliases only, no datatypes: named and typed by the birth; a metric with its own time is a record of its own
    assert data == [
        Record((T + 1000) * NS, {"Temperature": 22.4, "Counter": -7, "Running": None}),
        Record((T + 500) * NS, {"Pressure": 1000.5}),
    ]


def test_a_device_birth_arrays_data_sets_templates_and_historical_values():
    decoder = SparkplugDecoder()
    decode(decoder, NODE.format("NBIRTH"), bytes.fromhex(VECTORS["nbirth"]))
    birth = decode(decoder, DEVICE.format("DBIRTH"), bytes.fromhex(VECTORS["dbirth"]))
    assert birth == [Record((T + 2000) * NS, {
        "Inputs/A": -3,
        "Levels": [1.5, 2.25],
        "Flags": [True, False, True],
        "Names": ["a", "b"],
        "Recipe": [{"step": 1, "temp": 80.5}, {"step": -1, "temp": 0.1}],
        "Motor/Speed": 1450.0,
        "Motor/On": True,
    })]
    data = decode(decoder, DEVICE.format("DDATA"), bytes.fromhex(VECTORS["ddata"]))
    assert data == [
        Record((T + 3000) * NS, {"Inputs/A": -4, "Flags": [False]}),  # "Names" is transient: not stored
        Record((T - 60000) * NS, {"Levels": [0.3]}),  # historical, at its own time
    ]


def test_deaths_are_events_with_the_birth_death_sequence():
    decoder = SparkplugDecoder()
    # an NDEATH is the edge node's will, registered at its connect: no timestamp, the receive time
    assert decode(decoder, NODE.format("NDEATH"), bytes.fromhex(VECTORS["ndeath"])) == [
        Record(1800000000 * 10**9, {"event": "NDEATH", "bdSeq": 3})]
    assert decode(decoder, DEVICE.format("DDEATH"), bytes.fromhex(VECTORS["ddeath"])) == [
        Record((T + 4000) * NS, {"event": "DDEATH"})]


def test_data_whose_alias_no_birth_declared_is_a_dead_letter_that_says_how_to_get_a_birth():
    decoder = SparkplugDecoder()
    with pytest.raises(DecodeError, match=r"alias 2 of edge node Plant 1/Edge-7 was declared by no birth.*"
                                          r"Node Control/Rebirth"):
        decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))
    # the next birth declares them
    decode(decoder, NODE.format("NBIRTH"), bytes.fromhex(VECTORS["nbirth"]))
    assert decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))[0].fields["Temperature"] == 22.4


def test_an_edge_nodes_aliases_are_its_own():
    decoder = SparkplugDecoder()
    decode(decoder, NODE.format("NBIRTH"), bytes.fromhex(VECTORS["nbirth"]))
    with pytest.raises(DecodeError, match="alias 2 of edge node Plant 1/Edge-8"):
        decode(decoder, "spBv1.0/Plant 1/NDATA/Edge-8", bytes.fromhex(VECTORS["ndata"]))
    with pytest.raises(DecodeError, match="alias 2 of edge node Plant 2/Edge-7"):
        decode(decoder, "spBv1.0/Plant 2/NDATA/Edge-7", bytes.fromhex(VECTORS["ndata"]))


def test_a_new_node_birth_forgets_the_aliases_of_the_last():
    decoder = SparkplugDecoder()
    decode(decoder, NODE.format("NBIRTH"), bytes.fromhex(VECTORS["nbirth"]))
    reborn = Payload(timestamp=T, seq=0)
    metric = reborn.metrics.add(name="Humidity", alias=2, datatype=10, double_value=48.0)
    assert metric.alias == 2
    decode(decoder, NODE.format("NBIRTH"), reborn.SerializeToString())
    with pytest.raises(DecodeError, match="alias 4 "):
        decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))


@pytest.mark.parametrize("payload, says", [
    (b'{"temperature": 21.5}', "no Sparkplug B protobuf"),
    (b"hello", "no Sparkplug B protobuf"),
    (bytes.fromhex("08"), "no Sparkplug B protobuf"),  # cut short
])
def test_a_payload_that_is_no_sparkplug_on_a_sparkplug_topic_is_a_dead_letter(payload, says):
    with pytest.raises(DecodeError, match=says):
        decode(SparkplugDecoder(), NODE.format("NDATA"), payload)


@pytest.mark.parametrize("metric, says", [
    ({"name": "x", "datatype": 30, "bytes_value": b"\0\0\0"}, "metric 'x' \\(datatype 30\\): 3 bytes"),
    ({"name": "x", "datatype": 32, "bytes_value": b"\x09\0\0\0\0"}, "a Boolean array of 9 values in 1 bytes"),
    ({"name": "x", "datatype": 33, "bytes_value": b"a"}, "last string has no NUL"),
    ({"name": "x", "datatype": 12, "string_value": "ok"}, None),
    ({"alias": 9, "double_value": 1.0}, "alias 9"),
    ({"double_value": 1.0}, "neither a name nor an alias"),
])
def test_broken_metrics_name_the_metric(metric, says):
    payload = Payload(timestamp=T)
    payload.metrics.add(**metric)
    if says is None:
        assert decode(SparkplugDecoder(), NODE.format("NBIRTH"), payload.SerializeToString())
        return
    with pytest.raises(DecodeError, match=says):
        decode(SparkplugDecoder(), NODE.format("NBIRTH"), payload.SerializeToString())


def test_the_strategys_chain_stores_a_hosts_state_as_json_or_text():
    decoder = SparkplugDecoder()
    chain = DecoderChain((decoder, DECODERS["json"](), DECODERS["value"]()))
    strategy = STRATEGIES["sparkplug"]()
    topic = "spBv1.0/STATE/scada-host"
    name, records = chain.decode(message(topic, b'{"online": true, "timestamp": 1717243200000}'), strategy.match(topic))
    assert (name, records) == ("json", [Record(T * NS, {"online": True})])
    with pytest.raises(NoDecoderMatched):
        chain.decode(message(topic, b""), strategy.match(topic))


def test_with_rebirth_the_gateway_asks_an_edge_node_whose_aliases_it_lacks_for_its_births_once_in_a_while():
    from twisted.internet.task import Clock

    clock, sent = Clock(), []
    decoder = SparkplugDecoder(rebirth=True, clock=clock, publish=lambda *args: sent.append(args))
    clock.advance(1717243200)
    with pytest.raises(DecodeError, match=r"the gateway asked it to \(Node Control/Rebirth on "
                                          r"spBv1.0/Plant 1/NCMD/Edge-7\)"):
        decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))
    [(topic, payload, qos)] = sent
    command = Payload.FromString(payload)
    assert (topic, qos, command.timestamp) == ("spBv1.0/Plant 1/NCMD/Edge-7", 0, T)
    assert [(m.name, m.datatype, m.boolean_value) for m in command.metrics] == [("Node Control/Rebirth", 11, True)]
    # its device's data before the births arrive: not asked again at once
    clock.advance(3)
    with pytest.raises(DecodeError, match="asked it to .*, 3 s ago"):
        decode(decoder, DEVICE.format("DDATA"), bytes.fromhex(VECTORS["ddata"]))
    assert len(sent) == 1
    clock.advance(10)
    with pytest.raises(DecodeError):
        decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))
    assert len(sent) == 2


def test_without_rebirth_nothing_is_sent_and_the_error_says_how_to_ask():
    sent = []
    decoder = SparkplugDecoder(publish=lambda *args: sent.append(args))
    with pytest.raises(DecodeError, match="or set rebirth = yes in a \\[decoder:NAME\\] of type = sparkplug"):
        decode(decoder, NODE.format("NDATA"), bytes.fromhex(VECTORS["ndata"]))
    assert sent == []


def test_a_datetime_past_the_years_names_its_metric():
    payload = Payload(timestamp=T)
    payload.metrics.add(name="Serviced", datatype=13, long_value=2**63)
    with pytest.raises(DecodeError, match="metric 'Serviced' \\(datatype 13\\)"):
        decode(SparkplugDecoder(), NODE.format("NBIRTH"), payload.SerializeToString())


def test_names_and_text_that_are_no_utf8_are_text_with_the_bytes_escaped():
    """Sparkplug's strings are UTF-8; a device that sends other bytes (Latin-1 from a PLC) in a name or a String
    value: protobuf's parser gives those bytes as they came, which broke the decoder (a name: a TypeError, the
    message a dead letter) or were stored as bytes (a value). They are text, the bytes UTF-8 cannot read as ``\\xNN``,
    as the other decoders read text that is no UTF-8."""
    payload = Payload(timestamp=T)
    payload.metrics.add(name="Temperatur Kessel-@", datatype=10, double_value=61.5)
    payload.metrics.add(name="Status", datatype=12, string_value="St^rung")
    template = payload.metrics.add(name="Pump", datatype=19)
    template.template_value.metrics.add(name="Dr`ck", datatype=10, double_value=1.5)
    data = payload.SerializeToString()
    for mark, latin1 in ((b"Kessel-@", b"Kessel-\xe4"), (b"St^rung", b"St\xf6rung"), (b"Dr`ck", b"Dr\xfcck")):
        assert data.count(mark) == 1  # (a byte for a byte: the lengths hold)
        data = data.replace(mark, latin1)
    [record] = decode(SparkplugDecoder(), NODE.format("NBIRTH"), data)
    assert record.fields == {"Temperatur Kessel-\\xe4": 61.5, "Status": "St\\xf6rung", "Pump/Dr\\xfcck": 1.5}


@pytest.mark.parametrize("on_metric", [False, True])
def test_a_timestamp_past_the_years_is_a_dead_letter_not_a_row_no_storage_can_write(on_metric):
    payload = Payload(timestamp=2**63 if not on_metric else T)
    metric = payload.metrics.add(name="Temperature", datatype=10, double_value=21.5)
    if on_metric:
        metric.timestamp = 2**64 - 1
    with pytest.raises(DecodeError, match="ms, is past the year 9999"):
        decode(SparkplugDecoder(), NODE.format("NBIRTH"), payload.SerializeToString())


def test_a_gap_in_an_edge_nodes_seq_is_counted_and_logged_once_in_a_while_and_the_data_still_read():
    """seq counts an edge node's messages (0-255, wrapping) from its NBIRTH: a number skipped means messages lost
    upstream (QoS 0); the message is read all the same, the gap counted, and said at most every 10 s."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    def payload(seq, value=None):
        made = Payload(timestamp=T, seq=seq)
        made.metrics.add(name="Temperature", datatype=10, double_value=value if value is not None else 20.0 + seq)
        return made.SerializeToString()

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = Clock()
        decoder = SparkplugDecoder(clock=clock)
        decode(decoder, NODE.format("NBIRTH"), payload(254))
        for seq in (255, 0, 1):  # wraps from 255 to 0
            decode(decoder, NODE.format("NDATA"), payload(seq))
        decode(decoder, DEVICE.format("DDATA"), payload(2))  # a device's message counts in its edge node's seq
        assert decoder.seq_gaps == 0
        assert decode(decoder, NODE.format("NDATA"), payload(6)) == [Record(T * NS, {"Temperature": 26.0})]
        decode(decoder, NODE.format("NDATA"), payload(9))
        assert decoder.seq_gaps == 2
        clock.advance(10)
        decode(decoder, DEVICE.format("DDEATH"), payload(20))
        decode(decoder, NODE.format("NBIRTH"), payload(77))  # a birth starts the count afresh: no gap
        decode(decoder, NODE.format("NDATA"), payload(78))
        assert decoder.seq_gaps == 3
    finally:
        globalLogPublisher.removeObserver(events.append)
    said = [e for e in events if e.get("event") == "sparkplug_seq_gap"]
    assert [(e["kind"], e["last"], e["seq"], e["lost"]) for e in said] == [("NDATA", 2, 6, 3), ("DDEATH", 9, 20, 10)]
    assert "3 message(s) never came" in said[0]["log_format"].format(**said[0])

"""Kepware's IoT Gateway and EMQX Neuron: their JSON as their documentation shows it, and what is not theirs."""

import pytest

from lorrygate.decoding.industrial import KepwareDecoder, NeuronDecoder
from lorrygate.errors import Declined, DecodeError
from lorrygate.model import Message

MS = 10**6


def decode(decoder, payload: bytes):
    return decoder.decode(Message("plant/line1", payload, 1, False, 1_700_000_000.0), None)


def test_kepwares_values_are_a_record_a_timestamp_under_their_ids():
    records = decode(KepwareDecoder(), b'{"timestamp":1467153291016,"values":['
                                       b'{"id":"Channel1.Device1.Tag1","v":0,"q":true,"t":1467153291016},'
                                       b'{"id":"Channel1.Device1.Tag2","v":5.5,"q":true,"t":1467153291016},'
                                       b'{"id":"Channel1.Device1.Tag3","v":"on","q":true,"t":1467153290000}]}')
    assert [(r.time, r.fields, r.tags) for r in records] == [
        (1467153291016 * MS, {"Channel1.Device1.Tag1": 0, "Channel1.Device1.Tag2": 5.5}, {}),
        (1467153290000 * MS, {"Channel1.Device1.Tag3": "on"}, {})]


def test_a_kepware_value_of_bad_quality_is_kept_with_its_quality_beside_it():
    (record,) = decode(KepwareDecoder(), b'{"timestamp":1467153291016,"values":['
                                         b'{"id":"A","v":1,"q":false,"t":1467153291016},'
                                         b'{"id":"B","v":2,"q":24,"t":1467153291016},'
                                         b'{"id":"C","v":3,"q":192},{"id":"D","v":4}]}')
    assert record.fields == {"A": 1, "A.q": False, "B": 2, "B.q": 24, "C": 3, "D": 4}
    assert record.time == 1467153291016 * MS  # (the message's timestamp for values without their own)


@pytest.mark.parametrize("payload", [
    b'{"values": {"a": 1}}', b'{"values": []}', b'{"values": [{"id": "a"}]}', b'[1]', b'{"values"',
])
def test_what_is_not_kepwares_is_declined(payload):
    with pytest.raises(Declined):
        decode(KepwareDecoder(), payload)


def test_a_kepware_value_without_a_time_is_a_dead_letter_that_says_so():
    with pytest.raises(DecodeError, match="value 1 \\('A'\\) has no t, and the message no timestamp"):
        decode(KepwareDecoder(), b'{"values":[{"id":"A","v":1}]}')
    with pytest.raises(DecodeError, match="value 1's t 'now' is not the epoch milliseconds"):
        decode(KepwareDecoder(), b'{"values":[{"id":"A","v":1,"t":"now"}]}')


@pytest.mark.parametrize("payload", [
    b'{"timestamp":1650006388943,"node":"modbus","group":"grp","values":{"tag0":123},"errors":{"tag1":2014},'
    b'"metas":{}}',
    b'{"timestamp":1650006388943,"node":"modbus","group":"grp","tags":[{"name":"tag0","value":123},'
    b'{"name":"tag1","error":2014}]}',
    b'{"node_name":"modbus","group_name":"grp","timestamp":1650006388943,"values":{"tag0":123},'
    b'"errors":{"tag1":2014}}',
], ids=["values-format", "tags-format", "2.0"])
def test_neurons_formats_are_one_record_the_node_and_group_its_tags(payload):
    (record,) = decode(NeuronDecoder(), payload)
    assert (record.time, record.fields, record.tags) == (
        1650006388943 * MS, {"tag0": 123, "tag1.error": 2014}, {"node": "modbus", "group": "grp"})


def test_a_neuron_values_format_with_a_tags_key_of_another_kind_is_read_by_its_values():
    """The values format beside a ``tags`` that is no list (a plugin's own key, or a broken one): the decoder took
    it for the tags format and broke on it (a TypeError, its message a dead letter that named a line of the
    gateway's code)."""
    (record,) = decode(NeuronDecoder(), b'{"timestamp":1650006388943,"node":"modbus","group":"grp",'
                                        b'"values":{"tag0":123},"tags":5}')
    assert (record.fields, record.tags) == ({"tag0": 123}, {"node": "modbus", "group": "grp"})


def test_neurons_driver_metadata_is_dotted_fields():
    (record,) = decode(NeuronDecoder(), b'{"timestamp":1650006388943,"node":"opc","group":"g","values":{"t":1},'
                                        b'"metas":{"source":"opcua"}}')
    assert record.fields == {"t": 1, "metas.source": "opcua"}


@pytest.mark.parametrize("payload", [
    b'{"version":"2.1.0","timestamp":1658134132237,"states":[{"node":"mqtt-client","link":2}]}',  # heartbeat
    b'{"node":"modbus","values":{"a":1}}', b'[{"node": 1}]',
])
def test_what_is_not_neurons_data_is_declined(payload):
    with pytest.raises(Declined):
        decode(NeuronDecoder(), payload)


def test_a_neuron_tag_without_a_name_is_a_dead_letter_that_says_so():
    with pytest.raises(DecodeError, match="tag 2 of the tags format is no object with a name"):
        decode(NeuronDecoder(), b'{"timestamp":1,"node":"m","tags":[{"name":"a","value":1},{"value":2}]}')


def test_thingsboards_readings_are_a_record_each_at_their_ts():
    from lorrygate.decoding.industrial import ThingsBoardDecoder

    (one,) = decode(ThingsBoardDecoder(), b'{"ts": 1451649600512, "values": {"temperature": 22.5, "humidity": 61}}')
    assert (one.time, one.fields, one.tags) == (1451649600512 * MS, {"temperature": 22.5, "humidity": 61}, {})
    series = decode(ThingsBoardDecoder(), b'[{"ts": 1451649600000, "values": {"t": 22.5, "pos": {"lat": 52.1}}},'
                                          b' {"ts": 1451649601000, "values": {"t": 22.7}}]')
    assert [(r.time, r.fields) for r in series] == [(1451649600000 * MS, {"t": 22.5, "pos.lat": 52.1}),
                                                    (1451649601000 * MS, {"t": 22.7})]
    devices = decode(ThingsBoardDecoder(), b'{"Device A": [{"ts": 1483228800000, "values": {"t": 42}}],'
                                           b' "Device B": [{"ts": 1483228801000, "values": {"t": 43}}]}')
    assert [(r.time, r.fields, r.tags) for r in devices] == [
        (1483228800000 * MS, {"t": 42}, {"device": "Device A"}), (1483228801000 * MS, {"t": 43}, {"device": "Device B"})]


@pytest.mark.parametrize("payload", [
    b'{"values": {"t": 1}}', b'{"ts": 1, "values": {"t": 1}, "other": 2}', b'{"temperature": 22.5}',
    b'{"Device A": [{"temperature": 1}]}', b'{}', b'[]',
])
def test_what_is_not_thingsboards_readings_with_times_is_declined(payload):
    from lorrygate.decoding.industrial import ThingsBoardDecoder

    with pytest.raises(Declined):
        decode(ThingsBoardDecoder(), payload)

"""SenML (RFC 8428) packs in JSON and CBOR: base fields, resolved names, times and values, rows a time and base
name, and what a pack that breaks the RFC gets."""

import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorrygate.config.settings import STRATEGY_DECODERS
from lorrygate.decoding import DECODERS, DecoderChain
from lorrygate.decoding.senml import LABELS, is_pack
from lorrygate.errors import Declined, DecodeError, PartlyDecoded
from lorrygate.model import Message, Record
from lorrygate.sources.http import topic_of
from lorrygate.topology.wan import WanStrategy

R = 10**9
NOW = 1_764_900_000  # the receive time, in seconds
#: Mainflux's (Magistrala's) example, RFC 8428 5.1.3's shape: a base name, a base time with decimals, a base unit
MAINFLUX = [{"bn": "some-base-name:", "bt": 1.276020076001e+09, "bu": "A", "bver": 5, "n": "voltage", "u": "V",
             "v": 120.1}, {"n": "current", "t": -5, "v": 1.2}, {"n": "current", "t": -4, "v": 1.3},
            {"n": "current", "v": 1.7}]
BT = 1_276_020_076_001_000_000


def message(payload: bytes, topic="mqttkit-1/testdrive/area-42/node-1/data.json"):
    return Message(topic, payload, 1, False, float(NOW), "#")


def decode(pack, decoder="json"):
    payload = json.dumps(pack).encode() if decoder != "cbor" else cbor2.dumps(pack)
    return DECODERS[decoder]().decode(message(payload), None)


def as_cbor(pack):
    return [{LABELS[key]: value for key, value in record.items()} for record in pack]


def test_a_pack_is_a_row_a_time_each_name_a_field_the_base_name_a_tag():
    tags = {"base_name": "some-base-name:"}
    assert decode(MAINFLUX) == [
        Record(BT, {"voltage": 120.1, "voltage.unit": "V", "current": 1.7, "current.unit": "A"}, tags),
        Record(BT - 5 * R, {"current": 1.2, "current.unit": "A"}, tags),
        Record(BT - 4 * R, {"current": 1.3, "current.unit": "A"}, tags)]


def test_the_same_pack_in_cbor_and_by_the_senml_decoder_is_the_same_rows():
    """RFC 8428 section 6: CBOR's integer labels; a data value (vd) is bytes there, base64url text in JSON."""
    expected = decode(MAINFLUX)
    cbor = cbor2.dumps(as_cbor(MAINFLUX))
    assert DECODERS["cbor"]().decode(message(cbor), None) == expected
    assert DECODERS["senml"]().decode(message(cbor), None) == expected
    assert DECODERS["senml"]().decode(message(json.dumps(MAINFLUX).encode()), None) == expected
    (row,) = DECODERS["cbor"]().decode(message(cbor2.dumps([{0: "blob", 8: b"\x01\x02\xff"}])), None)
    assert row.fields == {"blob": "AQL_"}
    (row,) = decode([{"n": "blob", "vd": "AQL_"}])
    assert row.fields == {"blob": "AQL_"}


def test_lwm2m_object_instances_share_their_columns_told_apart_by_the_base_name():
    rows = decode([{"bn": "/3303/0/", "n": "5700", "v": 25.5}, {"n": "5701", "vs": "Cel"},
                   {"bn": "/3304/0/", "n": "5700", "v": 48}])
    assert rows == [Record(NOW * R, {"5700": 25.5, "5701": "Cel"}, {"base_name": "/3303/0/"}),
                    Record(NOW * R, {"5700": 48}, {"base_name": "/3304/0/"})]


def test_times_below_2_to_the_28_are_relative_to_now():
    rows = decode([{"n": "temp", "v": 21.5, "t": -60}, {"n": "temp", "v": 21.7}, {"n": "temp", "v": 21.9, "t": 0.5}])
    assert [(row.time, row.fields) for row in rows] == [((NOW - 60) * R, {"temp": 21.5}), (NOW * R, {"temp": 21.7}),
                                                        (NOW * R + R // 2, {"temp": 21.9})]


def test_base_values_and_sums_are_added_and_hold_until_given_again():
    rows = decode([{"bn": "meter:", "bv": 1000, "bs": 50, "bt": 1_700_000_000, "n": "energy", "v": 5, "s": 2,
                    "u": "Wh"}, {"n": "energy", "t": 60, "v": 7}, {"bv": 0, "bn": "", "n": "flag", "vb": True,
                                                                      "t": 60}])
    assert rows == [
        Record(1_700_000_000 * R, {"energy": 1005, "energy.sum": 52, "energy.unit": "Wh"}, {"base_name": "meter:"}),
        Record(1_700_000_060 * R, {"energy": 1007}, {"base_name": "meter:"}),
        Record(1_700_000_060 * R, {"flag": True}, {})]


def test_a_name_twice_at_one_time_is_a_second_row_and_a_record_of_base_fields_only_sets_them():
    rows = decode([{"bn": "dev:", "bt": 1_700_000_000}, {"n": "a", "v": 1}, {"n": "a", "v": 2}, {"n": "b", "v": 3},
                   {"n": "ut", "v": 4, "ut": 300}])
    assert [(row.time, row.fields) for row in rows] == [
        (1_700_000_000 * R, {"a": 1}), (1_700_000_000 * R, {"a": 2, "b": 3, "ut": 4, "ut.update_time": 300})]
    # a record without n is the base name itself (RFC 8428's examples of one sensor)
    (row,) = decode([{"bn": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}])
    assert (row.fields, row.tags) == ({"urn:dev:ow:10e2073a01080063": 23.1,
                                       "urn:dev:ow:10e2073a01080063.unit": "Cel"}, {})


@pytest.mark.parametrize(("pack", "error"), [
    ([{"n": "a", "v": 1, "x_": 1}], "record 1 of the SenML pack: the field 'x_' must be understood"),
    ([{"n": "a", "v": 1}, {"n": "b", "v": 1, "vs": "x"}], "record 2 of the SenML pack: more than one value (v, vs)"),
    ([{"n": "a", "v": 1}, {"n": "b", "u": "V"}], "record 2 of the SenML pack: no value (v, vs, vb or vd) and no sum"),
    ([{"n": "a", "v": "21.5"}], "v '21.5' is no number"),
    ([{"n": "a", "vb": "true"}], "vb 'true' is no boolean"),
    ([{"n": 5, "v": 1}], "n 5 is no text"),
    ([{"n": "a", "v": 1, "t": "now"}], "t 'now' is no number"),
    ([{"n": "a", "v": 1, "bt": 1e30}], "the time bt + t = 1e+30 is outside the years 1 to 9999"),
    # (beyond a float's range once in microseconds: an OverflowError of the decoder's own, before)
    ([{"n": "a", "v": 1, "bt": 1e308}], "the time bt + t = 1e+308 is outside the years 1 to 9999"),
    ([{"n": "a", "v": 1, "t": -1e308}], "the time bt + t = -1e+308 is outside the years 1 to 9999"),
    ([{"bver": 0, "n": "a", "v": 1}], "bver 0 is no version"),
])
def test_a_pack_that_breaks_the_rfc_is_a_decode_error_that_says_where(pack, error):
    with pytest.raises(DecodeError, match=error.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        decode(pack)


@pytest.mark.parametrize("decoder", ["json", "senml", "cbor"])
def test_a_bad_record_costs_the_others_nothing_and_is_kept_with_its_base_fields(decoder):
    """A record that breaks the RFC (a value that is no number): the others' rows are stored, and it is kept as a
    pack of its own, with the base fields it was read with, in the format it came in, which a replay reads alone
    as it was read here."""
    pack = [{"bn": "dev:", "bt": 1_700_000_000, "bu": "V", "n": "a", "v": 1}, {"n": "b", "v": "1,5", "t": 2},
            {"n": "c", "v": 3}, {"n": "d", "v": 4, "bt": 1e30}]
    payload = cbor2.dumps(as_cbor(pack)) if decoder != "json" else json.dumps(pack).encode()
    with pytest.raises(PartlyDecoded) as caught:
        DECODERS[decoder]().decode(message(payload), None)
    partly = caught.value
    tags = {"base_name": "dev:"}
    assert partly.records == [Record(1_700_000_000 * R, {"a": 1, "a.unit": "V", "c": 3, "c.unit": "V"}, tags)]
    assert (partly.bad, partly.failed) == (2, "the 2 records")
    assert partly.reason == ("2 of 4 records: record 2 of the SenML pack: v '1,5' is no number; record 4 of the "
                             "SenML pack: the time bt + t = 1e+30 is outside the years 1 to 9999 (SenML's times are "
                             "seconds since 1970, and below 2**28 seconds relative to now)")
    kept = [{"bn": "dev:", "bt": 1_700_000_000, "bu": "V", "n": "b", "v": "1,5", "t": 2},
            {"bn": "dev:", "bt": 1e30, "bu": "V", "n": "d", "v": 4}]
    assert partly.payload == (cbor2.dumps(as_cbor(kept)) if decoder != "json" else json.dumps(kept).encode())
    with pytest.raises(DecodeError, match="2 of 2 records: record 1 of the SenML pack: v '1,5'"):
        DECODERS[decoder]().decode(message(partly.payload), None)  # (a replay: the same errors, nothing stored)
    mended = cbor2.loads(partly.payload) if decoder != "json" else json.loads(partly.payload)
    mended[0][LABELS["v"] if decoder != "json" else "v"] = 1.5
    mended[1][LABELS["bt"] if decoder != "json" else "bt"] = 1_700_000_000
    payload = cbor2.dumps(mended) if decoder != "json" else json.dumps(mended).encode()
    assert DECODERS[decoder]().decode(message(payload), None) == [
        Record(1_700_000_002 * R, {"b": 1.5, "b.unit": "V"}, tags),
        Record(1_700_000_000 * R, {"d": 4, "d.unit": "V"}, tags)]


@pytest.mark.parametrize("bad", [{"n": "b"}, {"v": 2}, {"n": "b", "v": 2, "x_": 1}])
def test_a_record_that_alone_is_no_pack_keeps_the_pack_whole(bad):
    """Without a name or a value a record kept alone would be no pack, and a replay would read it as plain JSON
    (a row of its labels); a field that must be understood spoils the pack (RFC 8428 4.4)."""
    pack = [{"n": "a", "v": 1}, bad, {"n": "c", "v": 3}]
    with pytest.raises(DecodeError) as caught:
        decode(pack)
    assert not isinstance(caught.value, PartlyDecoded)


def test_what_is_no_pack_is_left_to_the_other_decoders():
    assert not is_pack([{"a": 1}]) and not is_pack([{"n": "a"}]) and not is_pack([]) and not is_pack({"n": "a"})
    assert decode([{"a": 1, "time": 1_700_000_000}]) == [Record(1_700_000_000 * R, {"a": 1}, {})]
    assert decode({"n": "temp", "v": 21.5}) == [Record(NOW * R, {"n": "temp", "v": 21.5}, {})]
    for payload in (b'{"n": "a", "v": 1}', b'[{"a": 1}]', b"\xa1\x00\x01", b"21.5"):
        with pytest.raises(Declined):
            DECODERS["senml"]().decode(message(payload), None)


def test_kotoris_topics_and_http_content_types_take_senml():
    chain = DecoderChain(tuple(DECODERS[name]() for name in STRATEGY_DECODERS["wan"]))
    address = WanStrategy().match("mqttkit-1/testdrive/area-42/node-1/data.json")
    used, records = chain.decode(message(json.dumps(MAINFLUX).encode()), address)
    assert (used, records) == ("json", decode(MAINFLUX))
    assert topic_of(b"/api/mqttkit-1/testdrive/area-42/node-1/data", "application/senml+json").endswith("/data.json")
    assert topic_of(b"/api/mqttkit-1/testdrive/area-42/node-1/data", "application/senml+cbor").endswith("/data.cbor")


_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5),
                    st.binary(max_size=4), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(sorted(LABELS) + ["x_"]), _values, max_size=6), min_size=1,
                max_size=5))
def test_any_pack_of_senml_labels_gives_rows_or_a_decode_error(pack):
    for decoder, payload in (("senml", cbor2.dumps(as_cbor([{k: v for k, v in r.items() if k in LABELS}
                                                              for r in pack]))),
                             ("json", json.dumps(pack, default=lambda value: value.hex()).encode())):
        try:
            rows = DECODERS[decoder]().decode(message(payload), None)
        except PartlyDecoded as partly:
            assert partly.records and all(row.fields for row in partly.records)
            # the records kept: a pack the same decoder takes again, and fails alike (a replay stores nothing)
            with pytest.raises(DecodeError) as again:
                DECODERS[decoder]().decode(message(partly.payload), None)
            assert not isinstance(again.value, PartlyDecoded)
            continue
        except (Declined, DecodeError):
            continue
        assert rows and all(isinstance(row, Record) for row in rows)
        if decoder == "senml" or is_pack(pack):
            assert all(row.fields for row in rows)


_names = st.text(alphabet="abcxyz", min_size=1, max_size=3)
_good = st.fixed_dictionaries({"n": _names, "v": st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6))},
                              optional={"u": st.just("V"), "t": st.integers(-100, 0), "bn": st.just("dev:"),
                                        "bt": st.just(1_700_000_000)})
_bad = st.one_of(st.fixed_dictionaries({"n": _names, "v": st.text(max_size=3)}),
                 st.fixed_dictionaries({"n": _names, "vb": st.integers(2, 5)}),
                 st.fixed_dictionaries({"n": _names, "v": st.just(1), "vs": st.just("two")}),
                 st.fixed_dictionaries({"n": _names, "v": st.just(1), "t": st.just(1e30)}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.data()), min_size=1, max_size=8), st.sampled_from(["json", "cbor"]))
def test_good_and_bad_records_mixed_the_bad_are_kept_alone_and_fail_alike_again(kinds, decoder):
    pack = [data.draw(_good if good else _bad) for good, data in kinds]
    bad = sum(not good for good, _ in kinds)
    payload = json.dumps(pack).encode() if decoder == "json" else cbor2.dumps(as_cbor(pack))
    try:
        rows = DECODERS[decoder]().decode(message(payload), None)
    except PartlyDecoded as partly:
        assert 0 < partly.bad == bad < len(pack) and partly.records
        kept = json.loads(partly.payload) if decoder == "json" else cbor2.loads(partly.payload)
        assert len(kept) == bad
        with pytest.raises(DecodeError) as again:
            DECODERS[decoder]().decode(message(partly.payload), None)
        assert not isinstance(again.value, PartlyDecoded) and again.value.reason.startswith(f"{bad} of {bad} records"
                                                                                          if bad > 1 else "record 1")
        return
    except DecodeError:
        assert bad == len(pack)  # (all of them bad: the pack whole)
        return
    assert bad == 0 and rows

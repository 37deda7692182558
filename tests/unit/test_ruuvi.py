"""Ruuvi Gateway: RuuviTag's data format 5 against the test vectors of its specification (docs.ruuvi.com, "Data
format 5 (RAWv2)"), and the gateway's messages in each of its data formats."""

import pytest

from lorrygate.decoding.ruuvi import RuuviDecoder, data_format_3, data_format_5, manufacturer_data
from lorrygate.errors import Declined, DecodeError
from lorrygate.model import Message
from lorrygate.topology.ruuvi import RuuviStrategy

MAC = "CB:B8:33:4C:88:4F"
GATEWAY = "C8:25:2D:8E:9C:2C"
#: the advertisement of the specification's valid case, as the gateway relays it (flags, then the manufacturer
#: specific data), with 24.305 C and 53.4925 % (a step above the case's 24.3 and 53.49)
ADVERTISEMENT = "0201061BFF99040512FD5395C37C0004FFFC040CAC364200CDCBB8334C884F"


@pytest.mark.parametrize("raw, expected", [
    ("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
     {"dataFormat": 5, "temperature": 24.3, "humidity": 53.49, "pressure": 100044, "accelX": 0.004,
      "accelY": -0.004, "accelZ": 1.036, "voltage": 2.977, "txPower": 4, "movementCounter": 66,
      "measurementSequenceNumber": 205, "id": MAC}),
    ("057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F",
     {"dataFormat": 5, "temperature": 163.835, "humidity": 163.835, "pressure": 115534, "accelX": 32.767,
      "accelY": 32.767, "accelZ": 32.767, "voltage": 3.646, "txPower": 20, "movementCounter": 254,
      "measurementSequenceNumber": 65534, "id": MAC}),
    ("058001000000008001800180010000000000CBB8334C884F",
     {"dataFormat": 5, "temperature": -163.835, "humidity": 0.0, "pressure": 50000, "accelX": -32.767,
      "accelY": -32.767, "accelZ": -32.767, "voltage": 1.6, "txPower": -40, "movementCounter": 0,
      "measurementSequenceNumber": 0, "id": MAC}),
    # not available: every value left out
    ("058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF", {"dataFormat": 5}),
], ids=["valid", "maximum", "minimum", "invalid"])
def test_data_format_5_decodes_the_specifications_test_vectors(raw, expected):
    assert data_format_5(bytes.fromhex(raw)) == expected


def test_the_resolution_of_the_format_is_kept():
    """A step of 0.005 C and 0.0025 %: the Python libraries round them to 0.01 (24.305 -> 24.3)."""
    values = data_format_5(manufacturer_data(bytes.fromhex(ADVERTISEMENT)))
    assert (values["temperature"], values["humidity"]) == (24.305, 53.4925)


@pytest.mark.parametrize("raw, expected", [
    # the vector of ruuvi-sensor-protocol (Rust): 11.5 %, 1.69 C, 63656 Pa, (1000, 1255, 1510) mG, 2182 mV
    ("03170145355803E804E705E60886",
     {"dataFormat": 3, "temperature": 1.69, "humidity": 11.5, "pressure": 63656, "accelX": 1.0, "accelY": 1.255,
      "accelZ": 1.51, "voltage": 2.182}),
    # below freezing: the sign bit (-12.03 C), a negative acceleration
    ("03508C03C350FC18000003E80BB8",
     {"dataFormat": 3, "temperature": -12.03, "humidity": 40.0, "pressure": 100000, "accelX": -1.0, "accelY": 0.0,
      "accelZ": 1.0, "voltage": 3.0}),
])
def test_data_format_3_decodes_to_the_names_and_units_of_format_5(raw, expected):
    assert data_format_3(bytes.fromhex(raw)) == expected
    assert data_format_3(bytes.fromhex(raw)[:13]) is None and data_format_5(bytes.fromhex(raw)) is None


def test_an_older_tags_raw_advertisement_is_its_values():
    """A tag on firmware before 2.x sends data format 3: its hex was kept as it came."""
    advertisement = "02010611FF990403170145355803E804E705E60886"  # flags, then the manufacturer data
    (record,) = decode(f'{{"rssi":-70,"ts":1653668027,"data":"{advertisement}"}}'.encode())
    assert record.fields == {"rssi": -70, "dataFormat": 3, "temperature": 1.69, "humidity": 11.5, "pressure": 63656,
                             "accelX": 1.0, "accelY": 1.255, "accelZ": 1.51, "voltage": 2.182}


@pytest.mark.parametrize("advertisement, found", [
    (ADVERTISEMENT, "0512FD5395C37C0004FFFC040CAC364200CDCBB8334C884F"),
    ("02011A020A0C0AFF4C001005071C1F2A5B", None),  # another maker's (Apple's) data
    ("0201061BFF9904", None),  # a structure longer than the advertisement
    ("00", None),
    ("", None),
])
def test_the_manufacturer_data_of_ruuvi_is_found_among_the_advertisements_structures(advertisement, found):
    data = manufacturer_data(bytes.fromhex(advertisement))
    assert (data.hex().upper() if data is not None else None) == found


def decode(payload: bytes, topic: str = f"ruuvi/{GATEWAY}/{MAC}"):
    address = RuuviStrategy().match(topic)
    return RuuviDecoder().decode(Message(topic, payload, 1, False, 1_700_000_000.25), address)


def test_a_raw_advertisement_is_the_values_the_gateway_would_have_decoded_at_its_ts():
    (record,) = decode(f'{{"gw_mac":"{GATEWAY}","rssi":-62,"aoa":[],"gwts":1653668028,"ts":1653668027,'
                       f'"data":"{ADVERTISEMENT}","coords":""}}'.encode())
    assert record.time == 1_653_668_027 * 10**9
    assert record.fields == {"rssi": -62, "gwts": 1653668028, "dataFormat": 5, "temperature": 24.305,
                             "humidity": 53.4925, "pressure": 100044, "accelX": 0.004, "accelY": -0.004,
                             "accelZ": 1.036, "voltage": 2.977, "txPower": 4, "movementCounter": 66,
                             "measurementSequenceNumber": 205}


def test_the_gateways_own_decoded_values_are_kept_as_it_sent_them_with_the_hex_it_was_asked_for():
    (record,) = decode(f'{{"gw_mac":"{GATEWAY}","rssi":-62,"aoa":[],"gwts":"1653668027","ts":"1653668027",'
                       f'"data":"{ADVERTISEMENT}","dataFormat":5,"temperature":24.305,"id":"{MAC}",'
                       f'"coords":""}}'.encode())
    assert record.time == 1_653_668_027 * 10**9
    assert record.fields == {"rssi": -62, "gwts": "1653668027", "data": ADVERTISEMENT, "dataFormat": 5,
                             "temperature": 24.305}


def test_another_devices_advertisement_keeps_its_hex_and_a_gateway_without_a_clock_gets_the_receive_time():
    (record,) = decode(b'{"rssi":-80,"aoa":[],"cnt":17,"data":"02011A020A0C0AFF4C001005071C1F2A5B",'
                       b'"coords":"60.1,24.9"}', f"ruuvi/{GATEWAY}/5A:10:A8:46:90:AC")
    assert record.time == 1_700_000_000_250_000_000
    assert record.fields == {"rssi": -80, "cnt": 17, "data": "02011A020A0C0AFF4C001005071C1F2A5B",
                             "coords": "60.1,24.9"}


@pytest.mark.parametrize("payload, reason", [
    (b'{"data": "zz"}', "data 'zz' is not hex"),
    (b"[1, 2]", "a JSON list, not the object a Ruuvi Gateway sends"),
    (b"{", "not JSON"),
    (b'{"ts": "yesterday", "data": ""}', "ts 'yesterday' is not the epoch seconds a Ruuvi Gateway sends"),
])
def test_a_message_that_is_no_gateways_is_a_dead_letter_that_says_why(payload, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(payload)


def test_the_gateways_status_is_left_to_json():
    with pytest.raises(Declined):
        decode(b'{"state": "online"}', f"ruuvi/{GATEWAY}/gw_status")

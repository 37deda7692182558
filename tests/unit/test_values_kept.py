"""
No value lost to a name another value has, or to a null: dotted names of
nested objects beside keys with dots, a LoRaWAN envelope beside a decoded
payload of the same names, Homie's cleared topics, and a first-sample hook
for a field whose first value was null.
"""

import json

from lorrygate.decoding.vendors import ChirpStackDecoder, HomieDecoder, TasmotaDecoder, TtnDecoder
from lorrygate.hooks.samples import HookState, SampleTracker
from lorrygate.model import Address, Message, Record, TableName, unused_name
from lorrygate.storage.batch import Batch, Entry
from lorrygate.storage.layout import flatten
from tests.unit.test_hooks import Recorder

RECEIVED = 1_717_243_200.5
DATA = Address("r", "n", "g", "d", "data", "data.json")


def message(payload: bytes, topic="r/n/g/d/data.json") -> Message:
    return Message(topic, payload, 1, False, RECEIVED, "#")


def test_flatten_keeps_a_dotted_key_beside_the_object_of_the_same_name():
    """{"a.b": 1, "a": {"b": 2}}: both values, the later one as a.b_2, in either order."""
    assert flatten({"a.b": 1, "a": {"b": 2}}, None) == {"a.b": 1, "a.b_2": 2}
    assert flatten({"a": {"b": 2}, "a.b": 1}, None) == {"a.b": 2, "a.b_2": 1}
    assert flatten({"a.b": 1, "a.b_2": 3, "a": {"b": 2}}, None) == {"a.b": 1, "a.b_2": 3, "a.b_3": 2}


def test_flatten_leaves_nulls_out_and_a_field_wins_over_a_tag_once():
    """A null field makes no column (also in an object); a field takes its tag's name, and a second field of that
    name gets _2."""
    assert flatten({"a": None, "o": {"x": None, "y": 1}}, {"room": "attic"}) == {"room": "attic", "o.y": 1}
    assert flatten({"site": 5}, {"site": "x"}) == {"site": 5}
    assert flatten({"site": {"a": 1}, "site.a": 2}, {"site.a": "x"}) == {"site.a": 1, "site.a_2": 2}
    assert unused_name({"v": 1}, "w") == "w" and unused_name({"v": 1, "v_2": 2}, "v") == "v_3"


def uplink(decoded: dict) -> bytes:
    return json.dumps({
        "end_device_ids": {"device_id": "ftd-1", "dev_eui": "0004A30B001C0530",
                           "application_ids": {"application_id": "survey"}},
        "uplink_message": {"f_port": 1, "f_cnt": 7, "decoded_payload": decoded,
                           "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-a"}, "rssi": -101, "snr": 7.5}],
                           "received_at": "2024-06-01T12:00:00Z"}}).encode()


def test_a_decoded_payload_keeps_its_own_rssi_beside_the_gateways():
    """A field test device reports the RSSI and SNR of its downlink, and its own frame counter: its values keep
    their names, the envelope's get _2 (they overwrote the device's before)."""
    (record,) = TtnDecoder().decode(message(uplink({"rssi": -60, "snr": 9, "f_cnt": 99, "t": 21.5})), DATA)
    assert record.fields == {"rssi": -60, "snr": 9, "f_cnt": 99, "t": 21.5, "f_port": 1, "f_cnt_2": 7,
                             "rssi_2": -101, "snr_2": 7.5}
    (plain,) = TtnDecoder().decode(message(uplink({"t": 21.5})), DATA)
    assert plain.fields == {"t": 21.5, "f_port": 1, "f_cnt": 7, "rssi": -101, "snr": 7.5}


def test_chirpstack_keeps_a_decoded_rssi_too():
    payload = json.dumps({"deviceInfo": {"devEui": "0101010101010101", "deviceName": "d1"}, "fPort": 2, "fCnt": 3,
                          "object": {"rssi": -50}, "rxInfo": [{"gatewayId": "g1", "rssi": -90, "snr": 3}]}).encode()
    (record,) = ChirpStackDecoder().decode(message(payload), DATA)
    assert record.fields == {"rssi": -50, "fPort": 2, "fCnt": 3, "rssi_2": -90, "snr": 3}


def test_tasmota_keeps_a_dotted_key_beside_its_object():
    payload = b'{"Time": "2024-06-01T12:00:00", "ENERGY": {"Power": 5}, "ENERGY.Power": 7}'
    (record,) = TasmotaDecoder().decode(message(payload), DATA)
    assert record.fields == {"ENERGY.Power": 5, "ENERGY.Power_2": 7}


def test_homie_cleared_topics_store_nothing_and_a_nul_byte_is_the_empty_text():
    """A zero-length payload clears a retained topic (a removed device's): no row. Homie 5 sends an empty string
    as one NUL byte."""
    prop = Address("homie", None, None, "dev1_node", "data", "prop", "prop")
    assert HomieDecoder().decode(message(b"", "homie/dev1/node/prop"), prop) == []
    (record,) = HomieDecoder().decode(message(b"\0", "homie/dev1/node/prop"), prop)
    assert record.fields == {"prop": ""}
    (record,) = HomieDecoder().decode(message(b"21.5", "homie/dev1/node/prop"), prop)
    assert record.fields == {"prop": 21.5}


def test_a_field_first_sent_as_null_reaches_the_hooks_with_its_first_value(tmp_path):
    """Its column comes with its first value, and so does its panel: the hook hears of it then, with its type."""
    state = HookState(str(tmp_path / "hooks.sqlite"))
    runner = Recorder()
    tracker = SampleTracker("db", "sqlite", state, [runner])
    table = TableName("z2m", "sensor1_sensors")

    def observe(fields):
        batch = Batch()
        batch.add(Entry(table, [Record(1, fields)], "main", message(b"{}"), "json", DATA))
        tracker.observe(batch, 0.01)

    observe({"battery": None, "linkquality": 60, "update": {"state": None, "installed": 1}})
    observe({"battery": None, "linkquality": 61, "update": {"state": None, "installed": 1}})
    observe({"battery": 87, "linkquality": 62, "update": {"state": "idle", "installed": 1}})
    assert [(s.first, s.new) for s in runner.samples] == [(True, ("linkquality", "update.installed")),
                                                          (False, ("battery", "update.state"))]
    assert runner.samples[-1].fields["battery"] == "number"
    state.close()


def test_a_tasmota_time_of_null_is_no_time():
    """null is no time for every decoder: the receive time (it was "not a time: None")."""
    for stamp in ("null", '""', '" "'):
        (record,) = TasmotaDecoder().decode(message(b'{"Time": %s, "ENERGY": {"Power": 5}}' % stamp.encode()), DATA)
        assert record.time == 1_717_243_200_500_000_000 and record.fields == {"ENERGY.Power": 5}


def test_a_binary_payload_that_is_no_object_is_named_so():
    import cbor2
    import pytest

    from lorrygate.decoding import DECODERS
    from lorrygate.errors import Declined

    with pytest.raises(Declined, match="a number, not an object"):
        DECODERS["cbor"]().decode(message(cbor2.dumps(5)), DATA)


def test_text_values_are_numbers_only_as_a_device_writes_them():
    """key=value, CSV and single values: "1_000" and "٣" are text (Python's int() read them as 1000 and 3)."""
    from lorrygate.decoding.records import scalar

    assert [scalar(text) for text in ("1_000", "1_000.5", "٣", " 12 ", "1e3", "0x10", "+5", ".5", "Nan", "TRUE")] == [
        "1_000", "1_000.5", "٣", 12, 1000.0, "0x10", 5, 0.5, "Nan", True]


def test_a_reading_written_as_nan_or_inf_is_no_value_and_the_column_is_made_by_the_first_number(tmp_path):
    """ESPHome publishes ``nan`` for a sensor without a reading yet (at every boot): as text it made the value
    column TEXT, and every reading after it was stored as text ('100' < '20' in a WHERE). It is no value now."""
    from lorrygate.decoding.records import scalar
    from lorrygate.storage.sqlite import SQLiteStorage

    assert [scalar(text) for text in ("nan", "NaN", "NAN", " -nan ", "inf", "-inf", "Infinity", "INF")] == [None] * 8
    assert [scalar(text) for text in ("Nan", "iNf", "nano", "info")] == ["Nan", "iNf", "nano", "info"]  # words
    from lorrygate.decoding import DECODERS

    address = Address("home", None, None, None, "data", "esp/sensor/temperature/state", "value")
    storage = SQLiteStorage("db", str(tmp_path / "esp.sqlite"), reactor=None)
    storage._connect()
    try:
        for payload in (b"nan", b"21.5", b"100", b"19"):
            [record] = DECODERS["value"]().decode(message(payload, "home/esp/sensor/temperature/state"), address)
            batch = Batch()
            batch.add(Entry(TableName("home", "esp"), [record], "esp", message(payload), "value"))
            storage._commit(batch)
        stored = storage._conn.execute('SELECT value, typeof(value) FROM "home__esp"').fetchall()
        assert stored == [(None, "null"), (21.5, "real"), (100.0, "real"), (19.0, "real")]  # nan: no reading
        assert storage._conn.execute('SELECT value FROM "home__esp" WHERE value > 20').fetchall() == [(21.5,), (100,)]
    finally:
        storage._close()


def test_kotori_values_take_ascii_digits_only():
    from lorrygate.decoding.values import _number

    assert [_number(text) for text in ("1١", "١", "21.5", "007", " 3 ")] == ["1١", "١", 21.5, 7, 3]


def test_a_csv_header_with_a_name_twice_or_a_trailing_comma_keeps_every_value():
    """A spreadsheet's export ends its lines with a comma, and a header may name a column twice: the message was
    declined (a dead letter, "distinct, non-empty column names"); the values are kept, as key=value's are."""
    from lorrygate.decoding.text import CsvDecoder

    decode = CsvDecoder().decode
    assert [r.fields for r in decode(message(b"a,b,\n1,2,\n3,4,5\n"), DATA)] == [{"a": 1, "b": 2},
                                                                              {"a": 3, "b": 4, "_": 5}]
    assert [r.fields for r in decode(message(b"t,t,h\n1,2,3\n"), DATA)] == [{"t": 1, "t_2": 2, "h": 3}]



def test_a_byte_order_mark_is_no_part_of_the_first_name_or_value():
    """A Windows editor's or a spreadsheet's UTF-8 export starts with a byte order mark: key=value kept it in the
    first column's name ("\ufefftemp"), the CSV decoder in the first value (a time that was "not an ISO 8601
    time"), and NDJSON declined the first line."""
    from lorrygate.decoding.text import CsvDecoder, KeyValueDecoder, NdjsonDecoder, ValueDecoder

    bom = b"\xef\xbb\xbf"
    assert [r.fields for r in KeyValueDecoder().decode(message(bom + b"temp=3"), DATA)] == [{"temp": 3}]
    (record,) = CsvDecoder().decode(message(bom + b"time,t\n2024-06-01T12:00:00Z,21.5\n"), DATA)
    assert record.fields == {"t": 21.5} and record.time == 1_717_243_200 * 10**9
    assert [r.fields for r in NdjsonDecoder().decode(message(bom + b'{"a": 1}\n{"a": 2}\n'), DATA)] == [{"a": 1},
                                                                                                        {"a": 2}]
    field = Address("r", "n", "g", "d", "data", "data/t", field="t")
    assert [r.fields for r in ValueDecoder().decode(message(bom + b"21.5"), field)] == [{"t": 21.5}]



def test_a_spreadsheets_csv_separated_by_semicolons_or_tabs_is_read_by_the_built_in_csv_decoder():
    """Excel where the decimal mark is the comma exports "time;temp" and "21,5": the built-in decoder (a comma)
    declined it, or made one column "time;temp" (a files source's header); a tab-separated file too. With ";",
    "21,5" is 21.5; "1.234,5" stays text; a tab-separated "1,234" is no decimal."""
    from lorrygate.decoding.text import CsvDecoder

    decode = CsvDecoder().decode
    (a, b) = decode(message(b"\xef\xbb\xbftime;temp;hum;note\r\n2026-01-01T00:00:00Z;21,5;40;1.234,5\r\n"
                            b"2026-01-01T00:01:00Z;-0,25;41;x,y\r\n"), DATA)
    assert a.fields == {"temp": 21.5, "hum": 40, "note": "1.234,5"} and b.fields == {"temp": -0.25, "hum": 41,
                                                                                      "note": "x,y"}
    assert a.time == 1_767_225_600 * 10**9
    (c,) = decode(message(b"t\th\n1,234\t2\n"), DATA)
    assert c.fields == {"t": "1,234", "h": 2}
    # a comma-separated header keeps the comma, and configured columns their delimiter
    assert decode(message(b"a,b\n1;2,3\n"), DATA)[0].fields == {"a": "1;2", "b": 3}
    columns = CsvDecoder(columns=("a", "b"), delimiter=";").decode
    assert columns(message(b"1,5;2\n"), DATA)[0].fields == {"a": 1.5, "b": 2}


def nested(levels: int) -> dict:
    document: dict = {"v": 1}
    for _ in range(levels):
        document = {"k": document}
    return document


def test_a_payload_nested_a_thousand_levels_deep_is_a_clear_dead_letter_not_a_broken_gateway():
    """orjson reads up to 1,024 levels; the kotori values' recursion failed on such an object ("internal": the
    gateway broke), a vendor flatten's too, and the writers' JSON text ("RecursionError")."""
    import pytest

    from lorrygate.decoding.values import KotoriValues
    from lorrygate.storage.layout import json_text, to_json

    deep = nested(1000)
    (record,) = KotoriValues().apply([Record(1, {"a": "21.5", "deep": deep})], message(b"{}"))
    assert record.fields["a"] == 21.5 and record.fields["deep"] is not deep  # converted down to its 32nd level
    (record,) = TasmotaDecoder().decode(message(b'{"Time": "2024-06-01T12:00:00", "deep": %s}'
                                                % json_text(nested(900)).encode()), DATA)
    (name,) = record.fields
    assert name.startswith("deep.k.k") and name.count(".") == 31  # 32 levels of names; deeper, one value
    for write in (to_json, json_text):
        with pytest.raises(ValueError, match="nested too deeply to be JSON text"):
            write(deep)


def test_a_decoder_that_recursed_too_deep_says_so():
    import pytest

    from lorrygate.decoding import DecoderChain
    from lorrygate.errors import DecodeError

    class Recursing:
        name = "mine"

        def decode(self, message, address):
            raise RecursionError("maximum recursion depth exceeded")

    with pytest.raises(DecodeError, match="decoder 'mine': the payload is nested too deeply to decode"):
        DecoderChain((Recursing(),)).decode(message(b"{}"), DATA)


def test_a_text_sink_keeps_a_record_nested_too_deeply_as_a_dead_letter_row(tmp_path):
    """NDJSON and CSV: the row of a payload nested 1,000 levels deep made every write fail (the sink down for
    good); it is a dead-letter row of the file now, with the payload, and the rows beside it are written."""
    import json as std_json

    from lorrygate.storage.sinks import TextSink

    for form in ("ndjson", "csv"):
        path = tmp_path / f"rows.{form}"
        sink = TextSink("file", str(path), None, format=form)
        batch = Batch()
        batch.add(Entry(TableName("r_net", "gw_n1_sensors"), [Record(1, {"t": 1}), Record(2, {"deep": nested(1000)}),
                                                            Record(3, {"t": 3})], "main", message(b'{"deep": 1}'),
                        "json", DATA))
        failures = []
        sink.write(batch).addErrback(failures.append)
        assert failures == [] and len(batch.extra_dead) == 1
        lines = path.read_text().splitlines()
        if form == "ndjson":
            rows = [std_json.loads(line) for line in lines]
            assert [row.get("fields", {}).get("t") for row in rows] == [1, None, 3]
            assert rows[1]["dead_letter"] and rows[1]["payload"] == '{"deep": 1}'
        else:
            assert len(lines) == 4 and "nested too deeply" in lines[2]


def test_shelly_gen2_rpc_notifications_are_rows_of_components_at_the_devices_time():
    """A Gen2 device reports its status as NotifyStatus on <prefix>/events/rpc unless "generic status update" is
    set: it was one event row of dotted names (params.switch:0.apower), at the receive time."""
    from lorrygate.decoding.vendors import ShellyDecoder
    from lorrygate.errors import Declined, DecodeError

    rpc = Address("shelly", None, None, "plug", "data", "events/rpc")
    decode = ShellyDecoder().decode
    status = {"src": "plug", "dst": "plug/events", "method": "NotifyStatus",
              "params": {"ts": 1717243200.25, "switch:0": {"id": 0, "apower": 12.5, "temperature": {"tC": 40.1}},
                         "sys": {"uptime": 10}}}
    switch, system = decode(message(json.dumps(status).encode()), rpc)
    assert (switch.time, switch.fields, switch.tags) == (
        1_717_243_200_250_000_000, {"id": 0, "apower": 12.5, "temperature.tC": 40.1}, {"component": "switch:0"})
    assert (system.fields, system.tags) == ({"uptime": 10}, {"component": "sys"})
    event = {"method": "NotifyEvent", "params": {"ts": 1717243201.0, "events": [
        {"component": "input:0", "id": 0, "event": "single_push", "ts": 1717243200.5}]}}
    (push,) = decode(message(json.dumps(event).encode()), rpc)
    assert (push.time, push.fields, push.tags) == (1_717_243_200_500_000_000, {"id": 0, "event": "single_push"},
                                                   {"component": "input:0"})
    import pytest

    with pytest.raises(Declined):
        decode(message(b'{"method": "NotifyWakeup", "params": {}}'), rpc)
    with pytest.raises(Declined):
        decode(message(json.dumps(status).encode()), Address("shelly", None, None, "plug", "data", "status/switch:0"))
    with pytest.raises(DecodeError, match="ts 'soon' is not epoch seconds"):
        decode(message(b'{"method": "NotifyStatus", "params": {"ts": "soon", "sys": {}}}'), rpc)
    with pytest.raises(DecodeError, match="not a list of objects"):
        decode(message(b'{"method": "NotifyEvent", "params": {"events": 5}}'), rpc)


def test_an_integer_past_64_bits_is_kept_exact_where_kotoris_values_apply():
    """A 20-digit ICCID sent as a JSON number, which the parser reads as the nearest float
    (8.988228066602759e+19), is the integer the payload wrote, on a wan channel; a float of that size written as
    one stays a float, and as-sent channels keep what the decoder returned."""
    from tests.unit.test_router import configured

    router, collector = configured("wan")
    payload = (b'{"iccid": 89882280666027595366, "negative": -9223372036854775809, "big": 1e20, '
               b'"fraction": 100000000000000000000.5, "temperature": 21.5}')
    router(message(payload, "r/n/g/d/data.json"))
    [entry] = collector.entries
    assert entry.records[0].fields == {"iccid": 89882280666027595366, "negative": -9223372036854775809,
                                       "big": 1e20, "fraction": 1e20, "temperature": 21.5}

    # an integer that a float holds exactly (2**70), in a payload with its time: the integer, not the float that
    # compares equal to it (the record with the float was kept, and SQLite made the column REAL)
    router, collector = configured("wan")
    router(message(b'{"time": 1733400000, "big": 1180591620717411303424, "small": 7}', "r/n/g/d/data.json"))
    fields = collector.entries[0].records[0].fields
    assert fields == {"big": 2**70, "small": 7} and type(fields["big"]) is int

    # a run of digits longer than int() takes (a text of digits, which the policy reads as a number where it
    # can: an internal error made the message a dead letter) stays text, and changes nothing beside it
    router, collector = configured("wan")
    router(message(b'{"note": "' + b"7" * 5000 + b'", "iccid": 89882280666027595366}', "r/n/g/d/data.json"))
    assert collector.entries[0].records[0].fields == {"note": "7" * 5000, "iccid": 89882280666027595366}
    router, collector = configured("wan")
    router(message(b'{"note": "x' + b"7" * 5000 + b'", "big": 1e300}', "r/n/g/d/data.json"))
    assert collector.entries[0].records[0].fields == {"note": "x" + "7" * 5000, "big": 1e300}

    router, collector = configured("tasmota")
    router(message(b'{"iccid": 89882280666027595366}', "tele/plug/SENSOR"))
    assert collector.entries[0].records[0].fields["iccid"] == 8.988228066602759e19

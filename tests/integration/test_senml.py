"""
SenML packs (RFC 8428) through a real Mosquitto into SQLite on Kotori's topics: a JSON pack on ``data.json`` and a
CBOR pack on ``data.cbor`` stored a row a time, each name a column, the base name a tag; a pack that breaks the RFC
kept as a dead letter that names its record, and the stream flowing on; a bad record among good ones kept alone, with
its base fields, the good ones stored.
"""

import json
import uuid

import cbor2

from tests.gatewayproc import GatewayProcess, Publisher, query, tables, write_config
from tests.servers import wait_until

PACK = [{"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.276020076001e+09, "bu": "A", "bver": 5, "n": "voltage",
         "u": "V", "v": 120.1}, {"n": "current", "t": -5, "v": 1.2}, {"n": "current", "v": 1.7}]
#: an LwM2M temperature object's instance in CBOR (integer labels: -2 bn, -3 bt, 0 n, 2 v, 3 vs)
LWM2M = [{-2: "/3303/0/", -3: 1_700_000_000, 0: "5700", 2: 21.5}, {0: "5701", 3: "Cel"}]


def test_senml_packs_in_json_and_cbor_are_stored_a_row_a_time(tmp_path, mosquitto):
    realm = f"senml{uuid.uuid4().hex[:6]}"
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{realm}", topics=f"{realm}/#")
    db = str(tmp_path / "gateway.sqlite")
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    gateway.start(ready="subscribed")
    meter, thermometer = f"{realm}_site__gw_meter_sensors", f"{realm}_site__gw_thermo_sensors"
    mixed = f"{realm}_site__gw_mixed_sensors"
    try:
        publisher = Publisher(mosquitto.port)
        publisher.publish_many([
            (f"{realm}/site/gw/meter/data.json", json.dumps(PACK)),
            (f"{realm}/site/gw/thermo/data.json", json.dumps([{"n": "t", "v": 1, "vs": "two values"}])),
            (f"{realm}/site/gw/thermo/data.cbor", cbor2.dumps(LWM2M)),
            (f"{realm}/site/gw/mixed/data.json", json.dumps([{"bn": "x:", "bt": 1_700_000_000, "n": "a", "v": 1},
                                                             {"n": "b", "v": "oops"}, {"n": "c", "v": 3}])),
        ])
        publisher.close()

        def stored():
            return ({meter, thermometer, mixed, "lorrygate_dead_letter"} <= tables(db)
                    and query(db, f'SELECT count(*) FROM "{thermometer}"') == [(1,)]
                    and query(db, f'SELECT count(*) FROM "{mixed}"') == [(1,)]
                    and query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(2,)])

        wait_until(stored, 30, "both packs stored and the broken one kept")
    finally:
        assert gateway.stop() == 0, gateway.text()[-3000:]
    assert query(db, f'SELECT time, base_name, voltage, "voltage.unit", current, "current.unit" FROM "{meter}" '
                     f'ORDER BY time') == [
        ("2010-06-08T18:01:11.001000000Z", "urn:dev:ow:10e2073a01080063:", None, None, 1.2, "A"),
        ("2010-06-08T18:01:16.001000000Z", "urn:dev:ow:10e2073a01080063:", 120.1, "V", 1.7, "A")]
    assert query(db, f'SELECT time, base_name, "5700", "5701" FROM "{thermometer}"') == [
        ("2023-11-14T22:13:20.000000000Z", "/3303/0/", 21.5, "Cel")]
    assert query(db, f'SELECT time, base_name, a, c FROM "{mixed}"') == [
        ("2023-11-14T22:13:20.000000000Z", "x:", 1, 3)]
    (whole, reason), (part, part_reason) = query(db, "SELECT topic, error FROM lorrygate_dead_letter ORDER BY id")
    assert whole == f"{realm}/site/gw/thermo/data.json"
    assert "record 1 of the SenML pack: more than one value (v, vs)" in reason
    assert part == f"{realm}/site/gw/mixed/data.json" and "record 2 of the SenML pack: v 'oops' is no number" in part_reason
    ((kept,),) = query(db, "SELECT payload FROM lorrygate_dead_letter WHERE topic = ?", (part,))
    assert json.loads(kept) == [{"bn": "x:", "bt": 1_700_000_000, "n": "b", "v": "oops"}]

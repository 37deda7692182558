"""
Kepware's IoT Gateway, EMQX Neuron and ThingsBoard JSON through a real Mosquitto into SQLite with the ``topic``
strategy: each tag a column, at the server's time; nothing a dead letter.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway


def test_the_servers_tags_are_columns_at_their_time(tmp_path, mosquitto):
    plant = f"plant{uuid.uuid4().hex[:6]}"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"{plant}/#", strategy="topic", messages=[
        (f"{plant}/kepware", '{"timestamp": 1717243200000, "values": [{"id": "Line1.Press7.Pressure", "v": 4.2, '
                             '"q": true, "t": 1717243200000}, {"id": "Line1.Press7.Speed", "v": 7, "q": false, '
                             '"t": 1717243200000}]}'),
        (f"{plant}/neuron", '{"timestamp": 1717243200000, "node": "modbus", "group": "grp", "values": {"tag0": 123},'
                            ' "errors": {"tag1": 2014}, "metas": {}}'),
        (f"{plant}/thingsboard", '{"ts": 1717243200000, "values": {"temperature": 22.5}}'),
    ], tables_={f"{plant}__kepware", f"{plant}__neuron", f"{plant}__thingsboard"}, table=f"{plant}__thingsboard",
        rows=1)
    assert query(db, f'SELECT time, "Line1.Press7.Pressure", "Line1.Press7.Speed", "Line1.Press7.Speed.q" '
                     f'FROM "{plant}__kepware"') == [("2024-06-01T12:00:00.000000000Z", 4.2, 7, 0)]
    assert query(db, f'SELECT node, "group", tag0, "tag1.error" FROM "{plant}__neuron"') == [
        ("modbus", "grp", 123, 2014)]
    assert query(db, f'SELECT time, temperature FROM "{plant}__thingsboard"') == [
        ("2024-06-01T12:00:00.000000000Z", 22.5)]
    assert no_dead_letters(db)

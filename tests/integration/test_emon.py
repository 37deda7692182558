"""
emonHub (OpenEnergyMonitor) through a real Mosquitto into SQLite with the ``emon`` strategy: a node's inputs, one a
topic (its node variable format), are the columns of one table a node, and its JSON format a row of the same table
at the node's time; nothing is a dead letter.
"""

import uuid

from tests.gatewayproc import no_dead_letters, query, store_through_gateway, tables


def test_a_nodes_inputs_are_columns_of_its_table(tmp_path, mosquitto):
    node = f"emontx{uuid.uuid4().hex[:6]}"
    table = f"emon__{node}_sensors"
    db = store_through_gateway(tmp_path, mosquitto.port, topics=f"emon/{node}/#", strategy="emon", messages=[
        (f"emon/{node}/P1", "412.5"),
        (f"emon/{node}/E1", "1234"),
        (f"emon/{node}/vrms", "238.71"),
        (f"emon/{node}", '{"P1": 398.25, "E1": 1235, "time": 1717243200, "rssi": -60}'),
    ], tables_={table}, table=table, rows=4)
    assert query(db, f'SELECT "P1", "E1", vrms, rssi FROM "{table}" ORDER BY rowid') == [
        (412.5, None, None, None), (None, 1234, None, None), (None, None, 238.71, None), (398.25, 1235, None, -60)]
    assert query(db, f'SELECT time FROM "{table}" WHERE rssi IS NOT NULL') == [("2024-06-01T12:00:00.000000000Z",)]
    assert {t for t in tables(db) if t.startswith("emon__")} == {table}
    assert no_dead_letters(db)

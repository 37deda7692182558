"""The record of what a persistent MQTT session is subscribed to (`lorrygate.sources.mqtt_sessions`)."""

import os

from lorrygate.sources.mqtt_sessions import SessionRecord


def test_a_record_keeps_the_filters_of_a_broker_and_client_id(tmp_path):
    record = SessionRecord(str(tmp_path), "broker:1883", "gw/one")
    assert record.read() == ()
    record.write(["plant/#", "$share/g/x/+"])
    assert SessionRecord(str(tmp_path), "broker:1883", "gw/one").read() == ("plant/#", "$share/g/x/+")
    # another broker, another client: another session, another record (a client id is no file name of its own)
    assert SessionRecord(str(tmp_path), "other:1883", "gw/one").read() == ()
    assert SessionRecord(str(tmp_path), "broker:1883", "gw").read() == ()
    assert os.listdir(tmp_path / "mqtt-sessions") == ["broker%3A1883%20gw%2Fone.json"]


def test_a_record_that_cannot_be_read_or_written_is_none_and_fails_nothing(tmp_path):
    """The record is advice: a connection never fails for it."""
    record = SessionRecord(str(tmp_path), "b:1883", "gw")
    for broken in ("{not json", '{"filters": "plant/#"}', '{"filters": [1]}', "[]", '{"other": 1}'):
        os.makedirs(os.path.dirname(record.path), exist_ok=True)
        with open(record.path, "w") as handle:
            handle.write(broken)
        assert record.read() == (), broken
    (tmp_path / "file").write_text("")
    unwritable = SessionRecord(str(tmp_path / "file"), "b:1883", "gw")  # (its directory would be under a file)
    unwritable.write(["plant/#"])
    assert unwritable.read() == ()

"""The documentation's examples are checked, so they cannot rot."""

import csv
import io
import os
import re

import pytest

from lorrygate.config import loads

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")


def topology_rows():
    text = open(os.path.join(DOCS, "topology.rst"), encoding="utf-8").read()
    block = re.search(r":header: [^\n]+\n\n((?:   [^\n]+\n)+)", text).group(1)
    return list(csv.reader(io.StringIO(block.replace("\n   ", "\n").strip()), skipinitialspace=True))


STRATEGIES = loads(
    "[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\nsource=b\ntopics=#\nstorage=s\n"
).strategies


@pytest.mark.parametrize("name, topic, kind, schema, table", topology_rows(), ids=lambda v: v[:50])
def test_topology_table(name, topic, kind, schema, table):
    """Each row of docs/topology.rst routes as it says."""
    strategy = STRATEGIES[name]()
    address = strategy.match(topic)
    routed = strategy.table_for(address)
    assert (address.kind, routed.schema, routed.table) == (kind, schema, table)


def literal_blocks(name):
    """The indented literal blocks (after '::') of a docs file."""
    text = open(os.path.join(DOCS, name), encoding="utf-8").read()
    return [
        "\n".join(line[4:] for line in block.group(1).splitlines())
        for block in re.finditer(r"::\n\n((?:    [^\n]*\n|\n)+)", text)
    ]


def test_decoding_python_example_runs():
    """The Python decoder example in docs/decoding.rst decodes and declines as it says."""
    from lorrygate.decoding.functions import MARKER, FunctionDecoder
    from lorrygate.errors import Declined
    from lorrygate.model import Message

    (example,) = [block for block in literal_blocks("decoding.rst") if "@decoder" in block]
    namespace = {}
    exec(compile(example, "docs/decoding.rst", "exec"), namespace)
    function = namespace["decode"]
    decoder = FunctionDecoder(getattr(function, MARKER), function)
    (record,) = decoder.decode(Message("t", b"21.5;48", received=1.0), None)
    assert record.fields == {"temperature": 21.5, "humidity": 48.0}
    with pytest.raises(Declined):
        decoder.decode(Message("t", b"21.5"), None)


@pytest.mark.parametrize("name", ["decoding.rst", "topology.rst", "storage.rst"])
def test_ini_examples_in_docs_load(name, monkeypatch):
    """Every ini snippet in the docs is valid config (with a minimal broker, storage and channel around it)."""
    from lorrygate.config import loads

    monkeypatch.setenv("PGPASSWORD", "example")
    for block in literal_blocks(name):
        if not block.lstrip().startswith("["):
            continue
        text = block
        if "[channel:" not in text:
            text += "\n[channel:c]\ntopics = #\n"
        elif "topics =" not in text:
            text += "topics = #\n"
        text = "[broker:b]\nhost = h\n" + ("" if "[storage:" in text else "[storage:s]\nurl = sqlite:///x\n") + text
        text = text.replace("hook = mymodule:adjust\n", "")
        loads(text.replace("{realm}/sites", "{realm}/sites"), base_dir=os.path.dirname(DOCS))


def test_dry_run_from_recorded_messages(tmp_path, monkeypatch):
    """--dry-run --messages prints the rows and the dead letters, and writes nothing: its own data directory is
    gone when it ends (each dry run left one in the temporary directory)."""
    import io
    import json
    import tempfile

    from lorrygate.config import loads
    from lorrygate.pipeline.dryrun import dry_run

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///" + str(tmp_path / "never.sqlite") +
                     "\n[channel:c]\ntopics=r/#\n")
    recorded = tmp_path / "messages.ndjson"
    recorded.write_text(
        json.dumps({"topic": "r/n/g/d/data.json", "payload": '{"t": 1, "time": 1717243200}'}) + "\n"
        + json.dumps({"topic": "r/n//d/data.json", "payload": "{}"}) + "\n"
        + json.dumps({"topic": "r/n/g/d/data.json", "payload_base64": "/w=="}) + "\n"
        + json.dumps({"topic": "other/x", "payload": "{}"}) + "\n")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    out = io.StringIO()
    assert dry_run(settings, str(recorded), out) == 0
    assert list((tmp_path / "tmp").iterdir()) == []
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["table"] == "g_d_sensors" and lines[0]["fields"] == {"t": 1}
    assert lines[0]["time"] == "2024-06-01T12:00:00.000000000Z"
    assert [line.get("stage") for line in lines[1:3]] == ["topology", "decode"]
    assert lines[3] == {"topic": "other/x", "channel": None, "unmatched": True,
                        "reason": "no channel subscribes to this topic"}
    assert not (tmp_path / "never.sqlite").exists()


def test_a_dry_run_from_recorded_messages_routes_as_the_gateway_does(tmp_path, capsys):
    """The suffix's decoder (data.csv), event values, empty payloads and ignore filters: the dry run said "dead
    letter" for what the gateway stores, because it had a router of its own. A line that is no recorded message
    is named, and the lines after it still run (exit status 2)."""
    import io
    import json

    from lorrygate.config import loads
    from lorrygate.pipeline.dryrun import dry_run

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///" + str(tmp_path / "never.sqlite") +
                     "\n[channel:c]\ntopics=r/#\nignore=r/n/g/cmd/#\nvalues=kotori\n")
    recorded = tmp_path / "messages.ndjson"
    lines = [{"topic": "r/n/g/d/data.csv", "payload": "a,b\n1,2\n"},
             {"topic": "r/n/g/d/event.json", "payload": "reboot"},
             {"topic": "r/n/g/d/data.json", "payload": ""},
             {"topic": "r/n/g/cmd/x/data.json", "payload": "{}"},
             {"topic": "r/n/g/d/data.json", "payload": '{"v": "21.5"}'}]
    recorded.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n[1]\n"
                        + "\n".join(json.dumps(line) for line in lines[2:]) + "\n")
    out = io.StringIO()
    assert dry_run(settings, str(recorded), out) == 2
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line.get("decoder"), line.get("fields")) for line in printed[:2]] == [
        ("csv", {"a": 1, "b": 2}), ("event", {"value": "reboot"})]
    assert printed[1]["table"] == "g_d_events"
    assert printed[2]["empty"] and printed[3] == {"channel": "c", "topic": "r/n/g/cmd/x/data.json", "ignored": True,
                                                   "reason": "matches the channel's ignore filters"}
    assert printed[4]["fields"] == {"v": 21.5}  # values = kotori
    assert "messages.ndjson line 3: " in capsys.readouterr().err


def test_pipeline_examples_in_docs_build():
    """Every launch and relay command in docs/pipeline.rst builds a pipeline."""
    import shlex

    from lorrygate.pipeline.model import parse_launch

    commands = [block for block in literal_blocks("pipeline.rst") if block.startswith(("lorrygate launch \"", "lorrygate relay "))]
    assert len(commands) >= 2
    for block in commands:
        words = shlex.split(block.replace("\n", " "))
        text = words[2] if words[1] == "launch" else " ! ".join(words[2:4])
        assert parse_launch(text).channels


def test_the_configuration_reference_is_current():
    """docs/configuration.rst is what the key tables say (regenerate: python -m lorrygate.config.reference)."""
    from lorrygate.config.reference import render

    with open(os.path.join(DOCS, "configuration.rst"), encoding="utf-8") as handle:
        assert handle.read() == render(), "run: python -m lorrygate.config.reference > docs/configuration.rst"


def test_every_key_is_documented_and_shown_in_the_example_config():
    import re

    from lorrygate.config.reference import SECTIONS, kind_of

    with open(os.path.join(DOCS, "..", "etc", "gateway.ini"), encoding="utf-8") as handle:
        example = handle.read()
    for title, keys, _, _ in SECTIONS:
        for name, key in keys.items():
            assert key.doc and kind_of(key), f"{title} {name} has no documentation"
            assert re.search(rf"\b{name} =", example), f"etc/gateway.ini does not show {title} {name}"


def source_examples():
    text = open(os.path.join(DOCS, "sources.rst"), encoding="utf-8").read()
    return [block.replace("\n   ", "\n").strip() for block in
            re.findall(r"\.\. code-block:: ini\n\n((?:   [^\n]*\n|\n)+)", text)]


@pytest.mark.parametrize("example", source_examples(), ids=lambda text: text.splitlines()[0])
def test_source_examples_are_valid_configurations(example, monkeypatch):
    """Each example of docs/sources.rst, with a storage, is a configuration lorrygate accepts."""
    monkeypatch.syspath_prepend(os.path.join(DOCS, "..", "examples", "tributary"))
    monkeypatch.setenv("RABBIT_PASSWORD", "x")
    monkeypatch.setenv("REDIS_PASSWORD", "x")
    monkeypatch.setenv("PLANT_DATABASE_URL", "postgresql://lorrygate@db.example/plant")
    monkeypatch.setenv("LORRYGATE_HTTP_TOKEN", "x")
    settings = loads(example + "\n\n[storage:db]\nurl = sqlite:///x.sqlite\n")
    assert settings.channels


def test_every_source_kind_has_an_example():
    kinds = {line.split("=", 1)[1].strip() for example in source_examples() for line in example.splitlines()
             if line.startswith("type =")}
    assert kinds == {"amqp", "redis", "zmq", "kafka", "poll", "iio", "socket", "http", "pgcdc", "files", "tributary"}


def test_a_dry_run_reads_recorded_messages_saved_with_a_byte_order_mark(tmp_path):
    """A recording saved by a Windows editor starts with a byte order mark: its first line was taken for a
    topic and a payload (``\ufeff{"topic": ...``), not the JSON object it is."""
    import io
    import json

    from lorrygate.config import loads
    from lorrygate.pipeline.dryrun import dry_run

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///" + str(tmp_path / "never.sqlite") +
                     "\n[channel:c]\ntopics=r/#\n")
    recorded = tmp_path / "messages.ndjson"
    recorded.write_bytes(b"\xef\xbb\xbf" + json.dumps({"topic": "r/n/g/d/data.json", "payload": '{"t": 1}'}).encode())
    out = io.StringIO()
    assert dry_run(settings, str(recorded), out) == 0
    assert json.loads(out.getvalue())["fields"] == {"t": 1}


def test_a_dry_run_of_a_file_that_cannot_be_read_says_so(tmp_path, capsys):
    """--dry-run --messages with a path that is not there ended in a traceback."""
    from lorrygate.config import loads
    from lorrygate.pipeline.dryrun import dry_run

    settings = loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///" + str(tmp_path / "never.sqlite") +
                     "\n[channel:c]\ntopics=r/#\n")
    assert dry_run(settings, str(tmp_path / "missing.ndjson")) == 2
    assert "cannot read the recorded messages" in capsys.readouterr().err
    assert not (tmp_path / "never.sqlite").exists()


def test_the_senml_example_decodes_as_docs_decoding_says():
    import json
    import re

    from lorrygate.decoding import DECODERS
    from lorrygate.model import Message

    text = open(os.path.join(DOCS, "decoding.rst"), encoding="utf-8").read()
    block = re.search(r"\.\. code-block:: json\n\n((?:    [^\n]*\n)+)", text[text.index("SenML (Sensor"):]).group(1)
    rows = DECODERS["json"]().decode(Message("r/n/g/d/data.json", block.encode(), 1, False, 1.0, "#"), None)
    assert json.loads(block)[0]["bn"] == "urn:dev:ow:10e2073a01080063:"
    assert [(row.time, row.fields, row.tags) for row in rows] == [
        (1_276_020_076_001_000_000, {"voltage": 120.1, "voltage.unit": "V", "current": 1.7, "current.unit": "A"},
         {"base_name": "urn:dev:ow:10e2073a01080063:"}),
        (1_276_020_071_001_000_000, {"current": 1.2, "current.unit": "A"},
         {"base_name": "urn:dev:ow:10e2073a01080063:"})]
    assert "a row at 2010-06-08T18:01:16.001Z with ``voltage`` 120.1" in " ".join(text.split())

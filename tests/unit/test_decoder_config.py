"""Decoders in the config: [decoder:NAME] sections, drop-in Python decoders, channel transforms."""

import os
import textwrap
from zoneinfo import ZoneInfo

import pytest

from lorrygate.config import loads
from lorrygate.errors import ConfigError
from lorrygate.model import Address, Message, Record
from tests.dropins import GATEWAY, channel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = GATEWAY + channel(decoders="{decoders}")


def config(tmp_path, decoders="json", extra="", modules=None):
    directory = tmp_path / "strategies"
    directory.mkdir(exist_ok=True)
    for name, text in (modules or {}).items():
        (directory / name).write_text(textwrap.dedent(text))
    return textwrap.dedent(BASE.format(strategies=directory, decoders=decoders)) + textwrap.dedent(extra)


def problems(text):
    with pytest.raises(ConfigError) as info:
        loads(text, source="gw.ini")
    return [str(problem) for problem in info.value.problems]


def make(settings, name, tz="UTC"):
    return settings.decoders[name](ZoneInfo(tz), None)


DATA = Address("r", "n", "g", "d", "data", "data.json")


def msg(payload):
    return Message("r/n/g/d/data.json", payload, 1, False, 1.0, "#")


def test_csv_section_with_columns(tmp_path):
    """A csv decoder section with columns and a delimiter decodes header-less lines."""
    settings = loads(config(tmp_path, "sensor-csv", """
        [decoder:sensor-csv]
        type = csv
        columns = time, temperature, humidity
        delimiter = ;
        """))
    records = make(settings, "sensor-csv").decode(msg(b"1717243200;21.5;48\n"), DATA)
    assert records == [Record(1_717_243_200_000_000_000, {"temperature": 21.5, "humidity": 48})]


def test_javascript_section(tmp_path):
    """A javascript decoder section loads the codec file and decodes with it."""
    settings = loads(config(tmp_path, "lht65", """
        [decoder:lht65]
        type = javascript
        file = strategies/dragino_lht65.js
        fport = 2
        timeout = 200ms
        memory = 32
        """), base_dir=ROOT)
    (record,) = make(settings, "lht65").decode(msg(bytes.fromhex("CBF60B0D0376010ADD7FFF")), DATA)
    assert record.fields["TempC_DS"] == 27.81


@pytest.mark.parametrize("section, expected", [
    ("type = javascript\nfile = /nonexistent.js\n", "file: expected a readable JavaScript codec file, got '/nonexistent.js'"),
    ("type = javascript\n", "file: expected the path of a JavaScript codec file"),
    ("type = csv\nfile = x.js\n", "file: expected no file for type csv (it takes: columns, delimiter)"),
    ("type = protobuf\n", "type: expected javascript or a built-in decoder"),
    ("type = csv\ndelimiter = :\n", "delimiter: expected one of ,, ;, |, tab"),
], ids=["missing-file", "no-file", "wrong-key", "unknown-type", "bad-delimiter"])
def test_bad_decoder_sections(tmp_path, section, expected):
    """Each broken decoder section names its key and the problem."""
    found = problems(config(tmp_path, "mine", "\n[decoder:mine]\n" + section))
    assert any(expected in problem for problem in found), found


def test_codec_that_does_not_compile(tmp_path):
    """A codec with a syntax error is refused at start-up with V8's message."""
    (tmp_path / "bad.js").write_text("function decodeUplink( {")
    found = problems(config(tmp_path, "bad", f"\n[decoder:bad]\ntype = javascript\nfile = {tmp_path / 'bad.js'}\n"))
    assert any("a codec that defines decodeUplink(input) or decode(payload, topic)" in p and "SyntaxError" in p
               for p in found), found


FUNCTION_MODULE = """
from lorrygate.decoding import decoder

@decoder("semicolons")
def decode(message, address):
    text = message.payload.decode()
    if ";" not in text:
        return None
    temperature, humidity = text.split(";")
    return {"temperature": float(temperature), "humidity": float(humidity)}

def fahrenheit(record, message, address):
    return record
"""


def test_function_decoder_from_the_strategies_directory(tmp_path):
    """A @decoder function in a drop-in module is selectable by name in a chain."""
    settings = loads(config(tmp_path, "json, semicolons", modules={"mine.py": FUNCTION_MODULE}))
    assert make(settings, "semicolons").decode(msg(b"21.5;48"), DATA) == [
        Record(1_000_000_000, {"temperature": 21.5, "humidity": 48.0})]


def test_duplicate_function_decoder_name(tmp_path):
    """Two decoders with one name are refused with both origins."""
    found = problems(config(tmp_path, "json", modules={"a.py": FUNCTION_MODULE, "b.py": FUNCTION_MODULE}))
    assert any("b.py: function decode: expected a decoder name not used before, got 'semicolons'" in p for p in found)


def test_channel_transform_and_hook(tmp_path):
    """Transform keys build the channel's transformer; the hook comes from a drop-in module."""
    settings = loads(config(tmp_path, "json", """
        rename = temp:temperature
        drop = rssi
        tags = site=berlin, node={node}
        convert =
            temperature: (value - 32) * 5 / 9
        hook = mine:fahrenheit
        metadata = true
        timezone = Europe/Berlin
        """, modules={"mine.py": FUNCTION_MODULE}))
    (channel,) = settings.channels
    assert channel.timezone == "Europe/Berlin"
    (record,) = channel.transform.apply([Record(1, {"temp": 212, "rssi": 1})], msg(b""), DATA, "json")
    assert record.fields == {"temperature": 100.0}
    assert (record.tags["site"], record.tags["node"], record.tags["decoder"]) == ("berlin", "d", "json")


@pytest.mark.parametrize("line, expected", [
    ("convert = t: __import__('os').system('x')", "convert: expected an arithmetic expression of value for 't'"),
    ("hook = nowhere:fn", "hook: expected module:function of a module in the strategies directory or an installed one"),
    ("hook = not-a-reference", "hook: expected module:function"),
    ("timezone = Mars/Olympus", "timezone: expected an IANA time zone"),
    ("rename = temp", "rename: expected old:new pairs separated by commas ('temp' is not one), got 'temp'"),
    ("rename = a:x, b:x", "rename: expected old:new pairs that give each field a name of its own ('a:x' and 'b:x' "
                          "rename two fields to 'x': a message with both would lose one's value)"),
    ("rename = a:x, a:y", "rename: expected old:new pairs, each name once ('a' is in 'a:x' and 'a:y')"),
    ("tags = site=a, site=b", "tags: expected name=value pairs, each name once ('site' is in 'site=a' and 'site=b')"),
    ("tags = site={netwrk}", "tags: expected placeholders the strategy wan fills ({realm}, {network}, {gateway}, "
                             "{node}, {kind}, {field}, {topic}), got {netwrk} in site={netwrk} (did you mean "
                             "'network'?)"),
], ids=["unsafe-convert", "missing-hook-module", "bad-hook", "bad-timezone", "bad-rename", "rename-into-one",
     "rename-twice", "tag-twice", "unfilled-tag"])
def test_bad_channel_transforms(tmp_path, line, expected):
    """Each broken transform key names the key and the problem (a placeholder the strategy never fills made the
    tag empty on every row)."""
    found = problems(config(tmp_path, "json") + line + "\n")
    assert any(expected in problem for problem in found), found


def test_tag_placeholders_of_a_strategys_labels_and_a_templates_captures_are_known(tmp_path):
    from lorrygate.config import loads

    for text in ("strategy = opendtu\ntags = at={channel}\n", "strategy = shelly\ntags = c={component}\n",
                 "strategy = ruuvi\ntags = m={mac}\n", "strategy = plant\ntags = l={line}, n={node}\n"):
        loads("[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///x\n"
              "[strategy:plant]\ntopic = plant/{line}/{node}/{field}\nschema = plant\ntable = {node}\n"
              "[channel:c]\ntopics = #\n" + text)

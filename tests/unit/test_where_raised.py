"""
Where the user's code raised (`lorrygate.where_raised`): a strategy, a decoder, a channel hook or a
first-sample hook of one's own that raises makes a dead letter (or a failed run) that names the file and line,
not only the exception: ``strategy 'factory' raised KeyError('m9')`` sent a user through 300 lines.
"""

import textwrap

import pytest
from twisted.internet.task import Clock

from lorrygate import time_limit
from lorrygate.decoding import DecoderChain, JsonDecoder
from lorrygate.decoding.functions import FunctionDecoder, LimitedDecoder
from lorrygate.decoding.javascript import JavaScriptDecoder
from lorrygate.decoding.transform import Transform
from lorrygate.errors import DecodeError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, Channel, Message
from lorrygate.plugins import collect, load_modules
from lorrygate.service.channel import ChannelRouter
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage
from lorrygate.topology import WanStrategy
from lorrygate.where_raised import where_raised

DROP_IN = {
    "factory.py": """
        import sys

        from zope.interface import implementer
        from lorrygate.interfaces import IStrategy
        from lorrygate.model import DATA, Address, TableName

        def machine(levels):
            return levels[2].upper() if levels[2] != "m9" else {}["m9"]

        @implementer(IStrategy)
        class Factory:
            name = "factory"

            def match(self, topic):
                levels = topic.split("/")
                if levels[2] == "slow":
                    while True:
                        pass
                if levels[2] == "quit":
                    sys.exit("no such machine")
                return Address("factory", levels[1], None, machine(levels), DATA, "telemetry")

            def table_for(self, address):
                return TableName("factory", address.node)
        """,
    "decoders.py": """
        import json

        def _scale(fields):
            return fields["raw"] * 2

        def scaled(message, address):
            return {"v": _scale(json.loads(message.payload))}

        class Strict:
            name = "strict"

            def decode(self, message, address):
                return [json.loads(message.payload)["missing"]]

        def adjust(record, message, address):
            return record.fields["nope"]

        def spin(message, address):
            while True:
                pass

        def quitting(message, address):
            raise SystemExit(2)
        """,
}


@pytest.fixture
def drop_in(tmp_path):
    for name, text in DROP_IN.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    problems: list = []
    modules = load_modules(str(tmp_path), problems)
    assert not problems
    return {path.rsplit("/", 1)[1]: module for path, module in modules}


def line_of(drop_in_text: str, needle: str) -> int:
    """The line of ``needle`` in a drop-in module (as written to the folder)."""
    lines = textwrap.dedent(drop_in_text).splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


def router(strategy, chain=None):
    storage = MemoryStorage()
    channel = Channel("main", "b", ("#",), 1, "factory", ("json",), "s")
    chain = chain or DecoderChain((JsonDecoder(),))
    return ChannelRouter(channel, strategy, chain, Batcher(storage, Clock(), max_rows=1), Clock()), storage


def factory_router(drop_in):
    """A router of the drop-in strategy ``factory``, and its storage."""
    (cls,) = [cls for cls, _ in collect(list(drop_in.items()), IStrategy, "strategy", []).values()]
    return router(cls())


def test_a_strategy_that_raises_in_a_helper_names_the_helpers_line(drop_in):
    """The innermost frame in the strategy's folder: the helper's line, where the KeyError came from."""
    route, storage = factory_router(drop_in)
    route(Message("factory/l1/m9/telemetry", b'{"v": 1}', 1, False, 1.0, "#"))
    route(Message("factory/l1/m1/telemetry", b'{"v": 2}', 1, False, 1.0, "#"))
    (dead,) = storage.dead_letters
    line = line_of(DROP_IN["factory.py"], '{}["m9"]')
    assert dead.error == f"strategy 'factory' raised KeyError('m9') at factory.py:{line} in machine"
    assert [str(table) for table in storage.tables] == ["factory.M1"]  # the stream goes on


def test_a_module_of_the_codes_package_counts_as_its_own(tmp_path, monkeypatch):
    """An installed strategy package whose helper module raised, beside it or in a subpackage: the helper's line,
    by its path in the package."""
    package = tmp_path / "plantstrategy"
    (package / "util").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "util" / "__init__.py").write_text("")
    (package / "util" / "deep.py").write_text("def level(levels, at):\n    return levels[at]\n")
    (package / "levels.py").write_text("from plantstrategy.util.deep import level\n\n\ndef machine(levels):\n"
                                       "    return levels[9] if len(levels) > 2 else level(levels, 5)\n")
    (package / "strategy.py").write_text("from plantstrategy.levels import machine\n\n\nclass Plant:\n"
                                         "    name = 'plant'\n\n    def match(self, topic):\n"
                                         "        return machine(topic.split('/'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from plantstrategy.strategy import Plant

    for topic, where in [("a/b/c", " at plantstrategy/levels.py:5 in machine"),
                         ("a/b", " at plantstrategy/util/deep.py:2 in level")]:
        with pytest.raises(IndexError) as caught:
            Plant().match(topic)
        assert where_raised(caught.value, Plant().match) == where


def test_a_strategy_stopped_by_the_time_limit_names_the_line_it_ran(drop_in):
    route, storage = factory_router(drop_in)
    time_limit.configure(0.05)
    try:
        route(Message("factory/l1/slow/telemetry", b'{"v": 1}', 1, False, 1.0, "#"))
    finally:
        time_limit.configure(5.0)
    (dead,) = storage.dead_letters
    looping = (line_of(DROP_IN["factory.py"], "while True"), line_of(DROP_IN["factory.py"], "pass"))
    # (where, before the advice: a list of dead letters that cuts the reason at 200 characters keeps it)
    assert dead.error.startswith(tuple(f"strategy 'factory' still ran after 0.05 s at factory.py:{line} in match on "
                                       "the reactor thread" for line in looping)), dead.error


def test_a_decoder_function_and_a_decoder_class_name_their_lines(drop_in):
    """The decoder's own line, not json's (a library's folder is not the decoder's)."""
    module = drop_in["decoders.py"]
    message = Message("r/n/g/d/data.json", b'{"v": 1}', 1, False, 1.0, "#")
    for decoder, key, function in [(FunctionDecoder("scaled", module.scaled), "raw", "_scale"),
                                   (LimitedDecoder(module.Strict()), "missing", "decode")]:
        with pytest.raises(DecodeError) as caught:
            DecoderChain((decoder,)).decode(message, WanStrategy().match(message.topic))
        line = line_of(DROP_IN["decoders.py"], f'["{key}"]')
        assert str(caught.value).endswith(f"KeyError: '{key}' at decoders.py:{line} in {function}")
    # a library's frame does not count: the user's line that called it does
    with pytest.raises(DecodeError, match=r"JSONDecodeError: .* at decoders.py:\d+ in scaled$"):
        DecoderChain((FunctionDecoder("scaled", module.scaled),)).decode(
            Message("r/n/g/d/data.json", b"{", 1, False, 1.0, "#"), WanStrategy().match("r/n/g/d/data.json"))


def test_a_strategy_that_calls_sys_exit_makes_a_dead_letter_not_the_gateways_end(drop_in):
    """SystemExit went through every ``except Exception``: the reactor's read of the MQTT connection ended, and
    the message was held as on its way for good, the acknowledgements of every later message behind it."""
    route, storage = factory_router(drop_in)
    route(Message("factory/l1/quit/telemetry", b'{"v": 1}', 1, False, 1.0, "#"))
    route(Message("factory/l1/m1/telemetry", b'{"v": 2}', 1, False, 1.0, "#"))
    (dead,) = storage.dead_letters
    line = line_of(DROP_IN["factory.py"], "sys.exit(")
    assert dead.stage == "topology" and dead.error == (
        f"strategy 'factory' called sys.exit('no such machine') at factory.py:{line} in match, which ends a program, "
        "not a message: raise an exception (a ValueError) for a message it cannot take")
    assert [str(table) for table in storage.tables] == ["factory.M1"]


def test_a_decoder_that_calls_sys_exit_on_the_reactor_or_on_its_thread_makes_a_dead_letter(drop_in):
    import threading

    message = Message("r/n/g/d/data.json", b'{"v": 1}', 1, False, 1.0, "#")
    decoder = FunctionDecoder("quitting", drop_in["decoders.py"].quitting)
    with pytest.raises(DecodeError, match=r"^decoder 'quitting': decoder 'quitting' called sys.exit\(2\) at "
                                          r"decoders.py:\d+ in quitting, which ends a program"):
        DecoderChain((decoder,)).decode(message, None)
    caught: list = []  # (off the main thread: the limit's short path)
    thread = threading.Thread(target=lambda: caught.append(pytest.raises(DecodeError, DecoderChain((decoder,)).decode,
                                                                         message, None)))
    thread.start()
    thread.join()
    assert "called sys.exit(2)" in str(caught[0].value)
    # a blocking decoder's function, on its pool's thread
    with pytest.raises(time_limit.CodeExited, match=r"decoder 'quitting' called sys.exit\(2\)"):
        decoder._in_thread(message, None)


def test_a_decoder_stopped_by_the_time_limit_names_the_line_it_ran(drop_in):
    message = Message("r/n/g/d/data.json", b'{"v": 1}', 1, False, 1.0, "#")
    time_limit.configure(0.05)
    try:
        with pytest.raises(DecodeError) as caught:
            DecoderChain((FunctionDecoder("spin", drop_in["decoders.py"].spin),)).decode(message, None)
    finally:
        time_limit.configure(5.0)
    lines = [number for number, line in enumerate(textwrap.dedent(DROP_IN["decoders.py"]).splitlines(), 1)
             if line.strip() in ("while True:", "pass")]
    assert str(caught.value).startswith(tuple(f"decoder 'spin': decoder 'spin' still ran after 0.05 s at decoders.py:"
                                              f"{line} in spin on the reactor thread" for line in lines)), caught.value


def test_a_channel_hook_names_its_line(drop_in):
    module = drop_in["decoders.py"]
    message = Message("r/n/g/d/data.json", b'{"v": 1}', 1, False, 1.0, "#")
    records = JsonDecoder().decode(message, WanStrategy().match(message.topic))
    with pytest.raises(DecodeError) as caught:
        Transform(hook=module.adjust).apply(records, message, WanStrategy().match(message.topic), "json")
    line = line_of(DROP_IN["decoders.py"], 'fields["nope"]')
    assert str(caught.value).endswith(f"KeyError: 'nope' at decoders.py:{line} in adjust")


def test_lorrygates_own_code_gets_no_location():
    """An exception of a built-in is lorrygate's bug, not a line for the user to mend."""
    try:
        JsonDecoder().decode(None, None)
    except Exception as exc:
        assert where_raised(exc, JsonDecoder().decode) == ""
    assert where_raised(ValueError("no traceback"), print) == ""


def test_a_javascript_codec_that_throws_names_its_line_in_the_codec_file(tmp_path):
    """V8's text of a throw was the dead letter's reason as it came: several lines, the file "<anonymous>"."""
    source = "function level(x) {\n  return x.a.b;\n}\nfunction decode(payload, topic) {\n  return {v: level({})};\n}\n"
    decoder = JavaScriptDecoder("codec", source, path=str(tmp_path / "sensor.js"))
    try:
        with pytest.raises(DecodeError) as caught:
            decoder.decode(Message("r/n/g/d/data.json", b"x", 1, False, 1.0, "#"), DATA)
    finally:
        decoder.stop()
    assert str(caught.value) == ("decoder 'codec': the codec raised TypeError: Cannot read properties of undefined "
                                 "(reading 'b') at sensor.js:2:14 in level")
    thrown = JavaScriptDecoder("codec", 'function decode(p, t) {\n  throw "short frame";\n}', path="/x/sensor.js")
    try:
        with pytest.raises(DecodeError, match=r"^decoder 'codec': the codec raised short frame at sensor.js:2$"):
            thrown.decode(Message("r/n/g/d/data.json", b"x", 1, False, 1.0, "#"), DATA)
    finally:
        thrown.stop()


class Answering:
    """A strategy of one's own whose answers are no `Address` or no `TableName` for some topics."""

    name = "answering"

    def match(self, topic):
        from lorrygate.model import Address

        node = topic.split("/")[1]
        return None if node == "nothing" else Address("r", None, None, node, DATA, None if node == "norest" else "")

    def table_for(self, address):
        from lorrygate.model import TableName

        return {"str": "plain", "tuple": ("s", "t"), "int": TableName("s", 5), "empty": TableName("s", ""),
                "none": None}.get(address.node, TableName(None, address.node))


def test_a_strategy_answering_with_no_address_or_table_name_is_told_so_and_the_stream_flows():
    """A ``table_for`` that returned a plain string (or None, a tuple, a name that is no text) failed in the
    storage with ``AttributeError: 'str' object has no attribute 'schema'``, which named neither the strategy nor
    what it should return; an int table name was stored as ``s__5``. Each is a dead letter that says which call
    returned what, and what it must return; the other topics are stored."""
    route, storage = router(Answering())
    for node in ("str", "tuple", "int", "empty", "none", "nothing", "norest", "ok"):
        route(Message(f"r/{node}", b'{"v": 1}', 1, False, 1.0, "#"))
    errors = [dead.error for dead in storage.dead_letters]
    assert len(errors) == 7 and all(error.startswith("strategy 'answering': ") for error in errors), errors
    assert "returned 'plain', not a TableName(schema, table) of text with a table name" in errors[0]
    assert "table_for(Address(realm='r'" in errors[0] and "returned ('s', 't')" in errors[1]
    assert "returned TableName(schema='s', table=5)" in errors[2] and "table=''" in errors[3]
    assert "returned None, not a TableName" in errors[4]
    assert errors[5] == ("strategy 'answering': match('r/nothing') returned None, not an Address (lorrygate.model."
                         "Address(realm, network, gateway, node, kind, rest), rest the text of the levels after the "
                         "address, '' for none), or TopologyError raised for a topic that does not fit")
    # (an Address whose rest is None broke the decoders that read it: "'NoneType' object has no attribute 'endswith'",
    # a dead letter of the gateway's own that named no strategy)
    assert errors[6].startswith("strategy 'answering': match('r/norest') returned Address(realm='r'") \
        and "rest=None" in errors[6]
    assert [str(table) for table in storage.tables] == ["None.ok"]

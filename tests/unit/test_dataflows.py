"""Hamilton dataflow steps and Tributary graphs, in process (the gateway runs are in
tests/integration/test_dataflows.py)."""

import os
import textwrap

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from lorrygate.config import loads
from lorrygate.decoding.dataflow import DataflowSettings, DataflowStep, apply_outputs, derived_table
from lorrygate.errors import ConfigError, DecodeError
from lorrygate.model import Channel, Message, Record, TableName

WEATHER = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "dataflows", "weather.py")


def settings(modules=(WEATHER,), **kwargs) -> DataflowSettings:
    values = {"inputs": ("temperature", "humidity"), "outputs": ("dew_point", "temperature_mean"),
              "constants": (("window", 3),), "history": 2}
    values.update(kwargs)
    return DataflowSettings("weather", "hamilton", tuple(modules), **values)


def module(tmp_path, text: str) -> str:
    path = tmp_path / "flow.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def records(*temperatures, humidity=50.0, start=0):
    return [Record(1_700_000_000_000_000_000 + (start + n) * 10**9, {"temperature": t, "humidity": humidity})
            for n, t in enumerate(temperatures)]


@pytest.fixture
def step():
    from twisted.internet import reactor

    made = []

    def make(**kwargs):
        made.append(DataflowStep(settings(**kwargs), reactor, "main"))
        made[-1].start()
        return made[-1]

    yield make
    for one in made:
        one.stop()


@pytest_twisted.inlineCallbacks
def test_outputs_are_per_row_and_the_history_spans_batches(step):
    """A rolling mean over 3 rows sees the 2 rows of the last batch of the same address, not another's."""
    flow = step()
    a = TableName("r", "a")
    first = yield flow.submit(records(10.0, 20.0), a)
    other = yield flow.submit(records(100.0), TableName("r", "b"))
    second = yield flow.submit(records(30.0, 40.0, start=2), a)
    assert [row["temperature_mean"] for row in first] == [10.0, 15.0]
    assert [row["temperature_mean"] for row in second] == [20.0, 30.0]  # (10+20+30)/3, (20+30+40)/3
    assert other[0]["temperature_mean"] == 100.0
    assert first[0]["dew_point"] == 0.04  # Magnus: 10 °C at 50 % -> 0.041 °C
    assert flow.pending == 0


@pytest_twisted.inlineCallbacks
def test_batches_of_one_address_waiting_together_go_in_one_run_in_order(step):
    flow = step(history=0)
    key = TableName("r", "a")
    results = yield Deferred.fromCoroutine(_gather([flow.submit(records(t), key) for t in (1.0, 2.0, 3.0, 4.0)]))
    assert [r[0]["temperature_mean"] for r in results] == [1.0, 1.5, 2.0, 3.0]  # one run: a rolling window over all
    assert flow.runs == 1


async def _gather(deferreds):
    return [await d for d in deferreds]


@pytest_twisted.inlineCallbacks
def test_a_raising_function_is_named_and_the_next_run_goes_on(step, tmp_path):
    path = module(tmp_path, """
        import pandas as pd

        def ratio(temperature: pd.Series) -> pd.Series:
            if (temperature > 100).any():
                raise ValueError("too hot to handle")
            return temperature / 10
        """)
    flow = step(modules=(path,), inputs=("temperature",), outputs=("ratio",), constants=(), history=0)
    with pytest.raises(DecodeError) as caught:
        yield flow.submit(records(150.0), TableName("r", "a"))
    assert "dataflow weather" in str(caught.value) and "ratio (flow.py:6)" in str(caught.value)
    assert "ValueError: too hot to handle" in str(caught.value)
    good = yield flow.submit(records(50.0), TableName("r", "a"))
    assert good == [{"ratio": 5.0}]


@pytest_twisted.inlineCallbacks
def test_a_run_past_the_timeout_fails_its_messages(step, tmp_path):
    path = module(tmp_path, """
        import time
        import pandas as pd

        def slow(temperature: pd.Series) -> pd.Series:
            time.sleep(0.5)
            return temperature
        """)
    flow = step(modules=(path,), inputs=("temperature",), outputs=("slow",), constants=(), history=0, timeout=0.05)
    with pytest.raises(DecodeError, match="no result within timeout = 0.05 s"):
        yield flow.submit(records(1.0), TableName("r", "a"))


@pytest_twisted.inlineCallbacks
def test_scalar_outputs_go_to_every_row_and_nan_leaves_a_field_out(step, tmp_path):
    path = module(tmp_path, """
        import numpy as np
        import pandas as pd

        def peak(temperature: pd.Series) -> float:
            return temperature.max()

        def halved(temperature: pd.Series) -> pd.Series:
            return temperature.where(temperature > 0, np.nan) / 2

        def stamp(temperature: pd.Series) -> pd.Series:
            return pd.Series(temperature.index, index=temperature.index)
        """)
    flow = step(modules=(path,), inputs=("temperature",), outputs=("peak", "halved", "stamp"), constants=(),
                history=0)
    rows = yield flow.submit(records(4.0, -2.0), TableName("r", "a"))
    assert rows[0]["peak"] == rows[1]["peak"] == 4.0 and type(rows[0]["peak"]) is float
    assert rows[0]["halved"] == 2.0 and "halved" not in rows[1]
    assert rows[0]["stamp"] == "2023-11-14T22:13:20+00:00"


@pytest_twisted.inlineCallbacks
def test_a_row_without_an_input_field_gets_nan_there_and_no_output_from_it(step):
    flow = step(history=0)
    rows = [Record(10**18, {"temperature": 20.0, "humidity": 50.0}), Record(10**18 + 1, {"temperature": 22.0}),
            Record(10**18 + 2, {"humidity": 40, "other": "x"})]
    out = yield flow.submit(rows, TableName("r", "a"))
    assert set(out[0]) == {"dew_point", "temperature_mean"}
    assert "dew_point" not in out[1] and out[1]["temperature_mean"] == 21.0
    assert "dew_point" not in out[2] and out[2]["temperature_mean"] == 21.0  # the mean of what is there


@pytest.mark.parametrize("bound", [4, 1])  # (a bound of 1 resumed below 0 messages: never)
@pytest_twisted.inlineCallbacks
def test_waiting_messages_past_max_pending_pause_the_source(step, tmp_path, bound):
    path = module(tmp_path, """
        import time
        import pandas as pd

        def slow(temperature: pd.Series) -> pd.Series:
            time.sleep(0.05)
            return temperature
        """)
    flow = step(modules=(path,), inputs=("temperature",), outputs=("slow",), constants=(), history=0,
                max_pending=bound)
    source = Holder()
    flow.attach(source)
    waiting = [flow.submit(records(float(n)), TableName("r", f"n{n}")) for n in range(bound)]
    assert source.held == ["dataflow weather"]
    yield Deferred.fromCoroutine(_gather(waiting))
    assert source.held == [] and source.history == ["pause", "resume"]


class Holder:
    def __init__(self):
        self.held, self.history = [], []

    def pause(self, holder):
        self.held.append(holder.pause_name)
        self.history.append("pause")

    def resume(self, holder):
        self.held.remove(holder.pause_name)
        self.history.append("resume")


def test_into_table_keeps_the_rows_and_makes_derived_ones():
    rows = records(1.0, 2.0)
    kept, derived = apply_outputs(settings(into="table"), rows, [{"dew_point": 1.5}, {}])
    assert kept == rows and [r.fields for r in derived] == [{"dew_point": 1.5}] and derived[0].time == rows[0].time
    merged, none = apply_outputs(settings(), rows, [{"dew_point": 1.5}, {}])
    assert merged[0].fields == {"temperature": 1.0, "humidity": 50.0, "dew_point": 1.5} and none == []
    assert derived_table(TableName("s", "node_1_sensors"), "Weather-Model") == TableName("s",
                                                                                         "node_1_sensors_weather_model")


@pytest_twisted.inlineCallbacks
def test_the_router_stores_derived_rows_and_acknowledges_once_both_are_committed(tmp_path):
    from twisted.internet import reactor

    from lorrygate.decoding import DecoderChain, JsonDecoder
    from lorrygate.service.channel import ChannelRouter
    from lorrygate.storage.batcher import Batcher
    from lorrygate.storage.memory import MemoryStorage
    from lorrygate.topology import WanStrategy

    storage = MemoryStorage()
    batcher = Batcher(storage, reactor, max_rows=1)
    flow = DataflowStep(settings(into="table", history=0), reactor, "main")
    flow.start()
    channel = Channel("main", "b", ("#",), 1, "wan", ("json",), "s", dataflow=flow.settings)
    router = ChannelRouter(channel, WanStrategy(), DecoderChain((JsonDecoder(),)), batcher, reactor)
    router.dataflow = flow
    acked = []
    ack = type("Ack", (), {"ack": lambda self: acked.append(1)})()
    try:
        router(Message("r/n/g/d/data.json", b'{"temperature": 21.0, "humidity": 60}', 1, False, 1.0, "#", ack))
        yield router.settle()
        yield batcher.barrier()
    finally:
        flow.stop()
    assert sorted(str(t) for t in storage.tables) == ["r_n.g_d_sensors", "r_n.g_d_sensors_weather"]
    assert acked == [1]


def test_check_names_the_function_a_missing_input_stops_and_a_mistyped_output(tmp_path):
    broken = module(tmp_path, """
        import pandas as pd

        def dew_point(temperature: pd.Series, humidty: pd.Series) -> pd.Series:
            return temperature - humidty
        """)
    base = f"[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///{tmp_path}/x\n[channel:c]\ntopics = #\ntransform = w\n"
    with pytest.raises(ConfigError) as caught:
        loads(base + f"[transform:w]\ntype = hamilton\nmodules = {broken}\ninputs = temperature, humidity\n"
                     "outputs = dew_point\n")
    (problem,) = caught.value.problems
    assert problem.key == "outputs" and "humidty" in problem.got and "dew_point" in problem.got
    with pytest.raises(ConfigError) as caught:
        loads(base + f"[transform:w]\ntype = hamilton\nmodules = {WEATHER}\ninputs = temperature, humidity\n"
                     "outputs = dew_pont\n")
    assert "Unknown nodes [dew_pont] requested" in caught.value.problems[0].got
    with pytest.raises(ConfigError) as caught:
        loads(base.replace("transform = w", "transform = nope"))
    assert "the name of a [transform:NAME] section" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        loads(base + "[transform:w]\ntype = hamilton\nmodules = missing.py\ninputs = a\noutputs = b\n")
    assert caught.value.problems[0].key == "modules" and "no such file" in caught.value.problems[0].got


# -- Tributary ------------------------------------------------------------------------------------


def graph_module(tmp_path, name: str, text: str):
    import importlib.util
    import sys

    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def wait_for(condition, timeout: float = 10.0) -> Deferred:
    """Fires once ``condition()`` holds (polled on the reactor), fails after ``timeout``."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(lambda: loop.stop() if condition() else None)
    loop.clock = reactor
    d = loop.start(0.005)
    d.addTimeout(timeout, reactor)
    return d


@pytest_twisted.inlineCallbacks
def test_a_tributary_source_takes_no_more_than_its_window(tmp_path):
    from twisted.internet import reactor

    from lorrygate.config.settings import SourceSettings
    from lorrygate.sources.tributary import TributarySource

    graph = graph_module(tmp_path, "countgraph", """
        import tributary.streaming as ts

        PRODUCED = []

        def build():
            def produce():
                for n in range(50):
                    PRODUCED.append(n)
                    yield {"node": f"n{n % 2}", "seq": n}
            return ts.Func(produce, count=0)
        """)
    delivered = []
    source = TributarySource("model", SourceSettings("model", "tributary", topic="m/{node}", window=5,
                                                     graph="countgraph:build", function=graph.build),
                             delivered.append, reactor)
    source.startService()
    try:
        yield wait_for(lambda: len(delivered) == 5)
        assert len(graph.PRODUCED) <= 7  # the graph waits in lorrygate's node: one value taken, one in hand
        delivered[0].ack.ack()
        yield wait_for(lambda: len(delivered) == 6)
        assert len(graph.PRODUCED) <= 8
        while len(delivered) < 50:
            seen = len(delivered)
            for message in delivered[source.committed:]:
                message.ack.ack()
            yield wait_for(lambda: len(delivered) > seen)
    finally:
        yield source.stopService()
    assert [m.topic for m in delivered[:3]] == ["m/n0", "m/n1", "m/n0"]
    assert delivered[7].payload == b'{"node": "n1", "seq": 7}'


@pytest_twisted.inlineCallbacks
def test_a_tributary_source_pauses_and_reports_a_failing_graph(tmp_path):
    from twisted.internet import reactor

    from lorrygate.config.settings import SourceSettings
    from lorrygate.sources.tributary import TributarySource

    graph = graph_module(tmp_path, "failgraph", """
        import tributary.streaming as ts

        def build():
            def produce():
                yield {"seq": 0}
                yield {"seq": 1}
                raise RuntimeError("sensor gone")
            return ts.Func(produce, count=0)
        """)
    delivered = []
    source = TributarySource("model", SourceSettings("model", "tributary", topic="m", window=100,
                                                     graph="failgraph:build", function=graph.build),
                             delivered.append, reactor)
    source.pause("storage")
    source.startService()
    try:
        yield wait_for(lambda: source.held_back == 1)  # the graph's first value waits for the resume
        assert delivered == []
        source.resume("storage")
        yield wait_for(lambda: source.last_error != "")
    finally:
        yield source.stopService()
    assert len(delivered) == 2 and "RuntimeError: sensor gone" in source.last_error


@pytest_twisted.inlineCallbacks
def test_a_tributary_sink_writes_once_the_graph_took_the_records(tmp_path):
    from twisted.internet import reactor

    from lorrygate.errors import StorageError
    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.tributary_sink import TributarySink

    graph = graph_module(tmp_path, "sinkgraph", """
        import time

        TAKEN = []

        def build(records):
            def take(record):
                time.sleep(0.02)
                if record["fields"].get("v") == -1:
                    raise RuntimeError("negative")  # (Tributary turns a ValueError into an AttributeError)
                TAKEN.append(record["fields"]["v"])
                return record
            return records.apply(take)
        """)
    sink = TributarySink("graph", graph.build, reactor)
    yield sink.start()
    batch = Batch()
    message = Message("t", b"{}", 1, False, 1.0, "#")
    batch.add(Entry(TableName("s", "t"), [Record(10**18, {"v": n}) for n in range(5)], "main", message, "json"))
    yield sink.write(batch)
    assert graph.TAKEN == [0, 1, 2, 3, 4]
    bad = Batch()
    bad.add(Entry(TableName("s", "t"), [Record(10**18, {"v": -1})], "main", message, "json"))
    with pytest.raises(StorageError, match="the graph failed: RuntimeError: negative"):
        yield sink.write(bad)
    with pytest.raises(StorageError, match="the graph failed"):
        yield sink.write(batch)
    yield sink.stop()


# -- docs/transform.rst -------------------------------------------------------------------------------

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
EXAMPLES = os.path.join(DOCS, "..", "examples")


def transform_doc_blocks():
    import re

    text = open(os.path.join(DOCS, "transform.rst"), encoding="utf-8").read()
    ini = [block.replace("\n   ", "\n").strip() for block in
           re.findall(r"\.\. code-block:: ini\n\n((?:   [^\n]*\n|\n)+)", text)]
    launches = [" ".join(block.split()) for block in re.findall(r"::\n\n    (lorrygate launch [^\n]+)\n", text)]
    return ini, launches


def test_the_transform_docs_ini_examples_load(monkeypatch):
    """Each ini example of docs/transform.rst (with a broker and a storage) is a configuration lorrygate accepts."""
    monkeypatch.syspath_prepend(os.path.join(EXAMPLES, "tributary"))
    ini, _ = transform_doc_blocks()
    assert len(ini) == 3
    hamilton, source, sink = ini
    base = "[broker:b]\nhost = h\n[storage:db]\nurl = sqlite:///x.sqlite\n"
    settings = loads(base + hamilton.replace("[channel:sensors]", "[channel:sensors]\nstorage = db"), base_dir=DOCS)
    (channel,) = settings.channels
    assert channel.dataflow.outputs == ("dew_point", "temperature_mean") and channel.dataflow.history == 4
    settings = loads(base + hamilton.split("[channel:sensors]")[0] + source + "\nstorage = db\n", base_dir=DOCS)
    assert settings.sources["model"].function.__name__ == "readings"
    settings = loads(base + sink + "\n[channel:c]\nsource = b\ntopics = #\nstorage = db, alarms\n", base_dir=DOCS)
    assert settings.storages["alarms"].callback.__name__ == "alarms"


def test_the_transform_docs_launch_lines_build(monkeypatch):
    import shlex

    from lorrygate.pipeline.model import parse_launch

    monkeypatch.syspath_prepend(os.path.join(EXAMPLES, "tributary"))
    monkeypatch.chdir(os.path.join(DOCS, ".."))
    _, launches = transform_doc_blocks()
    assert len(launches) == 2
    for line in launches:
        (channel,) = parse_launch(shlex.split(line)[2]).channels
    assert channel.source  # the tributary source's


@pytest_twisted.inlineCallbacks
def test_the_docs_alarm_graph_sees_the_hot_records(monkeypatch):
    """examples/tributary/livegraph.py's alarms, as a storage's graph, keeps the records over 30 °C."""
    from twisted.internet import reactor

    from lorrygate.storage.batch import Batch, Entry
    from lorrygate.storage.tributary_sink import TributarySink

    monkeypatch.syspath_prepend(os.path.join(EXAMPLES, "tributary"))
    import livegraph

    del livegraph.ALARMS[:]
    sink = TributarySink("alarms", livegraph.alarms, reactor)
    yield sink.start()
    batch = Batch()
    message = Message("t", b"{}", 1, False, 1.0, "#")
    table = TableName("mqttkit_1_model", "lab_node_0_sensors")
    batch.add(Entry(table, records(25.0, 35.5, 31.0), "main", message, "json"))
    yield sink.write(batch)
    yield sink.stop()
    assert [(t, temperature) for t, _, temperature in livegraph.ALARMS] == [("lab_node_0_sensors", 35.5),
                                                                            ("lab_node_0_sensors", 31.0)]


def test_inspect_lists_the_dataflow_elements_and_describe_shows_them(monkeypatch):
    from lorrygate.pipeline.elements import describe_elements
    from lorrygate.pipeline.model import parse_launch

    listing = "\n" + describe_elements()
    for name in ("hamilton (dataflow)", "tributarysrc (source)", "tributarysink (sink)"):
        assert f"\n{name}" in listing, name
    monkeypatch.syspath_prepend(os.path.join(EXAMPLES, "tributary"))
    pipeline = parse_launch(f"tributarysrc graph=livegraph:readings window=50 ! hamilton modules={WEATHER} "
                            "inputs=temperature,humidity outputs=dew_point ! tributarysink graph=livegraph:alarms")
    text = pipeline.describe([], ())
    assert "tributary source source0 (graph livegraph:readings, window 50)" in text
    assert "! hamilton launch0 (dew_point)" in text and "! tributary sink0 (graph livegraph:alarms" in text
    with pytest.raises(Exception, match="hamilton outputs: expected a dataflow"):
        parse_launch(f"tributarysrc graph=livegraph:readings ! hamilton modules={WEATHER} inputs=temperature "
                     "outputs=dew_point ! sqlite location=x.sqlite")

"""
Hamilton dataflows as a channel's transform step.

    [transform:weather]
    type = hamilton
    modules = dataflows/weather.py
    inputs = temperature, humidity
    outputs = dew_point, temperature_mean
    history = 10

    [channel:sensors]
    topics = mqttkit-1/#
    transform = weather

A user's Hamilton module (``apache-hamilton``) describes columns as functions
of other columns. Each batch of records of one address goes through it: every
name in ``inputs`` is a pandas Series of that field over the rows (indexed by
the rows' times, UTC; a row without the field has NaN), ``constants`` are
scalar inputs, and the values of ``outputs`` become fields of the stored rows
(``into = fields``) or the rows of a derived table ``<table>_<transform>``
(``into = table``). A Series output gives one value per row, a scalar output
the same value to every row; NaN and None leave the field out.

``history`` rows of each address (the last ones before the batch) are handed
to the dataflow in front of the new rows, so that rolling computations span
messages; only the new rows are stored. At start-up Hamilton validates the DAG
against the inputs: a missing input or an unknown output is a config error
naming the function (``lorrygate check``).

The dataflow runs on a thread of its own, never on the reactor; records of an
address are batched while a run for it is in flight, and runs of one address
follow each other in order. A run that takes longer than ``timeout``, or that
raises, makes its messages dead letters (stage ``transform``, the function
named) and the stream goes on. At ``max_pending`` messages waiting, the
channel's source is paused (backpressure) until half of them are through.
"""

import importlib.util
import math
import os
import sys
import traceback
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lorrygate.errors import DecodeError
from lorrygate.model import Record
from lorrygate.sources.pauses import PauseLog, SourceHolder

#: addresses whose history a step keeps at most (the least recently seen go first)
MAX_ADDRESSES = 100_000


@attrs.frozen
class DataflowSettings:
    """A ``[transform:NAME]`` section."""

    name: str
    type: str
    #: paths of Python files (absolute) or importable module names
    modules: tuple
    inputs: tuple
    outputs: tuple
    #: (name, value) scalar inputs
    constants: tuple = ()
    history: int = 0
    into: str = "fields"
    timeout: float = 10.0
    max_pending: int = 10_000


def _quiet_hamilton() -> None:
    # Hamilton before 1.88 reported usage to its makers unless told not to; a gateway phones nobody.
    os.environ.setdefault("HAMILTON_TELEMETRY_ENABLED", "false")


def load_modules(settings: DataflowSettings) -> list:
    """The dataflow's modules; ValueError says which one failed and why."""
    modules = []
    for reference in settings.modules:
        try:
            if reference.endswith(".py") or os.sep in reference:
                stem = os.path.splitext(os.path.basename(reference))[0]
                module_name = f"lorrygate_dataflow_{settings.name}_{stem}"
                spec = importlib.util.spec_from_file_location(module_name, reference)
                if spec is None or spec.loader is None:
                    raise ImportError("not a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(reference)
        except FileNotFoundError:
            raise ValueError(f"{reference}: no such file") from None
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == reference]
            where = f" at line {frames[-1].lineno}" if frames else ""
            raise ValueError(f"{reference}{where}: {type(exc).__name__}: {exc}") from None
        modules.append(module)
    return modules


def build_driver(settings: DataflowSettings, modules: list | None = None):
    """A Hamilton driver over the modules, validated for the outputs; ValueError with Hamilton's
    reason (it names the functions) when the DAG cannot compute them from the inputs."""
    _quiet_hamilton()
    import pandas as pd
    from hamilton import base, driver

    modules = load_modules(settings) if modules is None else modules
    try:
        dr = driver.Builder().with_modules(*modules).with_adapters(base.DictResult()).build()
    except Exception as exc:
        raise ValueError(f"Hamilton cannot build the dataflow: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    sample = {name: pd.Series([1.0], index=pd.DatetimeIndex([0], tz="UTC")) for name in settings.inputs}
    sample.update(dict(settings.constants))
    try:
        dr.validate_execution(list(settings.outputs), inputs=sample)
    except Exception as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    return dr


def _plain(value):
    """A value of a Series or a scalar output as a storable value; None for NaN and missing."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (str, bytes)):
        try:
            value = item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        if value != value:  # NaT
            return None
        return value.isoformat()
    return value


def _where(exc: BaseException, files: set) -> str:
    """The user function a traceback ends in, as ``function (file:line)``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in files]
    if not frames:
        return ""
    frame = frames[-1]
    return f"{frame.name} ({os.path.basename(frame.filename)}:{frame.lineno}): "


class Run:
    """One run of the dataflow over an address's history and new rows (in the worker thread)."""

    def __init__(self, settings: DataflowSettings, driver, files: set):
        self.settings = settings
        self.driver = driver
        self.files = files

    def __call__(self, history: list, new: list) -> list:
        """Output fields (a dict) for each of the ``new`` records."""
        import pandas as pd

        rows = history + new
        index = pd.DatetimeIndex(pd.to_datetime([r.time for r in rows], unit="ns", utc=True))
        inputs: dict[str, Any] = {name: pd.Series([r.fields.get(name) for r in rows], index=index, dtype=object)
                                  .infer_objects() for name in self.settings.inputs}
        inputs.update(dict(self.settings.constants))
        try:
            result = self.driver.execute(list(self.settings.outputs), inputs=inputs)
        except Exception as exc:
            raise DecodeError(f"dataflow {self.settings.name}",
                              f"{_where(exc, self.files)}{type(exc).__name__}: {exc}") from None
        first = len(history)
        columns = []
        for name in self.settings.outputs:
            value = result[name]
            if isinstance(value, pd.Series):
                if len(value) != len(rows):
                    raise DecodeError(f"dataflow {self.settings.name}",
                                      f"output {name!r} has {len(value)} values for {len(rows)} rows")
                columns.append((name, [_plain(v) for v in value.tolist()[first:]]))
            elif isinstance(value, pd.DataFrame):
                raise DecodeError(f"dataflow {self.settings.name}",
                                  f"output {name!r} is a DataFrame; ask for its columns (Series) as outputs")
            else:
                columns.append((name, [_plain(value)] * len(new)))
        out = []
        for position in range(len(new)):
            fields = {}
            for name, values in columns:
                value = values[position]
                if value is not None:
                    fields[name] = value
            out.append(fields)
        return out


@attrs.define(eq=False)
class DataflowStep(SourceHolder):
    """A channel's dataflow: batches records per address, runs them on its thread, hands back records."""

    settings: DataflowSettings
    reactor: Any
    channel: str = ""
    _run: Any = None
    _pool: ThreadPool | None = None
    #: address key -> [(records, Deferred)] waiting for a run
    _waiting: dict = attrs.Factory(dict)
    _running: set = attrs.Factory(set)
    #: address key -> its last records (``history`` of them)
    _history: dict = attrs.Factory(dict)
    _kick: Any = None
    pending: int = 0
    runs: int = 0
    failures: int = 0
    _paused: bool = False
    _sources: list = attrs.Factory(list)
    #: the lines of its pauses: a backlog's first, and a summary (`lorrygate.sources.pauses.PauseLog`)
    _pause_log: PauseLog | None = None

    log = Logger()

    @property
    def name(self) -> str:
        return f"dataflow {self.settings.name}"

    pause_name = name

    def start(self) -> None:
        """Load the modules and build the driver (validated), start the worker thread."""
        modules = load_modules(self.settings)
        files = {getattr(module, "__file__", "") for module in modules}
        self._run = Run(self.settings, build_driver(self.settings, modules), files)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"lorrygate-dataflow-{self.settings.name}")
        self._pool.start()

    def stop(self) -> None:
        if self._pause_log is not None:
            self._pause_log.end()
        if self._kick is not None and self._kick.active():
            self._kick.cancel()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()

    def submit(self, records: list, key) -> Deferred:
        """A Deferred of each record's output fields (a list of dicts, in order), or a DecodeError."""
        d: Deferred = Deferred()
        self._waiting.setdefault(key, []).append((records, d))
        self.pending += 1
        if self.pending >= self.settings.max_pending and not self._paused:
            self._set_paused(True)
        if self._kick is None or not self._kick.active():
            self._kick = self.reactor.callLater(0, self._start_runs)
        return d

    def _start_runs(self) -> None:
        for key in [key for key in self._waiting if key not in self._running]:
            self._start(key)

    def _start(self, key) -> None:
        items = self._waiting.pop(key)
        self._running.add(key)
        history = self._history.get(key, ())
        new = [record for records, _ in items for record in records]
        if self._pool is None:
            self._finish(DecodeError(self.name, "the channel is stopping"), key, items, new)
            return
        self.runs += 1
        d = deferToThreadPool(self.reactor, self._pool, self._run, list(history), new)
        d.addTimeout(self.settings.timeout, self.reactor)
        d.addBoth(self._finish, key, items, new)

    def _finish(self, result, key, items, new) -> None:
        self._running.discard(key)
        self.pending -= len(items)
        if self._paused and self.pending < max(1, self.settings.max_pending // 2):  # (a bound of 1: below 0, never)
            self._set_paused(False)
        if isinstance(result, list):
            if self.settings.history:
                kept = self._history.pop(key, ())
                self._history[key] = (list(kept) + new)[-self.settings.history:]
                if len(self._history) > MAX_ADDRESSES:
                    del self._history[next(iter(self._history))]
            offset = 0
            for records, d in items:
                d.callback(result[offset:offset + len(records)])
                offset += len(records)
        else:
            self.failures += 1
            error = self._error(result)
            for _, d in items:
                d.errback(error)
        if key in self._waiting and key not in self._running:
            self._start(key)

    def _error(self, result) -> DecodeError:
        failure_value = getattr(result, "value", result)
        if isinstance(failure_value, DecodeError):
            return failure_value
        if isinstance(failure_value, DeferredTimeout):
            return DecodeError(self.name, f"no result within timeout = {self.settings.timeout} s (the run goes on "
                                          "in its thread; later runs wait for it)")
        return DecodeError(self.name, f"{type(failure_value).__name__}: {failure_value}")

    def _set_paused(self, paused: bool) -> None:
        if self._pause_log is None:
            self._pause_log = PauseLog(f"channel {self.channel}, {self.name}", self.reactor, self.log)
        say = self._pause_log.changed(paused, self.pending)
        say("channel {channel}: {state} its source, {pending} messages wait for {step}",
            channel=self.channel, state="pausing" if paused else "resuming", pending=self.pending, step=self.name)
        self._hold_sources(paused)


def derived_table(table, name: str):
    """The table of an address's derived rows (``into = table``): ``<table>_<transform>``."""
    from lorrygate.model import TableName
    from lorrygate.topology.naming import join

    return TableName(table.schema, join(table.table, name))


def apply_outputs(settings: DataflowSettings, records: list, outputs: list) -> tuple:
    """``(records for the address's table, records for the derived table)`` from the outputs."""
    if settings.into == "fields":
        return [Record(r.time, {**r.fields, **fields}, r.tags) for r, fields in zip(records, outputs)], []
    return records, [Record(r.time, fields, r.tags) for r, fields in zip(records, outputs) if fields]


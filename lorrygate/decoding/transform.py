"""
The transformer step after decoding, per channel.

    [channel:weather]
    rename = temp:temperature, hum:humidity
    drop = rssi, snr
    tags = site=berlin, station={node}
    convert =
        temperature: (value - 32) * 5 / 9
        pressure: value / 100
    hook = mymodule:adjust
    metadata = true

In this order: ``rename`` renames fields (together: ``a:b, b:a`` swaps; a
renamed field replaces a field of its new name); ``drop`` removes fields; ``convert``
replaces a field's numeric value by an arithmetic expression of ``value``
(``+ - * / // % **``, parentheses, numbers, ``abs``, ``round``, ``min``,
``max``); ``tags`` adds tags, constant or from the address (``{realm}``,
``{network}``, ``{gateway}``, ``{node}``, ``{kind}``, ``{field}``, ``{topic}``
and a declarative strategy's captures); ``hook`` calls a Python function
``hook(record, message, address)`` that returns a record, or None to drop it;
``metadata`` adds the tags ``topic``, ``realm``, ``network``, ``gateway``,
``node``, ``kind``, ``decoder``, ``received`` and ``source``; ``headers``
adds the message's headers it names as tags (MQTT 5 user properties, AMQP
headers, Kafka record headers: `header_tags`).
"""

import ast
import math
import re
from typing import Any

import attrs

from lorrygate import time_limit
from lorrygate.decoding.records import storable_record
from lorrygate.decoding.timestamps import seconds_to_ns, to_iso
from lorrygate.errors import DecodeError
from lorrygate.model import Record
from lorrygate.where_raised import where_raised

_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
)
_FUNCTIONS = {"abs": abs, "round": round, "min": min, "max": max}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def compile_expression(text: str):
    """Compile an arithmetic expression of ``value``; ValueError says what is not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {exc.msg} at column {exc.offset}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"{type(node).__name__} is not allowed (only arithmetic on value)")
        if isinstance(node, ast.Name) and node.id != "value" and node.id not in _FUNCTIONS:
            raise ValueError(f"unknown name {node.id!r} (use value, abs, round, min, max)")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ValueError(f"only numbers are allowed, got {node.value!r}")
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id not in _FUNCTIONS:
                raise ValueError(f"unknown name {node.func.id!r} (use value, abs, round, min, max)")
            if not isinstance(node.func, ast.Name) or node.keywords:
                raise ValueError("only abs(), round(), min() and max() can be called")
    code = compile(tree, "<convert>", "eval")

    def evaluate(value):
        return eval(code, {"__builtins__": {}}, dict(_FUNCTIONS, value=value))  # noqa: S307 - checked AST

    return evaluate


def placeholders(template: str) -> list:
    """The ``{name}`` placeholders of a tag's template."""
    return _PLACEHOLDER.findall(template)


def render_tag(template: str, values: dict) -> str:
    return _PLACEHOLDER.sub(lambda match: str(values.get(match.group(1), "")), template)


def header_tags(wanted: tuple, headers: tuple) -> dict:
    """The tags of a message's ``headers`` (``(name, text)`` pairs as sent) that ``wanted`` (``(header, tag)``
    pairs) names: a header sent more than once is its texts joined by ``", "`` in the order sent (as HTTP combines
    a repeated field); a header the message lacks is no tag (not an empty one)."""
    if not headers:
        return {}
    found: dict = {}
    for name, text in headers:
        found.setdefault(name, []).append(text)
    return {tag: ", ".join(found[name]) for name, tag in wanted if name in found}


def address_values(message, address) -> dict:
    values = dict(address.labels) if address is not None else {}
    if address is not None:
        for key in ("realm", "network", "gateway", "node", "kind", "field"):
            value = getattr(address, key)
            if value is not None:
                values[key] = value
    values["topic"] = message.topic
    return values


@attrs.frozen
class Transform:
    rename: tuple = ()
    drop: frozenset = frozenset()
    convert: tuple = ()
    tags: tuple = ()
    hook: Any = None
    metadata: bool = False
    source: str = ""
    #: ``(header, tag)`` pairs: the message's headers stored as tags
    headers: tuple = ()

    @property
    def active(self) -> bool:
        return bool(self.rename or self.drop or self.convert or self.tags or self.hook or self.metadata
                    or self.headers)

    def apply(self, records: list, message, address, decoder: str) -> list:
        """Transform each record; raise DecodeError when a step fails. The ``hook`` (the user's code) and
        ``convert`` (``2 ** value`` of a large value runs for ever) run under the time limit of the user's code."""
        if self.hook is None and not self.convert:
            return self._apply(records, message, address, decoder)
        try:
            return time_limit.call("the channel's hook and convert", self._apply, records, message, address, decoder)
        except time_limit.CodeStopped as exc:
            if self.hook is None:
                raise DecodeError("convert", str(exc)) from None
            raise DecodeError("hook", exc.told(where_raised(exc, self.hook))) from None

    def _apply(self, records: list, message, address, decoder: str) -> list:
        values = address_values(message, address) if (self.tags or self.metadata) else {}
        sent = header_tags(self.headers, message.headers) if self.headers else {}
        out = []
        for record in records:
            fields = dict(record.fields)
            if self.rename:  # together, from the names the record has (a:b, b:a swaps)
                fields.update([(new, fields.pop(old)) for old, new in self.rename if old in fields])
            for name in self.drop:
                fields.pop(name, None)
            for name, text, evaluate in self.convert:
                if name in fields and fields[name] is not None:
                    fields[name] = self._convert(name, text, evaluate, fields[name])
            tags = dict(record.tags)
            for name, template in self.tags:
                tags[name] = render_tag(template, values)
            tags.update(sent)
            if self.metadata:
                tags.update(self._metadata(values, message, decoder))
            record = Record(record.time, fields, tags)
            if self.hook is not None:
                try:
                    record = self.hook(record, message, address)
                except Exception as exc:
                    raise DecodeError("hook", f"{type(exc).__name__}: {exc}{where_raised(exc, self.hook)}") from exc
                if record is None:
                    continue
                if not isinstance(record, Record):
                    raise DecodeError("hook", f"returned {type(record).__name__}, expected a Record or None")
                record = storable_record(record)  # (its Decimals, date-times, ...: values a column takes)
            out.append(record)
        return out

    @staticmethod
    def _convert(name, text, evaluate, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError("convert", f"field {name!r} is {value!r}, not a number, for {text!r}")
        try:
            result = evaluate(value)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise DecodeError("convert", f"field {name!r} = {value!r}: {text!r} failed: {exc}") from None
        if isinstance(result, float) and not math.isfinite(result):
            raise DecodeError("convert", f"field {name!r} = {value!r}: {text!r} gave {result}")
        return result

    def _metadata(self, values: dict, message, decoder: str) -> dict:
        meta = {key: values[key] for key in ("topic", "realm", "network", "gateway", "node", "kind") if key in values}
        meta["decoder"] = decoder
        meta["received"] = to_iso(seconds_to_ns(message.received))
        meta["source"] = self.source
        return meta

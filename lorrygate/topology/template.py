"""
Declarative strategies: topic templates in the config, no Python needed.

    [strategy:sites]
    topic = {realm}/sites/{site}/{node}/{kind:data|event}.json
    schema = {realm}_{site}
    table = {node}_{suffix}

Grammar of a topic template (BNF)::

    topic_template ::= level ( "/" level )*
    level          ::= rest_capture | part+
    rest_capture   ::= "{" name ":#" "}"              -- the whole last level
    part           ::= literal | capture
    capture        ::= "{" name [ ":" choice ( "|" choice )* ] "}"
    literal        ::= any characters but "{", "}", "/", "+", "#"
    choice         ::= any characters but "{", "}", "/", "|", "+", "#"
    name           ::= letter or "_", then letters, digits or "_"

and of a schema or table template::

    name_template  ::= ( name_literal | "{" name "}" )+
    name_literal   ::= lower-case letters, digits and "_"

A capture takes one topic level (or the part of it between literals),
``{name:#}`` the rest of the topic, ``{name:a|b}`` only ``a`` or ``b``.
Literal levels must match exactly. Captures named ``realm``, ``network``,
``gateway``, ``node`` and ``field`` fill the address; ``kind`` must be
``data``, ``event`` or ``error`` (without it, the section's ``kind``).
Name templates use any capture plus ``{kind}`` and ``{suffix}`` (``sensors``,
``events``, ``errors``); captured values are sanitized, and a name longer
than 63 characters is shortened with a hash suffix.
"""

import re

import attrs
import pyparsing as pp
from zope.interface import implementer

from lorrygate.errors import TopologyError
from lorrygate.interfaces import IStrategy
from lorrygate.model import DATA, KINDS, Address, TableName
from lorrygate.topology.naming import MAX_LENGTH, sanitize
from lorrygate.topology.wan import TABLE_SUFFIXES

ADDRESS_NAMES = ("realm", "network", "gateway", "node", "field")


class TemplateError(ValueError):
    """A template does not parse; ``explain`` shows where."""

    def __init__(self, message: str, template: str, loc: int):
        self.template = template
        self.loc = loc
        self.explain = f"{template}\n{' ' * loc}^\n{message} (at char {loc + 1})"
        super().__init__(self.explain)


# -- grammar ------------------------------------------------------------------

_NAME = pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*").set_name("placeholder name")
_CHOICE = pp.Regex(r"[^{}/|+#]+").set_name("choice")
_CHOICES = pp.DelimitedList(_CHOICE, delim="|").set_name("choices")
_REST = pp.Group(
    pp.Suppress("{") + _NAME("name") + pp.Suppress(pp.Literal(":#")) + pp.Suppress("}")
).set_name("{name:#}")
_REST.set_parse_action(lambda s, loc, t: ("rest", t[0]["name"], None, loc))
_CAPTURE = pp.Group(
    pp.Suppress("{") + _NAME("name") + pp.Opt(pp.Suppress(":") + pp.Group(_CHOICES)("choices")) + pp.Suppress("}")
).set_name("{name} or {name:a|b}")
_CAPTURE.set_parse_action(
    lambda s, loc, t: ("capture", t[0]["name"], tuple(t[0]["choices"]) if "choices" in t[0] else None, loc)
)
_LITERAL = pp.Regex(r"[^{}/+#]+").set_name("literal text")
_LITERAL.set_parse_action(lambda s, loc, t: ("literal", t[0], None, loc))
_LEVEL = pp.Group(_REST | pp.OneOrMore(_CAPTURE | _LITERAL)).set_name("topic level")
TOPIC_TEMPLATE = (pp.DelimitedList(_LEVEL, delim="/", allow_trailing_delim=False) + pp.StringEnd()).set_name(
    "topic template"
)
TOPIC_TEMPLATE.leave_whitespace()
_LEVEL.leave_whitespace()

_NAME_LITERAL = pp.Regex(r"[a-z0-9_]+").set_name("lower-case letters, digits or _")
_NAME_LITERAL.set_parse_action(lambda s, loc, t: ("literal", t[0], None, loc))
_NAME_CAPTURE = (pp.Suppress("{") + _NAME + pp.Suppress("}")).set_name("{name}")
_NAME_CAPTURE.set_parse_action(lambda s, loc, t: ("capture", t[0], None, loc))
NAME_TEMPLATE = (pp.OneOrMore(_NAME_CAPTURE | _NAME_LITERAL) + pp.StringEnd()).set_name("name template")
NAME_TEMPLATE.leave_whitespace()


def _outside_braces(text: str):
    """Yield (position, character) of the characters outside ``{...}``; check braces."""
    depth_start = None
    for loc, char in enumerate(text):
        if char == "{":
            if depth_start is not None:
                raise TemplateError("'{' inside a placeholder", text, loc)
            depth_start = loc
        elif char == "}":
            if depth_start is None:
                raise TemplateError("'}' without an opening '{'", text, loc)
            depth_start = None
        elif depth_start is None:
            yield loc, char
    if depth_start is not None:
        raise TemplateError("'{' without a closing '}'", text, depth_start)


def _parse(grammar, text: str):
    if not text:
        raise TemplateError("expected a template, got an empty value", text, 0)
    for loc, char in _outside_braces(text):
        if grammar is TOPIC_TEMPLATE and char in "+#":
            raise TemplateError(
                f"MQTT wildcard {char!r} in a template: capture with {{name}} or {{name:#}} instead", text, loc
            )
        if grammar is NAME_TEMPLATE and not (char.isascii() and (char.islower() or char.isdigit() or char == "_")):
            raise TemplateError(
                f"{char!r} in a name: outside placeholders use lower-case letters, digits and _", text, loc
            )
    try:
        return grammar.parse_string(text, parse_all=True)
    except pp.ParseBaseException as exc:
        raise TemplateError(f"expected {exc.parser_element or grammar}", text, exc.loc) from None


# -- compiled templates ---------------------------------------------------------


@attrs.frozen
class TopicTemplate:
    text: str
    regex: re.Pattern
    names: tuple
    choices: dict

    @classmethod
    def parse(cls, text: str) -> "TopicTemplate":
        levels = _parse(TOPIC_TEMPLATE, text)
        pattern, names, choices = [], [], {}
        for index, level in enumerate(levels):
            pieces = list(level)
            level_pattern = []
            previous = None
            for kind, value, options, loc in pieces:
                if kind == "rest":
                    if index != len(levels) - 1:
                        raise TemplateError("{name:#} must be the last level", text, loc)
                    level_pattern.append("(.+)")
                elif kind == "capture":
                    if previous == "capture":
                        raise TemplateError("two placeholders need literal text between them", text, loc)
                    if options:
                        choices[value] = options
                        level_pattern.append("(" + "|".join(re.escape(o) for o in options) + ")")
                    else:
                        level_pattern.append("([^/]+)")
                else:
                    level_pattern.append(re.escape(value))
                if kind != "literal":
                    if value in names:
                        raise TemplateError(f"placeholder {{{value}}} appears twice", text, loc)
                    names.append(value)
                previous = kind
            pattern.append("".join(level_pattern))
        if "kind" in choices:
            unknown = [option for option in choices["kind"] if option not in KINDS]
            if unknown:
                raise TemplateError(f"{{kind}} choices must be data, event or error, got {unknown[0]!r}", text, 0)
        return cls(text, re.compile("^" + "/".join(pattern) + "$", re.DOTALL), tuple(names), choices)

    def match(self, topic: str):
        match = self.regex.match(topic)
        return dict(zip(self.names, match.groups())) if match else None


@attrs.frozen
class NameTemplate:
    text: str
    pieces: tuple

    @classmethod
    def parse(cls, text: str, known: tuple) -> "NameTemplate":
        pieces = tuple(_parse(NAME_TEMPLATE, text))
        for kind, value, _, loc in pieces:
            if kind == "capture" and value not in known:
                raise TemplateError(
                    f"{{{value}}} is not captured by the topic template (known: {', '.join(known)})", text, loc
                )
        return cls(text, pieces)

    @property
    def names(self) -> frozenset:
        """The captures this template names."""
        return frozenset(value for kind, value, _, _ in self.pieces if kind == "capture")

    def render(self, values: dict) -> str:
        name = "".join(sanitize(values[value]) if kind == "capture" else value for kind, value, _, _ in self.pieces)
        return sanitize(name) if len(name) > MAX_LENGTH else name


@implementer(IStrategy)
@attrs.frozen
class TemplateStrategy:
    """A strategy defined by a ``[strategy:NAME]`` section's templates."""

    name: str
    topic: TopicTemplate
    schema: NameTemplate
    table: NameTemplate
    kind: str = DATA
    #: the topic's captures that name no part of the schema or the table (nor the field or the kind): tags of
    #: the rows, so that what the topic says is kept (as Telegraf's topic_parsing tags them). Without them,
    #: ``plant/{line}/{node}/{field}`` into a table ``{node}`` stored line-1's and line-2's press-7 as one.
    tag_names: frozenset = attrs.field(init=False, default=attrs.Factory(
        lambda self: frozenset(self.topic.names) - self.schema.names - self.table.names - {"field", "kind"},
        takes_self=True))

    @property
    def label_names(self) -> tuple:
        """The labels an address may have: the topic's captures (a channel's ``tags`` may name them)."""
        return self.topic.names

    @classmethod
    def from_texts(cls, name: str, topic: str, schema: str, table: str, kind: str = DATA) -> "TemplateStrategy":
        """Parse all three templates; raise `TemplateError` for the first bad one."""
        topic_template = TopicTemplate.parse(topic)
        known = topic_template.names + ("kind", "suffix")
        return cls(name, topic_template, NameTemplate.parse(schema, known), NameTemplate.parse(table, known), kind)

    def match(self, topic: str) -> Address:
        values = self.topic.match(topic)
        if values is None:
            raise TopologyError(self.name, topic, f"does not match the template {self.topic.text!r}")
        kind = values.get("kind", self.kind)
        if kind not in KINDS:
            raise TopologyError(self.name, topic, f"{{kind}} must be data, event or error, got {kind!r}")
        for key, value in values.items():
            if value in ("+", "#"):
                raise TopologyError(self.name, topic, f"the {key} level is a wildcard {value!r}")
        labels = tuple(sorted((k, v) for k, v in values.items() if k not in ADDRESS_NAMES and k != "kind"))
        return Address(
            values.get("realm", ""),
            values.get("network"),
            values.get("gateway"),
            values.get("node"),
            kind,
            topic,
            values.get("field"),
            labels,
        )

    def table_for(self, address: Address) -> TableName:
        values = dict(address.labels)
        for key in ADDRESS_NAMES:
            value = getattr(address, key)
            if value is not None:
                values[key] = value
        values["kind"] = address.kind
        values["suffix"] = TABLE_SUFFIXES[address.kind]
        return TableName(self.schema.render(values), self.table.render(values))

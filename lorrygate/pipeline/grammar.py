"""
The launch language: gst-launch-style pipelines.

    mqtt://localhost/mqttkit-1/#?qos=1 ! strategy name=wan ! decode chain=json,csv ! tee name=t
        t. ! sqlite location=var/data.sqlite
        t. ! textsink location="out/rows.ndjson"   # every row also to a file

BNF::

    launch     ::= chain+
    chain      ::= head ( "!" element )*
    head       ::= reference | element
    reference  ::= name "."                     -- continue from a named element (a tee)
    element    ::= url | factory property*
    factory    ::= name
    property   ::= key "=" value
    value      ::= quoted | bare
    quoted     ::= "'" ... "'" | '"' ... '"'     -- backslash escapes the quote
    bare       ::= characters but white space and "!"
    url        ::= scheme "://" characters but white space and "!"
    name, key  ::= a letter, then letters, digits, "_" and "-"
    comment    ::= "#" to the end of the line, at the start of a line or after white space

Chains are separated by white space (usually line breaks). `parse` returns
the chains as `Chain`s of `Element`s, each with its position, for the
pipeline model to check and build; a syntax error is a `LaunchSyntaxError`
with the line, the column and what was expected there.
"""

import re

import attrs
import pyparsing as pp

from lorrygate.errors import LorrygateError


class LaunchSyntaxError(LorrygateError):
    """A launch text that does not parse; says line, column and what was expected."""

    def __init__(self, message: str, text: str, loc: int):
        self.loc = loc
        self.lineno = pp.lineno(loc, text)
        self.col = pp.col(loc, text)
        line = pp.line(loc, text)
        self.explain = hide_passwords(f"{line}\n{' ' * (self.col - 1)}^")
        super().__init__(hide_passwords(f"line {self.lineno}, column {self.col}: {message}\n{self.explain}"))


_USER_INFO_PASSWORD = re.compile(r"(://[^:/@\s'\"]*:)([^@\s'\"]*)(@)")
_QUERY_SECRET = re.compile(r"((?:password|token)[^=&\s'\"]*=)([^&\s'\"]*)", re.IGNORECASE)


def hide_passwords(text: str) -> str:
    """``text`` with the passwords of the URLs in it as ``*``, as many as it has characters."""
    def stars(found) -> str:
        secret = found[2] if found[2] == "PASSWORD" else "*" * len(found[2])  # (the help's placeholder stays)
        return found[1] + secret + (found[3] if found.lastindex == 3 else "")

    return _QUERY_SECRET.sub(stars, _USER_INFO_PASSWORD.sub(stars, text))


@attrs.frozen
class Element:
    """One element as written: a factory name with properties, a URL, or a reference."""

    factory: str
    properties: tuple = ()
    url: str | None = None
    reference: str | None = None
    loc: int = 0

    def get(self, key: str, default=None):
        for name, value in self.properties:
            if name == key:
                return value
        return default


@attrs.frozen
class Chain:
    elements: tuple


_NAME = pp.Regex(r"[A-Za-z][A-Za-z0-9_-]*").set_name("an element name")
_KEY = pp.Regex(r"[A-Za-z][A-Za-z0-9_-]*").set_name("a property name")
_QUOTED = (pp.QuotedString('"', esc_char="\\") | pp.QuotedString("'", esc_char="\\")).set_name("a quoted value")
_BARE = pp.Regex(r"[^\s!\"']+").set_name("a value")
_VALUE = (_QUOTED | _BARE).set_name("a property value")
_PROPERTY = pp.Group(_KEY + pp.Suppress(pp.Literal("=").leave_whitespace()) - _VALUE.copy().leave_whitespace()).set_name(
    "key=value")
_URL = pp.Regex(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s!]*").set_name("a URL")
_REFERENCE = pp.Regex(r"[A-Za-z][A-Za-z0-9_-]*\.(?=\s|!|$)").set_name("a reference such as t.")
_FACTORY_ELEMENT = _NAME + pp.ZeroOrMore(_PROPERTY)


def _element(s, loc, tokens):
    return Element(tokens[0], tuple((key, value) for key, value in tokens[1:]), loc=loc)


_URL_ELEMENT = _URL.copy().set_parse_action(lambda s, loc, t: Element("url", url=t[0], loc=loc))
_REFERENCE_ELEMENT = _REFERENCE.copy().set_parse_action(lambda s, loc, t: Element("reference", reference=t[0][:-1], loc=loc))
ELEMENT = (_URL_ELEMENT | _FACTORY_ELEMENT.copy().set_parse_action(_element)).set_name("an element")
HEAD = (_REFERENCE_ELEMENT | ELEMENT).set_name("an element or a reference")
CHAIN = pp.Group(HEAD + pp.ZeroOrMore(pp.Suppress("!") - ELEMENT)).set_parse_action(
    lambda t: Chain(tuple(t[0]))).set_name("a chain")
LAUNCH = (pp.OneOrMore(CHAIN) + pp.StringEnd()).set_name("a pipeline")
COMMENT = pp.Regex(r"(?<!\S)#[^\n]*").set_name("a comment")
LAUNCH.ignore(COMMENT)


def parse(text: str) -> list:
    """The chains of a launch text; raise `LaunchSyntaxError` pointing at the problem."""
    if not text.strip():
        raise LaunchSyntaxError("expected a pipeline, got nothing", text or " ", 0)
    try:
        return list(LAUNCH.parse_string(text, parse_all=True))
    except pp.ParseBaseException as exc:
        found = text[exc.loc : exc.loc + 20].split("\n")[0]
        before = text[: exc.loc].rstrip()[-1:]
        if found[:1] in ("'", '"'):
            expected = f"a value ending in a closing {found[0]}"
        elif before == "=":
            expected = "a property value after '='"
        elif before == "!":
            expected = "an element after '!' (a name such as sqlite, or a URL)"
        elif found.startswith("!") and not before:
            expected = "an element before '!'"
        else:
            expected = exc.parser_element or "a pipeline"
        got = repr(found) if found else "the end"
        raise LaunchSyntaxError(f"expected {expected}, got {got}", text, exc.loc) from None

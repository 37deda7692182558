"""
Parsers for single config values.

Each takes the raw text of an ini value and returns the typed value, or
raises `Invalid` with what was expected; the loader adds file, section, key
and what arrived.
"""

import math
import os
import re
from urllib.parse import quote

import attrs

from lorrygate.mqtt.topics import parse_filter


class Invalid(ValueError):
    """A config value does not parse; ``expected`` says what would."""

    def __init__(self, expected: str):
        self.expected = expected
        super().__init__(expected)


@attrs.frozen
class Secret:
    """A value that must never reach a log: its repr and str are masked."""

    _value: str = attrs.field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)


_REFERENCE = re.compile(r"\$\{(ENV|FILE):([^}]*)\}")


def interpolate(text: str, base_dir: str) -> str:
    """Replace ``${ENV:NAME}`` and ``${FILE:path}`` references.

    In a URL's user info and query (``postgresql://gw:${ENV:PGPASSWORD}@db/x``) a value goes in
    percent-encoded: a generated password with ``@``, ``/``, ``:``, ``?``, ``#`` or ``%`` made another URL
    (``p@ss/w:rd`` put the host ``ss`` and the database ``w:rd@db/x``, and the logs showed the rest of the
    password there). Elsewhere (a host, a path, a URL that is the whole value) it goes in as it is.

    Raise `Invalid` naming the variable or file that is missing.
    """
    values: list = []

    def hold(match):
        values.append(_resolve(match, base_dir))
        return f"\x00{len(values) - 1}\x00"

    held = _REFERENCE.sub(hold, text)
    if not values:
        return text
    encoded = _encoded_parts(held)

    def put(match):
        value = values[int(match.group(1))]
        return quote(value, safe="") if any(start <= match.start() < end for start, end in encoded) else value

    return re.sub("\x00(\\d+)\x00", put, held)


def _encoded_parts(text: str) -> list:
    """Where in a URL the values of references go percent-encoded: ``[(start, end)]`` of its user info and its
    query (none where ``text`` is no URL)."""
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text)
    if scheme is None:
        return []
    start = scheme.end()
    ends = [index for index in (text.find(mark, start) for mark in "/?#") if index >= 0]
    netloc_end = min(ends) if ends else len(text)
    parts = []
    at = text.rfind("@", start, netloc_end)
    if at >= 0:
        parts.append((start, at))
    query = text.find("?", netloc_end)
    if query >= 0:
        fragment = text.find("#", query)
        parts.append((query, fragment if fragment >= 0 else len(text)))
    return parts


def _resolve(match, base_dir: str) -> str:
    """The value of one reference."""
    kind, name = match.group(1), match.group(2).strip()
    if not name:
        raise Invalid(f"a name inside ${{{kind}:...}}")
    if kind == "ENV":
        if name not in os.environ:
            raise Invalid(f"environment variable {name} to be set (referenced as ${{ENV:{name}}})")
        return os.environ[name]
    path = name if os.path.isabs(name) else os.path.join(base_dir, name)
    try:
        # (utf-8-sig: a file saved by Windows' Notepad starts with a byte order mark, which was a password's)
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read().rstrip("\r\n")
    except OSError as exc:
        raise Invalid(f"a readable file at {path} (referenced as ${{FILE:{name}}}): {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # (its bytes are a secret's: not shown)
        raise Invalid(f"a UTF-8 text file at {path} (referenced as ${{FILE:{name}}}), not one with bytes that are "
                      f"not UTF-8 (from offset {exc.start})") from None


def text(value: str) -> str:
    return value


def nonempty(value: str) -> str:
    if not value.strip():
        raise Invalid("a non-empty value")
    return value.strip()


def replicas(value: str) -> str:
    """CrateDB's number_of_replicas: a number, or a range such as ``0-1`` or ``0-all``."""
    import re

    text = value.strip()
    if not re.fullmatch(r"\d+|\d+-(\d+|all)", text):
        raise Invalid("a number of replicas (1) or a range (0-1, 0-all)")
    return text


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise Invalid("a boolean (true/false, yes/no, on/off, 1/0)")


def described(parse, kind: str):
    """A validator made by a factory, with the type the configuration reference shows."""
    parse.kind = kind
    return parse


def integer(low: int, high: int):
    def parse(value: str) -> int:
        try:
            number = int(value.strip(), 10)
        except ValueError:
            raise Invalid(f"a whole number from {low} to {high}") from None
        if not low <= number <= high:
            raise Invalid(f"a whole number from {low} to {high}")
        return number

    return described(parse, f"whole number, {low} to {high}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")  # noqa
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(low: float, high: float):
    def parse(value: str) -> float:
        match = _DURATION.match(value)
        if not match:
            raise Invalid(f"a duration such as 250ms, 5s, 2m, 1h, 1d or 0.5 (seconds), from {low} s to {high} s")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if not low <= seconds <= high:
            raise Invalid(f"a duration from {low} s to {high} s")
        return seconds

    return described(parse, f"duration (250ms, 5s, 2m, 1h), {low:g} s to {high:g} s")


def _retention(value: str) -> float:
    seconds = duration(0, 100 * 366 * 86400)(value)
    if 0 < seconds < 3600:
        raise Invalid("a retention of at least 1h (rows are deleted every hour), or 0: every row is kept")
    return seconds


#: a storage's retention: 0 (every row kept), or 1h and more
retention = described(_retention, "duration (90d, 365d): 0 (every row is kept) or 1h and more")


def choice(*options: str):
    def parse(value: str) -> str:
        if value.strip() not in options:
            raise Invalid("one of " + ", ".join(options))
        return value.strip()

    return described(parse, "one of " + ", ".join(options))


def line_charset(value: str) -> str:
    """A character set whose lines end in the newline byte and whose ASCII is ASCII (UTF-8, Latin-1, cp1252, the
    ISO-8859 sets): Python's codec name. UTF-16 and UTF-32 are not: their newline is two or four bytes."""
    from lorrygate.decoding.charsets import codec_name

    name = codec_name(value.strip())
    sample = "\n\r\t ,;=:{}[]\"0123456789.-+abcxyzABCXYZ"
    try:
        plain = name is not None and sample.encode(name) == sample.encode("ascii")
    except (UnicodeError, LookupError):
        plain = False
    if name is None or not plain:
        raise Invalid("a character set of lines, whose ASCII is ASCII: utf-8, latin-1, cp1252, iso-8859-15 (not "
                      "utf-16 or utf-32; Python's codec names)")
    return name


described(line_charset, "charset")  # (the type the configuration reference shows)


def names(value: str) -> tuple:
    """A list of names separated by commas or line breaks."""
    items = tuple(item.strip() for item in re.split(r"[,\n]", value) if item.strip())
    if not items:
        raise Invalid("one or more names separated by commas")
    return items


def distinct_names(value: str) -> tuple:
    """`names`, each once (``storage = db, db`` wrote every row twice)."""
    items = names(value)
    twice = sorted({item for item in items if items.count(item) > 1})
    if twice:
        raise Invalid(f"names separated by commas, each once ({', '.join(map(repr, twice))} more than once)")
    return items


described(distinct_names, "names, separated by commas")


def topic_filters(value: str) -> tuple:
    """MQTT topic filters separated by commas or line breaks."""
    items = tuple(item.strip() for item in re.split(r"[,\n]", value) if item.strip())
    if not items:
        raise Invalid("one or more MQTT topic filters such as mqttkit-1/#")
    for item in items:
        try:
            parse_filter(item)
        except ValueError as exc:
            raise Invalid(f"valid MQTT topic filters ({item!r}: {exc})") from None
    return items


STORAGE_URL_HELP = (
    "a storage URL: sqlite:///PATH, postgresql://USER:PASSWORD@HOST:5432/DATABASE, "
    "crate://HOST:4200/, crate+https://USER:PASSWORD@HOST:4200/, mqtt://USER:PASSWORD@HOST:1883/, "
    "kafka://HOST:9092/, ws://127.0.0.1:9482/ (a live page), prometheus://, pushgateway://HOST:9091/JOB "
    "or tributary:// (a Tributary graph)"
)


@attrs.frozen
class StorageUrl:
    """A parsed storage URL; ``str()`` masks the password."""

    kind: str
    raw: str = attrs.field(repr=False)
    path: str = ""

    def __str__(self) -> str:
        return mask_url(self.raw)

    @property
    def target(self) -> str:
        """Where the data goes, without credentials: what a spool records as
        its storage's identity (``sqlite:///abs/path``, ``postgresql://host:5432/db``)."""
        import os
        from urllib.parse import parse_qsl, urlencode, urlsplit

        if self.kind == "sqlite":
            return "sqlite:///" + os.path.abspath(self.path)
        if self.kind in ("file", "app", "prometheus", "tributary"):
            return self.raw
        if self.kind == "crate":
            _, nodes = crate_nodes(self.raw)
            return f"{self.raw.split(':', 1)[0]}://" + ",".join(f"{host.lower()}:{port}" for host, port in nodes)
        parts = urlsplit(self.raw)
        port = parts.port or {"postgresql": 5432, "crate": 4200, "mqtt": 8883 if parts.scheme == "mqtts" else 1883,
                              "kafka": 9092, "websocket": 9482}.get(self.kind)
        query = sorted((k, v) for k, v in parse_qsl(parts.query) if "password" not in k.lower())
        scheme = "postgresql" if self.kind == "postgresql" else parts.scheme
        path = parts.path if self.kind == "postgresql" else (parts.path.rstrip("/") or "")
        return f"{scheme}://{(parts.hostname or '').lower()}:{port}{path}" + (f"?{urlencode(query)}" if query else "")


def crate_nodes(value: str) -> tuple:
    """The nodes of a crate:// URL, which may name several: ``crate://USER:PASSWORD@h1:4200,h2,[::1]:4201/``;
    ``(https, ((host, port), ...))``. Raises Invalid."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError as exc:  # ("crate://[h/": a ValueError "Invalid IPv6 URL" that reached the command line)
        raise Invalid(f"{STORAGE_URL_HELP} (the URL does not parse: {exc})") from None
    if parts.scheme not in ("crate", "crate+http", "crate+https"):
        raise Invalid(STORAGE_URL_HELP)
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        item = item.strip()
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?", item)
        if not match or (match.group(2) and not 0 < int(match.group(2)) < 65536):
            raise Invalid(f"crate://HOST:4200/ or several nodes, crate://HOST1:4200,HOST2:4200/ (not {item!r})")
        nodes.append((match.group(1), int(match.group(2) or 4200)))
    return parts.scheme == "crate+https", tuple(nodes)


def storage_url(value: str) -> StorageUrl:
    from urllib.parse import urlsplit

    value = value.strip()
    if value.startswith(("crate://", "crate+http://", "crate+https://")):
        crate_nodes(value)
        return StorageUrl("crate", value)
    if value in ("prometheus://", "prometheus:"):
        return StorageUrl("prometheus", "prometheus://")
    if value in ("tributary://", "tributary:"):
        return StorageUrl("tributary", "tributary://")
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return StorageUrl("sqlite", value, value[len("sqlite:///") :])
    if value.startswith("sqlite:"):
        raise Invalid("sqlite:/// and the file's path: three slashes before a relative path (sqlite:///var/x.sqlite, "
                      "relative to the config file's folder), four before an absolute one (sqlite:////var/lib/x.sqlite)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise Invalid(STORAGE_URL_HELP) from None
    if parts.scheme in ("postgresql", "postgres"):  # (no host: libpq's default, the local Unix socket)
        return StorageUrl("postgresql", value)
    if parts.scheme in ("crate", "crate+http", "crate+https") and parts.hostname:
        return StorageUrl("crate", value)
    if parts.scheme in ("mqtt", "mqtts") and parts.hostname:
        return StorageUrl("mqtt", value)
    if parts.scheme in ("kafka", "kafkas") and parts.hostname:
        return StorageUrl("kafka", value)
    if parts.scheme == "ws" and parts.hostname:
        return StorageUrl("websocket", value)
    if parts.scheme == "pushgateway" and parts.hostname:
        return StorageUrl("prometheus", value)
    raise Invalid(STORAGE_URL_HELP)


#: the options a [storage:NAME] url takes in its query, by kind, and their values (empty: any): an MQTT sink's
#: protocol and client id
_URL_OPTIONS: dict[str, dict[str, tuple]] = {"mqtt": {"protocol": ("3.1.1", "5"), "client-id": ()}}
#: what libpq takes as sslmode (libpq-connect: "sslmode")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def section_storage_url(value: str) -> StorageUrl:
    """The url of a ``[storage:NAME]`` section: `storage_url`, and nothing in it that its storage would not
    read. A path or an option it has no use for was left unread in silence (``crate://db:4200/?shards=3``
    made tables of one shard, ``sqlite:///gw.sqlite?mode=ro`` a file of that name); the section's keys say
    these things. (The pipeline language reads paths and options of its own: `storage_url`.)"""
    from urllib.parse import parse_qsl, urlsplit

    url = storage_url(value)
    kind = url.kind
    if kind == "sqlite":
        if "?" in url.path or "#" in url.path:
            raise Invalid("sqlite:/// and the file's path alone, without ?options or a #: SQLite's settings are keys "
                          "of the section (synchronous = ...); a file whose name has a ? or # needs another name")
        return url
    if url.raw in ("prometheus://", "tributary://"):
        return url
    parts = urlsplit(url.raw)
    if kind == "postgresql":
        _libpq_options(url.raw, parts.query)
        return url
    path_taken = kind in ("websocket", "prometheus")  # (a live page's path, a Pushgateway job)
    if parts.path not in ("", "/") and not path_taken:
        what = {"crate": "the table's schema and name come from the topology",
                "mqtt": "the topic is the key topic = ...", "kafka": "the topic is the key topic = ..."}.get(
                    kind, "it reads none")
        raise Invalid(f"a {parts.scheme}:// URL without a path ({what}), not {parts.path!r}")
    allowed = _URL_OPTIONS.get(kind, {})
    for key, option in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            if allowed:
                raise Invalid(f"a {parts.scheme}:// URL with the options {' and '.join(sorted(allowed))} only (the rest "
                              f"are keys of the section, docs/configuration.rst), not {key!r}")
            raise Invalid(f"a {parts.scheme}:// URL without ?options (they are keys of the section, "
                          f"docs/configuration.rst), not {key!r}")
        if allowed[key] and option not in allowed[key]:
            raise Invalid(f"{key} = {' or '.join(allowed[key])} in the {parts.scheme}:// URL, not {option!r}")
    if parts.fragment:
        raise Invalid(f"a {parts.scheme}:// URL without a #fragment, not {'#' + parts.fragment!r}")
    if kind == "websocket" and "@" in parts.netloc:
        # (it was read as a password that kept the live page to whoever knew it: nobody was asked for one)
        raise Invalid("a ws:// URL without a user or password: the live page asks nobody for one (it has no "
                      "authentication of its own); put a reverse proxy that authenticates in front of it")
    return url


def _libpq_options(url: str, query: str) -> None:
    """libpq's own check of a PostgreSQL URL's option names (where psycopg is installed), and of sslmode."""
    from urllib.parse import parse_qsl

    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # (a config check without the postgresql extra: libpq checks at the first connection)
        pass
    else:
        try:
            conninfo_to_dict(url)
        except Exception as exc:  # (psycopg.ProgrammingError: libpq's message, which quotes a bad token as written)
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Invalid(f"a PostgreSQL URL that libpq takes ({_unsaid(said, url)}; see libpq's connection "
                          "parameters)") from None
    for key, option in parse_qsl(query, keep_blank_values=True):
        if key == "sslmode" and option not in _SSLMODES:
            raise Invalid(f"sslmode = {', '.join(_SSLMODES)} in the postgresql:// URL, not {option!r}")


def _unsaid(text: str, url: str) -> str:
    """``text`` without the URL's passwords (in the user info, in a query parameter named like password), as
    written and decoded: libpq's message about a bad percent-encoding quotes the password."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    secrets = [parts.password or ""] + [item.partition("=")[2] for item in parts.query.split("&")
                                        if "password" in item.partition("=")[0].lower()]
    for secret in sorted({*secrets, *map(unquote, secrets)} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def ddl_text(value: str) -> str:
    """Inline DDL, or ``@path`` to read it from a file."""
    text = value.strip()
    if text.startswith("@"):
        path = text[1:].strip()
        try:
            with open(path, encoding="utf-8-sig") as handle:
                return handle.read()
        except OSError as exc:
            raise Invalid(f"a readable DDL file at {path} ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise Invalid(f"a DDL file of UTF-8 text at {path}, not one with byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}") from None
    return text


def timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # (OSError: a name too long for a file's)
        raise Invalid("an IANA time zone such as UTC or Europe/Berlin") from None
    return name


def _items(value: str, separators: str = ",\n") -> list:
    return [item.strip() for item in re.split(f"[{separators}]", value) if item.strip()]


def pairs(separator: str, what: str):
    """``a:b, c:d`` (or with ``=``) -> ((a, b), (c, d)); a name once (``site=a, site=b``: which one?)."""

    def parse(value: str) -> tuple:
        result = []
        for item in _items(value):
            left, found, right = item.partition(separator)
            if not found or not left.strip() or not right.strip():
                raise Invalid(f"{what} separated by commas ({item!r} is not one)")
            result.append((left.strip(), right.strip()))
        _once(result, 0, separator, lambda name, items: f"{what}, each name once ({name!r} is in {items})")
        return tuple(result)

    return described(parse, f"{what}, separated by commas")


def renames(value: str) -> tuple:
    """``old:new`` pairs (`pairs`), each field renamed once and each new name given once: two fields renamed to
    one name would lose one's values, silently."""
    result = pairs(":", "old:new pairs")(value)
    _once(result, 1, ":", lambda name, items: f"old:new pairs that give each field a name of its own ({items} rename "
                                         f"two fields to {name!r}: a message with both would lose one's value)")
    return result


described(renames, "old:new pairs, separated by commas")


def _once(result: list | tuple, side: int, separator: str, message) -> None:
    """`Invalid` with ``message(name, items)`` where a name is on ``side`` of two pairs."""
    seen: dict = {}
    for pair in result:
        earlier = seen.setdefault(pair[side], pair)
        if earlier is not pair:
            raise Invalid(message(pair[side], " and ".join(repr(separator.join(p)) for p in (earlier, pair))))


def header_tags(value: str) -> tuple:
    """``device-id, x-fw:firmware`` -> (("device-id", "device-id"), ("x-fw", "firmware")): the headers to store and
    the tags they become (a header's own name unless ``:tag`` follows it; the last ``:`` splits)."""
    result: list = []
    for item in _items(value):
        header, found, tag = item.rpartition(":")
        if not found:
            header = tag
        header, tag = header.strip(), tag.strip()
        if not header or not tag:
            raise Invalid(f"header names, each with :tag to store it under another name ({item!r} is not one)")
        if any(tag == earlier for _, earlier in result):
            raise Invalid(f"headers stored as different tags (two are stored as the tag {tag!r})")
        result.append((header, tag))
    if not result:
        raise Invalid("one or more header names separated by commas")
    return tuple(result)


def conversions(value: str) -> tuple:
    """``field: expression`` lines (or separated by ``;``), compiled."""
    from lorrygate.decoding.transform import compile_expression

    result = []
    for item in _items(value, ";\n"):
        name, found, expression = item.partition(":")
        if not found or not name.strip() or not expression.strip():
            raise Invalid(f"lines of 'field: expression' ({item!r} is not one)")
        try:
            result.append((name.strip(), expression.strip(), compile_expression(expression)))
        except ValueError as exc:
            raise Invalid(f"an arithmetic expression of value for {name.strip()!r} ({exc})") from None
    return tuple(result)


def callable_ref(value: str) -> str:
    module, found, function = value.strip().partition(":")
    if not found or not module or not function.isidentifier():
        raise Invalid("module:function, such as adjustments:fix_units")
    return value.strip()


#: query parameters that carry a secret, by their names: passwords, tokens, API keys (``apikey``, ``api_key``,
#: OpenWeatherMap's ``appid``), signatures, credentials
_SECRET_PARAMETER = re.compile(r"pass|pwd|token|secret|key|auth|sig|credential|appid|session", re.IGNORECASE)


def address_text(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:5432``: ``::1:5432`` is no address and port)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_credentials(url: str) -> tuple:
    """``url`` without its user information, and that as ``(user, password)`` (percent-escapes undone), or None:
    for HTTP Basic authentication, which an HTTP client does not take from the URL itself (Twisted's agent took
    ``user:password@host`` for the host, "invalid hostname")."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    return (urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
            (unquote(parts.username), unquote(parts.password or "")))


def mask_url(url: str) -> str:
    """A URL with its secrets replaced by ***, for messages and logs: the
    password of the user info and any query parameter named like a secret
    (``password``, ``token``, ``api_key``, ``appid``)."""
    from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    secret_query = bool(_SECRET_PARAMETER.search(parts.query))
    if parts.password is None and not secret_query:
        return url  # as written: urlunsplit makes sqlite:////abs/path sqlite://abs/path
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + ":***"
        parts = parts._replace(netloc=f"{user}@{netloc[-1]}")
    if secret_query:
        query = "&".join(f"{key}=***" if _SECRET_PARAMETER.search(key) else f"{key}={quote(value, safe='/:,')}"
                         for key, value in parse_qsl(parts.query, keep_blank_values=True))
        parts = parts._replace(query=query)
    return urlunsplit(parts)


def control_endpoint(value: str) -> str:
    """``off``, ``unix:PATH`` or ``tcp:PORT[:interface=HOST]``."""
    text = value.strip()
    if re.fullmatch(r"tcp:\d{1,5}", text):
        return text + ":interface=127.0.0.1"  # only this machine, unless bound elsewhere on purpose
    if text == "off" or re.fullmatch(r"unix:[^:]+", text) or re.fullmatch(r"tcp:\d{1,5}(:interface=[^:]+)?", text):
        return text
    raise Invalid("off, unix:PATH or tcp:PORT:interface=127.0.0.1")


#: what a hook command's words may name in braces
COMMAND_FIELDS = ("storage", "schema", "table", "realm", "network", "gateway", "node")


def octal_mode(value: str) -> str:
    """File permissions in octal, such as 660."""
    text = value.strip()
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise Invalid("permissions in octal, such as 660")
    return text


def command_line(value: str) -> str:
    """A command line, split like a shell would (no shell runs it)."""
    import shlex

    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise Invalid(f"a command line (the shell would say: {exc})") from None
    if not words:
        raise Invalid("a command line")
    return value


def command(value: str) -> str:
    """A command line for a hook: split like a shell would, {table} and the like replaced."""
    import shlex

    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise Invalid(f"a command line (the shell would say: {exc})") from None
    if not words:
        raise Invalid("a command line")
    try:
        for word in words:
            word.format_map({name: "" for name in COMMAND_FIELDS})
    except (KeyError, ValueError, IndexError) as exc:
        raise Invalid(f"a command whose braces name one of {', '.join('{' + n + '}' for n in COMMAND_FIELDS)} "
                      f"(write {{{{ and }}}} for a brace; {type(exc).__name__}: {exc})") from None
    return value


def http_url(value: str) -> str:
    """http(s)://HOST[:PORT][/PATH]."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:  # (also "http://[": a ValueError "Invalid IPv6 URL" that reached the command line)
        raise Invalid("an http:// or https:// URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("an http:// or https:// URL, such as http://localhost:3000")
    return value.strip()


def host_port(value: str):
    """``off`` (None), ``PORT`` (on 127.0.0.1), ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    text = value.strip()
    if text in ("", "off"):
        return None
    match = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})", text)
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise Invalid("off, PORT, HOST:PORT or [IPv6]:PORT, such as 127.0.0.1:9481")
    host = (match.group(1) or "127.0.0.1").strip("[]")
    return host, int(match.group(2))


def listen(value: str) -> tuple:
    """`host_port` of something that must listen: ``off`` is refused."""
    address = host_port(value)
    if address is None:
        raise Invalid("PORT, HOST:PORT or [IPv6]:PORT, where it listens")
    return address


def listen_address(value: str):
    """`host_port`, for the metrics endpoint: prometheus-client must be installed."""
    address = host_port(value)
    if address is None:
        return None
    from lorrygate.service.metrics import available

    if not available():
        raise Invalid("the prometheus-client package (pip install 'lorrygate[metrics]'), or off")
    return address


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
               "gib": 2**30, "tib": 2**40, None: 1}


def size(value: str) -> int:
    """A size in bytes: 4096, 100MB, 1GiB."""
    match = _SIZE.match(value)
    if not match:
        raise Invalid("a size such as 100MB, 1GiB or 4096 (bytes)")
    unit = match.group(2).lower() if match.group(2) else None
    number = float(match.group(1))
    if not math.isfinite(number):  # (400 digits: an OverflowError that reached the command line)
        raise Invalid("a size such as 100MB, 1GiB or 4096 (bytes), not beyond a float's range")
    return int(number * _SIZE_UNITS[unit])


def tasmota_full_topic(value: str) -> str:
    """Tasmota's FullTopic, such as ``%topic%/%prefix%/``."""
    from lorrygate.topology.fleets import full_topic_levels

    try:
        full_topic_levels(value)
    except ValueError as exc:
        raise Invalid(str(exc).split(", got ")[0]) from None
    return value.strip()

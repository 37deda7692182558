"""
An HTTP source (``[source:NAME] type = http``): devices and services that
speak HTTP, not MQTT, send their readings as to Kotori's HTTP API.

``POST`` (or ``PUT``) ``/api/<topic>`` with the payload as the body: the
message's topic is the path after ``/api/``, percent-decoded, and the channel
routes it by its strategy as any topic. As Kotori does, a path that ends in
``data``, ``event`` or ``airrohr`` gets the suffix of its ``Content-Type``:
``application/json`` -> ``data.json``, ``text/csv`` -> ``data.csv``; a form
(``application/x-www-form-urlencoded``) becomes a JSON object of its fields
(each its last value); a Fine Offset weather station's form (with ``PASSKEY``)
to ``.../data`` is taken from ``.../ecowitt.json`` (the ``ecowitt`` decoder:
its key is not stored, ``dateutc`` is the time). So ``curl -d '{"temperature": 21.5}' -H 'Content-Type:
application/json' http://localhost:24642/api/mqttkit-1/testdrive/area-42/node-1/data``
stores as the MQTT message on ``.../node-1/data.json`` would.

The answer comes when the message is stored: ``200`` once its rows are
committed or durably spooled (``{"stored": true}``; ``{"stored": false,
"ignored": "..."}`` for a message with nothing to store: an ignored topic, a
command), ``422`` once it is kept as a dead letter (the
body says why), ``503`` with ``Retry-After`` while the storage holds the
source back, or when the message is not stored within ``timeout`` (it may
still be: ``idempotent = true`` makes the client's retry store nothing new).
``400`` for an empty body (as Kotori) and for a path that is no topic (not
UTF-8, or with NUL, as MQTT forbids), ``401`` without the ``token`` (``Authorization: Bearer <token>``) when one is
set, ``413`` for a body over ``max_line`` (it is read and dropped, never
held), ``404`` off ``/api/``, ``405`` for other methods.

Delivery: at least once, for a client that sends again until it gets a
``2xx``: nothing is answered ``200`` before it is stored or spooled.
HTTPS with ``tls_cert`` (the server's PEM certificate, its chain after it)
and ``tls_key``; without them the token travels in clear: use HTTPS, or a
reverse proxy in front, beyond loopback.
"""

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl, unquote

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server
from zope.interface import implementer

from lorrygate.clock import time_of_day
from lorrygate.decoding.charsets import UTF8, charset_of, transcoded
from lorrygate.interfaces import ISource
from lorrygate.model import Message
from lorrygate.service.connections import LimitedFactory
from lorrygate.sources.encodings import COMPRESSED, inflated
from lorrygate.sources.pauses import Pauses, SourcePlumbing

#: seconds between two tries to listen on a port that could not be listened on
RETRY = 10.0
#: bytes all the bodies arriving at once may take (at least twice max_line), beyond which a request is answered 503
READING_BUDGET = 64 << 20
#: the path below which a POST is a message (Kotori's)
PREFIX = b"/api/"
#: the slot words of Kotori's topics that take a suffix by Content-Type (``custom/airrohr``: what the airrohr
#: firmware's "send to own API" posts, as Kotori's airrohr forwarder takes it)
_SLOTS = ("data", "event", "airrohr")
#: a Kotori data slot with a form's suffix
_DATA_SLOT = "/data.json"
_SUFFIXES = {"application/json": ".json", "text/csv": ".csv", "application/x-www-form-urlencoded": ".json",
             # SenML (RFC 8428), which the json and cbor decoders read
             "application/senml+json": ".json", "application/senml+cbor": ".cbor", "application/cbor": ".cbor"}


def topic_of(path: bytes, content_type: str) -> str:
    """The topic of a request's path (after /api/), with Kotori's suffix for ``.../data``, ``.../event`` and
    ``.../airrohr``; UnicodeDecodeError for a path that is no UTF-8 (also percent-encoded)."""
    topic = unquote(path[len(PREFIX):].decode("utf-8"), errors="strict").strip("/")
    if topic.rsplit("/", 1)[-1] in _SLOTS:
        topic += _SUFFIXES.get(content_type, "")
    return topic


def _pem_blocks(text: bytes) -> list:
    """The certificates of a PEM file, each with its BEGIN and END lines."""
    end = b"-----END CERTIFICATE-----"
    return [part.strip() + b"\n" + end + b"\n" for part in text.split(end) if b"-----BEGIN CERTIFICATE-----" in part]


def fine_offset_topic(topic: str, payload: bytes, table_of=None) -> str:
    """A Fine Offset weather station's form (it has ``PASSKEY``) posted to a ``data`` slot, as Kotori takes it:
    on ``.../ecowitt.json``, whose decoder keeps the station's key out of the table (`EcowittDecoder`). With
    ``table_of`` (topic -> its table, or None), only where the channel's strategy stores both topics in one
    table (Kotori's ``wan`` and ``lan`` do; a strategy of one's own that knows no ``ecowitt.json`` keeps the
    topic as it is)."""
    if topic.endswith(_DATA_SLOT) and b'"PASSKEY"' in payload:
        station = topic[: -len(_DATA_SLOT)] + "/ecowitt.json"
        if table_of is None:
            return station
        table = table_of(station)
        if table is not None and table == table_of(topic):
            return station
    return topic


def form_as_json(body: bytes, charset: str = "utf-8") -> bytes:
    """A form's fields as a JSON object (a field given twice: its last value). A body that is JSON already is
    left as it is: ``curl -d '{"temperature": 21.5}'`` without a Content-Type sends a form's type. Bytes that
    are not UTF-8 (``%FF``, or sent as they are) are ``\\xNN``, as the headers' are: not U+FFFD, which
    stood for any of them; with a ``charset`` (Python's codec name) the bytes are read in it."""
    if body.lstrip()[:1] in (b"{", b"["):
        return body if charset == "utf-8" else transcoded(body, charset)
    pairs = parse_qsl(body.decode(charset, "surrogateescape"), keep_blank_values=True, encoding=charset,
                      errors="surrogateescape")
    return json.dumps({_text(name): _text(value) for name, value in pairs}).encode()


def _text(escaped: str) -> str:
    """Text whose bytes that are not UTF-8 were escaped to surrogates, with them as ``\\xNN``."""
    return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@attrs.define(eq=False)
class _Answer:
    """A message's acknowledgement: answers its request once the message is stored (or kept as a dead letter)."""

    source: Any
    request: Any
    timer: Any = None
    dead_letter: str = ""
    nothing: str = ""
    #: the lines of the message that could not be decoded (a dead letter) while the others were stored
    partial: str = ""
    answered: bool = False
    #: why a path of Kotori's slot words (``.../data``) got no suffix: its Content-Type (said with a refused topic)
    hint: str = ""

    def rejected(self, stage: str, reason: str) -> None:
        """The router kept the message as a dead letter (called before it is committed)."""
        self.dead_letter = f"{stage}: {reason}"

    def partly(self, why: str) -> None:
        """The router stored the message's good lines and kept its bad ones as a dead letter (called before
        the commit): sent again, the good lines would be stored twice."""
        self.partial = why

    def not_stored(self, why: str) -> None:
        """The router found nothing to store (an ignored topic, a command, a decoder's `Ignored`)."""
        self.nothing = why

    def ack(self) -> None:
        if self.dead_letter:
            body = {"stored": False, "dead_letter": True, "error": self.dead_letter}
            if self.hint and self.dead_letter.startswith("topology:"):
                body["hint"] = self.hint
            self._answer(422, body)
        elif self.nothing:
            self._answer(200, {"stored": False, "ignored": self.nothing})  # (nothing to send again)
        elif self.partial:
            self._answer(200, {"stored": True, "dead_letter": True, "error": self.partial})
        else:
            self._answer(200, {"stored": True})

    def expire(self) -> None:
        self.timer = None
        self.source.timed_out += 1
        self._answer(503, {"stored": False, "error": f"not stored within {self.source.settings.timeout:g} s (the "
                                                     "storage is slow or away); it may still be: send it again"},
                     retry=True)

    def _answer(self, code: int, body: dict, retry: bool = False) -> None:
        if self.answered:
            return
        self.answered = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.source.pending.discard(self)
        _respond(self.request, code, body, retry)


#: reason phrases of the answers Twisted has none for (its status line said "422 Unknown Status")
_REASONS = {422: b"Unprocessable Content"}  # (RFC 9110, 15.5.21)


def set_code(request, code: int) -> None:
    request.setResponseCode(code, _REASONS.get(code))


def _respond(request, code: int, body: dict, retry: bool = False) -> None:
    if request.finished or request._disconnected:
        return
    set_code(request, code)
    request.setHeader(b"content-type", b"application/json")
    if retry:
        request.setHeader(b"retry-after", b"1")
    request.write(json.dumps(body).encode() + b"\n")
    request.finish()


class _Request(server.Request):
    """A request whose body is read and dropped (kept neither in memory nor in a temporary file) past the source's
    limit, from a client without the token, and past the bytes all bodies arriving at once may take
    (`HttpSource.reading`): it is told so (401, 413, 503) once the body is read, as HTTP wants, but a client that
    may not post, or one client too many, cannot have megabytes of its body kept for it meanwhile."""

    received = 0
    too_large = False
    dropping = False
    #: dropped because the bodies arriving at once hold the source's budget (answered 503)
    busy = False
    #: the bytes of the source's budget this request holds while its body arrives
    held = 0
    _source: Any = None

    def gotLength(self, length) -> None:
        # the headers are all there (not yet the body): twisted.web would keep a body of unknown or over 100 KB
        # length in a temporary file
        source = self._source = self.channel.site.source  # type: ignore[attr-defined]
        if not source.authorized(self):
            self.dropping = True
        elif length is not None and length > source.settings.max_line:
            self.dropping = self.too_large = True
        elif length and not self._hold(length):
            self.dropping = self.busy = True
        super().gotLength(0 if self.dropping else length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.dropping:
            return
        self.received += len(data)
        if self.received > self.channel.site.source.settings.max_line:  # type: ignore[attr-defined]
            self.dropping = self.too_large = True
            self._release()
            return
        if self.received > self.held and not self._hold(self.received - self.held):  # (a chunked body)
            self.dropping = self.busy = True
            self._release()
            return
        super().handleContentChunk(data)

    def _hold(self, count: int) -> bool:
        """Take ``count`` more bytes of the source's budget for this body; False when they are not there."""
        source = self._source
        if source.reading + count > source.reading_budget:
            return False
        source.reading += count
        self.held += count
        return True

    def _release(self) -> None:
        if self.held:
            self._source.reading -= self.held
            self.held = 0

    def requestReceived(self, command, path, version) -> None:
        self._release()  # (the body is all there: it is the message's now, bounded by max_pending and timeout)
        super().requestReceived(command, path, version)

    def connectionLost(self, reason) -> None:
        self._release()  # (a client gone while its body came)
        super().connectionLost(reason)


class _Site(server.Site):
    """No access log: a fleet that posts every few seconds filled the gateway's log with a line a request (MQTT
    messages get none); what was received and refused is counted (``lorrygate status``)."""

    def log(self, request) -> None:
        pass


class _Api(resource.Resource):
    isLeaf = True

    def __init__(self, source):
        super().__init__()
        self.source = source

    def render(self, request):
        if request.method in (b"POST", b"PUT"):
            return self.source.handle(request)
        if request.method == b"GET" and self.source.exporter is not None:
            return self.source.export(request)
        if self.source.exporter is not None:
            request.setHeader(b"allow", b"GET, POST, PUT")
            return self.source._refuse(request, 405, "POST (or PUT) the payload to /api/<topic>; GET /api/<topic>."
                                                     "csv exports")
        request.setHeader(b"allow", b"POST, PUT")
        return self.source._refuse(request, 405, "POST (or PUT) the payload to /api/<topic>")


@implementer(ISource)
@attrs.define(eq=False)
class HttpSource(SourcePlumbing, Service):
    name: str  # type: ignore[assignment]  # Service.name, always set here
    settings: Any  # lorrygate.config.settings.SourceSettings, type http
    deliver: Any
    _reactor: Any
    broker: Any = None
    _port: Any = None
    _retry: Any = None
    pending: set = attrs.Factory(set)
    connected: bool = False
    received: int = 0
    refused: int = 0
    timed_out: int = 0
    #: the listening factory, which closes connections past ``max_connections`` (`LimitedFactory`)
    _limited: Any = None
    #: Kotori's data export (``export = yes``): `lorrygate.sources.export.Exporter`, set by the channel
    exporter: Any = None
    #: a topic's table by the channel's strategy, or None (`fine_offset_topic`); set by the channel
    table_of: Any = None
    #: bytes of the bodies arriving now (declared by Content-Length, or received of a chunked one), and how many
    #: they may be: a thousand clients each sending max_line bytes slowly would otherwise fill the disk with
    #: twisted.web's temporary files (a body over 100 KB is kept in one while it comes)
    reading: int = 0
    busy: int = 0
    #: the request headers the channel stores as tags (its ``headers``, lower-case): only those are kept with a
    #: message, so that an Authorization, a cookie or an API key header never reaches a dead letter
    headers: tuple = ()

    @property
    def reading_budget(self) -> int:
        return max(READING_BUDGET, 2 * self.settings.max_line)

    log = Logger()

    def __attrs_post_init__(self):
        from lorrygate.sources.periodic import _Where

        host, port = self.settings.listen
        self.client_id = self.client_id or f"http://{host}:{port}/api/"
        self.broker = _Where(self.client_id)
        self._pauses = Pauses(lambda: None, lambda: None)  # a held source answers 503; nothing to stop reading

    @property
    def shared(self) -> bool:
        """Whether other gateways may serve the same listen address (no lock): a port the system chooses
        (``:0``) is a different port for each; a second gateway of a fixed port is refused at the start."""
        return self.settings.listen[1] == 0

    @property
    def claim(self) -> tuple[str, str]:
        """What this source holds alone (`lorrygate.service.locks.claim_of`)."""
        return f"the HTTP address {self.client_id}", "listen"

    def when_subscribed(self) -> Deferred:
        return succeed(None)

    publish = None

    @property
    def port(self) -> int:
        """The port listened on (a config's port 0: the one the system chose)."""
        return self._port.getHost().port

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        """Listen; a port another program holds (or a certificate to fix) is tried again every `RETRY` seconds,
        as a broker is connected to again: the gateway's other channels run meanwhile."""
        from lorrygate.sources.periodic import _Where

        self._retry = None
        if not self.running:
            return
        host, port = self.settings.listen
        site = _Site(_Api(self), timeout=60)
        site.requestFactory = _Request
        site.noisy = False
        site.source = self  # type: ignore[attr-defined]  # read by _Request
        site.displayTracebacks = False
        try:
            factory = TLSMemoryBIOFactory(self._tls(), False, site) if self.settings.tls_cert else site
            self._limited = LimitedFactory(factory, self.settings.max_connections)
            self._port = self._reactor.listenTCP(port, self._limited, interface=host)
        except Exception as exc:
            error = f"cannot listen on {host}:{port}: {exc}"
            if error != self.last_error:  # (said once, not at every try)
                self.log.error("source {source}: {error}; trying again every {retry:g} s", source=self.settings.name,
                               error=error, retry=RETRY)
            self.last_error = error
            self._retry = self._reactor.callLater(RETRY, self._listen)
            return
        self.last_error = ""
        self.subscribed = self.connected = True
        scheme = "https" if self.settings.tls_cert else "http"
        self.client_id = f"{scheme}://{host}:{self.port}/api/"  # (the port the system chose for a port 0)
        self.broker = _Where(self.client_id)
        self.log.info("source {source}: listening on {url} (at least once: answered after commit)",
                      source=self.settings.name, url=self.client_id)

    def status(self) -> dict:
        """What ``lorrygate status`` shows of it."""
        return {"listening": self.client_id, "received": self.received, "refused": self.refused,
                "timed_out": self.timed_out, "busy": self.busy, "reading": self.reading,
                "turned_away": self._limited.turned_away if self._limited is not None else 0,
                **({"exports": self.exporter.exports, "exporting": self.exporter.running,
                    "exports_waiting": self.exporter.waiting,
                    "exports_stalled": self.exporter.stalls} if self.exporter is not None else {})}

    def _tls(self):
        """The server's TLS options from its PEM certificate (and chain) and key."""
        from twisted.internet import ssl

        with open(self.settings.tls_cert, "rb") as handle:
            chain = handle.read()
        with open(self.settings.tls_key, "rb") as handle:
            key = handle.read()
        blocks = _pem_blocks(chain)
        if not blocks:
            raise ValueError(f"no certificate in {self.settings.tls_cert}")
        private = ssl.PrivateCertificate.loadPEM(blocks[0] + key)
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
        options = ssl.CertificateOptions(privateKey=private.privateKey.original, certificate=private.original,
                                         extraCertChain=[c.original for c in certificates[1:]])
        options.getContext()  # a key that is not the certificate's fails here, at the start, not at each client
        return options

    def stopService(self) -> Deferred:
        super().stopService()
        if self.exporter is not None:
            self.exporter.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        d = port.stopListening()
        return d if d is not None else succeed(None)

    def authorized(self, request, export: bool = False) -> bool:
        """Whether the request has the ``token`` (any request, without one), compared in constant time; ``export``:
        the ``export_token``, where there is one."""
        token = (self.settings.export_token if export else None) or self.settings.token
        if token is None:
            return True
        given = request.getHeader(b"authorization") or b""
        return hmac.compare_digest(given, b"Bearer " + str(token.reveal()).encode())

    def handle(self, request):
        """A POST or PUT below /api/: a message, answered when it is stored (`_Answer`)."""
        if not request.path.startswith(PREFIX) or request.path == PREFIX:
            return self._refuse(request, 404, "POST the payload to /api/<topic>")
        if not self.authorized(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="lorrygate"')
            return self._refuse(request, 401, "a token is needed: Authorization: Bearer <token>")
        if request.too_large:
            return self._refuse(request, 413, f"a body over max_line = {self.settings.max_line} bytes")
        if request.busy:
            self.busy += 1
            request.setHeader(b"retry-after", b"1")
            return self._refuse(request, 503, f"the bodies arriving at once hold {self.reading_budget} bytes, all "
                                              "this source takes: send it again")
        if self._pauses.paused:
            request.setHeader(b"retry-after", b"1")
            return self._refuse(request, 503, "the storage holds this source back: send it again")
        header = (request.getHeader(b"content-type") or b"").decode("latin-1")
        content_type = header.split(";")[0].strip().lower()
        charset = charset_of(header, content_type)
        try:
            topic = topic_of(request.path, content_type)
        except UnicodeDecodeError:
            return self._refuse(request, 400, "the path after /api/ is not UTF-8 text (a topic is, as in MQTT)")
        if "\0" in topic:
            return self._refuse(request, 400, "the path after /api/ has the character NUL (%00), which no topic has "
                                              "(as in MQTT)")
        request.content.seek(0)
        payload = request.content.read()
        encoding = (request.getHeader(b"content-encoding") or b"identity").strip().lower().decode("latin-1")
        if encoding in COMPRESSED:  # (Telegraf's http output with content_encoding = "gzip")
            try:
                payload = inflated(payload, encoding, self.settings.max_line, "max_line")
            except ValueError as exc:
                return self._refuse(request, 413 if "max_line" in str(exc) else 400, str(exc))
        elif encoding != "identity":
            return self._refuse(request, 415, f"Content-Encoding {encoding!r}: gzip, deflate or none")
        if not payload.strip():  # (as Kotori: "Empty request body"; most likely a client's mistake)
            return self._refuse(request, 400, "an empty body: the payload is the request's body (curl -d "
                                              "'{\"temperature\": 21.5}' -H 'Content-Type: application/json')")
        if content_type == "application/x-www-form-urlencoded":
            payload = form_as_json(payload, charset)
            topic = fine_offset_topic(topic, payload, self.table_of)
        elif charset not in UTF8:  # (JSON is UTF-8, RFC 8259; a device's Latin-1 is read as such)
            payload = transcoded(payload, charset)
        answer = _Answer(self, request)
        slot = topic.rsplit("/", 1)[-1]
        if slot in _SLOTS:
            answer.hint = (f"the Content-Type {content_type or '(none)'!r} gives .../{slot} no suffix: send "
                           f"application/json, text/csv or application/x-www-form-urlencoded, or post to "
                           f".../{slot}.json (or .csv)")
        self.pending.add(answer)
        answer.timer = self._reactor.callLater(self.settings.timeout, answer.expire)
        self.received += 1
        sent = ()
        if self.headers:
            raw = request.requestHeaders
            sent = tuple((name, value.decode("utf-8", "backslashreplace")) for name in self.headers
                         for value in raw.getRawHeaders(name.encode("latin-1", "replace")) or ())
        typed = content_type if content_type and content_type != "application/x-www-form-urlencoded" else None
        self.deliver(Message(topic, payload, 1, False, time_of_day(self._reactor)(), "#", answer, content_type=typed,
                             headers=sent))
        return server.NOT_DONE_YET

    def export(self, request):
        """A GET below /api/: the rows of the topic's table (`lorrygate.sources.export`)."""
        from lorrygate.sources.export import ExportRefused, split_format

        def refuse(code: int, why: str) -> bytes:
            self.refused += 1
            set_code(request, code)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": why}).encode() + b"\n"

        if not request.path.startswith(PREFIX) or request.path == PREFIX:
            return refuse(404, "GET /api/<topic>.csv (or .txt, .json, .ndjson) exports")
        if not self.authorized(request, export=True):
            request.setHeader(b"www-authenticate", b'Bearer realm="lorrygate"')
            return refuse(401, "a token is needed: Authorization: Bearer <token>")
        try:
            topic = unquote(request.path[len(PREFIX):].decode("utf-8"), errors="strict").strip("/")
            args = {key.decode("utf-8"): values[-1].decode("utf-8") for key, values in request.args.items()}
        except UnicodeDecodeError:
            return refuse(400, "the path and the query are UTF-8 text")
        try:
            topic, kind = split_format(topic)
            self.exporter.begin(request, topic, kind, args, time_of_day(self._reactor)())
        except ExportRefused as exc:
            if exc.code == 503:
                request.setHeader(b"retry-after", b"1")
            return refuse(exc.code, str(exc))
        return server.NOT_DONE_YET

    def _refuse(self, request, code: int, why: str) -> bytes:
        self.refused += 1
        set_code(request, code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"stored": False, "error": why}).encode() + b"\n"

"""The HTTP source's answers, on requests made in memory: held back (503), a dead letter's 422 with the router's
reason, the timeout's 503, and one answer only, whatever comes after."""

import io
import json

import pytest
from twisted.internet.task import Clock

from lorrygate.config.settings import SourceSettings
from lorrygate.sources.http import HttpSource


class Request:
    """What the source reads of a twisted.web request, and what it answers."""

    def __init__(self, path=b"/api/r/n/g/node/data", body=b'{"v": 1}', content_type=b"application/json"):
        self.path, self.method, self.content = path, b"POST", io.BytesIO(body)
        self.headers = {b"content-type": content_type}
        self.too_large = self.busy = self.finished = self._disconnected = False
        self.code, self.sent, self.answers = None, {}, []

    def getHeader(self, name):
        return self.headers.get(name)

    def setHeader(self, name, value):
        self.sent[name] = value

    def setResponseCode(self, code, message=None):
        self.code = code

    def write(self, data):
        self.answers.append((self.code, json.loads(data)))

    def finish(self):
        self.finished = True


def source(delivered, timeout=30.0):
    clock = Clock()
    settings = SourceSettings(name="web", type="http", listen=("127.0.0.1", 0), timeout=timeout)
    return HttpSource("api", settings, delivered.append, clock), clock


def test_a_source_the_storage_holds_back_answers_503_and_delivers_nothing():
    delivered = []
    web, _ = source(delivered)
    web.pause("storage db")
    request = Request()
    body = web.handle(request)
    assert (request.code, request.sent[b"retry-after"], json.loads(body)["error"]) == (
        503, b"1", "the storage holds this source back: send it again")
    assert delivered == []
    web.resume("storage db")
    web.handle(Request())
    assert [m.topic for m in delivered] == ["r/n/g/node/data.json"]


def test_the_answer_waits_for_the_acknowledgement_and_says_why_a_dead_letter_is_one():
    delivered = []
    web, _ = source(delivered)
    stored, dead = Request(), Request()
    web.handle(stored)
    web.handle(dead)
    assert stored.answers == dead.answers == []  # nothing before the commit
    first, second = delivered
    second.ack.rejected("decode", "decoder 'json': field 'time': not an ISO 8601 time: 'noon'")
    second.ack.ack()
    first.ack.ack()
    assert stored.answers == [(200, {"stored": True})]
    assert dead.answers == [(422, {"stored": False, "dead_letter": True,
                                   "error": "decode: decoder 'json': field 'time': not an ISO 8601 time: 'noon'"})]
    assert web.pending == set()


def test_past_the_timeout_a_503_and_a_late_commit_answers_nothing_more():
    delivered = []
    web, clock = source(delivered, timeout=5)
    request = Request()
    web.handle(request)
    clock.advance(5)
    assert request.answers[0][0] == 503 and "send it again" in request.answers[0][1]["error"]
    delivered[0].ack.ack()  # stored after all: the client's retry may store it twice (idempotent = true: once)
    assert len(request.answers) == 1 and web.timed_out == 1


def test_a_form_becomes_a_json_object_on_the_data_json_topic():
    delivered = []
    web, _ = source(delivered)
    web.handle(Request(body=b"temperature=21.5&humidity=48", content_type=b"application/x-www-form-urlencoded"))
    assert (delivered[0].topic, json.loads(delivered[0].payload)) == (
        "r/n/g/node/data.json", {"temperature": "21.5", "humidity": "48"})


@pytest.mark.parametrize("content_type, body, expected", [
    (b"application/json; charset=ISO-8859-1", '{"unit": "°C", "where": "Küche"}'.encode("latin-1"),
     {"unit": "°C", "where": "Küche"}),
    (b'application/json;charset="windows-1252"', '{"price": "5€"}'.encode("cp1252"), {"price": "5€"}),
    (b"application/json; charset=utf-16", '{"unit": "°C"}'.encode("utf-16"), {"unit": "°C"}),
    (b"application/x-www-form-urlencoded; charset=iso-8859-1", b"unit=%B0C&where=K\xfcche",
     {"unit": "°C", "where": "Küche"}),
    (b"application/json; charset=utf-8", '{"unit": "°C"}'.encode(), {"unit": "°C"}),
    (b"application/json; charset=no-such-charset", '{"unit": "°C"}'.encode(), {"unit": "°C"}),
    (b"application/json; charset=zlib", '{"unit": "°C"}'.encode(), {"unit": "°C"}),  # Python's codec, no charset
], ids=["latin-1", "windows-1252-quoted", "utf-16", "form-latin-1", "utf-8", "unknown-read-as-utf-8",
        "codec-that-is-no-charset"])
def test_a_text_body_in_the_charset_its_content_type_names_is_read_in_it(content_type, body, expected):
    """A device that sends Latin-1 and says so (charset=ISO-8859-1) has its text stored as it meant it, not as
    a dead letter for bytes that are not UTF-8."""
    delivered = []
    web, _ = source(delivered)
    web.handle(Request(body=body, content_type=content_type))
    assert json.loads(delivered[0].payload) == expected


def test_a_body_that_is_not_the_charset_it_names_is_passed_on_as_it_came():
    """Bytes that its charset cannot read (a truncated UTF-16 body) reach the decoders as they came: one of them
    refuses them, and the dead letter keeps those bytes."""
    delivered = []
    web, _ = source(delivered)
    body = '{"v": 1}'.encode("utf-16")[:-1]
    web.handle(Request(body=body, content_type=b"application/json; charset=utf-16"))
    assert delivered[0].payload == body


def test_a_port_another_program_holds_is_tried_again_until_it_is_free():
    """As a broker is connected to again: the other channels run meanwhile, the error is said once."""
    from twisted.internet.error import CannotListenError
    from twisted.internet.testing import MemoryReactorClock

    class Busy(MemoryReactorClock):
        tries = 0

        def listenTCP(self, port, factory, backlog=50, interface=""):
            self.tries += 1
            if self.tries <= 2:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))
            return super().listenTCP(port, factory, backlog, interface)

    reactor = Busy()
    settings = SourceSettings(name="web", type="http", listen=("127.0.0.1", 24642))
    web = HttpSource("api", settings, [].append, reactor)
    web.startService()
    assert (web.connected, reactor.tries) == (False, 1) and "Address already in use" in web.last_error
    reactor.advance(10)
    assert (web.connected, reactor.tries) == (False, 2)
    reactor.advance(10)
    assert (web.connected, reactor.tries, web.last_error) == (True, 3, "")
    web.stopService()


def test_a_gzip_body_is_inflated_within_the_limit_and_a_bomb_is_refused():
    """Telegraf's http output gzips its bodies (content_encoding = "gzip"); a body of a few KB may inflate to
    gigabytes: at most max_line bytes are inflated."""
    import gzip
    import zlib

    delivered = []
    web, _ = source(delivered)
    request = Request(body=gzip.compress(b'{"v": 1}'))
    request.headers[b"content-encoding"] = b"gzip"
    web.handle(request)
    assert delivered[0].payload == b'{"v": 1}'
    bomb = Request(body=gzip.compress(b"0" * (9 << 20)))  # 9 MiB of zeros, ~9 KB compressed
    bomb.headers[b"content-encoding"] = b"gzip"
    assert len(bomb.content.getvalue()) < 20_000
    body = web.handle(bomb)
    assert (bomb.code, json.loads(body)["error"]) == (413, "a gzip body that inflates beyond max_line = 8388608 bytes")
    broken = Request(body=b"not gzip")
    broken.headers[b"content-encoding"] = b"gzip"
    assert json.loads(web.handle(broken))["error"].startswith("Content-Encoding gzip, but the body is no gzip")
    assert broken.code == 400
    other = Request()
    other.headers[b"content-encoding"] = b"br"
    web.handle(other)
    assert other.code == 415 and len(delivered) == 1
    deflated = Request(body=zlib.compress(b'{"v": 2}'))  # deflate: zlib's format (RFC 9110)
    deflated.headers[b"content-encoding"] = b"Deflate"
    web.handle(deflated)
    assert delivered[1].payload == b'{"v": 2}'


def test_two_gateways_may_listen_on_ports_the_system_chooses_not_on_one_fixed_port(tmp_path):
    """A port of :0 is a different port for each gateway (no lock); a fixed port is one gateway's alone."""
    from lorrygate.service.locks import AlreadyRunning, InstanceLock

    def http(port):
        settings = SourceSettings(name="web", type="http", listen=("127.0.0.1", port), timeout=30.0)
        return HttpSource("api", settings, [].append, Clock())

    first, second = InstanceLock(str(tmp_path / "a")), InstanceLock(str(tmp_path / "b"))
    try:
        first.acquire_clients([http(0)])
        second.acquire_clients([http(0)])
        first.acquire_clients([http(48_123)])
        with pytest.raises(AlreadyRunning, match="http://127.0.0.1:48123/api/"):
            second.acquire_clients([http(48_123)])
    finally:
        first.release()
        second.release()


@pytest.mark.parametrize("body, content_type", [
    (b"", b"application/json"), (b" \r\n", b"text/csv"), (b"", b"application/x-www-form-urlencoded"), (b"", None)])
def test_an_empty_body_is_refused_400_and_nothing_is_delivered(body, content_type):
    """As Kotori answers ("Empty request body"): a client that posts nothing has it wrong, and is told how (it was
    answered 200 with "ignored", which such a client takes for done)."""
    delivered = []
    web, _ = source(delivered)
    request = Request(body=body, content_type=content_type)
    answer = json.loads(web.handle(request))
    assert (request.code, delivered, web.refused) == (400, [], 1)
    assert answer["error"].startswith("an empty body: the payload is the request's body (curl -d")


def test_a_message_with_nothing_to_store_is_answered_so_not_stored_true():
    """An ignored topic or a command: 200 (nothing to send again), and the body says it was not stored."""
    delivered = []
    web, _ = source(delivered)
    ignored, stored = Request(), Request()
    web.handle(ignored)
    web.handle(stored)
    first, second = delivered
    first.ack.not_stored("ignored: a command, not a measurement")
    first.ack.ack()
    second.ack.ack()
    assert ignored.answers == [(200, {"stored": False, "ignored": "ignored: a command, not a measurement"})]
    assert stored.answers == [(200, {"stored": True})]


@pytest.mark.parametrize("authorization, length, kept", [
    (b"Bearer s3cret", 5_000_000, True),  # a client with the token: as twisted.web keeps a large body
    (b"Bearer wrong", 5_000_000, False),  # without it: read and dropped, no temporary file, no memory
    (b"Bearer s3cret", 9_000_000, False),  # past max_line
])
def test_a_body_that_will_be_refused_is_read_and_dropped_not_kept(authorization, length, kept):
    """A client without the token, or a body over max_line: the body is neither held in memory nor written into a
    temporary file while it comes (the answer, 401 or 413, comes once it was read)."""
    from twisted.web.test.requesthelper import DummyChannel

    from lorrygate.config.values import Secret
    from lorrygate.sources.http import _Request

    settings = SourceSettings(name="web", type="http", listen=("127.0.0.1", 0), token=Secret("s3cret"),
                              max_line=8_000_000)
    channel = DummyChannel()
    channel.site.source = HttpSource("api", settings, [].append, Clock())
    request = _Request(channel)
    request.requestHeaders.setRawHeaders(b"authorization", [authorization])
    request.gotLength(length)
    for _ in range(length // 100_000):
        request.handleContentChunk(b"x" * 100_000)
    assert request.dropping is not kept
    held = request.content.seek(0, io.SEEK_END)
    assert held == (length if kept else 0)
    assert isinstance(request.content, io.BytesIO) or kept  # (no temporary file for a body to drop)


def test_bodies_arriving_at_once_take_at_most_the_sources_budget_and_give_it_back():
    """A thousand clients each sending max_line bytes slowly would fill the disk with twisted.web's temporary
    files: past READING_BUDGET the next body is read and dropped and answered 503; a body read whole, or a client
    gone, gives its bytes back. Declared by Content-Length or counted as a chunked body comes."""
    from twisted.python.failure import Failure
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.test.requesthelper import DummyChannel

    from lorrygate.sources.http import READING_BUDGET, _Request

    class Leaf(Resource):
        isLeaf = True

        def render(self, request):
            return b""

    settings = SourceSettings(name="web", type="http", listen=("127.0.0.1", 0), max_line=8 << 20)
    channel = DummyChannel()
    channel.site = Site(Leaf())  # (what a request read whole is rendered by)
    web = channel.site.source = HttpSource("api", settings, [].append, Clock())
    assert web.reading_budget == READING_BUDGET == 64 << 20
    slow = []
    for _ in range(8):  # 8 x 8 MiB declared: the whole budget
        request = _Request(channel)
        request.gotLength(8 << 20)
        assert not request.dropping
        slow.append(request)
    assert web.reading == 64 << 20
    one_more = _Request(channel)
    one_more.gotLength(1000)
    assert one_more.dropping and one_more.busy and web.reading == 64 << 20
    chunked = _Request(channel)
    chunked.gotLength(None)
    chunked.handleContentChunk(b"x" * 10)
    assert chunked.busy and web.reading == 64 << 20

    slow[0].connectionLost(Failure(ConnectionError("gone")))  # a client gone gives its bytes back
    assert web.reading == 56 << 20
    again = _Request(channel)
    again.gotLength(None)
    for _ in range(3):
        again.handleContentChunk(b"x" * 100_000)
    assert not again.dropping and web.reading == (56 << 20) + 300_000
    again.requestReceived(b"POST", b"/api/r/n/g/node/data", b"HTTP/1.1")  # read whole: the message's now
    assert web.reading == 56 << 20 and again.held == 0
    again.connectionLost(Failure(ConnectionError("gone")))  # (given back once only)
    assert web.reading == 56 << 20


def test_a_body_dropped_for_the_budget_is_answered_503_to_send_again():
    web, _ = source([])
    request = Request()
    request.busy = True
    assert json.loads(web.handle(request)) == {"stored": False, "error": "the bodies arriving at once hold 67108864 "
                                                                     "bytes, all this source takes: send it again"}
    assert request.code == 503 and request.sent[b"retry-after"] == b"1" and web.busy == 1


def test_describe_says_where_the_http_source_listens_not_an_iio_root_and_an_interval():
    from lorrygate.config import loads
    from lorrygate.pipeline.describe import describe

    settings = loads("[source:api]\ntype = http\nlisten = 127.0.0.1:24642\ntoken = secret\nexport = yes\n"
                     "[storage:db]\nurl = sqlite:///x.sqlite\n[channel:http]\nsource = api\nstrategy = wan\n")
    text = describe(settings)
    assert ("channel http: http source api (http://127.0.0.1:24642/api/<topic>, a token asked, export) (at least "
            "once for a client that sends again until a 2xx)") in text
    assert "iio" not in text and "secret" not in text


def test_a_data_path_whose_content_type_gives_no_suffix_is_told_so_with_the_refused_topic():
    """Kotori answers 415 for an unknown Content-Type; here the message is still kept (a strategy of one's own may
    take ``.../data``), and the 422 of a refused topic says what the Content-Type had to do with it."""
    delivered = []
    web, _ = source(delivered)
    unknown, decoded = Request(content_type=b"foo/bar"), Request(content_type=b"foo/bar")
    web.handle(unknown)
    web.handle(decoded)
    first, second = delivered
    assert first.topic == "r/n/g/node/data"
    first.ack.rejected("topology", "unknown suffix 'data': expected data.json, ...")
    first.ack.ack()
    assert unknown.answers == [(422, {
        "stored": False, "dead_letter": True, "error": "topology: unknown suffix 'data': expected data.json, ...",
        "hint": "the Content-Type 'foo/bar' gives .../data no suffix: send application/json, text/csv or "
                "application/x-www-form-urlencoded, or post to .../data.json (or .csv)"})]
    second.ack.rejected("decode", "no decoder ...")  # (a strategy of one's own took the topic)
    second.ack.ack()
    assert "hint" not in decoded.answers[0][1]

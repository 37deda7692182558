"""A poll's answer, bounded: kept up to max_line, beyond it hashed and counted; an HTTP body's Deferred cancelled
aborts its connection."""

import hashlib

from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed

from lorrygate.sources.poll_reads import Answer, _Body, _Bounded


def test_an_answer_within_the_limit_is_kept_whole():
    kept = _Bounded(10)
    for chunk in (b"12345", b"67890"):
        kept.add(chunk)
    assert kept.answer() == Answer(b"1234567890")


def test_an_answer_over_the_limit_is_its_size_and_hash_only():
    kept = _Bounded(10)
    chunks = [b"12345", b"67890", b"x", b"y" * 100]
    for chunk in chunks:
        kept.add(chunk)
    whole = b"".join(chunks)
    assert kept.answer() == Answer(b"", (len(whole), hashlib.sha256(whole).hexdigest(), "max_line"))
    assert kept._chunks is None  # nothing of it held


class _Transport:
    stopped = 0

    def stopProducing(self):
        self.stopped += 1


def test_a_body_ends_with_its_answer_and_a_cancel_stops_its_connection():
    body = _Body(100)
    body.makeConnection(_Transport())
    body.dataReceived(b'{"t": 1}')
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == Answer(b'{"t": 1}')

    endless = _Body(100)
    endless.makeConnection(_Transport())
    endless.dataReceived(b"x" * 1000)
    endless.done.cancel()
    endless.connectionLost(Failure(ResponseFailed([])))  # what stopProducing brings about; nothing more happens
    assert endless.transport.stopped == 1
    endless.done.addErrback(lambda failure: None)


def test_a_body_cut_by_its_server_is_a_failure():
    body = _Body(100)
    body.makeConnection(_Transport())
    body.dataReceived(b'{"t": ')
    body.connectionLost(Failure(ResponseFailed([])))
    failures = []
    body.done.addErrback(failures.append)
    assert failures and failures[0].check(ResponseFailed)

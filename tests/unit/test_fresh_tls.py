"""A broker connection's TLS files are read at each connection attempt (a certificate renewed on disk is used from
the next one on); one that cannot be read fails that attempt with a reason, and the next reads it again."""

from twisted.internet.defer import Deferred

from lorrygate.config.settings import BrokerSettings
from lorrygate.sources.mqtt import FreshTLS, TLSFilesUnreadable, explain_failure
from tests.certs import write_tls_files


class Inner:
    """The TCP endpoint under the TLS: what it was asked to connect."""

    def __init__(self):
        self.factories = []

    def connect(self, factory):
        self.factories.append(factory)
        return Deferred()  # (the connection under way)


def test_each_attempt_reads_the_files_and_one_that_cannot_be_read_fails_that_attempt_only(tmp_path):
    tls = write_tls_files(str(tmp_path))
    ca = tmp_path / "live-ca.pem"
    broker = BrokerSettings(name="b", host="localhost", tls=True, tls_ca=str(ca))
    inner = Inner()
    endpoint = FreshTLS(broker, inner)

    failed = []
    endpoint.connect(object()).addErrback(failed.append)
    assert not inner.factories
    (error,) = [failure.value for failure in failed]
    assert isinstance(error, TLSFilesUnreadable)
    assert explain_failure(error, broker).startswith(
        "the TLS files (tls_ca, tls_cert, tls_key) cannot be read: FileNotFoundError")

    ca.write_text("-----BEGIN CERTIFICATE-----\nhalf written")  # (the renewal, under way)
    endpoint.connect(object()).addErrback(failed.append)
    assert len(failed) == 2 and isinstance(failed[1].value, TLSFilesUnreadable) and not inner.factories

    ca.write_bytes(open(tls["ca.pem"], "rb").read())
    endpoint.connect(object())
    assert len(inner.factories) == 1  # (the TLS wrapper's factory, over the TCP endpoint)

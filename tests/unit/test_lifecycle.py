"""The gateway's service tree on a MemoryReactorClock: readiness after SUBACK, stop
order (commit, acks, DISCONNECT), no timer left after stop, one pause holder per consumer."""

import os
import uuid

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from lorrygate.config.loader import loads
from lorrygate.model import Message
from lorrygate.mqtt import codec
from lorrygate.mqtt.codec import PUBACK, Connack, Disconnect, PubAck, Publish, Suback, Subscribe
from lorrygate.service.gateway import Gateway
from lorrygate.service.storage_service import StorageService
from lorrygate.sources.broker_drops import DROPPED_TOPIC
from lorrygate.sources.mqtt import MQTTSource
from lorrygate.storage.batch import Entry
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage
from lorrygate.storage.spool import Spool

#: the client ids are locked machine-wide (one gateway a client id): two suites run at once on one machine
#: (a developer's and a CI checkout's) must not take the same ones
RUN = uuid.uuid4().hex[:8]

CONFIG = """
[lorrygate]
data_dir = {data_dir}
control = off

[broker:b]
host = 127.0.0.1
client_id = unit-{name}-{run}

[storage:db]
url = sqlite:///{data_dir}/x.sqlite
spool = {spool}
max_pending = 4

[channel:main]
source = b
topics = unit/#
storage = db
"""


class Broker:
    """The broker's end of the gateway's one MQTT connection."""

    def __init__(self, reactor):
        host, port, factory, _, _ = reactor.tcpClients[-1]
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def sent(self):
        data = self.transport.value()
        self.transport.clear()
        packets, used = codec.parse(data, codec.MQTT_3_1_1)
        assert used == len(data)
        return packets

    def handshake(self):
        connect, subscribe = self.sent()[0], None
        assert isinstance(connect, codec.Connect)
        self.reply(Connack(False, 0))
        (subscribe,) = self.sent()
        assert isinstance(subscribe, Subscribe)
        self.reply(Suback(subscribe.packet_id, (1,)))
        (watch,) = self.sent()  # then the broker's count of dropped messages (lorrygate.sources.broker_drops)
        assert watch.subscriptions == ((DROPPED_TOPIC, 0),)
        self.reply(Suback(watch.packet_id, (0,)))

    def reply(self, *packets):
        self.protocol.dataReceived(b"".join(codec.encode(p, codec.MQTT_3_1_1) for p in packets))


def memory_storages(storages: dict):
    """A storage factory that puts manual MemoryStorages behind real batchers and spools."""

    def factory(settings, name, reactor):
        storage = settings.storages[name]
        backend = storages.setdefault(name, MemoryStorage(name, manual=True))
        spool = None
        if storage.spool:
            spool = Spool(os.path.join(settings.gateway.data_dir, "spool", name), reactor, storage.spool_max,
                          storage.kind, storage.url.target)
        batcher = Batcher(backend, reactor, max_pending=storage.max_pending, spool=spool)
        service = StorageService(storage, backend, batcher, reactor, threaded=False)
        service.setName(name)
        return service

    return factory


def start_gateway(tmp_path, spool="true"):
    reactor = MemoryReactorClock()
    settings = loads(CONFIG.format(run=RUN, data_dir=tmp_path, name=tmp_path.name, spool=spool), source="unit.ini")
    storages = {}
    gateway = Gateway(settings, reactor, storage_factory=memory_storages(storages))
    started = Deferred.fromCoroutine(gateway.start())
    assert started.called, "start does not wait for the broker"
    reactor.advance(0)
    broker = Broker(reactor)
    return reactor, gateway, broker, storages["db"]


def publish(broker, *packet_ids):
    broker.reply(*(Publish("unit/a/b/c/data.json", b'{"x": %d}' % i, 1, packet_id=i) for i in packet_ids))


def test_ready_only_after_suback(tmp_path):
    """The gateway is ready (and says running) once the broker acknowledged the subscription, not before."""
    reactor, gateway, broker, _ = start_gateway(tmp_path)
    ready = gateway.when_ready()
    connect = broker.sent()
    broker.reply(Connack(False, 0))
    assert not ready.called, "a CONNACK is not a subscription"
    (subscribe,) = broker.sent()
    broker.reply(Suback(subscribe.packet_id, (1,)))
    assert ready.called and connect
    Deferred.fromCoroutine(gateway.stop())


def test_stop_commits_then_acks_then_disconnects(tmp_path):
    """Stopping commits what was delivered and sends its PUBACKs before the DISCONNECT, in one write."""
    reactor, gateway, broker, storage = start_gateway(tmp_path)
    broker.handshake()
    publish(broker, 1, 2, 3)
    reactor.advance(0)
    stopped = Deferred.fromCoroutine(gateway.stop())
    assert not stopped.called and storage.in_flight == 1
    assert broker.sent() == [], "nothing is acknowledged before the commit"
    storage.complete()
    reactor.advance(0)
    assert broker.sent() == [PubAck(PUBACK, 1), PubAck(PUBACK, 2), PubAck(PUBACK, 3), Disconnect()]
    broker.protocol.connectionLost(None)
    assert stopped.called


def test_no_timer_survives_stop(tmp_path):
    """With retry, probe and spool-drain timers armed, a stopped gateway leaves no delayed call."""
    reactor, gateway, broker, storage = start_gateway(tmp_path)
    broker.handshake()
    publish(broker, 1, 2)
    reactor.advance(0)
    storage.fail()  # marks the storage down: the batch goes to the spool, a probe is armed
    publish(broker, 3)
    reactor.advance(0)
    batcher = gateway.batchers["db"]
    assert batcher.down and batcher.spool.batches >= 1
    reactor.advance(5)  # the probe drains the spool: a write in flight
    assert storage.in_flight == 1
    stopped = Deferred.fromCoroutine(gateway.stop())
    storage.fail()
    broker.protocol.connectionLost(None)
    reactor.advance(0)
    assert stopped.called
    assert reactor.getDelayedCalls() == []


def test_no_timer_survives_stop_without_spool(tmp_path):
    """Without a spool a failed batch waits on a retry timer; stop cancels it and acknowledges nothing."""
    reactor, gateway, broker, storage = start_gateway(tmp_path, spool="false")
    broker.handshake()
    publish(broker, 1)
    reactor.advance(0)
    storage.fail()
    assert reactor.getDelayedCalls(), "a retry is armed"
    stopped = Deferred.fromCoroutine(gateway.stop())
    reactor.advance(1)  # the retry is under way
    assert storage.in_flight == 1
    reactor.advance(15)  # the channel's commit wait times out
    assert broker.sent() == [Disconnect()], "nothing committed, nothing acknowledged"
    broker.protocol.connectionLost(None)
    assert not stopped.called, "the storage waits for its write in flight"
    storage.fail()
    reactor.advance(0)
    assert stopped.called and reactor.getDelayedCalls() == []


def test_a_second_gateway_on_one_data_dir_is_refused(tmp_path):
    """A second gateway with the same data directory fails to start and names the first."""
    reactor, gateway, broker, _ = start_gateway(tmp_path)
    settings = loads(CONFIG.format(run=RUN, data_dir=tmp_path, name="other", spool="true"), source="unit.ini")
    second = Gateway(settings, MemoryReactorClock(), storage_factory=memory_storages({}))
    failure = []
    Deferred.fromCoroutine(second.start()).addErrback(failure.append)
    assert failure and f"PID {os.getpid()}" in failure[0].getErrorMessage()
    assert "data directory" in failure[0].getErrorMessage()
    Deferred.fromCoroutine(gateway.stop())


def entry(n):
    return Entry(None, [object()], "main", Message("t", b"x"))


def test_a_fast_tee_branch_cannot_resume_what_the_slow_one_paused(tmp_path):
    """With a fast and a slow storage on one source, reading resumes only when neither holds it paused."""
    from twisted.internet.task import Clock

    clock = Clock()
    settings = loads(CONFIG.format(run=RUN, data_dir=tmp_path, name="tee", spool="false"), source="unit.ini")
    source = MQTTSource("main", settings.brokers["b"], ("unit/#",), 1, lambda m: None, clock)
    fast_storage, slow_storage = MemoryStorage("fast", manual=True), MemoryStorage("slow", manual=True)
    fast, slow = Batcher(fast_storage, clock, max_pending=4), Batcher(slow_storage, clock, max_pending=4)
    for batcher in (fast, slow):
        batcher.attach(source)
    for n in range(4):
        fast.add(entry(n))
        slow.add(entry(n))
    clock.advance(0)
    assert source.paused and set(source.paused_by) == {"storage fast", "storage slow"}
    fast_storage.complete()
    assert source.paused and source.paused_by == ("storage slow",), "the slow storage still holds its pause"
    slow_storage.complete()
    assert not source.paused


def test_pauses_resume_only_when_every_holder_let_go():
    """The first hold pauses, a repeated hold counts once, and only the last release resumes."""
    from lorrygate.sources.pauses import Pauses

    calls = []
    pauses = Pauses(lambda: calls.append("pause"), lambda: calls.append("resume"))
    pauses.hold("a")
    pauses.hold("b")
    pauses.hold("a")
    pauses.release("a")
    assert calls == ["pause"] and pauses.paused
    pauses.release("a")
    assert calls == ["pause"], "a holder that let go cannot resume for another"
    pauses.release("b")
    assert calls == ["pause", "resume"] and not pauses.paused

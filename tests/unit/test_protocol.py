"""The MQTT client protocol on a StringTransport and a Clock: handshake, acks in order, keep-alive."""

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from lorrygate.mqtt import codec
from lorrygate.mqtt.codec import MQTT_3_1_1, MQTT_5, PUBACK, PUBCOMP, PUBREC, PUBREL, PubAck, Publish
from lorrygate.mqtt.protocol import ConnectionRefused, MQTTClientProtocol, SubscriptionRefused


class Broker:
    """The broker's side of one connection: what the client wrote, and replies."""

    def __init__(self, version=MQTT_3_1_1):
        self.clock = Clock()
        self.received = []
        self.protocol = MQTTClientProtocol(lambda p, h: self.received.append((p, h)), self.clock, version)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.version = version

    def sent(self):
        data = self.transport.value()
        self.transport.clear()
        packets, used = codec.parse(data, self.version)
        assert used == len(data)
        return packets

    def reply(self, *packets):
        self.protocol.dataReceived(b"".join(codec.encode(p, self.version) for p in packets))

    def connect(self, **kwargs):
        d = self.protocol.connect(codec.Connect("gw", self.version, clean_start=False, keepalive=10, **kwargs))
        assert self.sent() == [codec.Connect("gw", self.version, clean_start=False, keepalive=10, **kwargs)]
        self.reply(codec.Connack(True, 0))
        return d


def test_connect_fires_with_connack():
    """CONNECT goes out; the CONNACK fires the Deferred with the session-present flag."""
    broker = Broker()
    d = broker.connect()
    assert d.result.session_present is True


@pytest.mark.parametrize("code, text", [(5, "not authorized"), (4, "bad user name or password"), (0x8A, "banned")],
                         ids=["not-authorized", "bad-password", "banned"])
def test_refused_connect_says_why(code, text):
    """A failing CONNACK fails the Deferred with the reason in words and as a code."""
    broker = Broker()
    d = broker.protocol.connect(codec.Connect("gw"))
    broker.reply(codec.Connack(False, code))
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(ConnectionRefused)
    assert text in failure[0].getErrorMessage() and f"0x{code:02x}" in failure[0].getErrorMessage()


def test_acks_leave_in_receipt_order():
    """Acks completed out of order are held back until every earlier message is acked."""
    broker = Broker()
    broker.connect()
    broker.reply(*(Publish("t", b"x", 1, packet_id=i) for i in (1, 2, 3)))
    handles = [h for _, h in broker.received]
    handles[2].ack()
    handles[1].ack()
    broker.clock.advance(0)
    assert broker.sent() == []
    handles[0].ack()
    assert broker.sent() == []
    broker.clock.advance(0)
    assert broker.transport.value() == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03"
    assert broker.sent() == [PubAck(PUBACK, 1), PubAck(PUBACK, 2), PubAck(PUBACK, 3)]
    assert broker.protocol.unacked == 0


def test_qos0_needs_no_ack():
    """QoS 0 messages are delivered without an ack handle and never acknowledged."""
    broker = Broker()
    broker.connect()
    broker.reply(Publish("t", b"x", 0))
    assert broker.received == [(Publish("t", b"x", 0), None)]
    assert broker.sent() == []


def test_qos2_is_acknowledged_with_pubrec_then_pubcomp():
    """A QoS 2 message gets PUBREC after ack(), and PUBREL is answered with PUBCOMP."""
    broker = Broker(MQTT_5)
    broker.connect()
    broker.reply(Publish("t", b"x", 2, packet_id=9))
    assert broker.sent() == []
    broker.received[0][1].ack()
    broker.clock.advance(0)
    assert broker.sent() == [PubAck(PUBREC, 9)]
    broker.reply(PubAck(PUBREL, 9))
    assert broker.sent() == [PubAck(PUBCOMP, 9)]


def test_a_qos2_message_sent_again_before_its_pubrel_is_acknowledged_again_not_handed_over_twice():
    """MQTT 4.3.3: until PUBREL, a PUBLISH with the packet id of a QoS 2 message already acknowledged with PUBREC
    is that message again (a PUBREC the broker never read, on a connection that closed): PUBREC again, in order
    with the other acks, and no second delivery. After PUBREL the id is a new message's."""
    first = Broker(MQTT_5)
    first.connect()
    first.reply(Publish("t", b"x", 2, packet_id=9))
    first.received[0][1].ack()
    first.clock.advance(0)
    assert first.sent() == [PubAck(PUBREC, 9)]
    first.protocol.connectionLost(Failure(ConnectionDone()))  # (the broker never read that PUBREC)

    again = Broker(MQTT_5)
    again.protocol.receipts = first.protocol.receipts  # the session's, as a source keeps it
    again.connect()
    again.reply(Publish("t", b"y", 1, packet_id=3), Publish("t", b"x", 2, dup=True, packet_id=9))
    assert [packet.payload for packet, _ in again.received] == [b"y"]
    again.clock.advance(0)
    assert again.sent() == []  # the copy's PUBREC waits for the message before it
    again.received[0][1].ack()
    again.clock.advance(0)
    assert again.sent() == [PubAck(PUBACK, 3), PubAck(PUBREC, 9)]
    assert again.protocol.receipts.copies == 1
    again.reply(PubAck(PUBREL, 9))
    assert again.sent() == [PubAck(PUBCOMP, 9)]
    again.reply(Publish("t", b"new", 2, packet_id=9))  # the id is free again: a new message
    assert [packet.payload for packet, _ in again.received] == [b"y", b"new"]


def test_subscribe_refusal_names_the_filter():
    """A SUBACK failure code fails subscribe() naming the refused filter."""
    broker = Broker()
    broker.connect()
    d = broker.protocol.subscribe([("ok/#", 1), ("secret/#", 1)])
    (subscribe,) = broker.sent()
    broker.reply(codec.Suback(subscribe.packet_id, (1, 0x80)))
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(SubscriptionRefused)
    assert "'secret/#'" in failure[0].getErrorMessage() and "ok/#" not in failure[0].getErrorMessage()
    assert "check the user's read access" in failure[0].getErrorMessage()


@pytest.mark.parametrize("code, said", [
    (0x87, "'secret/#' (code 0x87, not authorized: check the user's read access to the filter"),
    (0x9E, "'secret/#' (code 0x9e, shared subscriptions not supported: leave the channel's group unset"),
    (0xA2, "'secret/#' (code 0xa2, wildcard subscriptions not supported: subscribe to topics without + and #)"),
    (0x97, "'secret/#' (code 0x97, quota exceeded)"),
])
def test_an_mqtt5_subscribe_refusal_says_the_reason_and_what_to_do(code, said):
    """MQTT 5 names why the broker refused a filter: the error says it, and what most often fixes it (the code alone
    left a user to look it up while the gateway kept reconnecting)."""
    broker = Broker(codec.MQTT_5)
    broker.connect()
    d = broker.protocol.subscribe([("secret/#", 1)])
    (subscribe,) = broker.sent()
    broker.reply(codec.Suback(subscribe.packet_id, (code,)))
    failure = []
    d.addErrback(failure.append)
    assert said in failure[0].getErrorMessage(), failure[0].getErrorMessage()


def test_keepalive_pings_and_drops_a_silent_broker():
    """PINGREQ goes out every keep-alive interval; a missing PINGRESP aborts the connection."""
    broker = Broker()
    broker.connect()
    broker.clock.advance(10)
    assert broker.sent() == [codec.PingReq()]
    broker.reply(codec.PingResp())
    broker.clock.advance(10)
    assert broker.sent() == [codec.PingReq()]
    broker.clock.advance(10)
    assert broker.transport.disconnecting or broker.transport.disconnected


def test_acks_after_the_connection_is_lost_go_nowhere():
    """A handle acked after the connection dropped writes nothing (the broker redelivers)."""
    broker = Broker()
    broker.connect()
    broker.reply(Publish("t", b"x", 1, packet_id=1))
    broker.protocol.connectionLost(Failure(ConnectionDone()))
    broker.received[0][1].ack()
    broker.clock.advance(0)
    assert broker.transport.value() == b""


def test_malformed_bytes_abort_the_connection():
    """Bytes that are not MQTT close the connection instead of raising into the reactor."""
    broker = Broker()
    broker.connect()
    broker.protocol.dataReceived(b"\x36\x05\x00\x01a\x00\x01")
    assert broker.transport.disconnecting or broker.transport.disconnected


def test_pause_and_resume_reach_the_transport():
    """pauseReading/resumeReading pause and resume the transport (backpressure)."""
    broker = Broker()
    broker.protocol.pauseReading()
    assert broker.transport.producerState == "paused"
    broker.protocol.resumeReading()
    assert broker.transport.producerState == "producing"


def test_messages_split_across_reads_are_reassembled():
    """A PUBLISH that arrives one byte at a time is delivered once, whole."""
    broker = Broker()
    broker.connect()
    wire = codec.encode(Publish("a/b", b"payload" * 50, 1, packet_id=3))
    for index in range(len(wire)):
        broker.protocol.dataReceived(wire[index : index + 1])
    assert [p for p, _ in broker.received] == [Publish("a/b", b"payload" * 50, 1, packet_id=3)]


def test_disconnect_waits_for_the_broker_to_close_and_cuts_off_a_lingering_peer():
    """disconnect() sends DISCONNECT and waits for the broker to close (it has read every ack then);
    a broker that does not close within the timeout is closed on, then cut off."""
    broker = Broker()
    broker.connect()
    done = []
    broker.protocol.disconnect(timeout=2).addCallback(done.append)
    assert broker.sent() == [codec.Disconnect()]
    assert not broker.transport.disconnecting and done == []
    broker.clock.advance(2)
    assert broker.transport.disconnecting and not broker.transport.disconnected
    broker.clock.advance(1)
    assert broker.transport.disconnected
    broker.protocol.connectionLost(Failure(ConnectionDone()))
    assert done == [None] and broker.protocol.lost_reason.check(ConnectionDone)
    assert broker.clock.getDelayedCalls() == []


def test_after_disconnect_nothing_is_delivered_or_sent():
    """Between our DISCONNECT and the broker's close: a paused reader reads again (to see the close),
    publishes are neither delivered nor acknowledged, and nothing follows the DISCONNECT on the wire."""
    broker = Broker()
    broker.connect()
    broker.protocol.pauseReading()
    done = []
    broker.protocol.disconnect().addCallback(done.append)
    assert broker.transport.producerState == "producing"
    broker.transport.clear()
    broker.reply(Publish("t", b"late", 1, packet_id=9), Publish("t", b"late", 0), PubAck(PUBREL, 4))
    broker.protocol.resumeReading()
    broker.protocol.pauseReading()
    broker.clock.advance(1)
    assert broker.received == [] and broker.transport.value() == b""
    assert broker.transport.producerState == "producing"
    broker.protocol.connectionLost(Failure(ConnectionDone()))  # the broker closed
    assert done == [None] and broker.clock.getDelayedCalls() == []


def test_paused_reader_is_not_dropped_for_a_missing_pingresp():
    """While reading is paused (backpressure), an unread PINGRESP does not abort the connection."""
    broker = Broker()
    broker.connect()
    broker.protocol.pauseReading()
    for _ in range(3):
        broker.clock.advance(10)
    assert not broker.transport.disconnecting
    assert broker.sent() == [codec.PingReq()] * 3


def test_a_reader_resumed_just_before_the_timer_is_not_dropped_for_the_pingresp_it_could_not_read():
    """Resumed (a slow storage committed) a moment before the keep-alive timer fires: the PINGRESP of the ping
    sent while paused is still unread in the socket, and the timer must not count it (a tee's duplicates came
    from such a drop: the acks just released were cut off with the connection). A broker silent for a whole
    interval after the resume is still dropped."""
    broker = Broker()
    broker.connect()
    broker.protocol.pauseReading()
    broker.clock.advance(10)  # a PINGREQ while paused
    broker.clock.advance(9.9)
    broker.protocol.resumeReading()
    broker.clock.advance(0.1)  # the timer, before the reactor read the PINGRESP
    assert not broker.transport.disconnecting
    assert broker.sent() == [codec.PingReq()] * 2
    broker.clock.advance(10)  # no PINGRESP to the ping sent while reading
    assert broker.transport.disconnecting or broker.transport.disconnected


def test_disconnect_sends_the_released_acks_first():
    """Acks released and DISCONNECT sent in the same reactor turn arrive as [PubAck..., Disconnect]."""
    broker = Broker()
    broker.connect()
    broker.reply(*(Publish("t", b"x", 1, packet_id=i) for i in (1, 2, 3)))
    for _, handle in broker.received:
        handle.ack()
    broker.protocol.disconnect()
    assert broker.sent() == [PubAck(PUBACK, 1), PubAck(PUBACK, 2), PubAck(PUBACK, 3), codec.Disconnect()]
    broker.clock.advance(0)
    assert broker.transport.value() == b"", "nothing may follow the DISCONNECT"


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 65536], ids=lambda n: f"{n}-byte-reads")
def test_packets_split_across_reads_arrive_whole(chunk):
    """Packets cut into reads of any size, a large one among them, arrive whole and in order."""
    broker = Broker()
    broker.connect()
    packets = [Publish("t/a", b"x" * 5, 1, packet_id=1), Publish("t/big", bytes(range(256)) * 4000, 1, packet_id=2),
               Publish("t/c", b"", 0)]
    data = b"".join(codec.encode(p, MQTT_3_1_1) for p in packets)
    for start in range(0, len(data), chunk):
        broker.protocol.dataReceived(data[start:start + chunk])
    assert [p for p, _ in broker.received] == packets


def connected(version=MQTT_5, **props):
    broker = Broker(version)
    d = broker.protocol.connect(codec.Connect("gw", version))
    broker.sent()
    broker.reply(codec.Connack(False, 0, props))
    assert d.called
    return broker


def test_a_311_connack_answers_an_mqtt5_connect_with_the_fix():
    """A 3.1.1-only broker's CONNACK (no properties) is read under MQTT 5 and says to set protocol = 3.1.1."""
    broker = Broker(MQTT_5)
    d = broker.protocol.connect(codec.Connect("gw", MQTT_5))
    broker.sent()
    broker.protocol.dataReceived(b"\x20\x02\x00\x01")  # 3.1.1: unacceptable protocol version
    failure = []
    d.addErrback(failure.append)
    assert failure and failure[0].check(ConnectionRefused)
    assert "set protocol = 3.1.1" in failure[0].getErrorMessage()


def test_own_publish_larger_than_maximum_packet_size_is_not_sent():
    """A PUBLISH over the broker's Maximum Packet Size raises PacketTooLarge and sends nothing."""
    from lorrygate.mqtt.protocol import PacketTooLarge

    broker = connected(maximum_packet_size=256)
    with pytest.raises(PacketTooLarge, match="256 bytes"):
        broker.protocol.publish("t/error.json", b"x" * 300, 1)
    assert broker.sent() == []
    broker.protocol.publish("t/error.json", b"x" * 100, 1)
    assert len(broker.sent()) == 1


def test_own_publishes_wait_for_the_receive_maximum():
    """With Receive Maximum 2, a third QoS 1 publish waits until one of the first two is acknowledged, and goes
    out with its properties; a fourth that still waits when the connection is lost fails."""
    broker = connected(receive_maximum=2)
    typed = {"content_type": "application/cbor", "user_property": (("device-id", "d-17"), ("zone", "a"))}
    acked = [broker.protocol.publish("t", b"%d" % n, 1, properties=typed if n >= 2 else None) for n in range(4)]
    first, second = broker.sent()
    assert [p.payload for p in (first, second)] == [b"0", b"1"]
    assert first.properties == {}
    broker.reply(PubAck(PUBACK, first.packet_id))
    [third] = broker.sent()
    assert acked[0].called and third.payload == b"2" and third.properties == typed
    failures: list = []
    acked[3].addErrback(failures.append)
    broker.protocol.connectionLost(Failure(ConnectionDone()))
    assert len(failures) == 1


def test_own_publishes_honour_maximum_qos():
    """A broker with Maximum QoS 0 gets QoS 0 publishes."""
    broker = connected(maximum_qos=0)
    broker.protocol.publish("t", b"x", 1)
    (packet,) = broker.sent()
    assert packet.qos == 0


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5], ids=["3.1.1", "5"])
@pytest.mark.parametrize("chunk", [1, 999, 65536, 1 << 24], ids=lambda n: f"{n}-byte-reads")
def test_a_payload_over_max_payload_is_hashed_not_kept(version, chunk):
    """A PUBLISH larger than max_payload arrives as its topic, size and SHA-256, without the payload;
    the packets around it arrive whole and the acknowledgements stay in order. Also one that comes whole in one
    read (it was stored as any message: the limit held only for a packet that spanned reads, so a max_payload
    lowered to keep large rows out of a database let those of up to a read's size through)."""
    import hashlib

    broker = Broker(version)
    broker.protocol.max_payload = 10_000
    broker.protocol.connect(codec.Connect("gw", version))
    broker.sent()
    broker.reply(codec.Connack(False, 0))
    big = bytes(range(256)) * 4000
    packets = [Publish("t/a", b"small", 1, packet_id=1), Publish("t/big", big, 1, packet_id=2),
               Publish("t/c", b"after", 1, packet_id=3)]
    data = b"".join(codec.encode(p, version) for p in packets)
    for start in range(0, len(data), chunk):
        broker.protocol.dataReceived(data[start:start + chunk])
    first, oversized, last = [p for p, _ in broker.received]
    assert first == packets[0] and last == packets[2]
    assert oversized.topic == "t/big" and oversized.payload == b"" and oversized.packet_id == 2
    assert oversized.oversize == (len(big), hashlib.sha256(big).hexdigest())
    for _, handle in broker.received:
        handle.ack()
    broker.clock.advance(0)
    assert [p.packet_id for p in broker.sent()] == [1, 2, 3]


def test_a_delivery_of_a_closed_connection_acknowledges_the_copy_sent_again_on_the_next():
    """Forwarded, the first delivery's ack releases the copy's PUBACK on the new connection, in its order;
    one that was done before the copy came acknowledges it at once."""
    first, second = Broker(), Broker()
    first.connect()
    first.reply(Publish("t", b"a", 1, packet_id=1), Publish("t", b"b", 1, packet_id=2))
    (_, held), (_, done) = first.received
    first.protocol.connectionLost(Failure(ConnectionDone()))
    done.ack()  # committed after the cut: its PUBACK went nowhere
    assert first.protocol.orphaned == [held, done]
    second.connect()
    second.reply(Publish("t", b"a", 1, dup=True, packet_id=1), Publish("t", b"b", 1, dup=True, packet_id=2))
    (_, copy_held), (_, copy_done) = second.received
    held.forward(copy_held)
    done.forward(copy_done)
    second.clock.advance(0)
    assert second.sent() == [], "the copy of 1 waits for the first delivery; 2 waits behind it"
    held.ack()
    second.clock.advance(0)
    assert second.sent() == [PubAck(PUBACK, 1), PubAck(PUBACK, 2)]
    assert second.protocol.unacked == 0


def source_after_a_cut():
    """An MQTT source whose first connection closed with packet 7 in flight, and a second connection."""
    from lorrygate.config.settings import BrokerSettings
    from lorrygate.sources.mqtt import MQTTSource

    handed = []
    source = MQTTSource("main", BrokerSettings(name="b", host="127.0.0.1"), ("t/#",), 1, handed.append, Clock())
    source.running = 1
    first, second = Broker(), Broker()
    first.connect()
    first.reply(Publish("t/x", b"a", 1, packet_id=7))
    _, held = first.received[0]
    first.protocol.connectionLost(Failure(ConnectionDone()))
    source._orphaned(first.protocol)
    second.connect()
    return source, held, second, handed


def test_the_copy_the_broker_sends_again_is_not_handed_over_twice():
    source, held, second, handed = source_after_a_cut()
    second.reply(Publish("t/x", b"a", 1, dup=True, packet_id=7))
    source._received(*second.received[0])
    assert handed == [] and source.redelivered_in_flight == 1 and source._away == {}
    held.ack()
    second.clock.advance(0)
    assert second.sent() == [PubAck(PUBACK, 7)]


def test_a_new_message_with_the_packet_id_of_one_in_flight_is_handed_over():
    """Without DUP it is not the message again (the broker gave that one up): handed over, and the id forgotten."""
    source, held, second, handed = source_after_a_cut()
    second.reply(Publish("t/x", b"new", 1, packet_id=7))
    source._received(*second.received[0])
    assert [message.payload for message in handed] == [b"new"] and source._away == {}


def test_a_connection_without_the_session_forgets_the_messages_in_flight():
    """CONNACK without session present: nothing comes again, and the packet ids start afresh."""
    from twisted.internet.defer import Deferred

    source, held, second, handed = source_after_a_cut()
    third = Broker()
    d = Deferred.fromCoroutine(source._establish(third.protocol, codec.Connect("gw", MQTT_3_1_1, clean_start=False)))
    third.sent()
    third.reply(codec.Connack(False, 0))
    (subscribe,) = third.sent()
    third.reply(codec.Suback(subscribe.packet_id, (1,)))
    assert d.called and source._away == {}

"""The channel router: routes, dead letters for bad input, table-name collisions."""

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from lorrygate.decoding import DecoderChain, JsonDecoder
from lorrygate.model import Channel, Message
from lorrygate.service.channel import ChannelRouter
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage
from lorrygate.topology import WanStrategy


class Exploding:
    name = "exploding"

    def match(self, topic):
        raise RuntimeError("user code bug")

    def table_for(self, address):
        raise AssertionError("unreachable")


def make(strategy=None, chain=None):
    clock = Clock()
    storage = MemoryStorage()
    batcher = Batcher(storage, clock, max_rows=1)
    channel = Channel("main", "b", ("#",), 1, "wan", ("json",), "s")
    router = ChannelRouter(channel, strategy or WanStrategy(), chain or DecoderChain((JsonDecoder(),)), batcher, clock)
    return router, storage, clock


def message(topic, payload=b'{"v": 1}'):
    return Message(topic, payload, 1, False, 1.0, "#")


def test_good_message_is_stored():
    """A routable, decodable message lands in its table."""
    router, storage, _ = make()
    router(message("r/n/g/d/data.json"))
    assert [str(table) for table in storage.tables] == ["r_n.g_d_sensors"]
    assert router.stats.routed == 1


def test_a_raising_user_strategy_is_a_dead_letter():
    """A strategy that raises does not stop the stream: the message is a dead letter naming the error."""
    router, storage, _ = make(Exploding())
    router(message("any/topic"))
    (dead,) = storage.dead_letters
    assert dead.stage == "topology" and "strategy 'exploding' raised RuntimeError('user code bug')" in dead.error
    assert router.stats.unmatched == 1


def test_a_message_its_source_could_not_read_is_a_dead_letter_with_the_sources_reason():
    """An AMQP body that says gzip and is none: the source hands it over as it came with the reason
    (`Message.refused`); no decoder gets it, and the next message is stored."""
    router, storage, _ = make()
    refused = message("r/n/g/d/data.json", b'{"v": 1}')
    refused.refused = "content_encoding gzip, but the body is no gzip: incorrect header check"
    router(refused)
    router(message("r/n/g/d/data.json"))
    (dead,) = storage.dead_letters
    assert (dead.stage, dead.error, dead.message.payload) == ("decode", refused.refused, b'{"v": 1}')
    assert len(storage.tables) == 1 and router.stats.undecodable == 1


def test_collisions_are_counted_and_logged():
    """Two addresses that sanitize to one table are counted once and logged with both topics."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        router, storage, _ = make()
        router(message("r/n/a-b/x/data.json"))
        router(message("r/n/a_b/x/data.json"))
        router(message("r/n/a_b/x/data.json"))
        router(message("r/n/a-b/x/event.json"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert router.stats.collisions == 1
    texts = [e["log_format"].format(**e) for e in events if "sanitize to the same table" in e.get("log_format", "")]
    assert texts == [
        "channel main: topic 'r/n/a_b/x/data.json' and topic 'r/n/a-b/x/data.json' are different addresses "
        "that sanitize to the same table r_n.a_b_x_sensors; their rows share it"
    ]


def test_the_status_accounts_for_every_message_received():
    """Two empty payloads showed as "3 received, 1 routed, 0 unmatched, 0 undecodable": two messages gone without a
    word. Now the status says what became of each, and tells the collisions it logged."""
    from lorrygate.control_client import render_status

    router, storage, _ = make()
    for topic, payload in [("r/n/a-b/x/data.json", b'{"v": 1}'), ("r/n/a_b/x/data.json", b""),
                           ("r/n/a_b/x/data.json", b" \n"), ("r/n/a_b/x/data.json", b'{"v": 2}')]:
        router(message(topic, payload))
    big = message("r/n/a_b/x/data.json")
    big.oversize = (9_000_000, "ab" * 32)
    router(big)
    channel = dict(router.stats.asdict(), name="main", last_ignored=router.why_ignored())
    text = render_status({"config": "gw.ini", "sources": [], "storages": [], "channels": [channel]})
    assert text.splitlines()[-1] == (
        "channel main: 5 received, 2 routed, 0 unmatched, 0 undecodable, 2 empty (nothing to store), 1 over the size "
        "limit (dead letters by reference), 1 table name collisions (two addresses, one table: see the log)")


def test_a_collision_is_two_addresses_of_one_table_not_two_tags_of_its_rows():
    """Every Meshtastic gateway beyond the first on a mesh channel was logged as a collision, although the gateway
    is a tag of the channel's rows; with the topic strategy, plant/a-b and plant/a_b shared a table unsaid."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        mesh, _ = configured("meshtastic")
        for gateway in ("!a1b2c3d4", "!ffff0000"):
            mesh.deliver(message(f"msh/EU_868/2/e/LongFast/{gateway}", b"\x00"))
        trees, _ = configured("topic")
        for topic in ("plant/a-b", "plant/a_b", "plant/a_b", "plant/c/d", "plant/c-d"):
            trees.deliver(message(topic))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (mesh.stats.collisions, trees.stats.collisions) == (0, 2)
    texts = [e["log_format"].format(**e) for e in events if "sanitize to the same table" in e.get("log_format", "")]
    assert texts == ["channel c: topic 'plant/a_b' and topic 'plant/a-b' are different addresses that sanitize to "
                     "the same table plant.a_b; their rows share it",
                     "channel c: topic 'plant/c-d' and topic 'plant/c/d' are different addresses that sanitize to "
                     "the same table plant.c_d; their rows share it"]


def test_a_readers_look_at_a_topics_table_is_not_a_message():
    """The HTTP source's export asks which table a topic's rows are in: nothing is cached, no collision is
    counted (a GET of another spelling of an address must not make the fleet's real topic look like one)."""
    router, storage, _ = make()
    router(message("r/n/a-b/x/data.json"))
    routes = dict(router._routes)
    address, table, why = router.table_for_topic("r/n/a_b/x/data.json")
    assert (address.gateway, str(table), why) == ("a_b", "r_n.a_b_x_sensors", None)
    assert router.table_for_topic("r/n") == (None, None, "it does not fit the topology")
    assert router._routes == routes and router.stats.collisions == 0 and router.stats.received == 1


def test_complaints_are_rate_limited_per_problem():
    """The same problem is logged once per interval; different problems each get their line."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        router, storage, clock = make()
        for _ in range(5):
            router(message("r/n/g/d/data.json", b"nope"))
        router(message("short"))
        clock.advance(6)
        router(message("r/n/g/d/data.json", b"nope"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e["log_format"].format(**e) for e in events if "dead-letter" in e.get("log_format", "")]
    assert len(lines) == 3
    assert "(4 more like it since the last report)" in lines[2]
    assert len(storage.dead_letters) == 7


def test_own_reports_are_recognised_on_any_topic_and_acknowledged():
    """A report of this channel comes back on a rewritten topic (RabbitMQ: a/error/json): not stored,
    not reported again, and acknowledged with the next commit although it has no rows."""
    from tests.doubles import Ack

    router, storage, clock = make()
    reports = []
    router.publish = lambda topic, payload: reports.append((topic, payload))
    router(message("r/n/g/d/data.json", b"not json"))
    clock.advance(0)
    ((topic, payload),) = reports
    ack = Ack()
    echoed = Message("r/n/g/d/error/json", payload, 1, False, 2.0, "#", ack)
    router(echoed)
    clock.advance(0)
    assert router.stats.own_reports == 1 and len(reports) == 1 and len(storage.dead_letters) == 1
    assert ack.count == 1, "a message without rows is acknowledged too"


def test_a_devices_own_report_is_not_taken_for_ours():
    """A device's error.json that says it comes from lorrygate, without this channel's mark, is stored."""
    router, storage, clock = make()
    router(message("r/n/g/d/error.json", b'{"reporter": "lorrygate", "message": "from a device"}'))
    clock.advance(0)
    assert router.stats.own_reports == 0 and storage.tables


def test_an_error_report_topic_too_long_for_mqtt_is_not_published():
    """A rejected message whose report topic would pass MQTT's 65,535 bytes is counted, not published."""
    router, storage, clock = make()
    reports = []
    router.publish = lambda topic, payload: reports.append(topic)
    router(message("a/" * 33_000 + "data.json", b"not json"))
    clock.advance(0)
    assert reports == [] and router.stats.reports_skipped == 1 and len(storage.dead_letters) == 1


def test_nothing_a_message_carries_makes_the_router_raise():
    """An exception from anywhere in routing becomes a dead letter; the router does not raise."""
    router, storage, clock = make()

    class Broken:
        def decode(self, message, address):
            raise MemoryError("out of luck")

    router.chain = Broken()
    router(message("r/n/g/d/data.json"))
    clock.advance(0)
    (dead,) = storage.dead_letters
    assert dead.stage == "internal" and "MemoryError" in dead.error


def test_a_decoder_that_never_answers_is_a_dead_letter_after_decode_timeout():
    """A decoder whose Deferred never fires makes its message a dead letter after decode_timeout; the stream goes on."""
    from twisted.internet.defer import Deferred

    router, storage, clock = make()

    class Silent:
        name = "silent"

        def decode(self, message, address):
            return Deferred()

    router.chain = DecoderChain((Silent(),))
    router(message("r/n/g/d/data.json"))
    clock.advance(29)
    assert storage.dead_letters == []
    clock.advance(2)
    (dead,) = storage.dead_letters
    assert "no decoder answered within decode_timeout = 30.0 s" in dead.error
    assert router.settle().called


def test_an_oversized_message_is_a_dead_letter_by_reference():
    """A message over max_payload (size and hash, no payload) is a dead letter that names both."""
    router, storage, clock = make()
    router(Message("r/n/g/d/data.json", b"", 1, False, 1.0, "#", oversize=(100_000_000, "ab" * 32)))
    clock.advance(0)
    (dead,) = storage.dead_letters
    assert dead.stage == "size" and "100000000 bytes" in dead.error and "sha256 " + "ab" * 32 in dead.error
    assert dead.message.payload == b"" and router.stats.too_large == 1


def test_more_records_than_max_records_is_a_dead_letter():
    """A payload that decodes into more than max_records records is a dead letter; none of its rows are written."""
    import json

    import attrs

    router, storage, clock = make()
    router.channel = attrs.evolve(router.channel, max_records=10)
    router(message("r/n/g/d/data.json", json.dumps([{"v": n} for n in range(11)]).encode()))
    clock.advance(0)
    (dead,) = storage.dead_letters
    assert "11 records from one message, more than max_records = 10" in dead.error and not storage.tables


def test_complaints_about_topics_are_rate_limited_whatever_the_topic():
    """2,000 topics that fit no route make one warning, not 2,000, though each reason quotes its topic."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        router, storage, clock = make()
        for n in range(2000):
            router(message(f"bad-{n}"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if "does not fit the topology" in e.get("log_format", "").format(**e)
                or e.get("stage") == "topology"]
    assert router.stats.unmatched == 2000 and len(warnings) == 1


def test_complaints_about_payloads_of_one_kind_are_one_whatever_the_values_they_quote():
    """A device that sends 500 payloads nothing decodes, each reason quoting its own values (JSON's column of
    the error, a text value): one warning in the interval, not 500; another kind of problem gets its line."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        router, storage, clock = make()
        for n in range(500):
            router(message("r/n/g/d/data.json", b'{"t": 1' + b" " * (n % 40) + f"'{n}".encode()))
        router(message("short"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e["log_format"].format(**e) for e in events if "dead-letter" in e.get("log_format", "")]
    assert len({dead.error for dead in storage.dead_letters if dead.stage == "decode"}) == 40  # (they differ)
    assert len(lines) == 2 and len(storage.dead_letters) == 501


def test_suppressed_rejections_are_summarized_with_a_count_and_an_example():
    """Rejections the rate limit kept quiet are logged once more, with their count and the latest of them, when asked."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        router, storage, clock = make()
        for n in range(5):
            router(message(f"bad-{n}"))
        router.summarize()
        router.summarize()
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [e["log_format"].format(**e) for e in events if "more message(s) rejected" in e.get("log_format", "")]
    assert len(texts) == 1 and "4 more message(s) rejected at topology" in texts[0] and "'bad-4'" in texts[0]
    # the reason as it was, not the kind that counted it (which masks the numbers it quotes)
    assert "got 1 level(s)" in texts[0] and "#" not in texts[0], texts[0]


def test_commands_and_ignored_topics_are_acknowledged_and_counted_only():
    """A command topic of the strategy and a topic matching the channel's ignore filters: acknowledged, counted,
    no dead letter, no report."""

    from lorrygate.topology.fleets import Zigbee2MqttStrategy
    from tests.doubles import Ack

    clock = Clock()
    storage = MemoryStorage()
    batcher = Batcher(storage, clock)
    channel = Channel("main", "b", ("#",), 1, "zigbee2mqtt", ("json",), "s", ignore=("zigbee2mqtt/bridge/logging",))
    router = ChannelRouter(channel, Zigbee2MqttStrategy(), DecoderChain((JsonDecoder(),)), batcher, clock)
    reports = []
    router.publish = lambda topic, payload: reports.append(topic)
    acks = [Ack(), Ack()]
    router(Message("zigbee2mqtt/Kitchen Lamp/set", b'{"state": "ON"}', 1, False, 1.0, "#", acks[0]))
    router(Message("zigbee2mqtt/bridge/logging", b'{"level": "info"}', 1, False, 1.0, "#", acks[1]))
    clock.advance(0)
    assert router.stats.ignored == 2 and not storage.dead_letters and not storage.tables and not reports
    assert [ack.count for ack in acks] == [1, 1]


def test_reports_go_only_where_the_convention_expects_them():
    """Kotori's WAN channels report rejections on the broker; vendor channels do not, unless error_topic says so."""
    import attrs

    from lorrygate.topology.fleets import TasmotaStrategy

    for strategy_name, setting, expected in (("wan", None, True), ("tasmota", None, False), ("tasmota", True, True),
                                             ("wan", False, False)):
        router, storage, clock = make(TasmotaStrategy() if strategy_name == "tasmota" else None)
        router.channel = attrs.evolve(router.channel, strategy=strategy_name, error_topic=setting)
        reports = []
        router.publish = lambda topic, payload: reports.append(topic)
        topic = "tele/plug/SENSOR" if strategy_name == "tasmota" else "r/n/g/d/data.json"
        router(message(topic, b"not json"))
        clock.advance(0)
        assert bool(reports) is expected, (strategy_name, setting)


def test_an_empty_payload_is_acknowledged_and_counted_not_a_dead_letter():
    """Clearing a retained message sends every subscriber an empty payload (MQTT 3.1.1: without the retain flag):
    no data, not bad input. A blank payload too; a payload that is not empty is still a dead letter."""
    from lorrygate.decoding import RawDecoder
    from tests.doubles import Ack

    router, storage, clock = make()
    reports = []
    router.publish = lambda topic, payload: reports.append(topic)
    acks = [Ack(), Ack(), Ack(), Ack()]
    for ack, payload in zip(acks, (b"", b" \r\n", b"\xef\xbb\xbf", b"x")):
        router(Message("r/n/g/d/data.json", payload, 1, False, 1.0, "#", ack))
    clock.advance(0)
    assert router.stats.empty == 3 and router.stats.undecodable == 1
    assert [dead.message.payload for dead in storage.dead_letters] == [b"x"] and not storage.tables
    assert reports == ["r/n/g/d/error.json"]
    assert [ack.count for ack in acks] == [1, 1, 1, 1]

    # a decoder that takes an empty payload still gets it
    router, storage, clock = make(chain=DecoderChain((JsonDecoder(), RawDecoder())))
    router(message("r/n/g/d/data.json", b""))
    clock.advance(0)
    assert router.stats.empty == 0 and [str(table) for table in storage.tables] == ["r_n.g_d_sensors"]


def configured(strategy: str, sections: str = ""):
    """A router made as the gateway makes it, from a configuration of one channel of ``strategy``, into a
    collector."""
    from lorrygate.config import loads
    from lorrygate.service.channel_service import make_router
    from lorrygate.storage.batch import Collector

    settings = loads(f"[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n{sections}[channel:c]\nsource=b\ntopics=#\n"
                     f"storage=s\nstrategy={strategy}\n")
    collector = Collector()
    router, _ = make_router(settings, settings.channels[0], (collector,), Clock())
    return router, collector


def stored_rows(collector) -> list:
    """(table, fields, tags) of each record the router stored, in order."""
    return [(str(entry.table), record.fields, record.tags) for entry in collector.entries
            if entry.table is not None for record in entry.records]


def test_zigbee2mqtts_attribute_and_json_stores_the_state_and_ignores_the_copies_of_its_values():
    """advanced.output: attribute_and_json publishes a device's JSON state and each value again in a topic of
    its own: every copy was a dead letter (one a value an update). A friendly name may have a /, so the payload
    tells a copy from a device's state."""
    router, collector = configured("z2m", "[strategy:z2m]\ntype = zigbee2mqtt\noutput = attribute_and_json\n")
    for topic, payload in [("zigbee2mqtt/kitchen", b'{"temperature": 21.5, "humidity": 48}'),
                           ("zigbee2mqtt/kitchen/temperature", b"21.5"),
                           ("zigbee2mqtt/kitchen/humidity", b"48"),
                           ("zigbee2mqtt/floor 1/hall/motion", b'{"occupancy": true}'),  # a name with /
                           ("zigbee2mqtt/floor 1/hall/motion/occupancy", b"true"),
                           ("zigbee2mqtt/lamp/color-x", b"0.3"),
                           ("zigbee2mqtt/lamp/state", b"ON")]:
        router.deliver(message(topic, payload))
    stored = [(str(entry.table), [record.fields for record in entry.records]) for entry in collector.entries
              if entry.table is not None]
    assert stored == [("zigbee2mqtt.kitchen_sensors", [{"temperature": 21.5, "humidity": 48}]),
                      ("zigbee2mqtt.floor_1_hall_motion_sensors", [{"occupancy": True}])]
    assert (router.stats.ignored, collector.dead) == (5, [])
    assert router.last_ignored.startswith("a copy of a device's value in a topic of its own")


def test_home_assistants_statestream_stores_states_as_numbers_and_unavailable_as_no_value():
    """mqtt_statestream publishes an entity's state as text, its attributes as JSON. A numeric sensor is
    ``unavailable`` until its first state (and whenever its device is away): as text that made the column TEXT
    (SQLite) and each later "unavailable" a dead letter (PostgreSQL)."""
    router, collector = configured("homeassistant")
    base = "homeassistant/sensor/kitchen_temperature"
    for topic, payload in [(f"{base}/state", b"unavailable"), (f"{base}/state", b"21.5"),
                           (f"{base}/unit_of_measurement", '"°C"'.encode()), (f"{base}/friendly_name", b'"Kitchen"'),
                           (f"{base}/last_updated", b"2024-06-01T12:00:00.123456+00:00"),
                           (f"{base}/forecast", b'{"high": 24, "low": 12}'), (f"{base}/state", b"unknown"),
                           ("homeassistant/switch/kettle/state", b"on"),
                           ("homeassistant/sensor/kitchen_temperature/config", b'{"name": "Kitchen"}')]:
        router.deliver(message(topic, payload))
    stored = [(str(entry.table), record.fields) for entry in collector.entries if entry.table is not None
              for record in entry.records]
    table = "homeassistant.sensor_kitchen_temperature_sensors"
    assert stored == [(table, {"state": None}), (table, {"state": 21.5}), (table, {"unit_of_measurement": "°C"}),
                      (table, {"friendly_name": "Kitchen"}),
                      (table, {"last_updated": "2024-06-01T12:00:00.123456+00:00"}),
                      (table, {"forecast.high": 24, "forecast.low": 12}), (table, {"state": None}),
                      ("homeassistant.switch_kettle_sensors", {"state": "on"})]
    assert (router.stats.ignored, collector.dead) == (1, [])
    router.deliver(message(f"{base}/icon", b"mdi:thermometer"))  # not JSON, as Statestream writes attributes
    [dead] = collector.dead
    assert "attribute 'icon' is not JSON, as Statestream writes attributes" in dead.error


def test_owntracks_locations_are_stored_at_the_time_the_phone_took_them():
    """The app queues locations while the phone is offline and sends them later: ``tst`` is when each was
    taken (it was a field, and every row had the time the gateway received it, hours later)."""
    router, collector = configured("owntracks")
    for topic, payload in [
        ("owntracks/jane/phone", b'{"_type": "location", "tid": "JP", "lat": 52.52, "lon": 13.405, "acc": 12, '
                                 b'"batt": 81, "conn": "m", "tst": 1717243200, "created_at": 1717250400}'),
        ("owntracks/jane/phone/event", b'{"_type": "transition", "event": "enter", "desc": "Home", "lat": 52.52, '
                                       b'"lon": 13.405, "tst": 1717243260, "wtst": 1700000000, "t": "c"}'),
        ("owntracks/jane/phone", b'{"_type": "lwt", "tst": 1717243300}'),
        ("owntracks/jane/phone/cmd", b'{"_type": "cmd", "action": "reportLocation"}'),
    ]:
        router.deliver(message(topic, payload))
    stored = [(str(entry.table), record.time // 10**9, record.fields) for entry in collector.entries
              if entry.table is not None for record in entry.records]
    assert stored == [
        ("owntracks.jane_phone_sensors", 1717243200, {"tid": "JP", "lat": 52.52, "lon": 13.405, "acc": 12, "batt": 81,
                                                      "conn": "m", "created_at": 1717250400}),
        ("owntracks.jane_phone_events", 1717243260, {"_type": "transition", "event": "enter", "desc": "Home",
                                                     "lat": 52.52, "lon": 13.405, "wtst": 1700000000, "t": "c"}),
        ("owntracks.jane_phone_sensors", 1717243300, {"_type": "lwt"}),
    ]
    assert router.stats.ignored == 1
    router.deliver(message("owntracks/jane/phone", b'{"_type": "encrypted", "data": "AbCd"}'))
    [dead] = collector.dead
    assert "an encrypted OwnTracks payload" in dead.error and "clear the key in the app" in dead.error


def test_a_decoder_of_your_own_may_ignore_a_message_its_payload_tells_carries_no_measurement():
    """A heartbeat on a data topic: ``raise Ignored(...)`` in a function decoder (also an async one) acknowledges
    and counts it, as a command topic is; no dead letter."""

    from lorrygate.decoding.functions import FunctionDecoder
    from lorrygate.errors import Ignored

    def heartbeats(message, address):
        if message.payload == b"ping":
            raise Ignored("heartbeats", message.topic, "a heartbeat, no reading")
        return None

    async def later(message, address):
        return heartbeats(message, address)

    for function in (heartbeats, later):
        chain = DecoderChain((FunctionDecoder("heartbeats", function), JsonDecoder()))
        router, storage, clock = make(chain=chain)
        router(message("r/n/g/d/data.json", b"ping"))
        router(message("r/n/g/d/data.json", b'{"v": 1}'))
        clock.advance(1)
        assert (router.stats.ignored, router.stats.routed, router.stats.undecodable) == (1, 1, 0), function
        assert router.last_ignored == "a heartbeat, no reading"
        assert not storage.dead_letters


def test_a_source_that_answers_its_sender_is_told_why_nothing_was_stored():
    """A command topic, a topic of the channel's ignore filters, a decoder's Ignored and an empty payload tell
    an acknowledgement that listens (the HTTP source's) why nothing was stored; a stored message tells nothing."""
    from lorrygate.decoding.functions import FunctionDecoder
    from lorrygate.errors import Ignored
    from lorrygate.topology.fleets import Zigbee2MqttStrategy
    from tests.doubles import Ack

    class Telling(Ack):
        def __init__(self):
            super().__init__()
            self.why = None

        def not_stored(self, why):
            self.why = why

    def heartbeats(message, address):
        if message.payload == b"ping":
            raise Ignored("heartbeats", message.topic, "a heartbeat, no reading")
        return None

    clock = Clock()
    batcher = Batcher(MemoryStorage(), clock)
    channel = Channel("main", "b", ("#",), 1, "zigbee2mqtt", ("json",), "s", ignore=("zigbee2mqtt/bridge/logging",))
    chain = DecoderChain((FunctionDecoder("heartbeats", heartbeats), JsonDecoder()))
    router = ChannelRouter(channel, Zigbee2MqttStrategy(), chain, batcher, clock)
    sent = [("zigbee2mqtt/Kitchen Lamp/set", b'{"state": "ON"}'), ("zigbee2mqtt/bridge/logging", b"{}"),
            ("zigbee2mqtt/Kitchen Lamp", b"ping"), ("zigbee2mqtt/Kitchen Lamp", b""),
            ("zigbee2mqtt/Kitchen Lamp", b'{"state": "ON"}')]
    acks = [Telling() for _ in sent]
    for (topic, payload), ack in zip(sent, acks):
        router(Message(topic, payload, 1, False, 1.0, "#", ack))
    clock.advance(0)
    assert [ack.why for ack in acks] == [
        "ignored: zigbee2mqtt/<friendly name>/set or /get: a command, not a measurement",
        "ignored: matches the channel's ignore filters",
        "ignored: a heartbeat, no reading",
        "an empty payload: nothing to store",
        None,
    ]
    assert [ack.count for ack in acks] == [1, 1, 1, 1, 1]


def test_esphome_states_are_fields_of_the_devices_table_and_a_lights_json_is_under_its_name():
    """ESPHome's MQTT client publishes a state a topic: under ``topic`` every sensor was a table of its own
    (``livingroom.sensor_temperature_state``) and a light's JSON state's keys were the fields, so two lights
    shared one ``state`` column. ``nan`` before a sensor's first reading is no value; commands and discovery are
    ignored; the birth and the log lines are events."""
    router, collector = configured("esphome")
    for topic, payload in [("livingroom/status", b"online"),
                           ("livingroom/sensor/temperature/state", b"nan"),
                           ("livingroom/sensor/temperature/state", b"21.5"),
                           ("livingroom/binary_sensor/motion/state", b"ON"),
                           ("livingroom/light/ceiling/state", b'{"state": "ON", "brightness": 255}'),
                           ("livingroom/light/desk/state", b'{"state": "OFF"}'),
                           ("livingroom/light/desk/command", b'{"state": "ON"}'),
                           ("livingroom/climate/thermostat/mode/state", b"heat"),
                           ("livingroom/text_sensor/note/state", b"{not json"),
                           ("homeassistant/sensor/livingroom/temperature/config", b'{"name": "Temperature"}')]:
        router.deliver(message(topic, payload))
    stored = stored_rows(collector)
    table = "esphome.livingroom_sensors"
    assert stored == [("esphome.livingroom_events", {"status": "online"}, {}),
                      (table, {"temperature": None}, {"component": "sensor"}),
                      (table, {"temperature": 21.5}, {"component": "sensor"}),
                      (table, {"motion": "ON"}, {"component": "binary_sensor"}),
                      (table, {"ceiling.state": "ON", "ceiling.brightness": 255}, {"component": "light"}),
                      (table, {"desk.state": "OFF"}, {"component": "light"}),
                      (table, {"thermostat.mode": "heat"}, {"component": "climate"}),
                      (table, {"note": "{not json"}, {"component": "text_sensor"})]
    assert (router.stats.ignored, collector.dead) == (2, [])


def test_home_assistants_birth_and_last_will_beside_its_statestream_is_an_event():
    """Home Assistant publishes ``online`` to ``homeassistant/status`` at each start (``offline`` as it stops), the
    prefix its Statestream shares by default: each was a dead letter ("expected homeassistant/<domain>/...")."""
    router, collector = configured("homeassistant")
    router.deliver(message("homeassistant/status", b"online"))
    router.deliver(message("homeassistant/status", b"offline"))
    stored = [(str(entry.table), record.fields) for entry in collector.entries if entry.table is not None
              for record in entry.records]
    assert stored == [("homeassistant.status_events", {"status": "online"}),
                      ("homeassistant.status_events", {"status": "offline"})]
    assert collector.dead == []


def test_a_templates_captures_that_name_no_table_are_tags_of_the_rows():
    """``plant/{line}/{node}/{field}`` into a table ``{node}``: line-1's and line-2's press-7 were one table with
    nothing to tell them apart (a collision warning, and the line lost). The captures the schema and table do
    not name are tags, as Telegraf's topic_parsing tags them (a field of the record's own keeps its name); no
    collision is counted, since the tag tells them apart. A capture that names the table is no tag."""
    from lorrygate.decoding import ValueDecoder
    from lorrygate.topology.template import TemplateStrategy

    strategy = TemplateStrategy.from_texts("plant", "plant/{site}/{line}/{node}/{field}", "plant_{site}", "{node}")
    assert strategy.tag_names == {"line"}
    router, storage, _ = make(strategy, DecoderChain((JsonDecoder(), ValueDecoder())))
    router(message("plant/north/line-1/press-7/temperature", b"21.5"))
    router(message("plant/north/line-2/press-7/temperature", b"22.5"))
    router(message("plant/north/line-2/press-7/state", b'{"state": "ok", "line": "L2 (renamed)"}'))
    ((table, records),) = storage.tables.items()
    assert str(table) == "plant_north.press_7"
    assert [(record.fields, record.tags) for record in records] == [
        ({"temperature": 21.5}, {"line": "line-1"}), ({"temperature": 22.5}, {"line": "line-2"}),
        ({"state": "ok", "line": "L2 (renamed)"}, {"line": "line-2"})]
    assert router.stats.collisions == 0
    # an unnamed part of the address alike
    strategy = TemplateStrategy.from_texts("lan", "{realm}/{node}/{field}", "sensors", "{node}")
    assert strategy.tag_names == {"realm"}
    router, storage, _ = make(strategy, DecoderChain((ValueDecoder(),)))
    router(message("home/kitchen/temperature", b"21.5"))
    ((_, (record,)),) = storage.tables.items()
    assert record.tags == {"realm": "home"}


def test_describe_names_the_tags_a_topic_gives(tmp_path):
    from lorrygate.config import loads
    from lorrygate.pipeline.describe import describe

    settings = loads(f"[broker:b]\nhost = localhost\n[storage:db]\nurl = sqlite:///{tmp_path}/db.sqlite\n"
                     "[strategy:plant]\ntopic = plant/{line}/{node}/{field}\nschema = plant\ntable = {node}\n"
                     "[channel:main]\ntopics = plant/#\nstrategy = plant\n")
    text = describe(settings, ["plant/line-1/press-7/temperature"], ())
    assert "    tags from the topic: line=line-1" in text.splitlines()
    assert "tags from the topic" not in describe(settings, ["plant/x"], ())


def test_an_mqtt5_content_type_picks_its_decoder_first():
    """A CBOR payload on a tree without a convention (the ``topic`` strategy's chain has no cbor) was a dead
    letter; its publisher's Content Type (MQTT 5) puts the type's decoder first. A type the payload does not
    fit, or one no decoder has, leaves the rest of the chain to read it."""
    import cbor2

    from lorrygate.decoding import DECODERS, ValueDecoder
    from lorrygate.topology.anytopic import TopicStrategy

    router, storage, _ = make(TopicStrategy(), DecoderChain((JsonDecoder(), ValueDecoder())))
    router.suffix_decoders = {"cbor": DECODERS["cbor"](), "json": JsonDecoder()}
    payload = cbor2.dumps({"temperature": 21.5})
    for content_type in ("application/cbor", "Application/CBOR; charset=binary", None, "text/plain"):
        msg = message("home/kitchen", payload)
        msg.content_type = content_type
        router(msg)
    msg = message("home/kitchen", b'{"humidity": 48}')
    msg.content_type = "application/cbor"  # wrong: json, behind it, reads it
    router(msg)
    ((_, records),) = storage.tables.items()
    assert [record.fields for record in records] == [{"temperature": 21.5}, {"temperature": 21.5}, {"humidity": 48}]
    assert len(storage.dead_letters) == 2  # no type, and text/plain: as before
    assert len(router._typed) == 1  # by the decoder's name: the two spellings of cbor are one


def test_a_json_content_type_leaves_the_json_vendor_decoders_in_front():
    """``application/json`` says the payload is JSON; the vendor decoders in front of json read JSON too, and more
    of it: Tasmota's SENSOR (its Time), the airrohr firmware's list of values, Kepware's records. A publisher that
    sets the type (MQTT 5 clients often do, and relays now pass it on) had json read them as one plain object. A
    type of another format still goes first, and a chain whose first decoder reads no JSON gets json first."""
    sensor = b'{"Time":"2024-06-01T12:00:00","AM2301":{"Temperature":21.5}}'
    airrohr = b'{"esp8266id":"1","sensordatavalues":[{"value_type":"temperature","value":"21.50"}]}'
    kepware = b'{"timestamp":1717243200000,"values":[{"id":"ch.dev.t","v":21.5,"q":true,"t":1717243200000}]}'
    for strategy, topic, payload, fields in [
            ("tasmota", "tele/kitchen/SENSOR", sensor, {"AM2301.Temperature": 21.5}),
            ("wan", "luftdaten/t/a/n/airrohr.json", airrohr, {"temperature": 21.5}),
            ("topic", "plant/kepware", kepware, {"ch.dev.t": 21.5})]:
        router, collector = configured(strategy)
        for content_type in (None, "application/json"):
            msg = message(topic, payload)
            msg.content_type = content_type
            router.deliver(msg)
        rows = [row[1] for row in stored_rows(collector)]
        assert rows == [fields, fields], (strategy, rows)
    from lorrygate.decoding import DECODERS
    from lorrygate.service.channel import JSON_READERS

    assert JSON_READERS <= set(DECODERS)  # (each a decoder's name)
    router, collector = configured("wan")
    msg = message("r/n/g/d/data.csv", b'{"a": 1}')  # the suffix says CSV, the publisher JSON: JSON it is
    msg.content_type = "application/json"
    router.deliver(msg)
    assert [row[1] for row in stored_rows(collector)] == [{"a": 1}]


def test_a_payload_in_the_charset_its_content_type_names_is_read_in_it():
    """A device that sends Latin-1 over MQTT 5 (or AMQP, or Kafka) and says so (``application/json;
    charset=ISO-8859-1``) had ``°C`` refused as bytes that are not UTF-8: a dead letter. It is read in its
    charset. A payload that is not text of the charset it names is a dead letter with its bytes as they came
    and its type as it was sent; one read in its charset and refused all the same is kept in UTF-8 without
    the charset, so that a replay does not read it in the charset a second time."""
    from lorrygate.decoding import ValueDecoder
    from lorrygate.topology.anytopic import TopicStrategy

    router, storage, _ = make(TopicStrategy(), DecoderChain((JsonDecoder(), ValueDecoder())))
    for content_type, payload in [
            ("application/json; charset=ISO-8859-1", '{"unit": "°C"}'.encode("latin-1")),
            ('Application/JSON;Charset="windows-1252"', '{"unit": "°C"}'.encode("cp1252")),
            ("text/plain; charset=utf-16", "°C".encode("utf-16")),
            ("application/json; charset=utf-8", '{"unit": "°C"}'.encode()),
            ("application/json; charset=zlib", '{"unit": "°C"}'.encode()),  # a codec, not a charset: UTF-8
    ]:
        msg = message("home/kitchen", payload)
        msg.content_type = content_type
        router(msg)
    ((_, records),) = storage.tables.items()
    assert [record.fields for record in records] == [{"unit": "°C"}, {"unit": "°C"}, {"value": "°C"},
                                                     {"unit": "°C"}, {"unit": "°C"}]
    assert storage.dead_letters == []
    cut = '{"unit": "°C"}'.encode("utf-16")[:-1]
    msg = message("home/kitchen", cut)
    msg.content_type = "application/json; charset=utf-16"
    router(msg)
    msg = message("home/kitchen", '{"unit":\n°C}'.encode("latin-1"))
    msg.content_type = "application/json; q=1; charset=latin-1"
    router(msg)
    first, second = storage.dead_letters
    assert (first.message.payload, first.message.content_type) == (cut, "application/json; charset=utf-16")
    assert (second.message.payload, second.message.content_type) == ('{"unit":\n°C}'.encode(), "application/json; q=1")


def test_zigbee2tasmota_reports_are_rows_of_the_bridges_table_a_zigbee_device_each():
    """A Zigbee2Tasmota bridge reports what its Zigbee devices sent as ``ZbReceived`` on its SENSOR topic, with no
    ``Time``: the json decoder made ``ZbReceived.0x8F20.Temperature`` a column, one a device and attribute, until the
    table ran out of columns; with SetOption89 (a topic a device) every report was a dead letter. Each is a row of
    the bridge's table now, the attributes its fields, the device's short address and name its tags, whatever of
    the options (friendly name as key, no wrapper, no address key, older versions without "Device") is set."""
    router, collector = configured("tasmota")
    kitchen = b'"Device":"0x8F20","Name":"Kitchen","Temperature":21.5,"Endpoint":1,"LinkQuality":88'
    for topic, payload in [
            ("tele/zbbridge/SENSOR", b'{"ZbReceived":{"0x8F20":{' + kitchen + b"}}}"),
            ("tele/zbbridge/SENSOR", b'{"ZbReceived":{"Kitchen":{' + kitchen + b"}}}"),              # SetOption83
            ("tele/zbbridge/8F20/SENSOR", b'{"ZbReceived":{"0x8F20":{' + kitchen + b"}}}"),          # SetOption89
            ("tele/zbbridge/Kitchen/SENSOR", b'{"ZbReceived":{"Kitchen":{' + kitchen + b"}}}"),      # SetOption112
            ("tele/zbbridge/SENSOR", b'{"0x8F20":{' + kitchen + b"}}"),                              # SetOption100
            ("tele/zbbridge/SENSOR", b'{"ZbReceived":{' + kitchen + b"}}"),                          # SetOption119
            ("tele/zbbridge/8F20/ZbReceived", b"{" + kitchen + b"}"),                                # SetOption118
            ("tele/zbbridge/SENSOR", b'{"Time":"2024-06-01T12:00:00","ZbReceived":{"0x8F20":{' + kitchen + b"}}}"),
            ("tele/zbbridge/SENSOR", b'{"ZbReceived":{"0x4773":{"Power":true,"LinkQuality":52}}}'),  # older
            ("tele/zbbridge/SENSOR", b'{"ZbReceived":{"Remote":{"Device":"0xF72F","0006!02":"","Power":2}}}'),
            ("tele/zbbridge/RESULT", b'{"ZbState":{"Status":30,"ShortAddr":"0x8F20"}}')]:
        router.deliver(message(topic, payload))
    stored = [(str(entry.table), record.time == 1_717_243_200 * 10**9, record.fields, record.tags)
              for entry in collector.entries if entry.table is not None for record in entry.records]
    table = "tasmota.zbbridge_sensors"
    row = (table, False, {"Temperature": 21.5, "Endpoint": 1, "LinkQuality": 88}, {"Device": "0x8F20", "Name": "Kitchen"})
    assert stored == [row] * 7 + [
        (table, True, {"Temperature": 21.5, "Endpoint": 1, "LinkQuality": 88}, {"Device": "0x8F20", "Name": "Kitchen"}),
        (table, False, {"Power": True, "LinkQuality": 52}, {"Device": "0x4773"}),
        (table, False, {"0006!02": "", "Power": 2}, {"Device": "0xF72F", "Name": "Remote"}),
        ("tasmota.zbbridge_events", False, {"ZbState": {"Status": 30, "ShortAddr": "0x8F20"}}, {})]
    assert collector.dead == []


def test_tasmota_sensor_objects_are_not_taken_for_zigbee_devices():
    """A device's own nested sensors (``DS18B20-1``) stay its dotted fields; only an object with a Zigbee short
    address (or under ``ZbReceived``) is a Zigbee device's report."""
    router, collector = configured("tasmota")
    router.deliver(message("tele/plug/SENSOR", b'{"Time":"2024-06-01T12:00:00","DS18B20-1":{"Id":"01","Temperature":'
                                               b'21.4},"DS18B20-2":{"Id":"02","Temperature":19.0},"TempUnit":"C"}'))
    router.deliver(message("tele/plug/SENSOR", b'{"Time":"2024-06-01T12:00:00","ZbReceived":{"0x8F20":{"T":1}},'
                                               b'"Other":1}'))
    (first,), (second,) = [entry.records for entry in collector.entries]
    assert (first.fields, first.tags) == ({"DS18B20-1.Id": "01", "DS18B20-1.Temperature": 21.4, "DS18B20-2.Id": "02",
                                           "DS18B20-2.Temperature": 19.0, "TempUnit": "C"}, {})
    assert (second.fields, second.tags) == ({"ZbReceived.0x8F20.T": 1, "Other": 1}, {})


def test_a_tasmota_ble_sensors_topic_is_the_data_of_its_table():
    """An ESP32 running Tasmota publishes a BLE sensor it hears on ``tele/tasmota_ble/<sensor>`` (MI32Option6 1,
    or with Home Assistant discovery): it was an event of a device ``tasmota_ble``, every sensor in one events
    table."""
    router, collector = configured("tasmota")
    router.deliver(message("tele/tasmota_ble/ATCbb1b6e", b'{"Time":"2024-06-01T12:00:00","mac":"a4c138bb1b6e",'
                                                         b'"Temperature":21.9,"Humidity":53.0,"Battery":97,"RSSI":-74}'))
    ((entry,),) = [collector.entries]
    assert str(entry.table) == "tasmota.atcbb1b6e_sensors"
    assert entry.records[0].fields == {"mac": "a4c138bb1b6e", "Temperature": 21.9, "Humidity": 53.0, "Battery": 97,
                                       "RSSI": -74}
    assert entry.records[0].time == 1_717_243_200 * 10**9


def test_openmqttgateways_devices_are_rows_of_a_table_a_gateway_and_module():
    """OpenMQTTGateway (and Theengs Gateway) publish each BLE device they hear on ``.../BTtoMQTT/<MAC>``: under
    ``topic`` every MAC address was a table, and phones change theirs every few minutes. A table a gateway and
    module now, the device's id, model_id and model its rows' tags; RTL_433toMQTT's payloads are rtl_433's; the
    gateway's commands (WiFi and MQTT passwords in them) are ignored, its LWT an event."""
    router, collector = configured("openmqttgateway")
    for topic, payload in [
            ("home/OMG/BTtoMQTT/A4C138BB1B6E", b'{"id":"A4:C1:38:BB:1B:6E","rssi":-74,"model":"LYWSD03MMC",'
                                               b'"model_id":"LYWSD03MMC_ATC","tempc":21.9,"hum":53,"batt":97}'),
            ("home/OMG/BTtoMQTT/5210A84690AC", b'{"id":"52:10:A8:46:90:AC","rssi":-77}'),
            ("home/OMG/RTL_433toMQTT/Acurite-Tower/A/9053", b'{"model":"Acurite-Tower","id":9053,"channel":"A",'
                                                          b'"temperature_C":21.5}'),
            ("home/OMG/SYStoMQTT", b'{"uptime":3600,"freemem":120000,"modules":["BT"]}'),
            ("home/OMG/LWT", b"online"),
            ("home/presence/kitchen", b'{"id":"A4:C1:38:BB:1B:6E","rssi":-74,"distance":2.1}'),
            ("home/OMG/commands/MQTTtoSYS/config", b'{"wifi_ssid":"home","wifi_pass":"secret"}')]:
        router.deliver(message(topic, payload))
    stored = stored_rows(collector)
    assert stored == [
        ("openmqttgateway.omg_bt_sensors", {"rssi": -74, "tempc": 21.9, "hum": 53, "batt": 97},
         {"id": "A4:C1:38:BB:1B:6E", "model": "LYWSD03MMC", "model_id": "LYWSD03MMC_ATC"}),
        ("openmqttgateway.omg_bt_sensors", {"rssi": -77}, {"id": "52:10:A8:46:90:AC"}),
        ("openmqttgateway.omg_rtl_433_sensors", {"temperature_C": 21.5},
         {"model": "Acurite-Tower", "id": "9053", "channel": "A"}),
        ("openmqttgateway.omg_sys_sensors", {"uptime": 3600, "freemem": 120000, "modules": ["BT"]}, {}),
        ("openmqttgateway.omg_events", {"LWT": "online"}, {}),
        ("openmqttgateway.presence_kitchen_sensors", {"rssi": -74, "distance": 2.1}, {"id": "A4:C1:38:BB:1B:6E"})]
    assert (router.stats.ignored, collector.dead) == (1, [])


def test_opendtus_values_are_rows_of_a_table_an_inverter_the_channel_a_tag():
    """OpenDTU publishes a value a topic: under ``topic`` each inverter's value was a table of its own (twenty an
    inverter), its commands (power limits, restart) were stored as data and a DC input without a name a dead letter
    each poll. A table an inverter now, the channel (0: AC, 1-6: DC inputs) a tag; the DTU's and the totals'
    values in tables of their own, its last will an event, commands ignored, empty names nothing to store."""
    router, collector = configured("opendtu")
    for topic, payload in [
            ("solar/114182912345/0/power", b"512.3"),
            ("solar/114182912345/1/power", b"256.1"),
            ("solar/114182912345/1/name", b""),
            ("solar/114182912345/status/reachable", b"1"),
            ("solar/114182912345/device/fwbuilddatetime", b"2023-03-06 10:04:00"),
            ("solar/114182912345/name", b"HM-800 Garage"),
            ("solar/114182912345/cmd/limit_persistent_absolute", b"600"),
            ("solar/dtu/heap/free", b"123456"),
            ("solar/dtu/status", b"online"),
            ("solar/ac/power", b"768.4")]:
        router.deliver(message(topic, payload))
    stored = stored_rows(collector)
    assert stored == [
        ("solar.114182912345_sensors", {"power": 512.3}, {"channel": "0"}),
        ("solar.114182912345_sensors", {"power": 256.1}, {"channel": "1"}),
        ("solar.114182912345_sensors", {"status.reachable": 1}, {}),
        ("solar.114182912345_sensors", {"device.fwbuilddatetime": "2023-03-06 10:04:00"}, {}),
        ("solar.114182912345_sensors", {"name": "HM-800 Garage"}, {}),
        ("solar.dtu_sensors", {"heap.free": 123456}, {}),
        ("solar.dtu_events", {"status": "online"}, {}),
        ("solar.ac_sensors", {"power": 768.4}, {})]
    assert (router.stats.ignored, router.stats.empty, collector.dead) == (1, 1, [])


def test_ahoydtus_values_are_rows_of_a_table_an_inverter_and_its_json_objects_dotted_fields():
    """AhoyDTU: a value a topic (``ch0/P_AC``) or, with its JSON option, a channel's values at once at its ``ts``;
    an inverter's firmware and hardware objects both have a ``version``, kept apart as dotted fields; alarms are
    events; commands (``ctrl/...``, ``setup/set_time``) ignored."""
    router, collector = configured("ahoy")
    for topic, payload in [
            ("inverter/HM-600/ch0/P_AC", b"120.3"),
            ("inverter/HM-600/ch1", b'{"U_DC":33.1,"P_DC":69.5,"ts":1717243200}'),
            ("inverter/HM-600/firmware", b'{"version":10012,"build_year":"2020"}'),
            ("inverter/HM-600/hardware", b'{"part":269619200,"version":"65536"}'),
            ("inverter/HM-600/alarm/0", b'{"code":1,"str":"Inverter start","start":22160,"end":0}'),
            ("inverter/HM-600/dis_night_comm", b"true"),
            ("inverter/total", b'{"P_AC":120.3,"YieldDay":800}'),
            ("inverter/uptime", b"3600"),
            ("inverter/mqtt", b"connected"),
            ("inverter/ctrl/limit/0", b"50"),
            ("inverter/setup/set_time", b"1717243200")]:
        router.deliver(message(topic, payload))
    stored = stored_rows(collector)
    assert stored == [
        ("inverter.hm_600_sensors", {"P_AC": 120.3}, {"channel": "0"}),
        ("inverter.hm_600_sensors", {"U_DC": 33.1, "P_DC": 69.5}, {"channel": "1"}),
        ("inverter.hm_600_sensors", {"firmware.version": 10012, "firmware.build_year": "2020"}, {}),
        ("inverter.hm_600_sensors", {"hardware.part": 269619200, "hardware.version": "65536"}, {}),
        ("inverter.hm_600_events", {"code": 1, "str": "Inverter start", "start": 22160, "end": 0}, {}),
        ("inverter.hm_600_sensors", {"dis_night_comm": True}, {}),
        ("inverter.total_sensors", {"P_AC": 120.3, "YieldDay": 800}, {}),
        ("inverter.dtu_sensors", {"uptime": 3600}, {}),
        ("inverter.dtu_events", {"mqtt": "connected"}, {})]
    times = [record.time for entry in collector.entries if entry.table is not None for record in entry.records]
    assert times[1] == 1_717_243_200 * 10**9  # the channel's JSON at its ts
    assert (router.stats.ignored, collector.dead) == (2, [])


def test_an_ahoydtu_alarm_published_again_with_each_new_one_is_stored_once():
    """AhoyDTU publishes its last ten alarms again with each new one (later firmware with the day's date, also
    the next day): each was an event row again. Once now; an alarm that has ended since is a row of its own."""
    router, collector = configured("ahoy")
    midnight, next_midnight = 1_717_192_800, 1_717_192_800 + 86_400  # (a UTC+2 day's midnights)
    first = b'{"code":1,"str":"Inverter start","start":%d,"end":%d}' % (midnight + 22160, midnight)
    for topic, payload, day in [
            ("inverter/HM-600/alarm/0", first, 0),
            ("inverter/HM-600/alarm/1", b'{"code":2,"str":"DTU command failed","start":%d,"end":%d}' % (
                midnight + 30000, midnight + 30060), 0),
            ("inverter/HM-600/alarm/0", first, 0),  # again, with alarm 1
            ("inverter/HM-600/alarm/0", b'{"code":1,"str":"Inverter start","start":%d,"end":%d}' % (
                next_midnight + 22160, next_midnight), 1),  # again the next day, with its date
            ("inverter/HM-800/alarm/0", first, 1),  # another inverter's
            ("inverter/HM-600/alarm/0", b'{"code":1,"str":"Inverter start","start":%d,"end":%d}' % (
                midnight + 22160, midnight + 40000), 1)]:  # it ended
        router.deliver(Message(topic, payload, 1, False, 1_717_250_000.0 + day * 86_400, "#"))
    assert [(table, fields["code"], fields["end"] % 86_400) for table, fields, _ in stored_rows(collector)] == [
        ("inverter.hm_600_events", 1, 79200), ("inverter.hm_600_events", 2, 30060 - 7200),
        ("inverter.hm_800_events", 1, 79200), ("inverter.hm_600_events", 1, 40000 - 7200)]
    assert (router.stats.ignored, collector.dead) == (2, [])


def test_a_ruuvi_gateways_relayed_tags_are_rows_of_its_table_the_mac_a_tag():
    """Ruuvi Gateway relays each advertisement as hex by default: under ``topic`` it was a table a sensor holding
    the hex, which no query reads. A table a gateway now, a RuuviTag's data format 5 its values, the MAC a tag."""
    router, collector = configured("ruuvi")
    for topic, payload in [
            ("ruuvi/C8:25:2D:8E:9C:2C/gw_status", b'{"state": "online"}'),
            ("ruuvi/C8:25:2D:8E:9C:2C/CB:B8:33:4C:88:4F",
             b'{"gw_mac":"C8:25:2D:8E:9C:2C","rssi":-62,"aoa":[],"gwts":1653668027,"ts":1653668027,'
             b'"data":"0201061BFF99040512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F","coords":""}')]:
        router.deliver(message(topic, payload))
    stored = [(str(entry.table), record.time, record.fields, record.tags) for entry in collector.entries
              if entry.table is not None for record in entry.records]
    assert stored[0][0] == "ruuvi.c8_25_2d_8e_9c_2c_events" and stored[0][2] == {"state": "online"}
    assert stored[1] == ("ruuvi.c8_25_2d_8e_9c_2c_sensors", 1_653_668_027 * 10**9, {
        "rssi": -62, "gwts": 1653668027, "dataFormat": 5, "temperature": 24.3, "humidity": 53.49,
        "pressure": 100044, "accelX": 0.004, "accelY": -0.004, "accelZ": 1.036, "voltage": 2.977, "txPower": 4,
        "movementCounter": 66, "measurementSequenceNumber": 205}, {"mac": "CB:B8:33:4C:88:4F"})
    assert collector.dead == []


def test_a_meshtastic_channels_packets_are_rows_of_its_table_the_node_and_gateway_tags():
    """Meshtastic's JSON output under ``topic`` was a table a gateway node, the sender a number and the values
    one object in a ``payload`` column; its protobuf copies were dead letters. A table a mesh channel now,
    the sending node and the gateway tags; with output = json the protobuf copies, map reports and the downlink
    ignored."""
    router, collector = configured("mesh", "[strategy:mesh]\ntype = meshtastic\noutput = json\n")
    for topic, payload in [
            ("msh/EU_868/2/json/LongFast/!a1b2c3d4",
             b'{"channel":0,"from":2130636288,"id":7,"payload":{"temperature":21.5,"relative_humidity":48},'
             b'"sender":"!a1b2c3d4","timestamp":1716837450,"to":4294967295,"type":"telemetry"}'),
            ("msh/EU_868/2/e/LongFast/!a1b2c3d4", b"\n\x1f\r\x00\xee\xfe~"),
            ("msh/EU_868/2/map/", b"\n\x1f"),
            ("msh/EU_868/2/json/mqtt/", b'{"from":2130636288,"type":"sendtext","payload":"hi"}'),
            ("msh/EU_868/2/json/LongFast/!a1b2c3d4",
             b'{"channel":0,"from":2130636288,"id":8,"sender":"!a1b2c3d4","timestamp":1716837451,'
             b'"to":4294967295,"type":""}'),
            ("msh/EU_868/2/json/LongFast/!a1b2c3d4", b'{"type":"text","payload":{"text":"no sender"}}'),
            ("msh/EU_868/2/stat/!a1b2c3d4", b"online")]:
        router.deliver(message(topic, payload))
    assert stored_rows(collector) == [
        ("msh_eu_868.longfast_sensors", {"temperature": 21.5, "relative_humidity": 48, "packet_id": 7},
         {"gateway": "!a1b2c3d4", "node": "!7efeee00", "type": "telemetry"}),
        ("msh_eu_868.events", {"value": "online"}, {"gateway": "!a1b2c3d4"})]
    assert router.stats.ignored == 4
    assert [dead.error for dead in collector.dead] == [
        "decoder 'meshtastic': no 'from' (the sending node's number): not a Meshtastic packet"]


def test_an_emonhubs_inputs_are_columns_of_a_table_a_node():
    """emonHub's node variable format (emon/<node>/<input>) under ``topic`` was a table an input: an emonTx's
    dozen inputs a dozen tables. A table a node now, in both of its formats, its JSON at its time."""
    router, collector = configured("emon")
    for topic, payload in [("emon/emontx4/P1", b"412.5"), ("emon/emontx4/vrms", b"238.71"),
                           ("emon/emontx4", b'{"P1": 412.5, "E1": 1234, "time": 1717243200, "rssi": -60}'),
                           ("emonhub/rx/10/values", b"1,2,3")]:
        router.deliver(message(topic, payload))
    assert stored_rows(collector) == [("emon.emontx4_sensors", {"P1": 412.5}, {}),
                                      ("emon.emontx4_sensors", {"vrms": 238.71}, {}),
                                      ("emon.emontx4_sensors", {"P1": 412.5, "E1": 1234, "rssi": -60}, {})]
    times = [record.time for entry in collector.entries if entry.table is not None for record in entry.records]
    assert times[2] == 1_717_243_200 * 10**9
    assert [dead.stage for dead in collector.dead] == ["topology"]


def test_the_ble_sensors_an_esp32_hears_are_rows_of_its_table_a_sensor_each():
    """Tasmota's MI32 driver reports up to four BLE sensors a SENSOR message, each an object with its ``mac``: as
    dotted fields (``ATCbb1b6e.Temperature``) every sensor added its own columns to the ESP32's table, thirty
    thermometers 200 sparse ones. A row a sensor now, its mac, name and alias the tags; the ESP32's own sensors a
    row beside them, a device's nested sensors (``DS18B20``, no mac) as before."""
    router, collector = configured("tasmota")
    router.deliver(message("tele/esp32ble/SENSOR", b'{"Time":"2024-06-01T12:00:00","ATCbb1b6e":{"mac":"a4c138bb1b6e",'
                                                   b'"Temperature":21.9,"Humidity":53.0,"Battery":97,"RSSI":-74},'
                                                   b'"Flora1a2b3c":{"alias":"basil","mac":"c47c8d1a2b3c","Moisture":31},'
                                                   b'"ESP32":{"Temperature":45.2},"TempUnit":"C"}'))
    router.deliver(message("tele/plug/SENSOR", b'{"Time":"2024-06-01T12:00:00","DS18B20":{"Id":"0316A279B1FF",'
                                               b'"Temperature":21.4},"TempUnit":"C"}'))
    stored = [(str(entry.table), record.fields, record.tags) for entry in collector.entries
              for record in entry.records]
    table = "tasmota.esp32ble_sensors"
    assert stored == [
        (table, {"TempUnit": "C", "Temperature": 21.9, "Humidity": 53.0, "Battery": 97, "RSSI": -74},
         {"mac": "a4c138bb1b6e", "name": "ATCbb1b6e"}),
        (table, {"TempUnit": "C", "Moisture": 31}, {"mac": "c47c8d1a2b3c", "name": "Flora1a2b3c", "alias": "basil"}),
        (table, {"TempUnit": "C", "ESP32.Temperature": 45.2}, {}),
        ("tasmota.plug_sensors", {"DS18B20.Id": "0316A279B1FF", "DS18B20.Temperature": 21.4, "TempUnit": "C"}, {})]


def test_the_status_says_why_the_last_ignored_message_was():
    """A channel whose messages were all ignored (the JSON copies of Meshtastic packets, with output = protobuf)
    showed only a count: now the last one's topic and reason, a topic's or a decoder's."""
    from lorrygate.control_client import render_status

    router, _ = configured("meshtastic")
    assert router.why_ignored() == ""
    router.deliver(message("msh/EU_868/2/json/LongFast/!a1b2c3d4", b'{"from": 1}'))
    assert router.why_ignored() == ("msh/EU_868/2/json/LongFast/!a1b2c3d4: the JSON copy of a packet that "
                                    "<root>/2/e/... has (output = protobuf, the default)")
    router.deliver(message("msh/EU_868/2/json/mqtt/", b"{}"))
    assert router.why_ignored().endswith("a message sent into the mesh (JSON downlink): a command, not a measurement")
    router, _ = configured("mesh", "[strategy:mesh]\ntype = meshtastic\noutput = json\n")
    router.deliver(message("msh/EU_868/2/json/LongFast/!a1b2c3d4", b'{"from": 1, "id": 2, "type": ""}'))
    assert "a packet of an app the firmware does not write as JSON" in router.why_ignored()
    channel = dict(router.stats.asdict(), name="mesh", last_ignored=router.why_ignored())
    text = render_status({"config": "gw.ini", "sources": [], "storages": [], "channels": [channel]})
    assert "channel mesh: 1 received, 0 routed, 0 unmatched, 0 undecodable, 1 ignored (the last: msh/EU_868" in text


class _Pushes:
    """A decoder whose records are events (`Events`), as the shelly decoder's of a button push."""

    name = "pushes"

    def decode(self, message, address):
        from lorrygate.model import Events, Record

        return Events([Record(1, {"event": "single_push"})])


class _NoEvents(WanStrategy):
    def table_for(self, address):
        if address.kind == "event":
            raise RuntimeError("no events here")
        return super().table_for(address)


def test_a_decoders_events_go_to_the_events_table_of_the_address():
    """Events on a data topic (a Shelly button push on events/rpc) are rows of the address's events table; a
    strategy with none keeps them in the data table and says so."""
    router, storage, _ = make(chain=DecoderChain((_Pushes(),)))
    router(message("r/n/g/d/data.json"))
    router(message("r/n/g/d/data.json"))
    assert {str(table): len(rows) for table, rows in storage.tables.items()} == {"r_n.g_d_events": 2}
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        router, storage, _ = make(_NoEvents(), DecoderChain((_Pushes(),)))
        router(message("r/n/g/d/data.json"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [str(table) for table in storage.tables] == ["r_n.g_d_sensors"]
    assert any("gave no events table" in e.get("log_format", "") for e in events)


def test_a_decoder_functions_events_of_dicts_stay_events():
    from lorrygate.decoding.functions import FunctionDecoder
    from lorrygate.model import Events

    decoder = FunctionDecoder("pushed", lambda message, address: Events([{"event": "long_push"}]))
    router, storage, _ = make(chain=DecoderChain((decoder,)))
    router(message("r/n/g/d/data.json"))
    assert [str(table) for table in storage.tables] == ["r_n.g_d_events"]


def test_an_empty_json_array_is_no_measurement_acknowledged_and_counted():
    """A logger's batch with nothing in it (``[]``) was a dead letter, and on a per-field topic the text "[]"."""
    from lorrygate.decoding import ValueDecoder

    router, storage, clock = make(chain=DecoderChain((JsonDecoder(), ValueDecoder())))
    router(message("r/n/g/d/data.json", b"[]"))
    router(message("r/n/g/d/data/temperature", b" [ ] "))
    clock.advance(0)
    assert not storage.dead_letters and not storage.tables
    assert router.stats.ignored == 2 and router.last_ignored == "an empty JSON array: no records"


class _LaterNonsense:
    """A decoder of your own whose Deferred fires with what is no list of records."""

    name = "later"

    def decode(self, message, address):
        from twisted.internet.defer import succeed

        return succeed(5)


def test_a_message_whose_later_decoding_breaks_the_router_is_a_dead_letter_not_stuck():
    """What a decoder's Deferred fired with that broke the router left the message neither stored nor a dead
    letter, never acknowledged (its error logged only when the Deferred was collected); it is an internal dead
    letter, as at once."""
    from tests.doubles import Ack

    router, storage, clock = make(chain=DecoderChain((_LaterNonsense(),)))
    ack = Ack()
    router(Message("r/n/g/d/data.json", b"{}", 1, False, 1.0, "#", ack))
    clock.advance(0)
    (dead,) = storage.dead_letters
    assert dead.stage == "internal" and "TypeError" in dead.error
    assert ack.count == 1 and router.settle().called

"""
One channel as a Twisted service: its source (an MQTT session or an AMQP queue) and its
router, feeding the batchers of the channel's storages.

Stopping a channel loses nothing and writes nothing twice: it stops reading,
waits for the decodes in flight, waits until every message it delivered is
committed (or spooled) and so acknowledged, and only then disconnects, the
acknowledgements leaving before the DISCONNECT.
"""

from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger

from lorrygate.decoding import DecoderChain
from lorrygate.decoding.csvheaders import HeaderStore
from lorrygate.decoding.text import CsvDecoder
from lorrygate.service.channel import ChannelRouter
from lorrygate.sources.mqtt import MQTTSource

if TYPE_CHECKING:
    from lorrygate.model import Channel


#: the pause a stopping channel holds on its source
SHUTDOWN = "shutdown"


def make_router(settings, channel, batchers: tuple, reactor) -> tuple:
    """A channel's router into ``batchers`` (its storage's, then its tee's), and the decoders it made."""
    timezone = ZoneInfo(channel.timezone)
    headers = HeaderStore(settings.gateway.data_dir, reactor)  # (opened on first use, stopped with the decoders)

    def made(name):
        decoder = settings.decoders[name](timezone, reactor)
        if isinstance(decoder, CsvDecoder) and decoder.headers is None:
            decoder = attrs.evolve(decoder, headers=headers)  # a header announced once holds for later data lines
        return decoder

    decoders = tuple(made(name) for name in channel.decoders)
    router = ChannelRouter(channel, settings.strategies[channel.strategy](), DecoderChain(decoders), batchers[0],
                           reactor)
    router.tee = tuple(batchers[1:])
    from lorrygate.service.channel import CONTENT_TYPES, SUFFIX_DECODERS

    picked = {name for _, name in SUFFIX_DECODERS} | set(CONTENT_TYPES.values())
    router.suffix_decoders = {name: made(name) for name in sorted(picked) if name in settings.decoders}
    decoders += (headers,)
    if channel.dataflow is not None:
        from lorrygate.decoding.dataflow import DataflowStep

        # started and stopped with the decoders
        router.dataflow = DataflowStep(channel.dataflow, reactor, channel.name)
        decoders += (router.dataflow,)
    return router, decoders


@attrs.define(eq=False)
class ChannelService(Service):
    channel: "Channel"
    #: an MQTTSource or an AMQPSource
    source: Any
    router: ChannelRouter
    batchers: tuple
    decoders: tuple
    reactor: Any
    #: how long stopping waits for the storages to commit what the channel delivered
    timeout: float = 15.0

    log = Logger()

    @classmethod
    def from_settings(cls, settings, channel, batchers: dict, reactor, timeout: float = 15.0) -> "ChannelService":
        own = tuple(batchers[name] for name in channel.storages)
        router, decoders = make_router(settings, channel, own, reactor)
        deliver = router.deliver  # the sources call a bound method (`ChannelRouter.deliver`)
        source: Any
        broker = settings.brokers.get(channel.source)
        if broker is None and settings.sources[channel.source].type == "pgcdc":
            from lorrygate.sources.pgcdc import CdcSource

            source = CdcSource(channel.name, settings.sources[channel.source], deliver, reactor)
        elif broker is None and settings.sources[channel.source].type == "files":
            from lorrygate.sources.files import FilesSource

            source = FilesSource(channel.name, settings.sources[channel.source], deliver, reactor,
                                 data_dir=settings.gateway.data_dir)
        elif broker is None and settings.sources[channel.source].type == "tributary":
            from lorrygate.sources.tributary import TributarySource

            source = TributarySource(channel.name, settings.sources[channel.source], deliver, reactor)
        elif broker is None and settings.sources[channel.source].type == "http":
            from lorrygate.sources.http import HttpSource

            source = HttpSource(channel.name, settings.sources[channel.source], deliver, reactor)
            source.table_of = lambda topic: router.table_for_topic(topic)[1]
            if channel.transform is not None:
                source.headers = tuple(name for name, _ in channel.transform.headers)
            if source.settings.export:  # (Kotori's data export: GET /api/<topic>.csv, from the first SQL storage)
                from lorrygate.sources.export import Exporter, preferred

                source.exporter = Exporter(reactor, router, preferred([batcher.storage for batcher in own]),
                                           source.settings.name, source.settings.export_stall)
        elif broker is None and settings.sources[channel.source].type == "socket":
            from lorrygate.sources.unixsocket import SocketSource

            source = SocketSource(channel.name, settings.sources[channel.source], deliver, reactor)
        elif broker is None:
            from lorrygate.sources.periodic import PeriodicSource

            source = PeriodicSource(channel.name, settings.sources[channel.source], deliver, reactor)
        elif broker.type == "kafka":
            from lorrygate.sources.kafka import KafkaSource

            source = KafkaSource(channel.name, broker, channel.topics, deliver, reactor, group=channel.group or "lorrygate",
                                 start=channel.start)
        elif broker.type == "zmq":
            from lorrygate.sources.zeromq import ZeroMQSource

            source = ZeroMQSource(channel.name, broker, channel.topics, deliver, reactor, mode=channel.mode or "sub")
        elif broker.type == "redis":
            from lorrygate.sources.redis import RedisSource

            source = RedisSource(channel.name, broker, channel.topics, deliver, reactor, mode=channel.mode or "streams",
                                 group=channel.group or "lorrygate", consumer=channel.consumer, topic_field=channel.topic_field,
                                 payload_field=channel.payload_field, claim_idle=channel.claim_idle)
        elif broker.type == "amqp":
            from lorrygate.sources.amqp import AMQPSource

            source = AMQPSource(channel.name, broker, channel.topics, deliver, reactor, reactor,
                                exchange=channel.exchange, queue=channel.queue, prefetch=channel.prefetch)
        else:
            source = MQTTSource(channel.name, broker, channel.topics, channel.qos, deliver, reactor, reactor,
                                retained=channel.retained, group=channel.group, data_dir=settings.gateway.data_dir)
        router.publish = source.publish
        for decoder in decoders:
            if getattr(decoder, "rebirth", False):  # Sparkplug: a rebirth request goes on the channel's connection
                decoder.publish = source.publish
            if hasattr(decoder, "seq_gaps") or hasattr(decoder, "keepalives_sent"):  # (counted with the channel's: status and /metrics show them)
                decoder.stats = router.stats
        router.identify(source.client_id)
        service = cls(channel, source, router, own, decoders, reactor, timeout)
        service.setName(channel.name)
        return service

    def startService(self) -> None:
        Service.startService(self)
        for decoder in self.decoders:
            if hasattr(decoder, "start"):
                decoder.start()
            if hasattr(decoder, "attach"):
                decoder.attach(self.source)  # a dataflow's backpressure
        for batcher in self.batchers:
            batcher.attach(self.source)
        self.source.startService()

    def when_subscribed(self) -> Deferred:
        """Fires once the source's subscriptions are acknowledged by the broker."""
        return self.source.when_subscribed()

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        source = self.source
        source.pause(SHUTDOWN)
        settled = self.router.settle()
        settled.addTimeout(self.timeout, self.reactor)
        await DeferredList([settled], consumeErrors=True)
        barriers = [batcher.barrier() for batcher in self.batchers]
        for d in barriers:
            d.addTimeout(self.timeout, self.reactor)
        for success, result in await DeferredList(barriers, consumeErrors=True):
            if not success and result.check(DeferredTimeout):
                self.log.error(
                    "channel {channel}: stopping, its storage did not commit within {timeout} s; the messages "
                    "not committed stay unacknowledged and the broker delivers them again",
                    channel=self.channel.name,
                    timeout=self.timeout,
                )
        for batcher in self.batchers:
            batcher.detach(source)
        for decoder in self.decoders:
            if hasattr(decoder, "detach"):
                decoder.detach(source)
        await source.stopService()
        for decoder in self.decoders:
            if hasattr(decoder, "stop"):
                decoder.stop()

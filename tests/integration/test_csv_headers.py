"""
Header-once CSV on the real reactor: the announced headers are read and written on the store's own thread,
in the order the messages came, so an announcement and the data lines right behind it (not waiting for
each other) are stored by it; the reactor does no file I/O for them.
"""

import threading

import pytest_twisted

from lorrygate.config import loads
from lorrygate.model import Message
from lorrygate.service.channel_service import ChannelService
from lorrygate.storage.batcher import Batcher
from lorrygate.storage.memory import MemoryStorage


def _channel(tmp_path, reactor) -> tuple:
    """A WAN channel (a Kotori migration) on the real reactor, storing into memory."""
    settings = loads(f"[lorrygate]\ndata_dir = {tmp_path}\n[broker:b]\nhost = localhost\n[storage:db]\n"
                     f"url = sqlite:///{tmp_path}/unused.sqlite\n[channel:main]\ntopics = mqttkit-1/#\n")
    storage = MemoryStorage()
    service = ChannelService.from_settings(settings, settings.channels[0],
                                           {"db": Batcher(storage, reactor, max_rows=1000, linger=0.01)}, reactor)
    return service, storage


def _stop(service) -> None:
    for decoder in service.decoders:
        if hasattr(decoder, "stop"):
            decoder.stop()


@pytest_twisted.ensureDeferred
async def test_an_announcement_and_the_data_lines_behind_it_in_order_on_the_stores_thread(tmp_path, monkeypatch):
    from twisted.internet import reactor

    from lorrygate.decoding import csvheaders

    service, storage = _channel(tmp_path, reactor)
    threads_used = set()
    get, remember = csvheaders.HeaderStore.get, csvheaders.HeaderStore.remember
    monkeypatch.setattr(csvheaders.HeaderStore, "get",
                        lambda self, *a: threads_used.add(threading.current_thread().name) or get(self, *a))
    monkeypatch.setattr(csvheaders.HeaderStore, "remember",
                        lambda self, *a: threads_used.add(threading.current_thread().name) or remember(self, *a))
    topic = "mqttkit-1/itest/foo/{}/data.csv"
    try:
        for node in range(20):
            service.router(Message(topic.format(node), b"## temperature,humidity\n", 1, False, 1.0, "mqttkit-1/#"))
            for n in range(5):
                service.router(Message(topic.format(node), f"{n}.5,{node}\n".encode(), 1, False, 2.0, "mqttkit-1/#"))
        await service.router.settle()
        await service.batchers[0].barrier()
    finally:
        _stop(service)
    assert storage.dead_letters == []
    rows = [record.fields for records in storage.tables.values() for record in records]
    assert len(rows) == 100 and all(set(row) == {"temperature", "humidity"} for row in rows)
    assert threads_used and threading.main_thread().name not in threads_used


@pytest_twisted.ensureDeferred
async def test_data_lines_of_which_some_do_not_fit_the_announced_header_store_the_others(tmp_path):
    """The header asked of the store's thread, the data lines after it: those that fit are rows, the others
    alone a dead letter (no header line in it: a replay asks the store for the header again)."""
    from twisted.internet import reactor

    service, storage = _channel(tmp_path, reactor)
    topic = "mqttkit-1/itest/foo/bar/data.csv"
    try:
        service.router(Message(topic, b"## temperature,humidity\n", 1, False, 1.0, "mqttkit-1/#"))
        service.router(Message(topic, b"21.5,40\n21.6\n21.7,41\n", 1, False, 2.0, "mqttkit-1/#"))
        service.router(Message(topic, b"## temperature,humidity\n22.5,42\n22.6,42,1\n", 1, False, 3.0, "mqttkit-1/#"))
        await service.router.settle()
        await service.batchers[0].barrier()
    finally:
        _stop(service)
    rows = sorted(record.fields["temperature"] for records in storage.tables.values() for record in records)
    assert rows == [21.5, 21.7, 22.5]
    assert [(dead.payload, dead.error) for dead in storage.dead_letters] == [
        (b"21.6\n", "line 2 has 1 value for 2 columns (temperature, humidity)"),
        (b"## temperature,humidity\n22.6,42,1\n", "line 3 has 3 values for 2 columns (temperature, humidity)")]
    assert service.router.stats.partly == 2

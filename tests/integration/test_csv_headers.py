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


@pytest_twisted.ensureDeferred
async def test_an_announcement_and_the_data_lines_behind_it_in_order_on_the_stores_thread(tmp_path, monkeypatch):
    from twisted.internet import reactor

    from lorrygate.decoding import csvheaders

    settings = loads(f"[lorrygate]\ndata_dir = {tmp_path}\n[broker:b]\nhost = localhost\n[storage:db]\n"
                     f"url = sqlite:///{tmp_path}/unused.sqlite\n[channel:main]\ntopics = mqttkit-1/#\n")
    storage = MemoryStorage()
    service = ChannelService.from_settings(settings, settings.channels[0],
                                           {"db": Batcher(storage, reactor, max_rows=1000, linger=0.01)}, reactor)
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
        for decoder in service.decoders:
            if hasattr(decoder, "stop"):
                decoder.stop()
    assert storage.dead_letters == []
    rows = [record.fields for records in storage.tables.values() for record in records]
    assert len(rows) == 100 and all(set(row) == {"temperature", "humidity"} for row in rows)
    assert threads_used and threading.main_thread().name not in threads_used

"""
The appsink against a real broker: at least once. A callable that raises
fails the write as an unreachable database does; the batch is handed to it
again after a backoff, every later one behind it, and every row arrives.
"""

import json
import time
import uuid

import pytest
import pytest_twisted

from lorrygate import parse_launch
from tests.gatewayproc import Publisher


@pytest_twisted.ensureDeferred
async def test_an_appsink_whose_callable_raises_gets_every_row_again(tmp_path, mosquitto):
    from twisted.internet import reactor, task, threads

    realm = f"app{uuid.uuid4().hex[:8]}"
    rows, calls = [], []

    def take(batch):
        calls.append(len(batch))
        if len(calls) <= 3:
            raise ConnectionError("the application's own backend is away")
        rows.extend(batch)

    pipeline = parse_launch(f"mqtt://127.0.0.1:{mosquitto.port}/{realm}/%23?client-id={realm} ! appsink name=out",
                            callbacks={"out": take}, data_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="call start"):
        pipeline.when_ready()
    await pipeline.start(reactor)
    try:
        await pipeline.when_ready()  # the SUBACK: what is published now arrives
        publisher = Publisher(mosquitto.port)
        await threads.deferToThread(publisher.publish_many, [
            (f"{realm}/net/gw/node-{n % 4}/data.json", json.dumps({"seq": n})) for n in range(300)])
        publisher.client.disconnect()
        deadline = time.monotonic() + 60
        while len({row["fields"]["seq"] for row in rows}) < 300 and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
    finally:
        await pipeline.stop()
    assert sorted({row["fields"]["seq"] for row in rows}) == list(range(300))
    assert len(calls) > 3 and calls[0] > 0

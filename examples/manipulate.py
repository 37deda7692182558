"""
Data manipulation: rename, convert and tag records on their way.

    python examples/manipulate.py     (a broker on localhost:1883, or LORRYGATE_EXAMPLE_PORT)

Fahrenheit from old stations becomes Celsius in a field named temperature,
the checksum is dropped and each row is tagged with its site and station.
"""

from _publish import PORT, publish
from twisted.internet import defer, task, threads

from lorrygate import parse_launch

PIPELINE = f"""
mqtt://127.0.0.1:{PORT}/example-weather/%23?client-id=example-manipulate
    ! strategy name=wan
    ! decode chain=json,kv
    ! transform rename=temp_f:temperature drop=checksum tags="site={{network}},station={{node}}"
                convert="temperature: round((value - 32) * 5 / 9, 1)"
    ! appsink name=out
"""


async def main(reactor):
    rows = []
    pipeline = parse_launch(PIPELINE, callbacks={"out": rows.extend}, data_dir="var/example-manipulate")
    await pipeline.start(reactor)
    await pipeline.when_ready()  # every subscription acknowledged: what is published now arrives
    await threads.deferToThread(publish, [
        ("example-weather/berlin/roof/station-1/data.json", {"temp_f": 71.6, "humidity": 40, "checksum": "a1"}),
    ])
    while not rows:
        await task.deferLater(reactor, 0.05, lambda: None)
    await pipeline.stop()
    row = rows[0]
    print("fields:", row["fields"])
    print("tags:", row["tags"])


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))

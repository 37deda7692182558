"""
Library use: a pipeline whose rows go to a Python function.

    python examples/appsink.py        (a broker on localhost:1883, or LORRYGATE_EXAMPLE_PORT)

parse_launch() builds the pipeline without running it; start() runs it on
the reactor; the appsink calls the function with each batch of rows, and the
messages are acknowledged once it returned.
"""

from _publish import PORT, publish
from twisted.internet import defer, task, threads

from lorrygate import parse_launch


async def main(reactor):
    rows = []
    pipeline = parse_launch(
        f"mqtt://127.0.0.1:{PORT}/example-appsink/%23?client-id=example-appsink ! appsink name=out",
        callbacks={"out": rows.extend},
        data_dir="var/example-appsink",
    )
    await pipeline.start(reactor)
    await pipeline.when_ready()  # every subscription acknowledged: what is published now arrives
    await threads.deferToThread(publish, [
        ("example-appsink/site/gw/pump-1/data.json", {"rpm": 1200, "temperature": 61.5}),
        ("example-appsink/site/gw/pump-2/data.json", {"rpm": 900, "temperature": 58.0}),
    ])
    while len(rows) < 2:
        await task.deferLater(reactor, 0.05, lambda: None)
    await pipeline.stop()
    for row in sorted(rows, key=lambda row: row["table"]):
        print(row["table"], row["fields"])


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))

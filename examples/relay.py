"""
Relay mode, LorryStream style: one MQTT topic tree into one SQLite table.

    python examples/relay.py          (a broker on localhost:1883, or LORRYGATE_EXAMPLE_PORT)

The same as the command line

    lorrygate relay "mqtt://localhost/testdrive/%23?content-type=json" "sqlite:///var/relay.sqlite?table=testdrive"
"""

import os
import sqlite3

from _publish import PORT, publish
from twisted.internet import defer, task, threads

from lorrygate import parse_launch

DATABASE = "var/example-relay/relay.sqlite"


async def main(reactor):
    os.makedirs(os.path.dirname(DATABASE), exist_ok=True)
    if os.path.exists(DATABASE):
        os.unlink(DATABASE)
    pipeline = parse_launch(
        f"mqtt://127.0.0.1:{PORT}/example-relay/%23?content-type=json&client-id=example-relay "
        f"! sqlite:///{DATABASE}?table=testdrive",
        data_dir="var/example-relay",
    )
    await pipeline.start(reactor)
    await pipeline.when_ready()  # every subscription acknowledged: what is published now arrives
    await threads.deferToThread(publish, [(f"example-relay/sensor-{n}", {"value": n}) for n in range(5)])

    def count():
        try:
            return sqlite3.connect(DATABASE).execute("SELECT count(*) FROM testdrive").fetchone()[0]
        except sqlite3.Error:
            return 0

    while count() < 5:
        await task.deferLater(reactor, 0.05, lambda: None)
    await pipeline.stop()
    print("rows in table testdrive:", count())


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))

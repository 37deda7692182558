"""Tributary graphs for lorrygate (docs/transform.rst): a source and a sink.

``readings`` is a ``[source:NAME] type = tributary`` graph: it produces
readings of four nodes, which lorrygate stores like messages.

``alarms`` is a ``tributary://`` storage's graph: it takes lorrygate's node of
the stored records and keeps those whose temperature is over 30 °C.
"""

import math

import tributary.streaming as ts

#: what ``alarms`` saw (a real graph would publish or page)
ALARMS = []


def readings(count: int = 1_000):
    def produce():
        for n in range(count):
            yield {"node": f"node-{n % 4}", "seq": n, "temperature": round(25 + 10 * math.sin(n / 50), 2),
                   "humidity": round(50 + 20 * math.cos(n / 40), 1)}

    return ts.Func(produce, count=0)


def alarms(records):
    def check(record):
        temperature = record.get("fields", {}).get("temperature")
        if temperature is not None and temperature > 30:
            ALARMS.append((record["table"], record["time"], temperature))
        return record

    return records.apply(check)

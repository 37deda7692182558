"""Test doubles shared by the storage tests: an ack handle that counts, a source that records backpressure."""


class Ack:
    """An ack handle that counts how often it was acknowledged."""

    def __init__(self):
        self.count = 0

    def ack(self):
        self.count += 1


class Source:
    """A source that records who holds it paused."""

    def __init__(self):
        self.holders = set()
        self.pauses = 0

    @property
    def paused(self):
        return bool(self.holders)

    def pause(self, holder):
        if holder not in self.holders:
            self.pauses += 1
        self.holders.add(holder)

    def resume(self, holder):
        self.holders.discard(holder)


class Peer(Source):
    """A source that tells how many bytes its peer sent wait unread (`unread`): ``waiting``, or None when it
    cannot tell."""

    def __init__(self, waiting=0):
        super().__init__()
        self.waiting = waiting

    def unread(self):
        return self.waiting

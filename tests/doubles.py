"""Test doubles shared by the storage tests: an ack handle that counts, a source that records backpressure."""


class Ack:
    """An ack handle that counts how often it was acknowledged."""

    def __init__(self):
        self.count = 0

    def ack(self):
        self.count += 1


class Source:
    """A source that records whether the batcher paused it."""

    def __init__(self):
        self.paused = False
        self.pauses = 0

    def pauseReading(self):
        self.paused = True
        self.pauses += 1

    def resumeReading(self):
        self.paused = False

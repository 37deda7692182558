"""
What a decoder saw lately, by key, to tell a copy of something it stored before: another gateway's copy of a
Meshtastic packet, an AhoyDTU alarm the DTU publishes again with each new one. In memory, bounded by a window and a
number of keys (a restart or a reload forgets them); times are the messages' receive times, so that it is
deterministic under test.
"""

from collections import OrderedDict


class Recent:
    """Keys seen within ``window`` seconds (at most ``limit`` of them, the oldest forgotten first). With
    ``refresh`` the window runs from when a key was last seen, else from when it was first seen."""

    def __init__(self, window: float, limit: int, refresh: bool = False) -> None:
        self.window, self.limit, self.refresh = window, limit, refresh
        self._seen: OrderedDict = OrderedDict()

    def again(self, key, now: float) -> bool:
        """Whether ``key`` was seen within the window; it is seen now (from now on, or, with ``refresh``, again)."""
        seen = self._seen.get(key)
        known = seen is not None and 0 <= now - seen < self.window
        if not known or self.refresh:
            self._seen[key] = now
            self._seen.move_to_end(key)
        entries = self._seen
        while entries and (len(entries) > self.limit or now - next(iter(entries.values())) >= self.window):
            entries.popitem(last=False)
        return known

    def __len__(self) -> int:
        return len(self._seen)

"""Recently seen execution ids, for suppressing replays after a reconnect.

Paxos re-sends the last execution of a market on every (re)connect, so a
replay is always recent: remembering the last N ``match_number``s is enough,
and keeps memory bounded however long the gateway runs.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RecentIds"]


class RecentIds:
    """A set of the ``capacity`` most recently added ids; the oldest is forgotten first.

    A deque gives FIFO order and a set gives membership, both O(1). (An
    insertion-ordered dict would not: popping its oldest key scans over the
    holes that earlier pops left behind.)
    """

    __slots__ = ("_order", "_present", "capacity")

    def __init__(self, capacity: int = 65536) -> None:
        if capacity < 1:
            raise ValueError(f"dedup capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._present: set[str] = set()

    def add(self, key: str) -> bool:
        """Remember ``key``; return False if it was already remembered (a duplicate)."""
        present = self._present
        if key in present:
            return False
        if len(present) >= self.capacity:
            present.discard(self._order.popleft())
        present.add(key)
        self._order.append(key)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._present

    def __len__(self) -> int:
        return len(self._present)

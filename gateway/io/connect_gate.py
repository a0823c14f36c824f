"""The central reconnect mechanism Paxos asks for: one new upstream connection per interval.

Paxos allows one new connection per second per IP and silently *delays* the excess, so a
gateway that reconnects all its feeds at once after a failover would just have them sit in
Paxos's queue with no data and no error. All feeds therefore share one ``ConnectGate`` that
hands out connection slots ``interval`` seconds apart, first come first served.

Slots are reserved synchronously when ``wait`` is called (no lock, FIFO by call order); a
waiter cancelled before its slot gives it back only if nobody reserved a later one, so the
spacing between the connections that do happen never drops below ``interval``.
"""

from __future__ import annotations

import math

import trio


class ConnectGate:
    def __init__(self, interval: float) -> None:
        if not interval >= 0:
            raise ValueError(f"connect interval must be >= 0, got {interval!r}")
        self.interval = interval
        self._next_slot = -math.inf
        self.granted = 0

    async def wait(self) -> None:
        """Return when the caller may open one new connection (always a checkpoint)."""
        slot = max(trio.current_time(), self._next_slot)
        self._next_slot = slot + self.interval
        try:
            await trio.sleep_until(slot)
        except BaseException:
            if self._next_slot == slot + self.interval:
                self._next_slot = slot
            raise
        self.granted += 1

    def delay(self) -> float:
        """Seconds a caller of ``wait`` would wait now (for logs and tests)."""
        return max(0.0, self._next_slot - trio.current_time())

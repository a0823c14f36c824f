"""Reconnect delays: exponential backoff with full jitter, floored and capped (sans-IO).

Paxos rate-limits new connections per IP (excess ones are silently delayed, not refused) and
asks clients to back off from at least a second, with jitter. So the n-th consecutive retry
waits a uniformly random time in ``[initial, min(maximum, initial * multiplier ** n)]``: the
floor keeps even the first retry polite, the jitter keeps many gateways (or many feeds) that
lost their connections at the same moment from reconnecting in lockstep.

The reconnect policy (docs/upstream.md): only *failures* grow the delay — an attempt that
does not reach the handshake, or a connection that ends without having delivered any data
(an ``{"error": ...}`` frame is no data). A connection that ends after delivering data, or
that the server closes with 1001 "going away" (a deploy or failover on Paxos's side), was
not a failure: ``reset_unless_failed`` resets the streak and the feed reconnects at once,
spaced only by the shared one-connection-per-second ``ConnectGate``. Every second of an
executions feed's outage is a second of trades to backfill, so waiting for nothing costs.
(An earlier rule reset the streak only after a connection had lived 10 s: an upstream that
drops every 5 s pushed the delay to ~28 s, and most executions were never seen live.)

An upstream that accepts and drops us without a byte still backs off exponentially; one that
sends a message and drops us is reconnected once per gate interval, which is the rate Paxos
asks for.

``connection_ended(lived, received_data=...)`` keeps the older, stricter rule for callers that
want it (the subscriber client, ``gateway/client/driver.py``, reconnecting to a gateway): the
streak resets only once a connection delivered data and lived ``healthy_after`` seconds.

No clocks here: durations come in as arguments.
"""

from __future__ import annotations

import random

DEFAULT_HEALTHY_AFTER = 10.0


class Backoff:
    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        *,
        multiplier: float = 2.0,
        healthy_after: float = DEFAULT_HEALTHY_AFTER,
        rng: random.Random | None = None,
    ) -> None:
        if not initial > 0:
            raise ValueError(f"backoff initial must be > 0, got {initial!r}")
        if not maximum >= initial:
            raise ValueError(f"backoff maximum ({maximum!r}) must be >= initial ({initial!r})")
        if not multiplier >= 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {multiplier!r}")
        if not healthy_after >= 0:
            raise ValueError(f"healthy_after must be >= 0, got {healthy_after!r}")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.healthy_after = healthy_after
        self._rng = rng if rng is not None else random.Random()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failed attempts since the last connection that was no failure."""
        return self._failures

    def ceiling(self, failures: int | None = None) -> float:
        """Upper bound of the delay drawn after ``failures`` consecutive failed attempts."""
        n = self._failures if failures is None else failures
        if self.multiplier == 1:
            return self.initial
        # Multiply up step by step instead of computing multiplier ** n, which overflows a
        # float after ~1000 failures (a long outage at the cap keeps counting); the loop stops
        # at the cap, so it is short.
        ceiling = self.initial
        for _ in range(n + 1):
            ceiling *= self.multiplier
            if ceiling >= self.maximum:
                return self.maximum
        return ceiling

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; counts one more failure in the streak."""
        delay = self._rng.uniform(self.initial, self.ceiling())
        self._failures += 1
        # uniform() may round a hair outside its bounds; the floor is a promise to Paxos.
        return min(max(delay, self.initial), self.maximum)

    def reset_unless_failed(self, *, delivered: bool, going_away: bool = False) -> bool:
        """The upstream policy: record how an established connection ended; True if that was
        no failure (it ``delivered`` data, or the server said 1001 ``going_away``): the
        streak is reset and the next attempt may start at once. False: count it with
        ``next_delay``."""
        if delivered or going_away:
            self.reset()
            return True
        return False

    def connection_ended(self, lived: float, *, received_data: bool) -> bool:
        """The stricter rule: reset only after a connection that delivered data and lived
        ``healthy_after`` seconds; True if it did (the streak reset)."""
        if received_data and lived >= self.healthy_after:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        self._failures = 0

"""The REST rate limit: a token bucket per client IP (sans-IO; the caller passes the time).

Each IP's bucket holds up to ``burst`` tokens and refills at ``rate_limit`` per second; a
request takes one token or is refused with the time until the next one. At 10/s a client
that keeps one request in flight every 100 ms is never refused, and one that fires 30 at
once gets 10 answers and 20 refusals, each told to retry after 0.1 s (``Retry-After: 1``,
HTTP's whole seconds). ``throttle`` adds Paxos's documented penalty: after a refusal the IP
is refused outright until the throttle has passed, however many tokens it would have.

Settings are read per call (``RestConfig`` is mutable while running): a test may tighten
or lift the limit mid-run; a bucket keeps its tokens, capped at the new ``burst``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.simulator.config import RestConfig


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    blocked_until: float = 0.0


class RateLimiter:
    def __init__(self) -> None:
        # One entry per client IP seen; a simulator serves a handful of them, so no eviction.
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, client: str, now: float, settings: RestConfig) -> float | None:
        """None if this request may proceed, else the seconds until one would (> 0)."""
        rate, burst = settings.rate_limit, settings.burst
        if rate <= 0:
            return None
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(tokens=float(burst), stamp=now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if now < bucket.blocked_until:
            return bucket.blocked_until - now
        # the epsilon: a client pacing itself exactly at the rate must not be refused for
        # float error (0.1 s * 10/s can come to 0.9999999999999999 of a token)
        if bucket.tokens >= 1.0 - 1e-9:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return None
        if settings.throttle > 0:
            bucket.blocked_until = now + settings.throttle
            return settings.throttle
        return (1.0 - bucket.tokens) / rate

"""The ingest leadership lease: a sans-IO state machine over a JetStream KV key.

The key ``ingest`` of a bucket whose TTL (``MaxAge``) is the lease TTL:

- **acquire** = ``create`` (store only if the key is absent: compare with revision 0);
- **renew** = ``update`` against the revision of our last write (compare-and-swap); every
  write restarts the key's age, so a holder that renews in time keeps it forever;
- **lost** on a revision conflict (someone else wrote the key, so our revision is stale) or
  when our own TTL bound passes without a confirmed renew.

The leader's own bound is conservative on purpose: it counts from when the renew was *sent*,
not from when the server stored it (which is later), and stops at ``safety`` x TTL. So a
leader cut off from NATS steps down at least ``(1 - safety)`` x TTL (0.6 s at TTL 3 s, the
defaults) before the server expires the key and a contender can create it: there is no moment
with two believers, given clocks that tick at the same rate (only durations are compared,
never timestamps across machines). Fencing (``fence.SubjectFence``) backs this up for a leader
that was paused past the bound (a GC pause, a stopped VM): its next publish is rejected.

Renews and contender attempts run every ``TTL / 3`` (1 s at TTL 3 s): two chances to renew
before the bound, and a takeover at most ``TTL + TTL/3`` after the holder stopped (the design
study measured 3.29 s at TTL 3 s on a 3-node cluster).

Usage (the I/O edge, ``gateway.io.nats_lease``, does this against a real bucket)::

    lease = Lease(holder="ingest-0", ttl=3.0)
    while True:
        attempt = lease.attempt()                     # Create() or Renew(revision)
        sent_at = now()
        ... kv.create / kv.update ...                 # then exactly one of:
        lease.written(revision, sent_at)  |  lease.conflict()  |  lease.failed()
        sleep until lease.next_attempt_at(sent_at), calling lease.check(now()) on the way
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class LeaseRole(StrEnum):
    STANDBY = "standby"
    LEADER = "leader"


class Create(msgspec.Struct, frozen=True):
    """Try to acquire: store the key only if it does not exist."""


class Renew(msgspec.Struct, frozen=True):
    """Rewrite the key only if its revision is still ``revision`` (our last write)."""

    revision: int


class Lease:
    def __init__(self, holder: str, ttl: float, *, safety: float = 0.8) -> None:
        if ttl <= 0 or not 0 < safety < 1:
            raise ValueError(f"lease needs ttl > 0 and 0 < safety < 1, got {ttl}, {safety}")
        self.holder = holder
        self.ttl = ttl
        self.safety = safety
        self.role = LeaseRole.STANDBY
        self.revision: int | None = None
        self._valid_until = 0.0
        # What happened last, for a status line and a metric label.
        self.reason = "not acquired yet"
        # The leadership term, "<holder>:<revision of the create>": unique per acquisition, it
        # is the writer every fenced publish names (subjects.HEADER_WRITER).
        self.term: str | None = None
        self.acquisitions = 0
        self.losses = 0
        self.conflicts = 0
        self.failures = 0

    @property
    def interval(self) -> float:
        """Between two attempts (renews when leading, creates when standing by)."""
        return self.ttl / 3

    def value(self) -> bytes:
        """What the key holds: who leads, for operators reading the bucket."""
        return self.holder.encode()

    def attempt(self) -> Create | Renew:
        if self.role is LeaseRole.LEADER and self.revision is not None:
            return Renew(self.revision)
        return Create()

    def next_attempt_at(self, sent_at: float) -> float:
        return sent_at + self.interval

    def written(self, revision: int, sent_at: float) -> LeaseRole:
        """The create or renew sent at ``sent_at`` was stored as ``revision``."""
        if self.role is LeaseRole.STANDBY:
            self.acquisitions += 1
            self.reason = "acquired"
            self.term = f"{self.holder}:{revision}"
        else:
            self.reason = "renewed"
        self.role = LeaseRole.LEADER
        self.revision = revision
        self._valid_until = sent_at + self.safety * self.ttl
        return self.role

    def conflict(self) -> LeaseRole:
        """The server refused: the key exists (create) or moved past our revision (renew)."""
        self.conflicts += 1
        if self.role is LeaseRole.LEADER:
            self._lose("revision conflict: another holder wrote the key")
        else:
            self.reason = "held by another"
        return self.role

    def failed(self, error: str) -> LeaseRole:
        """No answer (timeout, disconnect): a leader keeps leading until its bound passes."""
        self.failures += 1
        if self.role is LeaseRole.STANDBY:
            self.reason = f"cannot reach the lease: {error}"
        return self.role

    def check(self, now: float) -> LeaseRole:
        """Step down once the bound of the last confirmed write has passed."""
        if self.role is LeaseRole.LEADER and now >= self._valid_until:
            self._lose("expired: no confirmed renew within the TTL bound")
        return self.role

    def released(self) -> LeaseRole:
        """The holder deleted its key (a graceful stop): a contender can create it at once."""
        self._lose("released: the holder stopped")
        return self.role

    def is_leader(self, now: float) -> bool:
        return self.check(now) is LeaseRole.LEADER

    def valid_until(self) -> float:
        """When a leader stops believing it leads (meaningless when standing by)."""
        return self._valid_until

    def _lose(self, reason: str) -> None:
        if self.role is LeaseRole.LEADER:
            self.losses += 1
            self.reason = reason
        self.role = LeaseRole.STANDBY
        self.revision = None
        self.term = None
        self._valid_until = 0.0

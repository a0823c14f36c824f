"""Connections counted from accept, before anything is read (sans-IO: no sockets, no clocks).

Why
---

The per-address rate limit, the token and ``max_subscribers`` are checked once the upgrade
request has been read, and reading it may take up to ``server.handshake_timeout`` (10 s). Until
then a connection used to be free to open and costly to hold: 4,000 connections from one
address that sent nothing were all accepted and held 10 s each; the gateway's RSS rose from 76
to 123 MiB (~12 KiB each: two tasks, trio-websocket's connection, wsproto's h11 buffer) and a
normal handshake slowed from 0.09 to 1.03 s.

``PendingBudget`` counts a connection from the moment it is accepted until its upgrade request
has been read (or it is gone), per client address (``access.client_key``: IPv4 address, IPv6
/64) and in total; a connection beyond either limit is refused at accept, before a byte is read.

* ``server.max_pending_per_ip`` (64): at least a whole rate-limit burst
  (``connection_burst_per_ip``, 50) handshaking at once from one address, so a legitimate
  burst is never refused here; the rate limit judges it right after.
* ``server.max_pending`` (1024): the gateway-wide bound. A pending connection holds at most
  ~30 KiB (trio-websocket reads 4 KiB at a time; wsproto's h11 refuses a request head over
  16 KiB; ~12 KiB of tasks and objects), so 1024 of them hold at most ~30 MiB, and they last
  at most ``handshake_timeout``. Connections that finished their handshake are bounded by
  ``max_subscribers`` as before, so the gateway holds at most ``max_subscribers +
  max_pending`` connections in all.

The flood above now costs 64 pending connections (~2 MiB), not 4,000, and the other 3,936 are
closed at once.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["PENDING_REFUSALS", "PendingBudget", "PendingRefusal"]

PendingRefusal = Literal["pending_per_ip", "pending_total"]
PENDING_REFUSALS: Final[tuple[PendingRefusal, ...]] = ("pending_per_ip", "pending_total")


class PendingBudget:
    """Connections accepted whose upgrade request has not been read yet, per key and in all.

    ``open(key)`` before reading anything: None (admitted, counted) or why not. Every admitted
    connection is ``close(key)``-d exactly once, when its request has been read or it ended.
    """

    def __init__(self, total: int, per_key: int) -> None:
        if total < 1 or per_key < 1:
            raise ValueError("max_pending and max_pending_per_ip must be >= 1")
        self.total = total
        self.per_key = per_key
        self.pending = 0
        self._per_key: dict[str, int] = {}  # only keys with pending connections: bounded

    def open(self, key: str) -> PendingRefusal | None:
        held = self._per_key.get(key, 0)
        if held >= self.per_key:
            return "pending_per_ip"
        if self.pending >= self.total:
            return "pending_total"
        self._per_key[key] = held + 1
        self.pending += 1
        return None

    def close(self, key: str) -> None:
        held = self._per_key[key] - 1
        if held:
            self._per_key[key] = held
        else:
            del self._per_key[key]
        self.pending -= 1

    def held(self, key: str) -> int:
        return self._per_key.get(key, 0)

"""Which ops-endpoint connections may stay open (``io.ops_http``): slots handed out by
shedding, oldest first, so that a new connection is never refused for the sake of an idle one.

A cap that refuses new connections when full lets anyone who can reach the port take the probes
down: 64 idle TCP connections (a few kB of client memory, one ``for`` loop) used to fill
``max_connections``, and ``/healthz`` and ``/readyz`` then answered 503 for the whole
``request_timeout`` (10 s). Repeated every 10 s that gets the pod restarted by the liveness
probe (3 failures, 10 s apart) and removed from the Service. A shorter timeout only shrinks the
window: at any timeout T the attacker needs just 64 connections per T.

So slots are handed out by shedding, oldest first:

* **Per address** (``max_connections_per_address``, 8; IPv4 address or IPv6 /64, as
  ``access.client_key``): a connection beyond it sheds the oldest connection *of the same
  address* (idle ones first). One address competes only with itself: any number of
  connections from an attacker's address cost the kubelet's and Prometheus's addresses
  nothing. 8 is ample: the kubelet opens one connection per probe (liveness and readiness,
  every 10 s, ``Connection: close``), a Prometheus server one per scrape, so a legitimate
  address holds 1-3 at a time.
* **In total** (``max_connections``, 64): a connection beyond it sheds the oldest *idle*
  connection anywhere (idle: waiting for a request head, however much of it has arrived, or
  between keep-alive requests). A probe is idle for the time it takes its request head to
  cross the network (~1 ms on a node); to shed it, more than 63 other addresses would have to
  open a connection within that millisecond. Only when all 64 slots are busy writing a
  response (each bounded by ``request_timeout``) is a new connection answered 503.

A shed connection is closed without an answer, as an idle timeout would close it, and counted
in ``ops_http_shed_connections_total{reason="per_address"|"total"}``. Memory stays bounded by
the cap: each connection holds at most ``MAX_REQUEST_HEAD_BYTES`` (16 KiB) of request head and
one task, about 1.2 MiB for 64.
"""

from __future__ import annotations

from collections import OrderedDict

import trio

__all__ = ["OpsSlot", "OpsSlots"]


class OpsSlot:
    __slots__ = ("busy", "key", "scope")

    def __init__(self, key: str) -> None:
        self.key = key
        self.busy = False  # a complete request is being answered
        self.scope = trio.CancelScope()  # cancelled to shed the connection


class OpsSlots:
    """The open ops connections, oldest first, with the shedding rules of the module docstring.

    Shed slots leave the table at once (their task ends at its next checkpoint), so the table
    never holds more than ``total`` slots, nor more than ``per_address`` of one address.
    """

    def __init__(self, total: int, per_address: int) -> None:
        if total < 1 or per_address < 1:
            raise ValueError("max_connections and max_connections_per_address must be >= 1")
        self.total = total
        self.per_address = per_address
        self._open: OrderedDict[OpsSlot, None] = OrderedDict()
        self._per_key: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, slot: OpsSlot) -> list[tuple[OpsSlot, str]] | None:
        """Take ``slot`` in; the slots to shed, with the reason; None: refused (every slot is
        busy answering a request)."""
        shed: list[tuple[OpsSlot, str]] = []
        if self._per_key.get(slot.key, 0) >= self.per_address:
            same = [s for s in self._open if s.key == slot.key]
            victim = next((s for s in same if not s.busy), same[0])
            shed.append((victim, "per_address"))
            self.release(victim)
        elif len(self._open) >= self.total:
            victim_or_none = next((s for s in self._open if not s.busy), None)
            if victim_or_none is None:
                return None
            shed.append((victim_or_none, "total"))
            self.release(victim_or_none)
        self._open[slot] = None
        self._per_key[slot.key] = self._per_key.get(slot.key, 0) + 1
        return shed

    def release(self, slot: OpsSlot) -> None:
        if self._open.pop(slot, False) is None:
            left = self._per_key[slot.key] - 1
            if left:
                self._per_key[slot.key] = left
            else:
                del self._per_key[slot.key]

"""``/readyz``: whether the gateway should receive subscribers, decided from per-feed health.

``Readiness``: ready only when every required feed is connected with all of
its books snapshotted and the gateway is not shutting down. A required feed that was ready and
drops keeps the gateway ready for ``ready_grace`` seconds, because a Paxos failover is routine and
a reconnect takes about a second: taking the pod out of service for it would move every
subscriber for nothing. A feed that has never been ready gets no grace: a freshly started gateway
has no books to serve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

__all__ = ["FeedHealth", "Readiness", "ReadyReport"]


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed as readiness sees it at this instant."""

    name: str
    required: bool
    ready: bool
    # Why it is not ready ("connecting", "waiting for snapshot of book.BTCUSD"); "" if ready.
    reason: str
    # What it is doing, shown ready or not (a cluster part: "connected", "leader, epoch ...").
    state: str = ""


@dataclass(frozen=True, slots=True)
class ReadyReport:
    ready: bool
    body: dict[str, Any]


class Readiness:
    """Decides ``/readyz`` from per-feed health sampled over time.

    ``probe`` returns the current ``FeedHealth`` of every feed. Times are trio clock seconds.
    ``watch`` samples in the background so that the moment a feed went down is known to within
    ``interval`` even when nobody is probing; ``check`` samples too.
    """

    def __init__(self, probe: Callable[[], Iterable[FeedHealth]], grace: float) -> None:
        self._probe = probe
        self._grace = grace
        self._ever_ready: set[str] = set()
        self._down_since: dict[str, float] = {}
        self.shutting_down = False

    def begin_shutdown(self) -> None:
        self.shutting_down = True

    def observe(self, now: float) -> list[FeedHealth]:
        feeds = list(self._probe())
        for feed in feeds:
            if feed.ready:
                self._ever_ready.add(feed.name)
                self._down_since.pop(feed.name, None)
            elif feed.name in self._ever_ready:
                self._down_since.setdefault(feed.name, now)
        return feeds

    def check(self, now: float) -> ReadyReport:
        feeds = self.observe(now)
        failing: list[dict[str, Any]] = []
        report: dict[str, dict[str, Any]] = {}
        for feed in feeds:
            entry: dict[str, Any] = {"required": feed.required, "ready": feed.ready}
            if feed.state:
                entry["state"] = feed.state
            if not feed.ready:
                entry["reason"] = feed.reason
                since = self._down_since.get(feed.name)
                if since is not None:
                    entry["down_seconds"] = round(now - since, 3)
                if feed.required:
                    if since is None:
                        failing.append(
                            {"feed": feed.name, "reason": f"not ready yet: {feed.reason}"}
                        )
                    elif now - since > self._grace:
                        failing.append({
                            "feed": feed.name,
                            "reason": f"down for {now - since:.1f}s, longer than the "
                            f"{self._grace:g}s grace: {feed.reason}",
                        })  # fmt: skip
                    else:
                        entry["in_grace"] = True
            report[feed.name] = entry
        if self.shutting_down:
            failing.insert(0, {"feed": None, "reason": "shutting down"})
        ready = not failing
        body: dict[str, Any] = {"ready": ready, "feeds": report}
        if failing:
            body["failing"] = failing
        return ReadyReport(ready=ready, body=body)

    async def watch(self, interval: float = 0.5) -> None:
        while True:
            self.observe(trio.current_time())
            await trio.sleep(interval)

"""One process's place in the cluster: the NATS connection, kept, and the roles run on it.

``ClusterNode.run`` connects (``open_bridge``, one attempt bounded by ``connect_timeout``),
makes sure the streams and the lease bucket exist, and runs the roles (ingest, edge, or both)
on the bridge. NATS unreachable at start, or a bridge that ends, is not fatal: the node says
why (``state``, ``reason``: readiness and the status of ``/readyz`` show it), waits with
backoff (``retry.backoff``, 0.5 s doubling up to 10 s, with jitter) and tries again, for ever,
until cancelled. Once connected, nats-py reconnects by itself: meanwhile ``state`` is
``disconnected`` (readiness false after the grace), the leader steps down when its renews
fail (the lease's own bound) and the edge's ordered consumer resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from gateway.cluster.subjects import StreamLayout
from gateway.io.nats_bridge import BridgeClosed, NatsBridge, NatsUnavailable, open_bridge
from gateway.retry.backoff import Backoff

__all__ = ["ClusterNode", "RoleTask"]

log = logging.getLogger("gateway.cluster")

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0

# A role's run: (bridge, task_status) -> runs until cancelled.
RoleTask = Callable[..., Awaitable[None]]


class ClusterNode:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        layout: StreamLayout,
        roles: Sequence[RoleTask],
        name: str = "paxos-gateway",
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.urls = list(urls)
        self.layout = layout
        self.roles = list(roles)
        self.name = name
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff(BACKOFF_INITIAL, BACKOFF_MAX)
        # connecting | connected | disconnected | unreachable | failed
        self.state = "connecting"
        self.reason = "connecting to NATS"
        self.connects = 0
        self.connect_failures = 0
        self.bridge: NatsBridge | None = None
        self.started = trio.Event()  # the roles run on a connected bridge (the first time)

    @property
    def connected(self) -> bool:
        return self.bridge is not None and self.bridge.state == "connected"

    def describe(self) -> str:
        """One line for /readyz: the connection's state and, if not connected, why."""
        if self.bridge is not None:
            state = self.bridge.state
            return state if state == "connected" else f"{state}: nats-py is reconnecting"
        return f"{self.state}: {self.reason}"

    async def run(self) -> None:
        """Connect, run the roles, reconnect with backoff; until cancelled."""
        while True:
            try:
                await self._session()
            except Exception as exc:  # also a group from the roles' nursery
                cause = _first_leaf(exc)
                if isinstance(cause, NatsUnavailable):
                    self._failed("unreachable", str(cause))
                elif isinstance(cause, BridgeClosed):
                    self._failed("failed", f"the NATS connection closed: {cause}")
                else:  # a JetStream API error at setup (no meta leader yet, ...), a role's bug
                    self._failed("failed", f"{type(cause).__name__}: {cause}")
                    log.debug("cluster session failed", exc_info=exc)
            await trio.sleep(self.backoff.next_delay())

    async def _session(self) -> None:
        self.state, self.reason = "connecting", f"connecting to {', '.join(self.urls)}"
        async with open_bridge(
            self.urls, name=self.name, connect_timeout=self.connect_timeout
        ) as bridge:
            try:
                await bridge.ensure_streams(self.layout)
                await bridge.ensure_bucket(
                    self.layout.lease_bucket,
                    ttl=self.layout.lease_ttl_seconds,
                    replicas=self.layout.replicas,
                )
                self.bridge = bridge
                self.connects += 1
                self.state, self.reason = "connected", ""
                self.backoff.reset()
                log.info(
                    "cluster: connected to NATS at %s", ", ".join(self.urls),
                    extra={"event": "nats_connected", "urls": self.urls},
                )  # fmt: skip
                async with trio.open_nursery() as nursery:
                    for role in self.roles:
                        await nursery.start(role, bridge)
                    self.started.set()
            finally:
                self.bridge = None

    def _failed(self, state: str, reason: str) -> None:
        self.connect_failures += 1
        self.state, self.reason = state, reason
        log.warning(
            "cluster: %s; retrying with backoff", reason,
            extra={"event": "nats_" + state, "reason": reason},
        )  # fmt: skip


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc

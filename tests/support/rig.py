"""The fault-injection suite's rig: simulator + gateway in-process, checking subscribers in
worker processes (``client_workers``), and a sampler that watches every bound while the test
runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.checks import bounded_problems, leaked_subscribers, wait_books_equal_truth
from tests.support.client_workers import ClientWorkers, Subscriber, client_workers
from tests.support.config import FAST_UPSTREAM_PINGS, gateway_config


@dataclass
class Rig:
    """A running simulator and gateway, worker processes for subscribers, and a sampler that
    checks the gateway's bounded structures all along the run (not only at the end)."""

    sim: Simulator
    gateway: Gateway
    clients: ClientWorkers
    subs: list[Subscriber] = field(default_factory=list)
    bound_violations: list[str] = field(default_factory=list)
    max_queued_bytes: int = 0

    @property
    def base(self) -> str:
        return self.gateway.subscriber_url

    async def open(self, subs: Iterable[Subscriber]) -> None:
        subs = list(subs)
        self.subs += [s for s in subs if s not in self.subs]
        await self.clients.open(subs, self.base, resume=False)

    async def reopen(self, subs: Iterable[Subscriber], *, resume: bool = True) -> None:
        """Connect ``subs`` again, resuming every concrete stream from the last record held."""
        await self.clients.open(subs, self.base, resume=resume)

    async def close(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.close(subs)

    async def abort(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.abort(subs)

    async def churn(self, subs: Iterable[Subscriber], streams: list[str], cycles: int) -> None:
        await self.clients.churn(subs, streams, cycles)

    def heads(self) -> dict[str, int]:
        return {info.stream: info.seq for info in self.gateway.hub.stream_list()}

    async def settle(
        self,
        markets: Iterable[str],
        subs: Iterable[Subscriber] | None = None,
        *,
        ready_feeds: Iterable[str] | None = None,
        timeout: float = 60,
    ) -> None:
        """Pause the market, let the gateway repair its books, and every subscriber in ``subs``
        (default: all) receive everything up to each stream's head."""
        self.sim.pause()
        with trio.fail_after(timeout):
            await self.sim.wait_idle()
        await wait_books_equal_truth(
            self.sim, self.gateway, markets, timeout, ready_feeds=ready_feeds
        )
        chosen = self.subs if subs is None else list(subs)
        await self.clients.wait_reached(chosen, self.heads(), timeout)

    async def start(
        self,
        subs: Iterable[Subscriber],
        markets: Iterable[str],
        *,
        ready_feeds: Iterable[str] | None = None,
    ) -> int:
        """With the market paused: wait for the gateway's books, subscribe ``subs`` (concrete
        streams exist by then), wait until they hold everything, resume. Returns the index in
        ``sim.sent_executions`` from which subscribers of a trades stream must hold all."""
        markets = list(markets)
        self.sim.pause()
        await wait_books_equal_truth(self.sim, self.gateway, markets, ready_feeds=ready_feeds)
        await self.open(subs)
        await self.settle(markets, ready_feeds=ready_feeds)
        since = len(self.sim.sent_executions)
        self.sim.resume()
        return since

    async def reconnect_closed(
        self, subs: Iterable[Subscriber], markets: Iterable[str], timeout: float = 30
    ) -> list[tuple[str, int | None]]:
        """With the market paused, let each of ``subs`` either catch up or see its connection
        end; reconnect (resuming) those whose connection ended, as a client would. Returns
        (name, close code) of each reconnected one. The market stays paused."""
        subs = list(subs)
        self.sim.pause()
        with trio.fail_after(timeout):
            await self.sim.wait_idle()
        await wait_books_equal_truth(self.sim, self.gateway, markets, timeout)
        await self.clients.wait_reached_or_ended(subs, self.heads(), timeout)
        ended = [s for s in subs if not s.connected]
        codes = [(s.name, s.closed_code) for s in ended]
        await self.reopen(ended)  # which forgets each one's close code
        return codes

    async def sample_bounds(self) -> None:
        """Run in the rig's nursery: check the bounded structures every 20 ms."""
        while True:
            problems = bounded_problems(self.gateway)
            if problems and len(self.bound_violations) < 20:
                self.bound_violations += problems
            for sub in self.gateway.hub.subscribers:
                self.max_queued_bytes = max(self.max_queued_bytes, sub.queued_bytes)
            await trio.sleep(0.02)

    async def wait_no_subscribers(self, timeout: float = 20) -> None:
        with trio.fail_after(timeout):
            while leaked_subscribers(self.gateway):
                await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_rig(
    sim_config: SimulatorConfig,
    *,
    feeds: Sequence[str] | None = None,
    **sets: str,
) -> AsyncIterator[Rig]:
    """Simulator, gateway (fast upstream pings unless overridden) and subscriber processes; on
    exit the subscribers are closed, the gateway shut down and everything cancelled."""
    async with client_workers() as clients, trio.open_nursery() as nursery:
        sim = Simulator(sim_config)
        sim_url = await nursery.start(sim.serve)
        config = gateway_config(sim_url, feeds=feeds, **{**FAST_UPSTREAM_PINGS, **sets})
        gateway = Gateway(config, handle_signals=False)
        await nursery.start(gateway.serve)
        rig = Rig(sim, gateway, clients)
        nursery.start_soon(rig.sample_bounds)
        try:
            yield rig
        finally:
            with trio.move_on_after(10):
                await rig.close([s for s in rig.subs if s.connected])
            gateway.request_shutdown()
            with trio.move_on_after(10):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()

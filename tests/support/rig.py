"""The fault-injection suite's rig: simulator + gateway in-process, checking subscribers on an
asyncio loop in a thread, and a sampler that watches every bound while the test runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from bench.checking_subscriber import Subscriber, wait_all_reached
from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.checks import (
    bounded_problems,
    leaked_subscribers,
    subscribed_streams,
    wait_books_equal_truth,
)
from tests.support.clients import AsyncioClients
from tests.support.config import FAST_UPSTREAM_PINGS, gateway_config


@dataclass
class Rig:
    """A running simulator and gateway, an asyncio thread for subscribers, and a sampler that
    checks the gateway's bounded structures all along the run (not only at the end)."""

    sim: Simulator
    gateway: Gateway
    clients: AsyncioClients
    subs: list[Subscriber] = field(default_factory=list)
    bound_violations: list[str] = field(default_factory=list)
    max_queued_bytes: int = 0

    @property
    def base(self) -> str:
        return self.gateway.subscriber_url

    async def open(self, subs: Iterable[Subscriber]) -> None:
        subs = list(subs)
        self.subs += [s for s in subs if s not in self.subs]
        await self.clients.run(_open_many(subs, self.base))

    async def reopen(self, subs: Iterable[Subscriber], *, resume: bool = True) -> None:
        """Connect ``subs`` again, resuming every concrete stream from the last record held."""
        await self.clients.run(_open_many(list(subs), self.base, resume=resume))

    async def close(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.run(_close_many(list(subs)))

    async def abort(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.run(_abort_many(list(subs)))

    async def churn(self, subs: Iterable[Subscriber], streams: list[str], cycles: int) -> None:
        await self.clients.run(_churn_many(list(subs), streams, cycles))

    def heads(self) -> dict[str, int]:
        return {info.stream: info.seq for info in self.gateway.hub.stream_list()}

    async def settle(
        self,
        markets: Iterable[str],
        subs: Iterable[Subscriber] | None = None,
        *,
        ready_feeds: Iterable[str] | None = None,
        timeout: float = 30,
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
        await self.clients.run(_wait_reached(chosen, self.heads(), timeout), timeout + 5)

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
        heads = self.heads()
        await self.clients.run(_wait_reached_or_ended(subs, heads, timeout), timeout + 5)
        ended = [s for s in subs if s.reader is None or s.reader.done()]
        codes = [(s.name, s.closed_code) for s in ended]
        for sub in ended:
            sub.closed_code = None
        await self.reopen(ended)
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
    """Simulator, gateway (fast upstream pings unless overridden) and a subscriber thread; on
    exit the subscribers are closed, the gateway shut down and everything cancelled."""
    async with trio.open_nursery() as nursery:
        sim = Simulator(sim_config)
        sim_url = await nursery.start(sim.serve)
        config = gateway_config(sim_url, feeds=feeds, **{**FAST_UPSTREAM_PINGS, **sets})
        gateway = Gateway(config, handle_signals=False)
        await nursery.start(gateway.serve)
        rig = Rig(sim, gateway, AsyncioClients())
        nursery.start_soon(rig.sample_bounds)
        try:
            yield rig
        finally:
            with trio.move_on_after(10):
                await rig.close([s for s in rig.subs if s.ws is not None])
            rig.clients.close()
            gateway.request_shutdown()
            with trio.move_on_after(10):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


async def _open_many(subs: list[Subscriber], base: str, *, resume: bool = False) -> None:
    await asyncio.gather(
        *(s.open(base, resume=(s.resume_positions() or None) if resume else None) for s in subs)
    )


async def _close_many(subs: list[Subscriber]) -> None:
    await asyncio.gather(*(s.close() for s in subs))


async def _churn_many(subs: list[Subscriber], streams: list[str], cycles: int) -> None:
    await asyncio.gather(*(s.churn(streams, cycles) for s in subs))


async def _abort_many(subs: list[Subscriber]) -> None:
    await asyncio.gather(*(s.abort() for s in subs))


async def _wait_reached(subs: list[Subscriber], heads: dict[str, int], timeout: float) -> None:
    def heads_of(sub: Subscriber) -> dict[str, int]:
        return {n: heads[n] for n in subscribed_streams(sub) if heads.get(n, 0) > 0}

    await wait_all_reached(subs, heads_of, timeout)


async def _wait_reached_or_ended(
    subs: list[Subscriber], heads: dict[str, int], timeout: float
) -> None:
    def done(sub: Subscriber) -> bool:
        if sub.reader is None or sub.reader.done():
            return True
        return sub.reached({n: heads[n] for n in subscribed_streams(sub) if heads.get(n, 0)})

    deadline = asyncio.get_running_loop().time() + timeout
    while not all(done(s) for s in subs):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"neither caught up nor closed: {[s.name for s in subs][:5]}")
        await asyncio.sleep(0.02)

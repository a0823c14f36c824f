"""The simulator's pace: one task advances the model ``rate`` events per second (or as fast as
the clients read), another ticks the stablecoin prices, both pausable, both stopping at
``max_events``.

Generation does not depend on connections: executions happen (and are recorded in the model's
tape) during an outage of every feed just as with clients connected. With backpressure, a batch
waits until no reading client's queue is above the high-water mark (``Registry``), and one
batch fits in what is left above it, so a reading client is never dropped for overflow.
"""

from __future__ import annotations

import trio

from gateway.simulator.config import SimulatorConfig
from gateway.simulator.events import PriceTick
from gateway.simulator.model import MarketModel
from gateway.simulator.registry import Registry

__all__ = ["Generator"]

# A model step yields up to this many events (the batch's margin above the high-water mark).
_MAX_EVENTS_PER_STEP = 8


class Generator:
    def __init__(self, model: MarketModel, config: SimulatorConfig, registry: Registry) -> None:
        self.model = model
        self.config = config
        self.registry = registry
        self.events_generated = 0
        """UPDATE and execution messages generated so far (initial state not counted)."""
        self.sent_prices: list[PriceTick] = [model.last_price(m) for m in model.stablecoins]
        self.finished = trio.Event()
        """Set when ``max_events`` has been reached and generation stopped."""
        self.paused = False
        self._resumed = trio.Event()
        # with backpressure, one batch must fit in what is left above the high-water mark
        # (a step yields up to 8 events), so a reading client is never dropped for overflow
        self._batch = (
            min(config.batch, config.send_buffer - registry.high_water - _MAX_EVENTS_PER_STEP)
            if config.backpressure
            else config.batch
        )

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._resumed.set()
            self._resumed = trio.Event()

    def produce(self, budget: int) -> int:
        """Generate up to ``budget`` events now (fewer at ``max_events``) and dispatch them."""
        limit = self.config.max_events
        if limit is not None:
            budget = min(budget, limit - self.events_generated)
        now_ns = self.config.clock_ns()
        step = self.model.step
        dispatch = self.registry.dispatch
        made = 0
        while made < budget:
            for event in step(now_ns):
                dispatch(event.FEED, event.market, event.text)
                made += 1
        self.events_generated += made
        return made

    async def run(self) -> None:
        """Generate book and execution events until ``max_events`` (or cancelled)."""
        cfg, registry = self.config, self.registry
        rate = cfg.rate
        start = trio.current_time()
        done = 0  # events since ``start``
        while True:
            if cfg.max_events is not None and self.events_generated >= cfg.max_events:
                self.finished.set()
                registry.notify()
                return
            if self.paused:
                await self._resumed.wait()
                start, done = trio.current_time(), 0
                continue
            if cfg.backpressure and registry.busy():
                await registry.wait_for_space()
                continue
            budget = self._batch
            if rate > 0:
                now = trio.current_time()
                # the epsilon: float error must not leave ``due`` at 0 at the very deadline
                # slept until (a busy loop under a mock clock, whose time then never moves)
                due = int((now - start) * rate + 1e-6) - done
                if due <= 0:
                    await trio.sleep_until(start + (done + 1) / rate)
                    continue
                if due > max(rate, self._batch):
                    # more than a second behind (e.g. after backpressure): no catch-up burst
                    start, done, due = now, 0, 1
                budget = min(due, budget)
            done += self.produce(budget)
            registry.notify()
            await trio.lowlevel.checkpoint()

    async def tick_stablecoins(self) -> None:
        """A new price of every stablecoin each ``stablecoin_interval``."""
        interval = self.config.stablecoin_interval
        if not self.model.stablecoins:
            return
        next_at = trio.current_time() + interval
        while not self.finished.is_set():
            await trio.sleep_until(next_at)
            if self.paused:
                await self._resumed.wait()  # no idle wake-ups while paused
            next_at = max(next_at + interval, trio.current_time())
            if self.finished.is_set():
                return
            for tick in self.model.stablecoin_tick(self.config.clock_ns()):
                self.sent_prices.append(tick)
                self.registry.dispatch("stablecoin", tick.market, tick.text)
            self.registry.notify()

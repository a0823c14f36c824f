"""Settings of a simulator run (``SimulatorConfig``, ``RestConfig``); faults live in
``faults.FaultConfig``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.simulator.events import NumberStyle
from gateway.simulator.faults import FaultConfig
from gateway.simulator.markets import (
    DEFAULT_MARKETS,
    DEFAULT_STABLECOINS,
    MarketSpec,
    check_stablecoins,
    resolve_markets,
)

ExecutionsOrder = Literal["newest_first", "oldest_first"]


@dataclass(slots=True)
class RestConfig:
    """How the REST API behaves. Mutable while running, like ``FaultConfig``.

    Paxos documents 10 requests/s per IP, averaged over 5 minutes, and a 5-minute throttle
    after a 429. Averaging over 5 minutes is a bucket of 3,000 requests: a client that
    bursts 100 requests at once would never be caught, so the default bucket holds one
    second's worth (``burst`` 10). Stricter than Paxos on purpose: a client that stays
    within it stays within Paxos's limit too. ``burst=3000, throttle=300`` is Paxos as
    documented."""

    rate_limit: float = 10.0
    """Requests per second per client IP (the token bucket's refill); 0 = no limit."""
    burst: int = 10
    """Tokens the bucket holds: requests admitted at once after a quiet spell."""
    throttle: float = 0.0
    """> 0: after a 429, refuse that IP for this many seconds (``Retry-After`` says so)."""
    recent_executions: int = 2000
    """Executions ``recent-executions`` returns per market (Paxos: the last 2,000)."""
    executions_order: ExecutionsOrder = "newest_first"
    """Order of ``recent-executions`` items. Paxos's one documented example is too short to
    tell: a client must sort by itself, and can be tested against both orders."""

    def check(self) -> None:
        if self.rate_limit < 0:
            raise ValueError("rest.rate_limit must be >= 0 (0 = no limit)")
        if self.burst < 1:
            raise ValueError("rest.burst must be >= 1")
        if self.throttle < 0:
            raise ValueError("rest.throttle must be >= 0")
        if self.recent_executions < 1:
            raise ValueError("rest.recent_executions must be >= 1")
        if self.executions_order not in ("newest_first", "oldest_first"):
            raise ValueError("rest.executions_order must be newest_first or oldest_first")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    seed: int = 0
    markets: Sequence[str | MarketSpec] = tuple(DEFAULT_MARKETS)
    """Order-book markets: names from ``DEFAULT_MARKETS`` or ``MarketSpec``s."""
    stablecoins: Sequence[str] = DEFAULT_STABLECOINS
    levels: int = 200
    """Levels per side the books hover around."""
    rate: float = 100.0
    """Events (UPDATE and execution messages) per second overall; 0 = as fast as possible."""
    max_events: int | None = None
    """Stop generating (book, executions and stablecoin) once this many events exist. The
    step that reaches the bound completes, so up to a 4-level sweep (8 events) more."""
    execution_ratio: float = 0.1
    """Share of steps that are executions."""
    number_style: NumberStyle = "trim"
    """``trim`` (19994.5), ``pad`` (19994.50) or ``mixed`` (chosen per message)."""
    timestamp_digits: int | None = None
    """Fractional digits kept before trimming zeros; None = random 0..9 per timestamp."""
    stablecoin_interval: float = 1.0
    host: str = "127.0.0.1"
    port: int = 0
    rest_port: int = 0
    """The REST API's port (``GET /v2/markets``, ...): Paxos serves it from another host
    than the feeds, so it gets a listener of its own."""
    rest: RestConfig = field(default_factory=RestConfig)
    send_buffer: int = 100_000
    """Messages queued per connection; a connection that falls further behind is dropped."""
    backpressure: bool = True
    """Generation waits while a connection (not a stalled one) has more than half of
    ``send_buffer`` queued: "as fast as possible" then means as fast as the clients read."""
    batch: int = 256
    """Events generated between checkpoints."""
    handshake_timeout: float = 10.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    clock_ns: Callable[[], int] = time.time_ns
    """Wall clock for ``executed_at`` and stablecoin timestamps (ns since the Unix epoch)."""

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        resolve_markets(list(self.markets))
        check_stablecoins(list(self.stablecoins))
        if self.levels < 1:
            raise ValueError("levels must be >= 1")
        if self.rate < 0:
            raise ValueError("rate must be >= 0 (0 = as fast as possible)")
        if self.max_events is not None and self.max_events < 0:
            raise ValueError("max_events must be >= 0")
        if not 0.0 <= self.execution_ratio <= 1.0:
            raise ValueError("execution_ratio must be within 0..1")
        if self.number_style not in ("trim", "pad", "mixed"):
            raise ValueError("number_style must be trim, pad or mixed")
        if self.timestamp_digits is not None and not 0 <= self.timestamp_digits <= 9:
            raise ValueError("timestamp_digits must be 0..9 or None")
        if self.stablecoin_interval <= 0:
            raise ValueError("stablecoin_interval must be > 0")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if not 0 <= self.rest_port <= 65535:
            raise ValueError("rest_port must be 0..65535")
        if self.send_buffer < 64 or self.batch < 1:
            raise ValueError("send_buffer must be >= 64 and batch >= 1")
        self.faults.check()
        self.rest.check()

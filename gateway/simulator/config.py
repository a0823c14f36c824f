"""Settings of a simulator run (``SimulatorConfig``); faults live in ``faults.FaultConfig``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.simulator.faults import FaultConfig
from gateway.simulator.markets import (
    DEFAULT_MARKETS,
    DEFAULT_STABLECOINS,
    MarketSpec,
    check_stablecoins,
    resolve_markets,
)
from gateway.simulator.model import NumberStyle


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
        if self.send_buffer < 64 or self.batch < 1:
            raise ValueError("send_buffer must be >= 64 and batch >= 1")
        self.faults.check()

"""Fault injection settings and the bad frames themselves (sans-IO).

``FaultConfig`` is mutable on purpose: a test may switch faults on and off while the
simulator runs (``sim.faults.drop_probability = 0.01``); every connection reads it per
message. Probabilities are per message sent on a connection.

Bad frames are extra frames sent just before a real message and are NOT part of the truth.
They are built so that a gateway that wrongly accepts one cannot hide the mistake and cannot
corrupt state either way unnoticed: ``wrong_types`` repeats the real message that follows
with numbers instead of strings (accepting it applies an absolute size or a match number a
second time, which the real message then confirms). Unknown extra fields, by contrast, are
added to REAL messages (``extra_field_probability``): a tolerant reader must still use them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from gateway.simulator.formatting import FinalSnapshotStyle

BadFrameKind = Literal["malformed", "wrong_types", "truncated", "oversized"]
BAD_FRAME_KINDS: tuple[BadFrameKind, ...] = ("malformed", "wrong_types", "truncated", "oversized")
UnknownMarketResponse = Literal["error_frame", "http_404", "http_503"]

_QUOTED_NUMBER = re.compile(r'"(\d+(?:\.\d+)?)"')
_MALFORMED = (
    "{",
    "not json",
    '{"type":"UPDATE","market":"BTCUSD",}',
    '{"type":"UPDATE" "market":"BTCUSD"}',
    '["UPDATE","BTCUSD"]',
    "null",
    '{"market":"BTCUSD","price":"1.0","amount":"0.1"',
)


@dataclass(slots=True)
class FaultConfig:
    drop_probability: float = 0.0
    """Per message: close the connection abruptly instead of sending it."""
    drop_graceful: bool = False
    """Drops send a close frame (1001) first instead of just closing TCP."""
    stall_probability: float = 0.0
    """Per message: the connection stops sending AND stops answering pings, stays open."""
    bad_frame_probability: float = 0.0
    """Per message: send one bad frame (kind chosen from ``bad_frame_kinds``) first."""
    bad_frame_kinds: tuple[BadFrameKind, ...] = BAD_FRAME_KINDS
    oversized_bytes: int = 17 * 1024 * 1024
    """Size of an ``oversized`` frame: above the gateway's default 16 MiB limit."""
    extra_field_probability: float = 0.0
    """Per real message: add an unknown field (the message stays part of the truth)."""
    unknown_market: UnknownMarketResponse = "error_frame"
    """Unknown path or market: ``{"error":"Not Found"}`` then close, or refuse the upgrade."""
    final_snapshot: FinalSnapshotStyle = "bool"
    """``final_snapshot`` as true/false, as the strings "true"/"false", or missing."""
    snapshot_split: int = 0
    """> 0: at most this many levels per side per SNAPSHOT message (final_snapshot false
    until the last fragment)."""
    connect_interval: float = 0.0
    """Paxos lets one new connection per second start streaming (1.0 to emulate): excess
    connections are accepted but their data is delayed, never refused."""
    rest_delay: float = 0.0
    """REST: seconds every response waits before it is computed and sent (a slow API)."""
    rest_error_probability: float = 0.0
    """REST: per request (one the rate limit admitted), answer ``rest_error_status``."""
    rest_error_status: int = 503
    """REST: the 5xx status of those errors (500, 502, 503, 504, ...)."""

    def check(self) -> None:
        for name in ("drop_probability", "stall_probability", "bad_frame_probability",
                     "extra_field_probability", "rest_error_probability"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"faults.{name} must be within 0..1, got {value}")
        unknown = set(self.bad_frame_kinds) - set(BAD_FRAME_KINDS)
        if unknown or not self.bad_frame_kinds:
            raise ValueError(f"faults.bad_frame_kinds: a non-empty subset of {BAD_FRAME_KINDS}")
        if self.snapshot_split < 0:
            raise ValueError("faults.snapshot_split must be >= 0")
        if self.connect_interval < 0:
            raise ValueError("faults.connect_interval must be >= 0")
        if self.oversized_bytes < 1:
            raise ValueError("faults.oversized_bytes must be >= 1")
        if self.rest_delay < 0:
            raise ValueError("faults.rest_delay must be >= 0")
        if not 500 <= self.rest_error_status <= 599:
            raise ValueError("faults.rest_error_status must be a 5xx status")


def bad_frame(kind: BadFrameKind, real: str, rng: random.Random, oversized_bytes: int) -> str:
    """A frame no correct reader may turn into data; ``real`` is the message it precedes."""
    if kind == "malformed":
        return rng.choice(_MALFORMED)
    if kind == "wrong_types":
        changed = _QUOTED_NUMBER.sub(r"\1", real)
        # a message with no number in it gets a number where a string belongs
        return changed if changed != real else real.replace('"', "", 2)
    if kind == "truncated":
        return real[: rng.randint(1, len(real) - 1)] if len(real) > 1 else "{"
    head = '{"type":"UPDATE","market":"OVERSIZED","padding":"'
    return head + "x" * max(0, oversized_bytes - len(head) - 2) + '"}'


def with_extra_field(real: str, rng: random.Random) -> str:
    """``real`` with one unknown string field appended (a future Paxos field)."""
    name = rng.choice(("sequence", "x_note", "venue", "trace_id"))
    return f'{real[:-1]},"{name}":"{rng.randrange(10**6)}"}}'

"""Per-stream sequence numbers: 1, 2, 3, ... with no gaps and no repeats.

A consumer tells a gap from a restart by ``(epoch, seq)``: within one epoch a
missing number is a lost record, so numbers are taken only for records that
are actually published (the session asks for one as it builds each record).

A stream may also *continue* another process's numbering: a new ingest leader
that takes over an epoch (docs/cluster.md) starts each stream after the last
seq the cluster stored, so subscribers see one unbroken sequence across the
failover.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Sequencer"]


class Sequencer:
    __slots__ = ("_heads",)

    def __init__(self, heads: Mapping[str, int] | None = None) -> None:
        """``heads``: per stream, the last number already taken elsewhere (the next is one
        more); streams not named start at 1."""
        self._heads: dict[str, int] = {}
        for stream, head in (heads or {}).items():
            if head < 0:
                raise ValueError(f"a stream's head is >= 0, got {head} for {stream!r}")
            if head:
                self._heads[stream] = head

    def next(self, stream: str) -> int:
        """Take the stream's next number (the first is 1, or one after its given head)."""
        seq = self._heads.get(stream, 0) + 1
        self._heads[stream] = seq
        return seq

    def head(self, stream: str) -> int:
        """The last number taken on ``stream``; 0 if none yet."""
        return self._heads.get(stream, 0)

    def streams(self) -> list[str]:
        """Streams that have taken at least one number (or were continued), in first-use
        order."""
        return list(self._heads)

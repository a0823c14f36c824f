"""Per-stream sequence numbers: 1, 2, 3, ... with no gaps and no repeats.

A consumer tells a gap from a restart by ``(epoch, seq)``: within one epoch a
missing number is a lost record, so numbers are taken only for records that
are actually published (the session asks for one as it builds each record).
"""

from __future__ import annotations

__all__ = ["Sequencer"]


class Sequencer:
    __slots__ = ("_heads",)

    def __init__(self) -> None:
        self._heads: dict[str, int] = {}

    def next(self, stream: str) -> int:
        """Take the stream's next number (the first is 1)."""
        seq = self._heads.get(stream, 0) + 1
        self._heads[stream] = seq
        return seq

    def head(self, stream: str) -> int:
        """The last number taken on ``stream``; 0 if none yet."""
        return self._heads.get(stream, 0)

    def streams(self) -> list[str]:
        """Streams that have taken at least one number, in first-use order."""
        return list(self._heads)

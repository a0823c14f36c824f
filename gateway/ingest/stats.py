"""``FeedStats``: the plain counters one ``FeedNormalizer`` keeps.

Sans-IO: integers in a dataclass, incremented on the per-message path at the cost of an
attribute add. ``io.metrics.FeedStatsCollector`` reads them at scrape time and exports them
as Prometheus counters, so nothing here knows of Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FeedStats"]


@dataclass(slots=True)
class FeedStats:
    """Counters kept by a sans-IO feed normalizer; exported by ``FeedStatsCollector``."""

    messages: dict[str, int] = field(default_factory=dict)  # by upstream message kind
    decode_errors: int = 0
    duplicates_suppressed: int = 0
    resnapshots: int = 0
    crossed_books: int = 0
    error_frames: int = 0

    def count_message(self, kind: str) -> None:
        self.messages[kind] = self.messages.get(kind, 0) + 1

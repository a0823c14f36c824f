"""``HubStats``: the fan-out's plain counters.

The sans-IO side never touches Prometheus: the hub adds to these integers (the per-record cost
is a dict add, the same as counting into a local) and ``io.metrics.HubStatsCollector`` exports
them at scrape time under the metric names the hub used to increment directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HubStats"]


@dataclass(slots=True)
class HubStats:
    """Counters of one hub; exported by ``HubStatsCollector``."""

    records_published: dict[str, int] = field(default_factory=dict)  # by stream kind
    deliveries: int = 0  # records handed to subscriber buffers
    subscriptions: dict[str, int] = field(default_factory=dict)  # active now, by stream kind
    conflations: int = 0
    resumes_served: int = 0
    resumes_refused: int = 0
    resume_waits: int = 0  # an edge waited for a seq it had not seen yet (io.resume_wait)
    slow_disconnects: int = 0
    sequence_breaks: int = 0  # a record whose seq did not follow its stream's head
    request_errors_by_code: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.records_published.values())

    @property
    def request_errors(self) -> int:
        return sum(self.request_errors_by_code.values())

    def count_request_error(self, code: str) -> None:
        self.request_errors_by_code[code] = self.request_errors_by_code.get(code, 0) + 1

    def count_subscription(self, kind: str, change: int) -> None:
        self.subscriptions[kind] = self.subscriptions.get(kind, 0) + change

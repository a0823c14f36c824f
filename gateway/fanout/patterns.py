"""The subscribers waiting for streams: a pattern (``book.*``), or a stream name not there yet.

When the hub creates a stream, the subscribers whose patterns match it are attached and told
(``Hub._create_stream``); this is where the hub looks them up.
"""

from __future__ import annotations

from gateway.contract.protocol import StreamName
from gateway.fanout.outbox import Subscriber

__all__ = ["PatternWatches"]


class PatternWatches:
    """Pattern -> the subscribers watching it."""

    __slots__ = ("_by_pattern",)

    def __init__(self) -> None:
        self._by_pattern: dict[str, tuple[StreamName, set[Subscriber]]] = {}

    def watch(self, name: str, parsed: StreamName, sub: Subscriber) -> None:
        """``sub`` subscribed to ``name``: new streams that match are attached to it."""
        self._by_pattern.setdefault(name, (parsed, set()))[1].add(sub)

    def forget(self, sub: Subscriber, name: str) -> None:
        entry = self._by_pattern.get(name)
        if entry is not None:
            entry[1].discard(sub)
            if not entry[1]:
                del self._by_pattern[name]

    def matching(self, stream: str) -> list[Subscriber]:
        """The watchers of ``stream``: pattern by pattern in the order they were first
        watched, each pattern's by subscriber id; one watching two patterns appears twice."""
        return [
            sub
            for parsed, subs in self._by_pattern.values()
            if parsed.matches(stream)
            for sub in sorted(subs, key=lambda s: s.id)
        ]

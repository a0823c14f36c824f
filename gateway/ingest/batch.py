"""One socket read's messages in, one published batch out: the no-checkpoint invariant as code.

Every ``OrderBook`` the hub can see must equal the state at its stream's head sequence number
whenever another task runs, or a late joiner's snapshot would be wrong by the records between
the normalizer's book and the hub's head. The upstream task guarantees it by normalizing the
messages of one read and publishing their records with no trio checkpoint in between.
``ingest_batch`` is that section as a plain synchronous function: it cannot ``await``, so no
checkpoint can slip in, and it runs (and is tested) without sockets.

It also registers the books the normalizer created (a market that first appeared on an
all-markets channel) before publishing the records that fill them, so a late joiner is served
from the normalizer's book from the market's first record on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from gateway.contract.records import Record
from gateway.ingest.book import OrderBook

__all__ = [
    "CONTINUE",
    "Batch",
    "Normalizer",
    "RecordSink",
    "Verdict",
    "ingest_batch",
    "publish_records",
]


class Normalizer(Protocol):
    """What ``ingest_batch`` needs of ``FeedNormalizer`` (structural, for the ``record``
    command's writer and for test doubles)."""

    def receive(self, payload: bytes | str, now_ns: int) -> list[Record]: ...
    def take_new_books(self) -> list[tuple[str, OrderBook]]: ...
    @property
    def resync_reason(self) -> str | None: ...
    @property
    def upstream_error(self) -> str | None: ...


class RecordSink(Protocol):
    """Where published records go: the ``Hub`` (or a test double)."""

    def register_book(self, stream: str, book: OrderBook) -> None: ...
    def publish(self, records: Sequence[Record]) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the connection should do after a batch: go on reading, or be replaced because
    the normalizer asks for a resync (a crossed book, lost updates) or upstream sent an error
    frame (back off first)."""

    action: Literal["continue", "resync", "upstream_error"]
    reason: str = ""


CONTINUE: Final = Verdict("continue")


@dataclass(slots=True)
class Batch:
    """The outcome of one read: the verdict, the records published, how many messages were
    normalized (the rest belonged to a connection about to be replaced) and their bytes."""

    verdict: Verdict = CONTINUE
    records: list[Record] = field(default_factory=list)
    messages: int = 0
    size: int = 0


def publish_records(normalizer: Normalizer, sink: RecordSink, records: list[Record]) -> None:
    """Register the normalizer's new books with ``sink``, then publish ``records`` (if any)."""
    for stream, book in normalizer.take_new_books():
        sink.register_book(stream, book)
    if records:
        sink.publish(records)


def ingest_batch(
    normalizer: Normalizer,
    sink: RecordSink,
    messages: Sequence[bytes | str],
    now_ns: int,
    batch: Batch | None = None,
) -> Batch:
    """Normalize the messages of one read (received at ``now_ns``) and publish their records
    once. Stops at the first message after which the normalizer wants the connection gone.

    If the normalizer raises (a bug: bad input never raises), the records already sequenced
    are still published, or their streams would show a gap, and the error propagates; a
    ``batch`` passed in then tells how far it got.
    """
    if batch is None:
        batch = Batch()
    records = batch.records
    receive = normalizer.receive
    try:
        for message in messages:
            records += receive(message, now_ns)
            batch.size += len(message)
            batch.messages += 1
            if normalizer.resync_reason is not None or normalizer.upstream_error is not None:
                break
    finally:
        publish_records(normalizer, sink, records)
    resync = normalizer.resync_reason
    if resync is not None:
        batch.verdict = Verdict("resync", resync)
    else:
        error = normalizer.upstream_error
        if error is not None:
            batch.verdict = Verdict("upstream_error", error)
    return batch

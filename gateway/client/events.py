"""What the client core reports: one event per thing a consumer may act on.

Every record that arrives in order is a ``RecordReceived``; book records are followed by
``BookChanged`` (and snapshots also by ``Snapshot``), status records by ``StatusChanged``, so a
consumer matches only what it cares about. Problems are events too (``Gap``, ``Duplicate``,
``EpochMismatch``, ``ProtocolProblem``): nothing the gateway sends can pass unnoticed, and
nothing it sends can crash the client.

Events are plain slotted dataclasses, not frozen ones: a frozen dataclass costs twice as much
to create, and the client creates one or two per record.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.contract.protocol import Epoch, Hello, StreamList, Subscribed, Unsubscribed
from gateway.contract.records import BookSnapshot, Record, Status
from gateway.ingest.book import OrderBook

__all__ = [
    "BookChanged",
    "Closed",
    "Connected",
    "Disconnected",
    "Duplicate",
    "EpochMismatch",
    "Event",
    "Gap",
    "PongReceived",
    "ProtocolProblem",
    "Reconnecting",
    "RecordReceived",
    "RequestRefused",
    "ResumeFailed",
    "Resumed",
    "Snapshot",
    "StatusChanged",
    "StreamsListed",
    "SubscriptionChanged",
]


@dataclass(slots=True)
class Connected:
    """The gateway's ``hello``. ``epoch_changed``: a different gateway process than the one of
    the previous connection (a restart); the resumes it answers will fail with
    ``epoch_changed`` and books come back as fresh snapshots."""

    hello: Hello
    epoch_changed: bool


@dataclass(slots=True)
class SubscriptionChanged:
    """A ``subscribed`` or ``unsubscribed`` answer (``id`` None: a pattern matched a new
    stream)."""

    answer: Subscribed | Unsubscribed


@dataclass(slots=True)
class Resumed:
    """The gateway replays ``from_seq``..``to_seq`` of ``stream``: nothing was lost."""

    stream: str
    from_seq: int
    to_seq: int


@dataclass(slots=True)
class ResumeFailed:
    """The gateway could not replay ``stream`` from where the client was; the stream restarts
    from its current state at ``seq`` (a book from a fresh snapshot, which follows). Records
    between the client's position and ``seq`` are lost to this client (``reason``:
    ``epoch_changed``, ``history_exhausted`` or ``ahead_of_head``)."""

    stream: str
    reason: str
    message: str
    epoch: Epoch
    seq: int


@dataclass(slots=True)
class RecordReceived:
    """A record, in order, never twice."""

    record: Record


@dataclass(slots=True)
class BookChanged:
    """``book`` (of stream ``stream``) now reflects ``record``, a snapshot or an update."""

    stream: str
    book: OrderBook
    record: Record


@dataclass(slots=True)
class Snapshot:
    """``stream``'s book was replaced; ``reason`` says why (``initial``, ``subscribe``,
    ``reconnect``, ``crossed``, ``conflation``, ``resume_failed``)."""

    stream: str
    reason: str
    resync: bool
    record: BookSnapshot


@dataclass(slots=True)
class StatusChanged:
    """The upstream feed of ``stream`` changed state (``connected``, ``disconnected``,
    ``resyncing``, ``resynced``)."""

    stream: str
    record: Status


@dataclass(slots=True)
class Gap:
    """Records ``expected``..``got - 1`` of ``stream`` never arrived. The client drops the
    stream's records and resubscribes it for a fresh state (a snapshot for a book)."""

    stream: str
    expected: int
    got: int


@dataclass(slots=True)
class Duplicate:
    """A record at or before the stream's position arrived again; it was dropped."""

    stream: str
    expected: int
    got: int


@dataclass(slots=True)
class EpochMismatch:
    """A record of another gateway epoch arrived in the middle of a stream; the client
    resubscribes the stream as for a gap."""

    stream: str
    held: Epoch
    got: Epoch


@dataclass(slots=True)
class RequestRefused:
    """An ``error`` answer: the request (``id``) changed nothing."""

    id: int | str | None
    code: str
    message: str


@dataclass(slots=True)
class PongReceived:
    id: int | str | None


@dataclass(slots=True)
class StreamsListed:
    answer: StreamList


@dataclass(slots=True)
class ProtocolProblem:
    """Something the gateway sent that the client could not use (undecodable, an unknown
    message type, a book update that does not apply); ``detail`` says what."""

    detail: str


@dataclass(slots=True)
class Disconnected:
    """The connection ended (``code`` None: no closing handshake). The client reconnects
    unless it was closed or reconnecting is off; positions and books are kept for the resume."""

    code: int | None
    reason: str


@dataclass(slots=True)
class Reconnecting:
    """The next connection attempt starts after ``delay`` seconds (``attempt`` 1, 2, ...)."""

    attempt: int
    delay: float
    error: str


@dataclass(slots=True)
class Closed:
    """The client is done: closed by the consumer, or the connection ended and reconnecting
    is off or gave up. No event follows."""

    code: int | None
    reason: str


Event = (
    Connected | SubscriptionChanged | Resumed | ResumeFailed | RecordReceived | BookChanged
    | Snapshot | StatusChanged | Gap | Duplicate | EpochMismatch | RequestRefused | PongReceived
    | StreamsListed | ProtocolProblem | Disconnected | Reconnecting | Closed
)  # fmt: skip

"""Normalized, sequenced records: what the gateway publishes downstream.

Every record belongs to exactly one stream (``trades.BTCUSD``, ``book.BTCUSD``,
``price.USDCUSD``) and carries that stream's gap-free sequence number ``seq``
(1, 2, 3, ...) and the gateway ``epoch`` (changes on every gateway start), so a
consumer can always tell a gap from a restart.

Numbers are exact, in every JSON parser: prices and amounts are ``Decimal``
(encoded as canonical decimal strings, trailing zeros trimmed), times are
nanoseconds since the Unix epoch written as strings of decimal digits, and so is
the ``epoch`` (both exceed 2^53, beyond what JavaScript's ``JSON.parse`` keeps
exactly). ``receive_time`` is the gateway's wall clock when the upstream frame
arrived (for status records: when the state changed). The only JSON numbers
are counters such as ``seq``, which stay below 2^53.

The ``Annotated`` constraints below are not checked when the gateway encodes; they
describe what it sends, and the published schema is generated from them.

These types are the downstream contract: ``schemas/`` is generated from them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal

import msgspec

Side = Literal["bid", "ask"]

JS_SAFE_MAX: Final = 2**53 - 1
"""Largest integer every JSON parser reads exactly (``Number.MAX_SAFE_INTEGER``)."""

DIGITS_PATTERN: Final = r"^(0|[1-9][0-9]{0,19})$"
Epoch = Annotated[
    str,
    msgspec.Meta(
        pattern=DIGITS_PATTERN,
        description="The gateway process's epoch: an opaque token of decimal digits, compared "
        "for equality and sent back exactly as received in a resume.",
    ),
]
Nanos = Annotated[
    str,
    msgspec.Meta(
        pattern=DIGITS_PATTERN,
        description="Nanoseconds since the Unix epoch, in decimal digits (above 2^53: "
        "convert with BigInt in JavaScript, int in Python).",
    ),
]
Seq = Annotated[int, msgspec.Meta(ge=1, le=JS_SAFE_MAX)]
"""A record's sequence number in its stream: 1, 2, 3, ..."""
Head = Annotated[int, msgspec.Meta(ge=0, le=JS_SAFE_MAX)]
"""A stream's head: the seq of its last record, 0 before the first."""

DECIMAL_PATTERN: Final = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{0,17}[1-9])?$"
Dec = Annotated[
    Decimal,
    msgspec.Meta(
        extra_json_schema={
            "pattern": DECIMAL_PATTERN,
            "description": "An exact non-negative decimal, canonical: no exponent, no sign, no "
            "leading zero, no trailing fractional zero; at most 18 digits on either side of "
            "the point (ingest/decimals.py).",
        }
    ),
]
"""A price or amount. msgspec allows no ``pattern`` on ``Decimal``, hence the extra schema."""

# A price level: [price, amount]. Arrays, not objects, because snapshots carry
# thousands of them and the keys would double the bytes on the wire.
Level = tuple[Dec, Dec]


# gc=False: records are immutable values (strings, numbers, tuples of Decimals) and the hub's
# history holds tens of thousands of them; the cyclic collector need not walk them (see
# ``hub.OutFrame``).
class _Record(msgspec.Struct, kw_only=True, tag_field="type", gc=False):
    stream: str
    seq: Seq
    epoch: Epoch
    receive_time: Nanos


class Trade(_Record, tag="trade", omit_defaults=True):
    """One execution. Deduplicated by ``match_number`` across reconnects.

    ``backfilled`` is true for an execution Paxos did not send on a live connection (it
    happened while the upstream was down) and the gateway fetched from Paxos's REST
    ``recent-executions`` after the reconnect; left out of the wire form when false, so the
    live path costs no byte more. A bool rather than a ``source`` enum: the consumer's only
    question is "did this arrive late, after the outage", and a bool has no third value to
    handle.
    """

    market: str
    price: Dec
    amount: Dec
    match_number: str
    exchange_time: Nanos
    backfilled: bool = False


class BookSnapshot(_Record, tag="book_snapshot"):
    """The whole book of one market; it replaces whatever the consumer held.

    ``seq`` is the sequence number the snapshot is valid at: the next update
    of the stream has ``seq + 1``. ``reason`` says why it was sent:
    ``initial`` (first snapshot from upstream), ``reconnect`` / ``crossed``
    (upstream resync, published into the stream), ``takeover`` (a new ingest
    leader's first snapshot of a book the former leader published in the same
    epoch, docs/cluster.md; ``resync`` true), and, sent to one subscriber
    only, ``subscribe`` (late joiner), ``conflation`` (the subscriber's backlog
    was dropped), ``resume_failed`` (history no longer covers the resume).
    """

    market: str
    bids: list[Level]  # best (highest) first
    asks: list[Level]  # best (lowest) first
    resync: bool
    reason: str


class BookUpdate(_Record, tag="book_update"):
    """One level's new absolute size; ``amount == 0`` removes the level."""

    market: str
    side: Side
    price: Dec
    amount: Dec


class Price(_Record, tag="price"):
    """Stablecoin index price."""

    market: str
    price: Dec
    exchange_time: Nanos


StatusState = Literal[
    "connected",
    "disconnected",
    "resyncing",
    "resynced",
    "backfill_failed",
    "gap",
    "market_unavailable",
    "market_available",
]


class Status(_Record, tag="status", omit_defaults=True):
    """Upstream state of the feed that produces this stream, with the reason.

    Feed-wide states (``market`` left out) go to ``status.<feed>`` and every data stream of
    the feed; states about one market (``market`` set) to ``status.<feed>`` and that market's
    stream only:

    * ``backfill_failed``: the REST backfill after a reconnect failed or timed out; executions
      of the outage may be missing (``gap_from``/``gap_to`` bound them when known).
    * ``gap``: a known gap: the outage outlasted Paxos's REST window (its 2,000 most recent
      executions); executions stamped between ``gap_from`` and ``gap_to`` (ns, the last one
      published before and the first one after) may be missing.
    * ``market_unavailable`` / ``market_available``: Paxos's market list says the market halted
      or is no longer listed / trades again; its stream stays, quiet while unavailable.
    """

    feed: str
    state: StatusState
    reason: str
    market: str | None = None
    gap_from: Nanos | None = None
    gap_to: Nanos | None = None


Record = Trade | BookSnapshot | BookUpdate | Price | Status

RECORD_TYPES: tuple[type[_Record], ...] = (Trade, BookSnapshot, BookUpdate, Price, Status)

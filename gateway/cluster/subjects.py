"""The JetStream layout: stream names, subjects and the ids derived from ``(epoch, stream, seq)``.

Subjects (one per gateway stream, so JetStream's per-subject bookkeeping is per gateway stream):

- ``pgw.v1.rec.<gateway stream>``: every record, e.g. ``pgw.v1.rec.book.BTCUSD``,
  ``pgw.v1.rec.trades.ETHUSD``, ``pgw.v1.rec.status.marketdata``. Captured by the stream
  ``PGW`` (``pgw.v1.rec.>``): file storage, R3 in production, ``MaxAge`` = the durable replay
  window, ``DuplicateWindow`` 2 min.
- ``pgw.v1.snap.<gateway stream>``: the leader's latest ``BookSnapshot`` of each book, the
  checkpoint an edge starts from. Captured by ``PGW_SNAP`` (``pgw.v1.snap.>``) with
  ``MaxMsgsPerSubject = 1``: a last-value store. Two streams because JetStream refuses
  overlapping subjects, and a last-value stream must not cap the record history.

``rec`` and ``snap`` sit after the version so that one ``pgw.v1.>`` permission covers both, and
``pgw.v1.rec.book.*`` filters all books. A gateway stream name is ``kind.MARKET`` or
``status.<feed name>``: two or more tokens, none empty, none with a space or NATS wildcard.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

SUBJECT_ROOT: Final = "pgw.v1"
RECORDS_PREFIX: Final = f"{SUBJECT_ROOT}.rec."
CHECKPOINTS_PREFIX: Final = f"{SUBJECT_ROOT}.snap."

RECORDS_STREAM: Final = "PGW"
CHECKPOINTS_STREAM: Final = "PGW_SNAP"
LEASE_BUCKET: Final = "pgw_lease"
LEASE_KEY: Final = "ingest"

# Headers besides JetStream's own. The record's (epoch, seq) is in the body too; the headers
# let an edge check order and duplicates before decoding the body (and a headers-only consumer
# measure lag without the payload), and the message id makes a retry idempotent.
HEADER_MSG_ID: Final = "Nats-Msg-Id"
HEADER_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
HEADER_EPOCH: Final = "Pgw-Epoch"
HEADER_SEQ: Final = "Pgw-Seq"
# Who wrote it: the leader's holder id and lease revision, unique per leadership term. A fenced
# publish that is rejected is then told apart from a retry of our own write whose ack was lost
# (measured: nats-server checks the expected last sequence *before* the Nats-Msg-Id dedup, so
# such a retry is rejected too, not acked as a duplicate).
HEADER_WRITER: Final = "Pgw-Writer"

# JetStream's error code for a failed Nats-Expected-Last-*-Sequence check ("wrong last
# sequence"): the fencing token of a stale leader, and the KV revision conflict.
ERR_WRONG_LAST_SEQUENCE: Final = 10071

_TOKEN = r"[A-Za-z0-9_\-]+"
_STREAM_NAME = re.compile(rf"{_TOKEN}(\.{_TOKEN})+")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,19}")


class SubjectError(ValueError):
    """A gateway stream name, subject or message id that the layout cannot carry."""


def _checked_stream(stream: str) -> str:
    if _STREAM_NAME.fullmatch(stream) is None:
        raise SubjectError(f"not a gateway stream name for a NATS subject: {stream!r}")
    return stream


def record_subject(stream: str) -> str:
    """``book.BTCUSD`` -> ``pgw.v1.rec.book.BTCUSD``."""
    return RECORDS_PREFIX + _checked_stream(stream)


def checkpoint_subject(stream: str) -> str:
    """``book.BTCUSD`` -> ``pgw.v1.snap.book.BTCUSD``."""
    return CHECKPOINTS_PREFIX + _checked_stream(stream)


def stream_of_subject(subject: str) -> str:
    """The gateway stream of a record or checkpoint subject (the inverse of both above)."""
    for prefix in (RECORDS_PREFIX, CHECKPOINTS_PREFIX):
        if subject.startswith(prefix):
            return _checked_stream(subject[len(prefix) :])
    raise SubjectError(f"not a paxos-gateway subject: {subject!r}")


def epoch_text(epoch: int | str) -> str:
    """The epoch as its decimal digits: an int in protocol v1, a digit string in v2; one text."""
    text = str(epoch)
    if _DIGITS.fullmatch(text) is None:
        raise SubjectError(f"an epoch is decimal digits, got {epoch!r}")
    return text


class RecordId(msgspec.Struct, frozen=True):
    """Where a record sits in the gateway's numbering: the same on every node."""

    epoch: str
    stream: str
    seq: int


def message_id(epoch: int | str, stream: str, seq: int) -> str:
    """``Nats-Msg-Id``: ``<epoch>:<stream>:<seq>``.

    Derived, never random, so a retry after a timeout, a reconnect or a leader failover sends
    the same id and JetStream stores the record once (dedup is by id only, within the stream's
    ``DuplicateWindow``). Two leaders with different epochs never collide, which is right: their
    records are different records.
    """
    if seq < 1:
        raise SubjectError(f"seq starts at 1, got {seq}")
    return f"{epoch_text(epoch)}:{_checked_stream(stream)}:{seq}"


def parse_message_id(text: str) -> RecordId:
    epoch, sep, rest = text.partition(":")
    stream, sep2, seq = rest.rpartition(":")
    if not (sep and sep2) or _DIGITS.fullmatch(seq) is None or seq == "0":
        raise SubjectError(f"not a paxos-gateway message id: {text!r}")
    return RecordId(epoch_text(epoch), _checked_stream(stream), int(seq))


def publish_headers(
    epoch: int | str,
    stream: str,
    seq: int,
    expected_last_subject_seq: int | None,
    writer: str | None = None,
) -> dict[str, str]:
    """The headers of one record's publish.

    ``expected_last_subject_seq`` is the JetStream sequence of this leader's last write on the
    subject (0: the subject must be empty); ``None`` publishes unfenced (tests, tools).
    ``writer`` names the leadership term (``HEADER_WRITER``).
    """
    headers = {
        HEADER_MSG_ID: message_id(epoch, stream, seq),
        HEADER_EPOCH: epoch_text(epoch),
        HEADER_SEQ: str(seq),
    }
    if expected_last_subject_seq is not None:
        headers[HEADER_EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_subject_seq)
    if writer is not None:
        headers[HEADER_WRITER] = writer
    return headers


def is_own_write(headers: dict[str, str] | None, msg_id: str, writer: str) -> bool:
    """Whether a stored message is this very record from this leadership term: a fenced
    rejection of it is then our retry after a lost ack, not another writer."""
    if not headers:
        return False
    return headers.get(HEADER_MSG_ID) == msg_id and headers.get(HEADER_WRITER) == writer


def record_id_of_headers(subject: str, headers: dict[str, str] | None) -> RecordId:
    """The ``(epoch, stream, seq)`` of a delivered message, from its subject and headers."""
    if not headers or HEADER_EPOCH not in headers or HEADER_SEQ not in headers:
        raise SubjectError(f"message on {subject!r} lacks the {HEADER_EPOCH}/{HEADER_SEQ} headers")
    seq = headers[HEADER_SEQ]
    if _DIGITS.fullmatch(seq) is None or seq == "0":
        raise SubjectError(f"bad {HEADER_SEQ} on {subject!r}: {seq!r}")
    return RecordId(epoch_text(headers[HEADER_EPOCH]), stream_of_subject(subject), int(seq))


class StreamLayout(msgspec.Struct, frozen=True, kw_only=True):
    """The JetStream streams the cluster uses, as plain values (the I/O edge builds the configs).

    Defaults argued in docs/cluster.md: 24 h of durable replay is ~86M records at the 1k/s of a
    busy all-markets feed (~14 GB at the measured 164 B/record), within one PVC; the duplicate
    window must outlast the longest publish retry (seconds) and stay small because the server
    keeps every id of the window in memory (2 min x 1k/s = 120k ids).
    """

    records: str = RECORDS_STREAM
    checkpoints: str = CHECKPOINTS_STREAM
    replicas: int = 3
    max_age_seconds: float = 24 * 3600.0
    duplicate_window_seconds: float = 120.0
    lease_bucket: str = LEASE_BUCKET
    lease_ttl_seconds: float = 3.0

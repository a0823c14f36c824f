"""Publishing through the NATS bridge: what runs on its asyncio loop for one batch.

Two ways, chosen by ``NatsBridge.publish_batch``:

- **fenced** (the ingest leader): every publish names the subject's expected last sequence
  (``gateway.cluster.fence``), so one subject's records go one ack after another and subjects
  run concurrently as lanes. A rejection whose subject ends with this very record from this
  leadership term is our own retry after a lost ack (``DUPLICATE``; measured: nats-server checks
  the expected sequence before the ``Nats-Msg-Id`` dedup), anything else is ``FENCED`` and the
  rest of that lane is ``SKIPPED``.
- **pipelined** (tools, the bench, checkpoints): the whole batch in flight at once, deduplicated
  by id.

Every item gets exactly one outcome, whatever fails; ``FAILED`` and ``SKIPPED`` are re-sent by
the caller with the same ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.cluster import subjects
from gateway.cluster.fence import PublishOutcome, PublishStatus, SubjectFence, lanes
from gateway.cluster.subjects import RecordId
from gateway.io.nats_crossing import text_headers


class PublishItem(msgspec.Struct, frozen=True):
    """One record to publish: its subject, payload and id (the headers are derived from it)."""

    subject: str
    payload: bytes
    record: RecordId
    # Sent besides the derived ones (a checkpoint's ``Pgw-Rec-Seq``).
    headers: dict[str, str] | None = None

    @classmethod
    def of(cls, epoch: int | str, stream: str, seq: int, payload: bytes) -> PublishItem:
        return cls(
            subjects.record_subject(stream),
            payload,
            RecordId(subjects.epoch_text(epoch), stream, seq),
        )


async def publish_fenced(
    js: JetStreamContext,
    items: Sequence[PublishItem],
    fence: SubjectFence,
    writer: str,
    stream: str,
    ack_timeout: float,
) -> list[PublishOutcome]:
    outcomes: dict[int, PublishOutcome] = {}

    async def lane(indexed: list[tuple[int, PublishItem]]) -> None:
        stop: PublishOutcome | None = None
        for index, item in indexed:
            if stop is not None:
                outcomes[index] = PublishOutcome(
                    item.record, PublishStatus.SKIPPED, error=stop.error
                )
                continue
            headers = item_headers(item, fence.expected(item.subject), writer)
            try:
                ack = await js.publish(
                    item.subject, item.payload, timeout=ack_timeout, headers=headers
                )
            except Exception as exc:
                outcome = _failure(item.record, exc)
                if outcome.status is PublishStatus.FENCED:
                    outcome = await _own_write(js, stream, item, headers, outcome)
                outcomes[index] = outcome
                if outcome.status is PublishStatus.DUPLICATE:
                    fence.stored(item.subject, outcome.stream_seq)
                else:
                    stop = outcome
                continue
            fence.stored(item.subject, ack.seq)
            outcomes[index] = _stored(item.record, ack)

    await asyncio.gather(*(lane(x) for x in lanes(enumerate(items), lambda x: x[1].subject)))
    return [outcomes[i] for i in range(len(items))]


async def _own_write(
    js: JetStreamContext,
    stream: str,
    item: PublishItem,
    headers: dict[str, str],
    fenced: PublishOutcome,
) -> PublishOutcome:
    try:
        last = await js.get_last_msg(stream, item.subject)
    except Exception:
        return fenced
    msg_id = headers[subjects.HEADER_MSG_ID]
    writer = headers.get(subjects.HEADER_WRITER)
    if writer and subjects.is_own_write(text_headers(last.headers), msg_id, writer):
        return PublishOutcome(item.record, PublishStatus.DUPLICATE, last.seq or 0)
    return fenced


async def publish_pipelined(
    js: JetStreamContext, items: Sequence[PublishItem], ack_timeout: float
) -> list[PublishOutcome]:
    # Every item gets an outcome, whatever fails: a publish that cannot even be sent
    # (disconnected, too many in flight) and an ack that does not come in time are FAILED,
    # and the caller re-sends them with the same ids.
    sent: list[asyncio.Future[js_api.PubAck] | Exception] = []
    for item in items:
        try:
            sent.append(
                await js.publish_async(item.subject, item.payload, headers=item_headers(item, None))
            )
        except Exception as exc:
            sent.append(exc)
    waiting = [f for f in sent if isinstance(f, asyncio.Future)]
    if waiting:
        await asyncio.wait(waiting, timeout=ack_timeout)
    outcomes = []
    for item, f in zip(items, sent, strict=True):
        if isinstance(f, Exception):
            outcomes.append(_failure(item.record, f))
        elif not f.done() or f.cancelled():
            f.cancel()
            no_ack = TimeoutError(f"no ack within {ack_timeout} s")
            outcomes.append(_failure(item.record, no_ack))
        elif (error := f.exception()) is not None:
            outcomes.append(_failure(item.record, error))
        else:
            outcomes.append(_stored(item.record, f.result()))
    return outcomes


def item_headers(item: PublishItem, expected: int | None, writer: str = "") -> dict[str, str]:
    record = item.record
    headers = subjects.publish_headers(
        record.epoch, record.stream, record.seq, expected, writer or None
    )
    if item.headers:
        headers.update(item.headers)
    return headers


def _stored(record: RecordId, ack: js_api.PubAck) -> PublishOutcome:
    status = PublishStatus.DUPLICATE if ack.duplicate else PublishStatus.STORED
    return PublishOutcome(record, status, ack.seq)


def _failure(record: RecordId, exc: BaseException) -> PublishOutcome:
    if (
        isinstance(exc, nats.js.errors.APIError)
        and exc.err_code == subjects.ERR_WRONG_LAST_SEQUENCE
    ):
        return PublishOutcome(record, PublishStatus.FENCED, error=str(exc))
    return PublishOutcome(record, PublishStatus.FAILED, error=repr(exc))

from __future__ import annotations

from gateway.cluster import subjects
from gateway.cluster.takeover import plan_takeover

OLD, CUR, NEW = "100", "200", "300"


def last(stream: str, stream_seq: int, epoch: str, seq: int) -> tuple[str, int, dict[str, str]]:
    return (
        subjects.record_subject(stream),
        stream_seq,
        subjects.publish_headers(epoch, stream, seq, None),
    )


def test_an_empty_stream_takes_the_new_epoch() -> None:
    plan = plan_takeover([], NEW)
    assert (plan.epoch, plan.heads, plan.fence, plan.continued) == (NEW, {}, {}, False)


def test_the_last_written_epoch_continues_and_older_streams_start_over_in_it() -> None:
    plan = plan_takeover(
        [
            last("book.BTCUSD", 900, CUR, 41),
            last("trades.ETHUSD", 5, OLD, 7),  # never written in the current epoch
            last("status.marketdata", 950, CUR, 12),
        ],
        NEW,
    )
    assert plan.continued and plan.epoch == CUR
    assert plan.heads == {"book.BTCUSD": 41, "status.marketdata": 12}
    # Every subject is fenced, whatever its epoch.
    assert plan.fence == {
        "pgw.v1.rec.book.BTCUSD": 900,
        "pgw.v1.rec.trades.ETHUSD": 5,
        "pgw.v1.rec.status.marketdata": 950,
    }


def test_a_message_without_ids_is_fenced_and_reported_not_continued() -> None:
    plan = plan_takeover(
        [("pgw.v1.rec.book.BTCUSD", 3, None), last("trades.BTCUSD", 4, CUR, 2)], NEW
    )
    assert plan.unreadable == ("pgw.v1.rec.book.BTCUSD",)
    assert plan.fence["pgw.v1.rec.book.BTCUSD"] == 3
    assert (plan.epoch, plan.heads) == (CUR, {"trades.BTCUSD": 2})

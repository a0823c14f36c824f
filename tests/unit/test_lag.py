"""ingest/lag.py: which records are lag samples and what they measure."""

from __future__ import annotations

from decimal import Decimal

from gateway.contract.records import BookUpdate, Price, Record, Status, Trade
from gateway.ingest.lag import TRIMMED_TIMESTAMP_SLACK_NS, LagSampler

S = 1_000_000_000
OPENED = 1_700_000_000 * S  # the connection's handshake, wall clock


def trade(exchange_ns: int, match: str = "M1") -> Trade:
    return Trade(
        stream="trades.BTCUSD", seq=1, epoch="1", receive_time="0", market="BTCUSD",
        price=Decimal(1), amount=Decimal(2), match_number=match, exchange_time=str(exchange_ns),
    )  # fmt: skip


def price(exchange_ns: int) -> Price:
    return Price(
        stream="price.USDG", seq=1, epoch="1", receive_time="0", market="USDG",
        price=Decimal(1), exchange_time=str(exchange_ns),
    )  # fmt: skip


def test_trades_and_prices_measure_receive_minus_exchange_time() -> None:
    lag = LagSampler(OPENED)
    records: list[Record] = [trade(OPENED + 2 * S), price(OPENED + 3 * S)]
    assert lag.samples(records, OPENED + 5 * S) == [3.0, 2.0]


def test_records_without_an_exchange_time_give_no_sample() -> None:
    update = BookUpdate(
        stream="book.BTCUSD", seq=2, epoch="1", receive_time="0", market="BTCUSD",
        side="bid", price=Decimal(1), amount=Decimal(0),
    )  # fmt: skip
    status = Status(
        stream="status", seq=1, epoch="1", receive_time="0", feed="f", state="connected",
        reason="",
    )  # fmt: skip
    assert LagSampler(OPENED).samples([update, status], OPENED + S) == []


def test_a_replay_from_before_the_connection_is_no_sample() -> None:
    # Paxos opens an executions connection with each market's last execution, maybe hours old.
    lag = LagSampler(OPENED)
    hours_old = trade(OPENED - 3 * 3600 * S, "old")
    live = trade(OPENED + S, "live")
    assert lag.samples([hours_old, live], OPENED + 2 * S) == [1.0]


def test_trimmed_timestamps_within_the_slack_still_count() -> None:
    # A live trade stamped in whole seconds may look up to the slack older than the connection.
    lag = LagSampler(OPENED)
    at_the_edge = trade(OPENED - TRIMMED_TIMESTAMP_SLACK_NS)
    just_beyond = trade(OPENED - TRIMMED_TIMESTAMP_SLACK_NS - 1)
    assert lag.samples([at_the_edge, just_beyond], OPENED) == [1.0]


def test_an_exchange_clock_ahead_of_ours_is_reported_as_measured() -> None:
    assert LagSampler(OPENED).samples([trade(OPENED + 2 * S)], OPENED + S) == [-1.0]

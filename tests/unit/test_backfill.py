"""ingest/backfill.py: the merge of live and REST executions, dedup, order, holds and gaps."""

from __future__ import annotations

from decimal import Decimal

from gateway.contract.records import Status, Trade
from gateway.ingest.backfill import Notice, Release, TapeTrade, TradeTape
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer
from gateway.ingest.paxos_rest import RestExecution

S = 1_000_000_000
T0 = 1_800_000_000 * S  # the feed's first connect


def live(match: str, at: float, market: str = "BTCUSD") -> TapeTrade:
    return TapeTrade(market, Decimal(1), Decimal(2), match, T0 + int(at * S), T0 + int(at * S))


def rest(match: str, at: float) -> RestExecution:
    return RestExecution(match, Decimal(1), Decimal(2), T0 + int(at * S))


def names(trades: list[TapeTrade]) -> list[str]:
    return [t.match_number + ("*" if t.backfilled else "") for t in trades]


def started(market: str | None = "BTCUSD", **kw: int) -> TradeTape:
    """A tape whose first connect's backfill found nothing: A (10 s) and B (20 s) live."""
    tape = TradeTape(market, **kw)
    tape.connected(T0)
    if market is None:
        assert not tape.listed(["BTCUSD"])
    assert not tape.backfill("BTCUSD", [], now_ns=T0, generation=tape.generation)
    assert names(tape.live(live("A", 10)).trades) == ["A"]
    assert names(tape.live(live("B", 20)).trades) == ["B"]
    return tape


def test_after_an_outage_the_missing_ones_come_first_then_the_held_live_ones() -> None:
    tape = started()
    tape.connected(T0 + 60 * S)
    assert tape.pending() == ["BTCUSD"]
    assert not tape.live(live("E", 50))  # held
    assert not tape.live(live("F", 51))
    answer = [rest("F", 51), rest("E", 50), rest("D", 40), rest("C", 20.5), rest("B", 20)]
    release = tape.backfill("BTCUSD", answer, now_ns=T0 + 61 * S, generation=tape.generation)
    # B is within a second of the newest published stamp: only dedup keeps it out; E and F
    # were held live: published once, as live ones.
    assert names(release.trades) == ["C*", "D*", "E", "F"]
    assert release.notices == []
    assert [t.receive_time for t in release.trades[:2]] == [T0 + 61 * S] * 2
    assert tape.pending() == [] and tape.stats.backfilled == 2 and tape.stats.held == 0
    assert names(tape.live(live("G", 62)).trades) == ["G"]  # live again


def test_dedup_against_what_was_published_is_what_keeps_b_out() -> None:
    # The same outage with B forgotten: the merge would publish it again. (This is the test
    # that fails if dedup is removed: the time bound alone lets B through.)
    tape = started()
    tape.connected(T0 + 60 * S)
    release = tape.backfill(
        "BTCUSD", [rest("B", 20), rest("C", 20.5)], now_ns=T0, generation=tape.generation
    )
    assert names(release.trades) == ["C*"]


def test_exchange_order_is_stamp_then_match_number() -> None:
    tape = started()
    tape.connected(T0 + 60 * S)
    assert not tape.live(live("M", 30))
    answer = [rest("Z", 25), rest("K", 30), rest("Y", 25), rest("A0", 30)]
    release = tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation)
    assert names(release.trades) == ["Y*", "Z*", "A0*", "K*", "M"]


def test_nothing_older_than_the_tape_is_published() -> None:
    tape = TradeTape("BTCUSD")
    tape.connected(T0)
    # before the floor (the first connect): Paxos's history, not the gateway's to publish
    answer = [rest("OLD1", -5), rest("OLD2", -0.5), rest("NEW", 0.5)]
    release = tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation)
    assert names(release.trades) == ["NEW*"]
    # more than the slack before the newest published stamp: published or before the tape
    tape.connected(T0 + 10 * S)
    release = tape.backfill(
        "BTCUSD", [rest("X", -2), rest("NEW", 0.5)], now_ns=T0, generation=tape.generation
    )
    assert release.trades == []


def test_a_full_window_that_misses_the_last_published_is_a_known_gap() -> None:
    tape = started(window=3)
    tape.connected(T0 + 60 * S)
    assert not tape.live(live("F", 51))
    answer = [rest("F", 51), rest("E", 50), rest("D", 40)]  # B (20 s) fell out of it
    release = tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation)
    assert release.notices == [
        Notice("gap", "BTCUSD", release.notices[0].reason, T0 + 20 * S, T0 + 40 * S)
    ]
    assert "outlasted Paxos's 3 most recent" in release.notices[0].reason
    assert names(release.trades) == ["D*", "E*", "F"]
    assert tape.stats.gaps == 1


def test_a_window_smaller_than_configured_is_still_a_known_gap() -> None:
    tape = started(window=2000)
    tape.connected(T0 + 60 * S)
    answer = [rest("E", 50), rest("D", 40)]  # Paxos cut its window: B is not in it
    release = tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation)
    assert [(n.state, n.gap_from, n.gap_to) for n in release.notices] == [
        ("gap", T0 + 20 * S, T0 + 40 * S)
    ]


def test_rest_lagging_behind_the_feed_is_no_gap() -> None:
    tape = started(window=2000)
    tape.connected(T0 + 60 * S)
    answer = [rest("A", 10)]  # B (20 s) not yet on REST: the answer starts before it
    assert tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation).notices == []


def test_no_gap_when_the_window_reaches_back_or_is_not_full() -> None:
    tape = started(window=3)
    tape.connected(T0 + 60 * S)
    answer = [rest("D", 40), rest("C", 30), rest("B", 20)]  # full, but B is in it
    assert tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation).notices == []
    tape.connected(T0 + 70 * S)
    answer = [rest("E", 50), rest("D", 40)]  # not full: Paxos's whole tape
    assert tape.backfill("BTCUSD", answer, now_ns=T0, generation=tape.generation).notices == []
    assert tape.stats.gaps == 0


def test_the_hold_is_bounded_and_overflowing_it_is_announced() -> None:
    tape = started(max_held=2)
    tape.connected(T0 + 60 * S)
    assert not tape.live(live("E", 50))
    assert not tape.live(live("F", 51))
    release = tape.live(live("G", 52))
    assert names(release.trades) == ["E", "F", "G"]
    assert release.notices == [
        Notice(
            "backfill_failed", "BTCUSD",
            "more than 2 live executions arrived during the backfill", T0 + 20 * S, T0 + 50 * S,
        )
    ]  # fmt: skip
    assert tape.stats.failures == 1 and tape.stats.held == 0
    # the answer that comes too late is not merged: it would break the order
    late = [rest("D", 40), rest("E", 50)]
    assert not tape.backfill("BTCUSD", late, now_ns=T0, generation=tape.generation)
    assert names(tape.live(live("H", 53)).trades) == ["H"]


def test_a_failed_backfill_releases_what_it_held_and_says_so() -> None:
    tape = started()
    tape.connected(T0 + 60 * S)
    assert not tape.live(live("E", 50))
    release = tape.fail("BTCUSD", "BTCUSD: backfill failed: HTTP 503")
    assert release.notices[0].state == "backfill_failed"
    assert (release.notices[0].gap_from, release.notices[0].gap_to) == (T0 + 20 * S, T0 + 50 * S)
    assert names(release.trades) == ["E"]


def test_a_reconnect_during_the_request_keeps_holding_until_a_fresh_answer() -> None:
    tape = started()
    tape.connected(T0 + 60 * S)
    requested = tape.generation
    assert not tape.live(live("E", 50))
    tape.connected(T0 + 70 * S)  # dropped and back while the request was out
    assert not tape.live(live("G", 65))
    stale = tape.backfill(
        "BTCUSD", [rest("E", 50), rest("D", 40), rest("B", 20)], now_ns=T0, generation=requested
    )
    assert not stale and tape.pending() == ["BTCUSD"] and tape.stats.held == 3
    fresh = [rest("G", 65), rest("F", 60), rest("E", 50), rest("D", 40), rest("B", 20)]
    release = tape.backfill("BTCUSD", fresh, now_ns=T0, generation=tape.generation)
    assert names(release.trades) == ["D*", "E", "F*", "G"]
    assert tape.stats.backfilled == 2 and tape.stats.held == 0


def test_a_backfilled_execution_replayed_live_is_dropped() -> None:
    tape = started()
    tape.connected(T0 + 60 * S)
    release = tape.backfill("BTCUSD", [rest("D", 40)], now_ns=T0, generation=tape.generation)
    assert names(release.trades) == ["D*"]
    tape.connected(T0 + 70 * S)  # Paxos replays the last execution: D
    assert not tape.live(live("D", 40))
    assert tape.stats.duplicates == 1


def test_the_all_markets_feed_holds_everything_until_the_list_is_in() -> None:
    tape = started(None)
    tape.connected(T0 + 60 * S)
    assert tape.holding_all
    assert not tape.live(live("X1", 55, "NEWUSD"))  # unknown so far: held too
    assert not tape.live(live("GONE1", 55, "OLDUSD"))
    release = tape.listed(["BTCUSD", "NEWUSD"])  # OLDUSD is not listed: nothing to fetch
    assert names(release.trades) == ["GONE1"]
    assert tape.pending() == ["BTCUSD", "NEWUSD"]
    release = tape.backfill(
        "NEWUSD", [rest("X1", 55), rest("X0", 50)], now_ns=T0, generation=tape.generation
    )
    assert names(release.trades) == ["X0*", "X1"]
    timed_out = tape.fail(None, "backfill timed out after 60 s")
    assert [n.market for n in timed_out.notices] == ["BTCUSD"]
    assert tape.pending() == [] and not tape.listed(["BTCUSD"])  # given up: no new hold


def test_the_normalizer_sequences_what_the_tape_releases() -> None:
    tape = TradeTape("BTCUSD")
    session = FeedNormalizer(feed_from_url("ws://x/executiondata/BTCUSD"), epoch=1, tape=tape)
    connected = session.connected(T0)
    assert [r.seq for r in connected] == [1, 1]  # status.executiondata/BTCUSD, trades.BTCUSD
    frame = (
        '{"market":"BTCUSD","price":"100.50","amount":"1","executed_at":'
        '"2027-01-15T08:00:01Z","match_number":"LIVE1"}'
    )
    assert session.receive(frame, T0 + S) == []  # held
    release = tape.backfill(
        "BTCUSD",
        [RestExecution("REST1", Decimal("100.25"), Decimal(1), 1_800_000_000_500_000_000)],
        now_ns=T0 + 2 * S,
        generation=tape.generation,
    )
    records = session.release(release, T0 + 2 * S)
    assert [(type(r).__name__, r.seq) for r in records] == [("Trade", 2), ("Trade", 3)]
    first, second = records
    assert isinstance(first, Trade) and isinstance(second, Trade)
    assert (first.match_number, first.backfilled, str(first.price)) == ("REST1", True, "100.25")
    assert (second.match_number, second.backfilled) == ("LIVE1", False)
    # a notice about one market: into the feed's status stream and that market's stream
    statuses = session.release(Release(notices=[Notice("gap", "BTCUSD", "r", 1, 2)]), T0)
    assert [(r.stream, r.seq) for r in statuses] == [
        (session.streams()[0], 2),
        ("trades.BTCUSD", 4),
    ]
    status = statuses[1]
    assert isinstance(status, Status)
    assert (status.state, status.market, status.gap_from, status.gap_to) == (
        "gap", "BTCUSD", "1", "2",
    )  # fmt: skip

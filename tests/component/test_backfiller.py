"""io/backfiller.py: the backfill round after each connect, its retries, its deadline and its
failures, against a scripted REST API (httpx.MockTransport) on a MockClock."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
import trio
from trio.testing import MockClock

from gateway.contract.records import Record, Status, Trade
from gateway.ingest.backfill import TradeTape
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.backfiller import BackfillFeed, run_backfill
from gateway.io.rest_client import PaxosRestClient, RequestBudget

T0 = 1_800_000_000 * 10**9
ITEMS = {
    "items": [
        {"match_number": "B", "price": "100.50", "amount": "1.00000000",
         "executed_at": "2027-01-15T08:00:02Z"},
        {"match_number": "A", "price": "100.25", "amount": "2.00000000",
         "executed_at": "2027-01-15T08:00:01Z"},
    ]
}  # fmt: skip

Handler = Callable[[httpx.Request], httpx.Response]


class Rig:
    def __init__(self, handler: Handler) -> None:
        self.tape = TradeTape("BTCUSD")
        self.session = FeedNormalizer(
            feed_from_url("ws://x/executiondata/BTCUSD"), epoch=1, tape=self.tape
        )
        self.records: list[Record] = []
        self.feed = BackfillFeed("executiondata-BTCUSD", self.tape, self.session, self.publish)
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        self.client = PaxosRestClient("https://api.example/v2", self.http, RequestBudget())

    def publish(self, records: list[Record], received_monotonic_ns: int) -> None:
        self.records += records

    def trades(self) -> list[tuple[str, bool]]:
        return [(r.match_number, r.backfilled) for r in self.records if isinstance(r, Trade)]


async def run(rig: Rig, nursery: trio.Nursery, round_timeout: float = 10.0) -> None:
    await nursery.start(lambda task_status: run_backfill(
        rig.feed, rig.client, round_timeout=round_timeout, task_status=task_status
    ))  # fmt: skip


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(ITEMS).encode())


async def test_each_connect_starts_a_round_that_publishes_what_was_missed(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(ok)
    await run(rig, nursery)
    rig.session.connected(T0)  # the tape's floor: everything on REST is newer
    with trio.fail_after(5):
        while rig.tape.pending():
            await trio.sleep(0.01)
    assert rig.trades() == [("A", True), ("B", True)]  # exchange order, marked
    trades = [r for r in rig.records if isinstance(r, Trade)]
    # seq 1 of trades.BTCUSD is the connected status
    assert [t.seq for t in trades] == [2, 3] and trades[0].price == Decimal("100.25")
    rig.session.connected(T0 + 10**9)  # a reconnect: the same answer, nothing new
    with trio.fail_after(5):
        while rig.tape.pending():
            await trio.sleep(0.01)
    assert len(rig.trades()) == 2
    nursery.cancel_scope.cancel()


async def test_server_errors_are_retried_within_the_round(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    answers = iter([503, 502, 200])

    def flaky(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return ok(request) if status == 200 else httpx.Response(status, content=b"{}")

    rig = Rig(flaky)
    await run(rig, nursery)
    start = trio.current_time()
    rig.session.connected(T0)
    with trio.fail_after(30):
        while rig.tape.pending():
            await trio.sleep(0.01)
    assert rig.trades() == [("A", True), ("B", True)]
    assert trio.current_time() - start >= 0.5 + 1.0  # backed off between the attempts
    nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (503, b"{}", "backfill timed out after 10 s"),
        (404, b'{"title":"Not Found","detail":"market BTCUSD not found"}', "HTTP 404"),
        (200, b'{"items":[{"match_number":"A"}]}', "missing required field"),
    ],
)
async def test_a_backfill_that_gives_up_is_announced_and_releases_the_hold(
    autojump_clock: MockClock, nursery: trio.Nursery, status: int, body: bytes, reason: str
) -> None:
    rig = Rig(lambda request: httpx.Response(status, content=body))
    await run(rig, nursery)
    rig.session.connected(T0)
    frame = (
        '{"market":"BTCUSD","price":"1","amount":"1","executed_at":"2027-01-15T08:00:03Z",'
        '"match_number":"LIVE"}'
    )
    assert rig.session.receive(frame, T0) == []  # held
    with trio.fail_after(60):
        while rig.tape.pending():
            await trio.sleep(0.01)
    failed = [r for r in rig.records if isinstance(r, Status) and r.state == "backfill_failed"]
    assert failed and all(reason in r.reason for r in failed), [r.reason for r in failed]
    assert rig.trades() == [("LIVE", False)]  # released after the announcement
    assert rig.tape.stats.failures == 1
    nursery.cancel_scope.cancel()


async def test_a_bug_below_is_logged_and_the_backfill_goes_on(
    autojump_clock: MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(ok)
    real_release = rig.session.release
    calls = 0

    def release_failing_once(release: object, now_ns: int) -> list[Record]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return real_release(release, now_ns)  # type: ignore[arg-type]

    rig.feed.session = type("S", (), {"release": staticmethod(release_failing_once)})()
    await run(rig, nursery)
    rig.session.connected(T0)
    with trio.fail_after(5):
        while rig.tape.pending():
            await trio.sleep(0.01)
    assert "internal error in the backfill" in caplog.text
    assert any(r.state == "backfill_failed" for r in rig.records if isinstance(r, Status))
    rig.session.connected(T0 + 10**9)  # the task lives on: the next connect is backfilled
    with trio.fail_after(5):
        while rig.tape.pending():
            await trio.sleep(0.01)
    assert calls == 2  # the failing one, then the announcement
    nursery.cancel_scope.cancel()

"""io/rest_client.py against the simulator's REST server: the request budget, 429 and
Retry-After, timeouts and error outcomes, all on a MockClock (the trio clock httpx uses)."""

from __future__ import annotations

import functools
import ssl
from collections import Counter
from decimal import Decimal

import httpx
import pytest
import trio
from trio.testing import MockClock

from gateway.io.rest_client import (
    DEFAULT_THROTTLE,
    PaxosRestClient,
    RequestBudget,
    RestError,
    open_http_client,
)
from gateway.io.upstream import verified_tls_context
from gateway.simulator import FaultConfig
from gateway.simulator.config import RestConfig
from tests.support.simulator_support import serving, unthrottled

fast = functools.partial(unthrottled, seed=5, markets=("BTCUSD", "ETHUSD"), levels=10)


def client_for(
    url: str, http: httpx.AsyncClient, budget: RequestBudget | None = None
) -> tuple[PaxosRestClient, Counter[tuple[str, str]]]:
    outcomes: Counter[tuple[str, str]] = Counter()

    def count(endpoint: str, outcome: str) -> None:
        outcomes[endpoint, outcome] += 1

    budget = budget if budget is not None else RequestBudget()
    return PaxosRestClient(url, http, budget, on_outcome=count), outcomes


async def test_the_budget_keeps_within_the_servers_limit(slow_autojump: MockClock) -> None:
    # The simulator's bucket is Paxos's 10/s with a burst of 10; the client's (10/s, 5)
    # never meets a 429, and 30 requests take at least (30 - 5) / 10 s of trio time.
    with trio.fail_after(60):
        async with serving(fast(), paused=True) as sim, open_http_client(5.0) as http:
            client, outcomes = client_for(sim.rest_url, http)
            start = trio.current_time()
            for _ in range(15):
                assert [m.market for m in await client.markets()] == ["BTCUSD", "ETHUSD"]
                items = await client.recent_executions("BTCUSD")
                assert items and all(isinstance(i.price, Decimal) for i in items)
            assert trio.current_time() - start >= 2.5 - 1e-9
            assert sim.rest_responses == Counter({200: 30})
            assert outcomes == Counter({("markets", "ok"): 15, ("recent_executions", "ok"): 15})


async def test_the_budget_reserves_in_call_order(slow_autojump: MockClock) -> None:
    budget = RequestBudget(rate=10.0, burst=3)
    starts: list[float] = []

    async def one() -> None:
        await budget.take()
        starts.append(trio.current_time())

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(7):
            nursery.start_soon(one)
    offsets = [round(s - t0, 6) for s in starts]
    assert offsets == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4]
    refused_at = trio.current_time()
    budget.hold_off(5.0)  # a 429 said "Retry-After: 5"
    await one()
    assert round(starts[-1] - refused_at, 6) == 5.0


async def test_a_429_stops_every_request_until_retry_after(slow_autojump: MockClock) -> None:
    # A server stricter than Paxos (1 request, then 5 s of throttle): the client's second
    # request gets the 429, and the next one waits out the Retry-After before it is sent.
    config = fast(rest=RestConfig(rate_limit=1.0, burst=1, throttle=5.0))
    with trio.fail_after(60):
        async with serving(config, paused=True) as sim, open_http_client(5.0) as http:
            budget = RequestBudget()
            client, outcomes = client_for(sim.rest_url, http, budget)
            await client.markets()
            with pytest.raises(RestError) as caught:
                await client.markets()
            assert (caught.value.outcome, caught.value.retry_after) == ("rate_limited", 5.0)
            assert "HTTP 429 (Too Many Requests: rate limit exceeded" in caught.value.detail
            assert budget.blocked_for() == pytest.approx(5.0, abs=0.01)
            refused_at = trio.current_time()
            await client.recent_executions("ETHUSD")  # waits, then is admitted
            assert trio.current_time() - refused_at >= 5.0 - 1e-9
            assert sim.rest_responses == Counter({200: 2, 429: 1})
            assert outcomes[("markets", "rate_limited")] == 1


async def test_timeouts_errors_and_not_found_are_outcomes(slow_autojump: MockClock) -> None:
    with trio.fail_after(120):
        async with serving(fast(faults=FaultConfig()), paused=True) as sim:
            async with open_http_client(5.0) as http:
                client, outcomes = client_for(sim.rest_url, http)
                sim.faults.rest_delay = 30.0
                with pytest.raises(RestError) as caught:
                    await client.markets()
                assert caught.value.outcome == "timeout"
                sim.faults.rest_delay = 0.0
                sim.faults.rest_error_probability = 1.0
                with pytest.raises(RestError) as caught:
                    await client.recent_executions("BTCUSD")
                assert caught.value.outcome == "server_error"
                assert "HTTP 503 (Service Unavailable: simulated server error)" in str(caught.value)
                sim.faults.rest_error_probability = 0.0
                with pytest.raises(RestError) as caught:
                    await client.recent_executions("DOGEUSD")
                assert caught.value.outcome == "not_found"
                assert "market DOGEUSD not found" in caught.value.detail
            assert outcomes == Counter(
                {
                    ("markets", "timeout"): 1,
                    ("recent_executions", "server_error"): 1,
                    ("recent_executions", "not_found"): 1,
                }
            )


async def test_a_bad_answer_and_a_dead_server_are_outcomes() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"items":[{"match_number":"A","price":"x"}]}')

    async with httpx.AsyncClient(transport=httpx.MockTransport(garbage)) as http:
        client, outcomes = client_for("https://api.example/v2", http)
        with pytest.raises(RestError) as caught:
            await client.recent_executions("BTCUSD")
        assert caught.value.outcome == "bad_answer"
        assert outcomes == Counter({("recent_executions", "bad_answer"): 1})
        assert "recent-executions" in caught.value.detail
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there any more
    with trio.fail_after(10):
        async with open_http_client(5.0) as http:
            client, _ = client_for(f"http://127.0.0.1:{port}/v2", http)
            with pytest.raises(RestError) as caught:
                await client.markets()
            assert caught.value.outcome == "network_error"


def test_retry_after_absent_means_paxos_throttle() -> None:
    from gateway.io.rest_client import _retry_after

    assert _retry_after(None) == DEFAULT_THROTTLE
    assert _retry_after("7") == 7.0
    assert _retry_after("soon") == DEFAULT_THROTTLE
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_tls_is_always_verified() -> None:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="must verify"):
        open_http_client(5.0, unverified)
    assert verified_tls_context().verify_mode == ssl.CERT_REQUIRED

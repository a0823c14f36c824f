"""The REST API's limits and faults: 429 with Retry-After, slow answers, 5xx, bad requests."""

from __future__ import annotations

import functools
import json

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from gateway.simulator import FaultConfig, MarketModel, rest
from gateway.simulator.config import RestConfig
from gateway.simulator.markets import resolve_markets
from gateway.simulator.ratelimit import RateLimiter
from tests.support.simulator_support import serving, unthrottled

# no rate limit unless a test is about it: these tests make more than 10 requests at once
fast = functools.partial(
    unthrottled, seed=3, markets=("BTCUSD",), levels=20, rest=RestConfig(rate_limit=0.0)
)
BURST_BOUND = 100  # a loop that never meets a 429 fails instead of running forever
NOW_NS = 1_800_000_000 * 10**9
MODEL = MarketModel(resolve_markets(["BTCUSD"]), seed=1, now_ns=NOW_NS, levels=5)


def test_token_bucket_admits_the_burst_then_the_rate() -> None:
    limiter, settings = RateLimiter(), RestConfig(rate_limit=10.0, burst=10)
    assert [limiter.admit("a", 0.0, settings) for _ in range(10)] == [None] * 10
    assert limiter.admit("a", 0.0, settings) == pytest.approx(0.1)
    assert limiter.admit("b", 0.0, settings) is None  # per IP
    assert limiter.admit("a", 0.1, settings) is None  # one token back after 100 ms
    assert limiter.admit("a", 0.1, settings) is not None
    assert [limiter.admit("a", 0.1 + 0.1 * i, settings) for i in range(1, 6)] == [None] * 5
    assert limiter.admit("a", 100.0, settings) is None  # refilled, capped at the burst
    settings.rate_limit = 0.0
    assert all(limiter.admit("a", 100.0, settings) is None for _ in range(50))


def test_throttle_refuses_everything_until_it_has_passed() -> None:
    limiter, settings = RateLimiter(), RestConfig(rate_limit=10.0, burst=1, throttle=300.0)
    assert limiter.admit("a", 0.0, settings) is None
    assert limiter.admit("a", 0.0, settings) == 300.0
    assert limiter.admit("a", 10.0, settings) == pytest.approx(290.0)  # tokens or not
    assert limiter.admit("a", 300.0, settings) is None


async def burst(http: httpx.AsyncClient, path: str) -> tuple[int, httpx.Response]:
    """Requests back to back until one is refused: (how many were answered, the refusal)."""
    for answered in range(BURST_BOUND):
        response = await http.get(path)
        if response.status_code != 200:
            return answered, response
    raise AssertionError(f"no 429 within {BURST_BOUND} requests")


async def test_a_burst_gets_429_with_retry_after(mock_clock: MockClock) -> None:
    # The mock clock stands still unless jumped: exactly the burst passes, deterministically.
    # No fail_after (mock time would not run out): every wait here is real I/O, every loop
    # bounded by count.
    config = fast(rest=RestConfig())
    async with serving(config, paused=True) as sim, httpx.AsyncClient() as http:
        path = sim.rest_url + "/markets/BTCUSD/recent-executions"
        answered, refused = await burst(http, path)
        assert answered == sim.rest.burst == 10
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert body["status"] == 429 and body["title"] == "Too Many Requests"
        mock_clock.jump(0.1)  # one token back: one more request
        assert (await http.get(path)).status_code == 200
        assert (await http.get(path)).status_code == 429
        mock_clock.jump(1.0)
        assert (await burst(http, sim.rest_url + "/markets"))[0] == 10
        # Paxos's documented penalty: refused for the throttle's whole length
        sim.rest.throttle = 300.0
        mock_clock.jump(10.0)
        await trio.testing.wait_all_tasks_blocked()
        answered, refused = await burst(http, path)
        assert (answered, refused.headers["retry-after"]) == (10, "300")
        mock_clock.jump(299.0)
        # the server closes the idle keep-alive connection (30 s) before the client
        # reuses it, as it would have in real time
        await trio.testing.wait_all_tasks_blocked()
        assert (await http.get(path)).status_code == 429
        mock_clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert (await http.get(path)).status_code == 200
        assert sim.rest_responses[429] == 5 and sim.rest_responses[200] == 32


async def test_slow_responses_follow_the_trio_clock(slow_autojump: MockClock) -> None:
    faults = FaultConfig(rest_delay=30.0)
    with trio.fail_after(60):
        async with (
            serving(fast(faults=faults), paused=True) as sim,
            httpx.AsyncClient(base_url=sim.rest_url, timeout=httpx.Timeout(None)) as http,
        ):
            start = trio.current_time()
            assert (await http.get("/markets/BTCUSD/ticker")).status_code == 200
            assert trio.current_time() - start >= 30.0
            # a client with a shorter timeout gives up: what a backfill must survive
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/markets", timeout=5.0)
            sim.faults.rest_delay = 0.0
            start = trio.current_time()
            assert (await http.get("/markets")).status_code == 200
            assert trio.current_time() - start < 30.0


async def test_server_errors_on_switch() -> None:
    with trio.fail_after(10):
        async with (
            serving(fast(), paused=True) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as http,
        ):
            sim.faults.rest_error_probability = 1.0
            sim.faults.rest_error_status = 502
            response = await http.get("/markets/BTCUSD/recent-executions")
            assert response.status_code == 502
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == 502
            sim.faults.rest_error_probability = 0.3
            statuses = [(await http.get("/markets")).status_code for _ in range(9)]
            assert set(statuses) <= {200, 502}
            sim.faults.rest_error_status = 599  # no reason phrase: still an answer
            sim.faults.rest_error_probability = 1.0
            assert (await http.get("/markets")).json()["title"] == "Error"
            sim.faults.rest_error_probability = 0.0
            assert (await http.get("/markets")).status_code == 200
            with pytest.raises(ValueError, match="5xx"):
                FaultConfig(rest_error_status=404).check()


async def test_wrong_paths_and_methods_get_4xx() -> None:
    with trio.fail_after(10):
        async with (
            serving(fast(), paused=True) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as http,
        ):
            for path in ("", "/", "/markets/BTCUSD", "/markets/BTCUSD/trades", "/v3/markets"):
                response = await http.get(path)
                assert response.status_code == 404, path
                assert response.json()["detail"].startswith("no such resource")
            response = await http.post("/markets", content=b"{}")
            assert response.status_code == 405 and response.headers["allow"] == "GET"
            response = await http.delete("/markets/BTCUSD/order-book")
            assert response.status_code == 405
            response = await http.post("/markets", content=b"x" * 70_000)
            assert response.status_code == 413
            assert (await http.get("/markets", params={"limit": "5"})).status_code == 200


async def raw_exchange(sim_rest_url: str, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes: what a broken client gets."""
    host_port = sim_rest_url.removeprefix("http://").removesuffix("/v2")
    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        received = b""
        for _ in range(1000):  # bounded: the server closes after a 4xx
            data = await stream.receive_some(65536)
            if not data:
                break
            received += data
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /v2/markets HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 requires Host
        (b"GET /v2/markets HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 40_000 + b"\r\n\r\n", b"431"),
        (b"GET /v2/markets HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n", b"400"),
    ],
)
async def test_malformed_http_gets_4xx_and_the_server_lives_on(
    request_bytes: bytes, status: bytes
) -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim:
            answer = await raw_exchange(sim.rest_url, request_bytes)
            assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
            assert b"application/problem+json" in answer
            ok = await raw_exchange(
                sim.rest_url, b"GET /v2/markets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert ok.startswith(b"HTTP/1.1 200 OK")


async def test_keep_alive_and_pipelined_requests() -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim:
            one = b"GET /v2/markets HTTP/1.1\r\nHost: x\r\n\r\n"
            head = b"HEAD /v2/markets HTTP/1.1\r\nHost: x\r\n\r\n"
            last = b"GET /v2/markets/BTCUSD/ticker HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await raw_exchange(sim.rest_url, one * 2 + head + one + last)
            assert answer.count(b"HTTP/1.1 200 OK") == 4
            # HEAD: the head of the 405 alone, and the connection goes on
            assert answer.count(b"HTTP/1.1 405 Method Not Allowed") == 1
            assert answer.count(b'"title":"Method Not Allowed"') == 0
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                for _ in range(5):
                    assert (await http.get("/markets")).status_code == 200


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "get", "X"]),
    target=st.one_of(
        st.text(max_size=60),
        st.lists(
            st.sampled_from(["v2", "markets", "BTCUSD", "ticker", "order-book", "", "..", "%41"]),
            max_size=6,
        ).map(lambda parts: "/" + "/".join(parts)),
    ),
)
def test_any_request_gets_a_json_answer(method: str, target: str) -> None:
    response = rest.respond(MODEL, method, target, now_ns=NOW_NS, settings=RestConfig())
    assert response.status in (200, 404, 405)
    body = json.loads(response.body)
    if response.status != 200:
        assert response.content_type == "application/problem+json"
        assert body["status"] == response.status and body["instance"] == target.split("?")[0]

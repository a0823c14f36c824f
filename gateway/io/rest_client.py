"""Paxos's REST market data at the I/O edge: httpx on trio, within Paxos's request limit.

Paxos allows 10 requests/s per IP, averaged over 5 minutes, and throttles an IP for 5
minutes after a 429. Every REST request of the process therefore takes a token from one
``RequestBudget`` first (shared by every feed's backfill and the market-list refresh): a
token bucket of ``rate`` per second holding at most ``burst``. The default burst is 5, not
10: the server counts arrivals, and a bucket of 10 on each side would answer 429 to a burst
that network jitter squeezed together; with 5 the client stays within a server bucket of 10
however the first half second bunches up. A 429 stops *every* request of the process until
its ``Retry-After`` has passed (Paxos throttles the IP, not the request); without the header
the wait is Paxos's documented 5 minutes.

The HTTP client is ``httpx.AsyncClient``: it runs on trio through anyio and its timeouts use
the trio clock (a ``MockClock`` test need not wait). TLS is always verified: the client is
built with ``upstream_target.verified_tls_context()``, which refuses a context that would skip the
certificate or host name check; nothing here accepts ``verify=False``.

Every request ends in exactly one outcome (``OUTCOMES``, a metric label): ``ok`` or the
``RestError`` raised. Parsing is the sans-IO ``ingest/paxos_rest.py``; a bad answer is
``bad_answer`` with the parser's message.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import httpx
import trio

from gateway.ingest import paxos_rest
from gateway.ingest.paxos_rest import MarketInfo, RestAnswerError, RestExecution
from gateway.io.upstream_target import verified_tls_context

__all__ = [
    "DEFAULT_THROTTLE",
    "OUTCOMES",
    "PaxosRestClient",
    "RequestBudget",
    "RestError",
    "open_http_client",
]

log = logging.getLogger("gateway.rest")

OUTCOMES: Final = (
    "ok", "not_found", "rate_limited", "server_error", "http_error", "timeout",
    "network_error", "bad_answer",
)  # fmt: skip
ENDPOINTS: Final = ("markets", "recent_executions")
# Paxos: "429 then a 5-minute throttle"; a 429 without Retry-After waits that long.
DEFAULT_THROTTLE = 300.0
_MAX_RETRY_AFTER = 3600.0
_T = TypeVar("_T")


class RestError(Exception):
    """A request that did not give a usable answer; ``outcome`` is one of ``OUTCOMES``."""

    def __init__(self, outcome: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.retry_after = retry_after


class RequestBudget:
    """A token bucket on the trio clock, reserving in call order (GCRA): the n-th request of
    a burst starts at ``max(now, tat - (burst - 1) / rate)`` where ``tat`` advances by
    ``1 / rate`` per request. So any window of ``t`` seconds sees at most ``burst + rate*t``
    requests, and waiters are served first come first served with no lock."""

    def __init__(self, rate: float = 10.0, burst: int = 5) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate!r}, {burst!r}")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._tat = -math.inf
        self._blocked_until = -math.inf
        self.taken = 0

    async def take(self) -> None:
        """Wait for a token (always a checkpoint)."""
        now = trio.current_time()
        tat = max(self._tat, now)
        start = max(now, tat - self._tolerance, self._blocked_until)
        self._tat = max(tat, start) + self._interval
        await trio.sleep_until(start)
        self.taken += 1

    def hold_off(self, seconds: float) -> None:
        """A 429: no request before ``seconds`` from now."""
        self._blocked_until = max(self._blocked_until, trio.current_time() + seconds)

    def blocked_for(self) -> float:
        return max(0.0, self._blocked_until - trio.current_time())


def open_http_client(
    timeout: float, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """The process's HTTP client: verified TLS, ``timeout`` for each phase of a request."""
    return httpx.AsyncClient(
        verify=verified_tls_context(ssl_context),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"Accept": "application/json"},
    )


class PaxosRestClient:
    """``GET /markets`` and ``GET /markets/{m}/recent-executions`` under ``base_url`` (e.g.
    ``https://api.paxos.com/v2``). ``on_outcome(endpoint, outcome)`` counts each request."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        budget: RequestBudget,
        *,
        on_outcome: Callable[[str, str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.budget = budget
        self._on_outcome = on_outcome

    async def markets(self) -> list[MarketInfo]:
        body = await self._get("markets", "/markets")
        return self._parsed("markets", paxos_rest.parse_markets, body)

    async def recent_executions(self, market: str) -> list[RestExecution]:
        body = await self._get("recent_executions", f"/markets/{market}/recent-executions")
        return self._parsed("recent_executions", paxos_rest.parse_executions, body)

    def _parsed(self, endpoint: str, parse: Callable[[bytes], _T], body: bytes) -> _T:
        try:
            value = parse(body)
        except RestAnswerError as exc:
            self._count(endpoint, "bad_answer")
            raise RestError("bad_answer", str(exc)) from None
        self._count(endpoint, "ok")
        return value

    async def _get(self, endpoint: str, path: str) -> bytes:
        url = self.base_url + path
        await self.budget.take()
        try:
            response = await self.http.get(url)
        except httpx.TimeoutException as exc:
            self._count(endpoint, "timeout")
            raise RestError("timeout", f"GET {url}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # connect errors, resets, protocol errors
            self._count(endpoint, "network_error")
            raise RestError("network_error", f"GET {url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 200:
            return response.content
        detail = f"GET {url}: HTTP {status}{_problem_text(response.content)}"
        if status == 429:
            wait = _retry_after(response.headers.get("retry-after"))
            self.budget.hold_off(wait)
            self._count(endpoint, "rate_limited")
            log.warning(
                "REST rate limit: %s; no request for %.0f s", detail, wait,
                extra={"event": "rest_rate_limited", "reason": detail},
            )  # fmt: skip
            raise RestError("rate_limited", detail, wait)
        outcome = (
            "not_found" if status == 404 else "server_error" if status >= 500 else "http_error"
        )
        self._count(endpoint, outcome)
        raise RestError(outcome, detail)

    def _count(self, endpoint: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(endpoint, outcome)


def _problem_text(body: bytes) -> str:
    problem = paxos_rest.parse_problem(body)
    if problem is None:
        return ""
    return f" ({problem.title}: {problem.detail})" if problem.detail else f" ({problem.title})"


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), bounded."""
    if value is None:
        return DEFAULT_THROTTLE
    text = value.strip()
    if text.isdigit():
        return min(float(text), _MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return DEFAULT_THROTTLE
    # A date is wall-clock time by nature: the only place here that reads the wall clock.
    return min(max(0.0, when.timestamp() - time.time()), _MAX_RETRY_AFTER)

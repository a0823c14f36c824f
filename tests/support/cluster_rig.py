"""Helpers (no tests) for the cluster roles: configurations, readiness, WebSocket subscribers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from gateway.app import Gateway
from gateway.config import Config
from tests.support.config import gateway_config

FEEDS = ("/marketdata/BTCUSD", "/marketdata/ETHUSD", "/executiondata/BTCUSD")


def cluster_config(
    sim_url: str,
    nats_urls: Sequence[str],
    role: str,
    *,
    holder: str = "",
    feeds: Sequence[str] = FEEDS,
    **sets: str,
) -> Config:
    """A gateway of ``role`` on ``nats_urls``: short lease and checkpoint intervals, R1."""
    cluster = {
        "cluster.nats_urls": ",".join(nats_urls),
        "cluster.role": f'"{role}"',
        "cluster.holder": f'"{holder or role}"',
        "cluster.lease_ttl": "1.5",
        "cluster.checkpoint_interval": "0.3",
        "cluster.max_age": "600",
        "cluster.connect_timeout": "2",
        "cluster.resume_wait": "5",
    }
    return gateway_config(sim_url, feeds=feeds, **{**cluster, **sets})


async def wait_for(gateway: Gateway, ready: bool = True, timeout: float = 60) -> dict[str, Any]:
    """Poll readiness (a derived condition, no event) until it is ``ready``; the body."""
    with trio.fail_after(timeout):
        while True:
            report = gateway.readiness.check(trio.current_time())
            if report.ready is ready:
                return report.body
            await trio.sleep(0.05)


async def subscribe(
    ws: WebSocketConnection, streams: list[str], resume: dict[str, Any] | None = None
) -> None:
    request: dict[str, Any] = {"op": "subscribe", "id": 1, "streams": streams}
    if resume:
        request["resume"] = resume
    await ws.send_message(json.dumps(request))


async def frames_until(
    ws: WebSocketConnection, done: Any, *, limit: int = 100_000, timeout: float = 60
) -> list[tuple[str, dict[str, Any]]]:
    """(raw text, parsed) of every frame until ``done(parsed)`` holds for one (included)."""
    out: list[tuple[str, dict[str, Any]]] = []
    with trio.fail_after(timeout):
        for _ in range(limit):
            raw = await ws.get_message()
            text = raw if isinstance(raw, str) else raw.decode()
            obj = json.loads(text)
            out.append((text, obj))
            if done(obj):
                return out
    raise AssertionError("frame limit reached")

"""Gateway configurations for tests: ephemeral ports, fast retries against the local simulator."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import Config, load_config


def gateway_config(sim_url: str, *, feeds: Sequence[str] | None = None, **sets: str) -> Config:
    """A gateway for tests: every port ephemeral, fast retries against the local simulator.

    ``feeds`` (paths joined to the simulator's URL, or full URLs) replaces the default feeds."""
    overrides = {
        "upstream.base_url": sim_url,
        "upstream.allow_fast_retry": "true",
        "upstream.backoff_initial": "0.05",
        "upstream.backoff_max": "0.3",
        "upstream.connect_interval": "0",
        # The simulator's REST API has a port of its own: tests about the backfill set
        # backfill.enabled and backfill.rest_url (sim.rest_url).
        "backfill.enabled": "false",
        "server.port": "0",
        "metrics.host": '"127.0.0.1"',
        "metrics.port": "0",
        "shutdown.drain_timeout": "2",
        # Every test client connects from 127.0.0.1: storms of hundreds of subscribers must
        # not trip the per-address limit (tests/component/test_limits.py tests that limit).
        "server.connections_per_ip_per_second": "100000",
        "server.connection_burst_per_ip": "100000",
        "server.max_pending_per_ip": "100000",
        **sets,
    }
    return load_config(None, {}, [f"{k}={v}" for k, v in overrides.items()], feeds=feeds)


# -- the fault-injection suite's rig: simulator + gateway + checking subscribers -----------------

# Quick enough to notice a stall in a test, slack enough that a gateway busy catching up (the
# pong waits behind the data sent before it) on a 2-core CI runner is not judged dead.
FAST_UPSTREAM_PINGS = {"upstream.ping_interval": "0.2", "upstream.ping_timeout": "2"}

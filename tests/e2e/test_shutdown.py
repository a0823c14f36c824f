"""The shutdown contract, end to end: a real ``paxos-gateway run`` process gets SIGTERM.

Simulator and gateway are separate processes started like an operator would; a subscriber
connected with the ``websockets`` library must see close code 1001 and the gateway must exit 0
within a bound.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.processes import STARTUP_TIMEOUT, spawn, wait_for_event, wait_ready

pytestmark = pytest.mark.slow

DRAIN_TIMEOUT = 2.0
EXIT_BOUND = 15.0  # drain timeout + upstream close + interpreter exit, with a wide margin


def test_sigterm_closes_subscribers_with_1001_and_exits_0(simulator_urls: tuple[str, str]) -> None:
    gateway = spawn(
        [
            "run",
            "--port", "0",
            "--metrics-port", "0",
            "--log-format", "json",
            "--set", f"upstream.base_url={simulator_urls[0]}",
            "--set", f"backfill.rest_url={simulator_urls[1]}",
            "--set", "upstream.allow_fast_retry=true",
            "--set", "upstream.backoff_initial=0.1",
            "--set", "upstream.connect_interval=0",
            "--set", "metrics.host=127.0.0.1",
            "--set", f"shutdown.drain_timeout={DRAIN_TIMEOUT}",
        ],
        reader="stderr",
    )  # fmt: skip
    try:
        started = wait_for_event(gateway, "started", time.monotonic() + STARTUP_TIMEOUT)
        wait_ready(started["metrics_url"])

        with connect(started["subscriber_url"] + "/v1/stream", open_timeout=5) as ws:
            ws.send(json.dumps({"op": "subscribe", "id": 1, "streams": ["book.BTCUSD"]}))
            types: set[str] = set()
            deadline = time.monotonic() + 10
            while "book_snapshot" not in types:
                assert time.monotonic() < deadline, f"no snapshot; got {types}"
                types.add(json.loads(ws.recv(timeout=5))["type"])

            gateway.popen.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100_000):  # drain what is still in flight, bounded
                    ws.recv(timeout=EXIT_BOUND)
            assert closed.value.rcvd is not None, "closed without a close frame"
            assert closed.value.rcvd.code == 1001
            assert "shutting down" in closed.value.rcvd.reason

        assert gateway.popen.wait(timeout=EXIT_BOUND) == 0
        assert time.monotonic() - sent_at < EXIT_BOUND
        events = set()
        for _ in range(1000):
            line = gateway.next_line(time.monotonic() + 5)
            if line is None:
                break
        for line in gateway.seen:
            with contextlib.suppress(json.JSONDecodeError):
                events.add(json.loads(line).get("event"))
        assert {"signal", "shutdown_begin", "shutdown_complete"} <= events
    finally:
        gateway.stop()


def test_sigterm_before_any_subscriber_exits_0_promptly(simulator_urls: tuple[str, str]) -> None:
    gateway = spawn(
        [
            "run", "--port", "0", "--metrics-port", "0", "--log-format", "json",
            "--set", f"upstream.base_url={simulator_urls[0]}",
            "--set", f"backfill.rest_url={simulator_urls[1]}",
            "--set", "upstream.allow_fast_retry=true",
            "--set", "upstream.backoff_initial=0.1",
            "--set", "upstream.connect_interval=0",
            "--set", "metrics.host=127.0.0.1",
        ],
        reader="stderr",
    )  # fmt: skip
    try:
        wait_for_event(gateway, "started", time.monotonic() + STARTUP_TIMEOUT)
        gateway.popen.send_signal(signal.SIGTERM)
        # Nothing to drain: the default 10 s drain timeout must not be waited out.
        assert gateway.popen.wait(timeout=8) == 0
    finally:
        gateway.stop()

from __future__ import annotations

import argparse
import io
import json
import re

import trio
import trio.lowlevel
import trio.testing
from trio_websocket import open_websocket_url

from gateway.tools.demo import _demo

DURATION = 30.0


def demo_args() -> argparse.Namespace:
    return argparse.Namespace(port=0, metrics_port=0, duration=DURATION, seed=2, rate=200.0)


async def test_demo_prints_working_addresses_and_stops_after_the_duration(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The clock only moves when told to, so the demo's --duration cannot run out while a slow
    # machine is still connecting; sockets are real and unaffected.
    out = io.StringIO()
    done = trio.Event()

    async def demo() -> None:
        await _demo(demo_args(), out)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo)
        # Mock time does not pass, so the waits are bounded by count, not by fail_after.
        for _ in range(10_000):
            if "metrics:" in out.getvalue():
                break
            await trio.testing.wait_all_tasks_blocked()
            await trio.lowlevel.checkpoint()
        text = out.getvalue()
        subscribe = re.search(r"subscribe:\s+(ws://127\.0\.0\.1:\d+/v1/stream)", text)
        tail = re.search(r"tail:\s+paxos-gateway tail (ws://127\.0\.0\.1:\d+) book\.BTCUSD", text)
        metrics = re.search(r"metrics:\s+(http://127\.0\.0\.1:\d+)/metrics", text)
        assert subscribe and tail and metrics, text
        assert subscribe.group(1).startswith(tail.group(1))
        assert f"Stopping after {DURATION:g} s." in text
        async with open_websocket_url(subscribe.group(1)) as ws:
            request = {"op": "subscribe", "id": 1, "streams": ["book.BTCUSD"]}
            await ws.send_message(json.dumps(request))
            for _ in range(10_000):
                message = json.loads(await ws.get_message())
                if message["type"] == "book_snapshot":
                    break
            assert message["type"] == "book_snapshot"
            assert message["bids"] and message["asks"]
        assert not done.is_set()
        mock_clock.jump(DURATION)
        # Only real I/O from here: the graceful shutdown needs no timer to fire.
        await done.wait()

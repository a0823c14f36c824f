"""The examples of docs/consuming.md, run as they are against the real gateway and simulator:
each keeps the books until the market goes idle, then prints them; they must equal the
simulator's truth, and the JavaScript one must hold the epoch (above 2**53) exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.checks import wait_books_equal_truth
from tests.support.config import FAST_UPSTREAM_PINGS, gateway_config

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
MARKETS = ["BTCUSD", "ETHUSD"]
TOKEN = "examples-token-0123456789abcdef"
NODE = shutil.which("node")


def node_command() -> list[str]:
    assert NODE is not None
    has_websocket = subprocess.run(
        [NODE, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"], check=False,
        timeout=30,
    ).returncode == 0  # fmt: skip
    return [NODE] if has_websocket else [NODE, "--experimental-websocket", "--no-warnings"]


def exact(levels: list[list[str]]) -> list[list[Decimal]]:
    return [[Decimal(p), Decimal(a)] for p, a in levels]


async def run_example(command: list[str]) -> None:
    """Start the example, let the market run, pause it; the example prints its books once
    the market has been idle and exits. Its books must equal the truth."""
    async with trio.open_nursery() as nursery:
        sim = Simulator(SimulatorConfig(seed=8, markets=MARKETS, levels=30, rate=400.0))
        sim_url = await nursery.start(sim.serve)
        gateway = Gateway(
            gateway_config(sim_url, **FAST_UPSTREAM_PINGS), handle_signals=False,
            auth_tokens=(TOKEN.encode(),),
        )  # fmt: skip
        await nursery.start(gateway.serve)
        with trio.fail_after(30):
            await sim.wait_for_events(300)  # the books exist: the example joins late
        result: list[subprocess.CompletedProcess[bytes]] = []

        async def run() -> None:
            args = [*command, gateway.subscriber_url, "--token", TOKEN, "--idle-exit", "2"]
            result.append(await trio.run_process(args, capture_stdout=True, capture_stderr=True,
                                                 check=False))  # fmt: skip

        with trio.fail_after(60):
            nursery.start_soon(run)
            await sim.wait_for_events(sim.events_generated + 800)
            # An upstream resync while the example listens: books arrive as snapshots again.
            assert sim.drop_all(path="/marketdata") == 1
            await sim.wait_for_events(sim.events_generated + 800)
            sim.pause()
            await sim.wait_idle()
            await wait_books_equal_truth(sim, gateway, MARKETS)
            while not result:
                await trio.sleep(0.05)
        done = result[0]
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, (out[-2000:], err[-2000:])
        books: dict[str, Any] = {}
        for line in out.splitlines():
            if line.startswith('{"book"'):
                book = json.loads(line)
                books[book["book"]] = book
        for market in MARKETS:
            bids, asks = sim.truth(market)
            book = books[f"book.{market}"]
            assert exact(book["bids"]) == [list(level) for level in bids], market
            assert exact(book["asks"]) == [list(level) for level in asks], market
        summary = out.splitlines()[-1]
        assert summary.endswith(f"0 gaps, epoch {gateway.epoch}"), summary
        assert "trade" in out and "snapshot (reconnect)" in out
        gateway.request_shutdown()
        with trio.fail_after(10):
            await gateway.stopped.wait()
        nursery.cancel_scope.cancel()


async def test_python_asyncio_example() -> None:
    await run_example([sys.executable, str(EXAMPLES / "consume.py")])


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_javascript_node_example() -> None:
    await run_example([*node_command(), str(EXAMPLES / "consume.mjs")])

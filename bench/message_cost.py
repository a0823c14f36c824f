"""What one upstream message costs the gateway: ``python -m bench.message_cost [--messages 200]``.

The fixed cost per upstream message, before any fan-out: the real ``gateway.app.Gateway`` (as
``bench.gateway_server`` runs it, no subscriber connected) reads ``/executiondata/BTCUSD`` from
``bench.feeder`` in another process, which sends ``--messages`` Paxos executions at ``--rate``,
each its own write, so that each is its own socket read, as at a paced live rate: the
upstream read loop (trio's wait and ``recv``), the WebSocket parse, the normalizer, the hub's
sequencing and history, the metrics (no encode: that comes with the first subscriber). It
prints the CPU time of this process per message.

The figure to compare is user-space instructions under callgrind, which the load of a busy
machine does not change. Two message counts in two runs; the difference of the totals divided
by the difference of the counts is instructions per message (start-up cancels out):

    for m in 100 300; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
      .venv/bin/python -m bench.message_cost --messages $m --rate 10 2>&1 | grep Collected; done

The feeder is a child process (callgrind does not trace it). ``--rate 10`` keeps one message
per read under callgrind's ~50x slow-down; the run prints how many socket reads the feed made,
which must equal the message count for the figure to be per message.

``--subscribers K`` connects K subscribers (``bench.subscribers``, one more child process) to
``trades.BTCUSD`` first: the figure then includes the encode and K deliveries per message,
and with two values of K at the same counts, the instructions per delivery.
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import get_context
from typing import Any

import trio

from bench import data
from bench.feeder import feeder_main
from bench.gateway_server import SETTINGS
from bench.harness import call
from bench.servers import GATEWAY
from bench.subscribers import subscriber_main

WARM = 20  # messages before the count starts (first-use costs: imports, caches)


async def _measure(
    port: int, conn: Any, messages: int, rate: float, subs: Any, k: int
) -> tuple[float, int, int]:
    from gateway.app import Gateway
    from gateway.config import load_config

    url = f"ws://127.0.0.1:{port}/executiondata/{data.MARKET}"
    config = load_config(None, {}, list(SETTINGS), feeds=[url])
    gateway = Gateway(config, handle_signals=False)
    stats = gateway.hub.stats
    registry = gateway.metrics.registry

    def reads() -> float:  # one publish-latency observation per read that produced records
        return registry.get_sample_value("paxos_gateway_publish_latency_seconds_count") or 0.0

    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        await trio.to_thread.run_sync(call, conn, ("wait_client", 30.0), 60.0)
        if k:
            server_port = gateway.server.port
            connect = ("connect", "127.0.0.1", server_port, GATEWAY.stream_path)
            command = (*connect, GATEWAY.trades_request, k, 600.0)
            reply = await trio.to_thread.run_sync(call, subs, command, 700.0)
            if reply[1] != k:
                raise RuntimeError(f"subscribers: {reply!r}")

        async def published(target: int) -> None:
            with trio.fail_after(600):
                # A plain counter of the hub: nothing to wait on but the clock.
                while stats.records_published.get("trades", 0) < target:  # noqa: ASYNC110
                    await trio.sleep(0.2)

        base = stats.records_published.get("trades", 0)
        await trio.to_thread.run_sync(call, conn, ("rate", 0, WARM, rate, 600.0), 700.0)
        await published(base + WARM)
        t0 = time.process_time()
        reads0 = reads()
        command = ("rate", WARM, messages, rate, 600.0)
        sent = (await trio.to_thread.run_sync(call, conn, command, 700.0))[1]
        await published(base + WARM + sent)
        t1 = time.process_time()
        read_count = int(reads() - reads0)
        gateway.request_shutdown()
        nursery.cancel_scope.cancel()
    return (t1 - t0) / max(sent, 1), sent, read_count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--subscribers", type=int, default=0, help="connected subscribers")
    args = parser.parse_args()
    ctx = get_context("spawn")
    parent, child = ctx.Pipe()
    feeder = ctx.Process(
        target=feeder_main, args=(child, "paxos", WARM + args.messages), daemon=True
    )
    subs, subs_child = ctx.Pipe()
    clients = ctx.Process(target=subscriber_main, args=(subs_child,), daemon=True)
    feeder.start()
    if args.subscribers:
        clients.start()
    try:
        port = parent.recv()[1]
        per_message, sent, reads = trio.run(
            _measure, port, parent, args.messages, args.rate, subs, args.subscribers
        )
        print(
            f"{sent} messages in {reads} socket reads: "
            f"{per_message * 1e6:.1f} µs CPU per message (this process)"
        )
    finally:
        parent.send(("stop",))
        feeder.join(10)
        if args.subscribers:
            subs.send(("stop",))
            clients.join(10)
        for process in (feeder, clients):
            if process.is_alive():
                process.kill()


if __name__ == "__main__":
    main()

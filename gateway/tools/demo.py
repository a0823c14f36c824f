"""``paxos-gateway demo``: the simulator and a gateway in one process, ready to poke at.

The simulator listens on an ephemeral loopback port and the gateway reads the three all-markets
feeds from it (every market is then covered; adding single-market paths as well would publish
the same streams twice, which the config rejects). Fast retries are allowed because the
"upstream" is local. What to connect to is printed on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

import trio

from gateway.app import Gateway
from gateway.config import ConfigError, Override, load_config
from gateway.logs import setup_logging
from gateway.run_command import bind_error, freeze_startup_heap
from gateway.simulator import Simulator, SimulatorConfig

log = logging.getLogger("gateway.demo")

DEMO_FEEDS = ("/executiondata", "/marketdata", "/marketdata/stablecoin")
SUBSCRIBE_PATH = "/v1/stream"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the simulator and the gateway together, locally",
        description="Run a simulated Paxos and a gateway reading it in one process, and print "
        "where to connect. Stops on Ctrl-C/SIGTERM or after --duration seconds.",
    )
    parser.add_argument("--port", type=_port, default=8765, help="subscriber port (default 8765)")
    parser.add_argument(
        "--metrics-port", type=_port, default=9108, help="metrics port (default 9108; 0 = any)"
    )
    parser.add_argument("--duration", type=_positive, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    parser.add_argument(
        "--rate", type=_non_negative, default=100.0,
        help="simulated events per second (default 100; 0 = as fast as subscribers read)",
    )  # fmt: skip
    parser.add_argument("--log-level", default="info", type=str.lower)
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    freeze_startup_heap()
    try:
        trio.run(_demo, args, sys.stdout)
    except ConfigError as e:
        print(f"paxos-gateway demo: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        error = bind_error(e)
        if error is None:
            raise
        print(
            f"paxos-gateway demo: cannot listen: {error} (try --port 0 --metrics-port 0)",
            file=sys.stderr,
        )
        return 1
    return 0


async def _demo(args: argparse.Namespace, out: TextIO) -> None:
    sim = Simulator(SimulatorConfig(seed=args.seed, rate=args.rate, host="127.0.0.1", port=0))
    async with trio.open_nursery() as nursery:
        sim_url = await nursery.start(sim.serve)
        config = load_config(
            None,
            {},
            [
                Override("upstream.base_url", sim_url, "simulator"),
                Override("upstream.allow_fast_retry", "true", "demo"),
                Override("upstream.backoff_initial", "0.1", "demo"),
                Override("upstream.backoff_max", "2.0", "demo"),
                Override("upstream.connect_interval", "0", "demo"),
                Override("backfill.rest_url", sim.rest_url, "simulator"),
                Override("server.port", str(args.port), "--port"),
                Override("metrics.host", '"127.0.0.1"', "demo"),
                Override("metrics.port", str(args.metrics_port), "--metrics-port"),
                Override("metrics.ready_grace", "5", "demo"),
                Override("shutdown.drain_timeout", "2", "demo"),
            ],
            feeds=list(DEMO_FEEDS),
        )
        gateway = Gateway(config)
        await nursery.start(gateway.serve)
        url = gateway.subscriber_url + SUBSCRIBE_PATH
        request = '{"op":"subscribe","id":1,"streams":["book.BTCUSD","trades.*"]}'
        print(
            f"paxos-gateway demo: simulated Paxos at {sim_url} "
            f"(seed {args.seed}, {args.rate:g} events/s, markets {', '.join(sim.markets)})\n"
            f"  subscribe:  {url}\n"
            f"  tail:       paxos-gateway tail {gateway.subscriber_url} book.BTCUSD 'trades.*'\n"
            f"  websocat:   echo '{request}' | websocat -n {url}\n"
            f"  metrics:    {gateway.metrics_url}/metrics   (also /healthz, /readyz)\n"
            + (
                f"Stopping after {args.duration:g} s."
                if args.duration
                else "Ctrl-C or SIGTERM to stop."
            ),
            file=out,
            flush=True,
        )
        if args.duration:
            await trio.sleep(args.duration)
            gateway.request_shutdown()
        # The gateway's serve returns after its graceful shutdown; then stop the simulator.
        await gateway.stopped.wait()
        nursery.cancel_scope.cancel()


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {value}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value

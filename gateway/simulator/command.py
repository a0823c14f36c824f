"""``paxos-gateway simulate``: run the Paxos simulator as a standalone server."""

from __future__ import annotations

import argparse
import sys
from functools import partial

import trio

from gateway.simulator.config import RestConfig, SimulatorConfig
from gateway.simulator.faults import BAD_FRAME_KINDS, BadFrameKind, FaultConfig
from gateway.simulator.markets import DEFAULT_MARKETS, DEFAULT_STABLECOINS, MarketError
from gateway.simulator.server import Simulator

PATHS = (
    "/marketdata",
    "/marketdata/{market}",
    "/executiondata",
    "/executiondata/{market}",
    "/marketdata/stablecoin",
    "/marketdata/stablecoin/{market}",
)
REST_PATHS = (
    "/markets",
    "/markets/{market}/recent-executions",
    "/markets/{market}/order-book",
    "/markets/{market}/ticker",
)


def _names(text: str) -> list[str]:
    names = [n.strip().upper() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of market names")
    return names


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}")
    return value


def _kinds(text: str) -> tuple[BadFrameKind, ...]:
    kinds: list[BadFrameKind] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        matching = [k for k in BAD_FRAME_KINDS if k == name]
        if not matching:
            raise argparse.ArgumentTypeError(
                f"unknown bad frame kind {name!r}; choose from {', '.join(BAD_FRAME_KINDS)}"
            )
        kinds.append(matching[0])
    return tuple(kinds)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run a local, faithful Paxos feed simulator",
        description="Serve the Paxos public WebSocket feeds and REST market data from a "
        "seeded market model, with switchable faults. Paths: "
        + ", ".join(PATHS)
        + "; REST (under /v2): "
        + ", ".join(REST_PATHS),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.add_argument(
        "--rest-port", type=int, default=0, help="REST API port (default 0: any free port)"
    )
    p.add_argument(
        "--rest-rate-limit",
        type=float,
        default=10.0,
        metavar="PER_SECOND",
        help="REST requests per second per IP (default 10, Paxos's; 0 = no limit)",
    )
    p.add_argument(
        "--rest-burst",
        type=int,
        default=10,
        help="REST requests admitted at once (default 10; 3000 = Paxos's 5-minute average)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same event sequence")
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="events per second overall; 0 = as fast as the clients read",
    )
    p.add_argument("--levels", type=int, default=200, help="levels per book side")
    p.add_argument(
        "--markets",
        type=_names,
        default=list(DEFAULT_MARKETS),
        help="comma-separated order-book markets (default: all of "
        + ",".join(DEFAULT_MARKETS)
        + ")",
    )
    p.add_argument("--stablecoins", type=_names, default=list(DEFAULT_STABLECOINS))
    p.add_argument(
        "--max-events", type=int, default=None, help="stop generating after this many events"
    )
    p.add_argument(
        "--linger",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --max-events: exit this long after the last event "
        "(default: keep serving until interrupted)",
    )
    p.add_argument("--execution-ratio", type=_probability, default=0.1)
    p.add_argument(
        "--number-style",
        choices=("trim", "pad", "mixed"),
        default="trim",
        help="decimals as 19994.5 (trim), 19994.50 (pad) or either per message",
    )
    p.add_argument(
        "--timestamp-digits",
        type=int,
        default=None,
        choices=range(10),
        metavar="0..9",
        help="fractional digits before trimming (default: random)",
    )
    p.add_argument("--stablecoin-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument(
        "--no-backpressure",
        action="store_true",
        help="never wait for slow clients (they are dropped when too far behind)",
    )
    f = p.add_argument_group("faults")
    f.add_argument(
        "--drop-probability",
        type=_probability,
        default=0.0,
        help="per message: drop the connection",
    )
    f.add_argument(
        "--drop-graceful",
        action="store_true",
        help="drops send a close frame (1001) instead of just closing TCP",
    )
    f.add_argument(
        "--stall-probability",
        type=_probability,
        default=0.0,
        help="per message: stall the connection (no data, no pongs, stays open)",
    )
    f.add_argument(
        "--bad-frame-probability",
        type=_probability,
        default=0.0,
        help="per message: send a bad frame first",
    )
    f.add_argument(
        "--bad-frame-kinds",
        type=_kinds,
        default=BAD_FRAME_KINDS,
        help="comma-separated subset of " + ",".join(BAD_FRAME_KINDS),
    )
    f.add_argument("--oversized-bytes", type=int, default=17 * 1024 * 1024)
    f.add_argument(
        "--extra-field-probability",
        type=_probability,
        default=0.0,
        help="per message: add an unknown field to a real message",
    )
    f.add_argument(
        "--unknown-market", choices=("error_frame", "http_404", "http_503"), default="error_frame"
    )
    f.add_argument("--final-snapshot", choices=("bool", "string", "missing"), default="bool")
    f.add_argument(
        "--snapshot-split",
        type=int,
        default=0,
        metavar="LEVELS",
        help="split snapshots: at most LEVELS levels per side per message",
    )
    f.add_argument("--connect-interval", type=float, default=0.0, metavar="SECONDS",
                   help="delay excess new connections like Paxos (1.0 to emulate)")  # fmt: skip
    f.add_argument("--rest-delay", type=float, default=0.0, metavar="SECONDS",
                   help="REST: answer every request this much later")  # fmt: skip
    f.add_argument("--rest-error-probability", type=_probability, default=0.0,
                   help="REST: per request, answer --rest-error-status instead")  # fmt: skip
    f.add_argument("--rest-error-status", type=int, default=503, metavar="5XX")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        seed=args.seed,
        markets=tuple(args.markets),
        stablecoins=tuple(args.stablecoins),
        levels=args.levels,
        rate=args.rate,
        max_events=args.max_events,
        execution_ratio=args.execution_ratio,
        number_style=args.number_style,
        timestamp_digits=args.timestamp_digits,
        stablecoin_interval=args.stablecoin_interval,
        host=args.host,
        port=args.port,
        rest_port=args.rest_port,
        rest=RestConfig(rate_limit=args.rest_rate_limit, burst=args.rest_burst),
        backpressure=not args.no_backpressure,
        faults=FaultConfig(
            drop_probability=args.drop_probability,
            drop_graceful=args.drop_graceful,
            stall_probability=args.stall_probability,
            bad_frame_probability=args.bad_frame_probability,
            bad_frame_kinds=args.bad_frame_kinds,
            oversized_bytes=args.oversized_bytes,
            extra_field_probability=args.extra_field_probability,
            unknown_market=args.unknown_market,
            final_snapshot=args.final_snapshot,
            snapshot_split=args.snapshot_split,
            connect_interval=args.connect_interval,
            rest_delay=args.rest_delay,
            rest_error_probability=args.rest_error_probability,
            rest_error_status=args.rest_error_status,
        ),
    )


async def _serve(sim: Simulator, linger: float | None) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(sim.serve)
        print(f"Paxos simulator on {url}  (seed {sim.config.seed})", flush=True)
        for path in PATHS:
            print(f"  {url}{path}", flush=True)
        print(f"REST API on {sim.rest_url}", flush=True)
        for path in REST_PATHS:
            print(f"  {sim.rest_url}{path}", flush=True)
        if sim.config.max_events is not None and linger is not None:
            await sim.finished.wait()
            print(f"{sim.events_generated} events generated; exiting in {linger} s", flush=True)
            await trio.sleep(linger)
            nursery.cancel_scope.cancel()


def run(args: argparse.Namespace) -> int:
    try:
        sim = Simulator(config_from_args(args))
    except (ValueError, MarketError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(partial(_serve, sim, args.linger))
    except OSError as exc:
        print(f"simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped
    return 0

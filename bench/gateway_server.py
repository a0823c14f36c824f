"""The gateway under test, as the harness starts it: ``gateway.app.Gateway`` on ephemeral ports.

Settings differing from the defaults, and why:

* ``server.port = 0``, ``metrics.port = 0``, both on 127.0.0.1: ephemeral, loopback only;
* ``server.ping_interval`` one hour: the harness's subscribers do not answer pings (the peers
  do not ping either);
* ``server.buffer_bytes = 256 MiB``: a burst must not trip the slow-subscriber policy, because
  ``websockets.broadcast()`` buffers without limit and the trio peer has a deep queue: all three
  deliver every record;
* upstream fast retry and no connect interval: the feeder is local;
* ``backfill.enabled = false``: the feeder serves no REST API, and with backfill on the gateway
  holds every live execution until a backfill from api.paxos.com (unreachable here) is in, so
  it delivered nothing (0 deliveries/s, every latency sample missing) since the backfill merge;
  the benchmark measures the live path, which has no outage to backfill;
* per-IP connection rate and burst far above N: every subscriber connects from 127.0.0.1;
* ``shutdown.drain_timeout = 0`` and log level ``warning``.

``--set KEY=VALUE`` adds a setting after these (a variant of the gateway, ``bench.servers``).

Prints ``LISTENING <port>`` once the subscriber server is bound; exits on SIGTERM or after
``--max-seconds``. With ``BENCH_GATEWAY_PROFILE=DIR`` in the environment it writes a cProfile
of the whole process to ``DIR/gateway-<pid>.prof`` on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import logging
import os
import signal
from urllib.parse import urlsplit

import trio

from bench.procs import server_arguments

SETTINGS = (
    'server.host="127.0.0.1"',
    "server.port=0",
    'metrics.host="127.0.0.1"',
    "metrics.port=0",
    "server.ping_interval=3600.0",
    "server.ping_timeout=3600.0",
    f"server.buffer_bytes={256 * 2**20}",
    "server.connections_per_ip_per_second=100000.0",
    "server.connection_burst_per_ip=100000",
    "server.max_pending_per_ip=100000",
    "upstream.allow_fast_retry=true",
    "upstream.backoff_initial=0.05",
    "upstream.backoff_max=0.5",
    "upstream.connect_interval=0.0",
    "backfill.enabled=false",
    "shutdown.drain_timeout=0.0",
    'log.level="warning"',
)


async def _exit_on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run(upstream: str, max_seconds: float, settings: list[str]) -> None:
    from gateway.app import Gateway
    from gateway.config import load_config

    config = load_config(None, {}, [*SETTINGS, *settings], feeds=[upstream])
    gateway = Gateway(config, handle_signals=False)
    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            # SIGTERM (from the harness) ends trio.run normally, so a profile gets written.
            nursery.start_soon(_exit_on_sigterm, nursery.cancel_scope)
            await nursery.start(gateway.serve)
            print(f"LISTENING {urlsplit(gateway.subscriber_url).port}", flush=True)
            await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a further setting"
    )
    args = server_arguments(parser)
    from gateway.logs import setup_logging
    from gateway.run_command import freeze_startup_heap

    setup_logging("warning", "text")
    logging.getLogger().setLevel(logging.WARNING)
    freeze_startup_heap()  # as ``paxos-gateway run`` does
    profile_dir = os.environ.get("BENCH_GATEWAY_PROFILE")
    profiler = cProfile.Profile() if profile_dir else None
    if profiler is not None:
        profiler.enable()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run, args.upstream, args.max_seconds, args.set)
    if profiler is not None and profile_dir:
        profiler.disable()
        os.makedirs(profile_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(profile_dir, f"gateway-{os.getpid()}.prof"))


if __name__ == "__main__":
    main()

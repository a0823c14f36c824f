"""``paxos-gateway record``: write every raw upstream frame, with its receive time, to a file.

The connections are the gateway's own: ``upstream.run_feed`` (same TLS verification, ping/pong
liveness, backoff and shared connect gate), driven with a recording session in place of a
``FeedNormalizer``. So a recording holds exactly what the gateway would have been handed, frames
verbatim, plus connect/disconnect events; ``gateway.recording.replay`` serves it back.

The recorder never asks for a resync and never backs off on an error frame: it records what
upstream does, it does not judge it. Its own shutdown is not recorded as a disconnect.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from gateway.config import ConfigError, UpstreamConfig, load_config
from gateway.contract.records import Record
from gateway.ingest.book import OrderBook
from gateway.ingest.feeds import FeedSpec
from gateway.io.connect_gate import ConnectGate
from gateway.io.metrics import Metrics
from gateway.io.upstream import run_feed
from gateway.io.upstream_health import FeedState
from gateway.io.upstream_reasons import CANCELLED
from gateway.logs import setup_logging
from gateway.recording.format import RecordingWriter

__all__ = ["RecordResult", "record", "register"]

log = logging.getLogger("gateway.record")

FLUSH_INTERVAL = 1.0


@dataclass(slots=True)
class RecordResult:
    frames: int = 0
    events: int = 0
    stopped_by: str = "cancelled"  # "max_frames", "duration" or "cancelled" (SIGINT, caller)
    states: list[FeedState] = field(default_factory=list)


class _Budget:
    """Counts frames over all feeds; reaching ``limit`` cancels the recording."""

    def __init__(self, limit: int | None, scope: trio.CancelScope, result: RecordResult) -> None:
        self.limit = limit
        self.scope = scope
        self.result = result

    def take(self) -> bool:
        if self.limit is not None and self.result.frames >= self.limit:
            return False  # frames that arrive while the connections are closing
        self.result.frames += 1
        if self.limit is not None and self.result.frames >= self.limit:
            self.result.stopped_by = "max_frames"
            self.scope.cancel()
        return True


class _RecordingSession:
    """What ``run_feed`` needs of a session, writing instead of normalizing."""

    resync_reason: str | None = None
    upstream_error: str | None = None

    def __init__(self, feed: FeedSpec, writer: RecordingWriter, budget: _Budget) -> None:
        self.feed = feed.name
        self.writer = writer
        self.budget = budget

    def connected(self, now_ns: int) -> list[Record]:
        self.writer.event(now_ns, self.feed, "connected")
        self.budget.result.events += 1
        return []

    def receive(self, payload: bytes | str, now_ns: int) -> list[Record]:
        if self.budget.take():
            self.writer.frame(now_ns, self.feed, payload)
        return []

    def disconnected(self, reason: str, now_ns: int) -> list[Record]:
        if reason != CANCELLED:  # our own shutdown is not an upstream event
            self.writer.event(now_ns, self.feed, "disconnected", reason)
            self.budget.result.events += 1
        return []

    def take_new_books(self) -> list[tuple[str, OrderBook]]:
        return []


class _Discard:
    """The sink of a recording: nothing is normalized, so nothing is published."""

    def register_book(self, stream: str, book: OrderBook) -> None:
        pass

    def publish(self, records: Sequence[Record]) -> None:
        pass


async def record(
    feeds: Sequence[FeedSpec],
    writer: RecordingWriter,
    settings: UpstreamConfig,
    *,
    duration: float | None = None,
    max_frames: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    flush_interval: float = FLUSH_INTERVAL,
    task_status: trio.TaskStatus[RecordResult] = trio.TASK_STATUS_IGNORED,
) -> RecordResult:
    """Record ``feeds`` into ``writer`` until ``duration`` seconds, ``max_frames`` frames (over
    all feeds) or cancellation; flushes the writer at the end. ``nursery.start`` gives the live
    ``RecordResult`` (its counters grow while recording)."""
    result = RecordResult()
    gate = ConnectGate(settings.connect_interval)
    metrics = Metrics()
    stop = trio.CancelScope()
    budget = _Budget(max_frames, stop, result)
    try:
        with stop:
            if duration is not None:
                stop.deadline = trio.current_time() + duration
            async with trio.open_nursery() as nursery:
                for feed in feeds:
                    session = _RecordingSession(feed, writer, budget)
                    state = await nursery.start(
                        lambda task_status, feed=feed, session=session: run_feed(
                            feed,
                            session,
                            _Discard(),
                            settings,
                            metrics,
                            connect_gate=gate,
                            ssl_context=ssl_context,
                            task_status=task_status,
                        )
                    )
                    result.states.append(state)
                task_status.started(result)
                while True:
                    await trio.sleep(flush_interval)
                    writer.flush()
        if stop.cancelled_caught and result.stopped_by != "max_frames":
            result.stopped_by = "duration"
    finally:
        writer.flush()
    return result


# -- the command ------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "record",
        help="record the raw upstream frames to a file (for replay and regression tests)",
        description="Connect to the configured Paxos feeds like the gateway does and write "
        "every frame, with its receive time, to a JSON-lines recording. Stops after "
        "--duration, --max-frames or Ctrl-C, and always flushes the file. Serve it back with "
        "'paxos-gateway replay FILE'.",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="recording to write")
    p.add_argument(
        "--feed",
        action="append",
        metavar="PATH_OR_URL",
        dest="feeds",
        help="feed to record (repeatable; replaces the configured feeds), e.g. /marketdata",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="set_overrides",
        help="override one setting (repeatable), e.g. --set upstream.base_url=ws://127.0.0.1:9",
    )
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--max-frames", type=_positive_int, metavar="N", help="stop after N frames (all feeds)"
    )
    p.add_argument("--log-level", default="info", metavar="LEVEL", help="e.g. info or debug")
    p.set_defaults(func=run)


async def _main(
    feeds: Sequence[FeedSpec],
    writer: RecordingWriter,
    settings: UpstreamConfig,
    duration: float | None,
    max_frames: int | None,
) -> RecordResult:
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

        async def record_then_stop(task_status: trio.TaskStatus[RecordResult]) -> None:
            await record(
                feeds,
                writer,
                settings,
                duration=duration,
                max_frames=max_frames,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()  # the signal watcher

        nursery.start_soon(on_signal)
        result: RecordResult = await nursery.start(record_then_stop)
    return result


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, os.environ, args.set_overrides, feeds=args.feeds)
        setup_logging(args.log_level)
    except (ConfigError, ValueError) as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    feeds = config.feed_specs()
    try:
        out = args.out.open("wb")
    except OSError as exc:
        print(f"record: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with out:
        writer = RecordingWriter(out, [(f.name, f.url) for f in feeds], time.time_ns())
        print(
            f"recording {', '.join(f.url for f in feeds)} to {args.out} (Ctrl-C stops)",
            file=sys.stderr,
        )
        result = trio.run(_main, feeds, writer, config.upstream, args.duration, args.max_frames)
    print(
        f"recorded {writer.frames} frames and {writer.events} connection events to {args.out} "
        f"(stopped by {result.stopped_by})",
        file=sys.stderr,
    )
    return 0

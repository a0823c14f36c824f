"""``paxos-gateway tail URL STREAM...``: a small subscriber that prints records and checks them.

Prints one readable line per message on stdout and checks each stream's sequence numbers as a
careful client would: after ``subscribed`` the stream continues from the announced head (records
at or below it are the initial values), a book snapshot resets the position, a resume continues
from ``from_seq``. Gaps, repeats and epoch changes (a gateway restart) are reported on stderr.

Exit status: 0 all good; 1 a gap or other sequence problem was seen; 2 a request was refused
or the arguments are wrong; 3 the connection failed or was closed by the gateway early.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

__all__ = ["SequenceChecker", "format_message", "main", "register", "tail"]

EXIT_OK, EXIT_GAPS, EXIT_REFUSED, EXIT_CONNECTION = 0, 1, 2, 3
_RESPONSES = frozenset(
    ("hello", "subscribed", "unsubscribed", "resumed", "resume_failed", "pong", "streams", "error")
)


@dataclass
class SequenceChecker:
    """Per-stream sequence bookkeeping; ``check`` returns the problems one message reveals."""

    expected: dict[str, int] = field(default_factory=dict)
    initial_head: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)
    gaps: int = 0
    problems: int = 0

    def check(self, msg: dict[str, Any]) -> list[str]:
        kind = msg.get("type")
        if kind in _RESPONSES:
            if kind == "subscribed":
                for state in msg.get("streams", []):
                    self.initial_head[state["stream"]] = state["seq"]
                    self.expected[state["stream"]] = state["seq"] + 1
                    self.epochs[state["stream"]] = state["epoch"]
            elif kind == "resumed":
                self.expected[msg["stream"]] = msg["from_seq"]
                self.initial_head.pop(msg["stream"], None)
            return []
        stream, seq, epoch = msg.get("stream"), msg.get("seq"), msg.get("epoch")
        if not isinstance(stream, str) or not isinstance(seq, int):
            self.problems += 1
            return [f"message without stream/seq: {str(msg)[:200]}"]
        notes: list[str] = []
        known_epoch = self.epochs.get(stream)
        if isinstance(epoch, str):
            if known_epoch is not None and epoch != known_epoch:
                self.problems += 1
                notes.append(f"{stream}: epoch changed {known_epoch} -> {epoch} (gateway restart)")
                self.expected.pop(stream, None)
            self.epochs[stream] = epoch
        if kind == "book_snapshot":
            # A snapshot replaces the book: the stream continues after its seq, whatever came
            # before (a late join, a resync, a conflation).
            self.expected[stream] = seq + 1
            self.initial_head.pop(stream, None)
            return notes
        head = self.initial_head.get(stream)
        if head is not None and seq <= head:
            return notes  # initial value (last trade / price / status)
        self.initial_head.pop(stream, None)
        want = self.expected.get(stream)
        if want is not None and seq != want:
            if seq > want:
                self.gaps += 1
                notes.append(
                    f"{stream}: GAP: expected seq {want}, got {seq} ({seq - want} missing)"
                )
            else:
                self.problems += 1
                notes.append(f"{stream}: seq went back: expected {want}, got {seq}")
        self.expected[stream] = seq + 1
        return notes


def _levels(levels: list[Any]) -> str:
    return f"{levels[0][1]} @ {levels[0][0]}" if levels else "-"


def format_message(msg: dict[str, Any]) -> str:
    """One human line for a decoded message."""
    kind = msg.get("type")
    head = f"{msg.get('stream')} #{msg.get('seq')}"
    match kind:
        case "trade":
            return f"{head} trade {msg['amount']} @ {msg['price']} ({msg['match_number']})"
        case "book_update":
            return f"{head} {msg['side']} {msg['price']} = {msg['amount']}"
        case "book_snapshot":
            return (
                f"{head} SNAPSHOT ({msg['reason']}{', resync' if msg['resync'] else ''}) "
                f"{len(msg['bids'])} bids / {len(msg['asks'])} asks, best bid "
                f"{_levels(msg['bids'])}, best ask {_levels(msg['asks'])}"
            )
        case "price":
            return f"{head} price {msg['price']}"
        case "status":
            return f"{head} status {msg['feed']}: {msg['state']} ({msg['reason']})"
        case "subscribed":
            states = ", ".join(f"{s['stream']}@{s['seq']}" for s in msg["streams"]) or "-"
            patterns = f" patterns {', '.join(msg['patterns'])}" if msg["patterns"] else ""
            return f"# subscribed {states}{patterns}"
        case "error":
            return f"# error {msg['code']}: {msg['message']}"
        case "resumed":
            return f"# resumed {msg['stream']} {msg['from_seq']}..{msg['to_seq']}"
        case "resume_failed":
            return f"# resume failed {msg['stream']}: {msg['reason']} ({msg['message']})"
        case "hello":
            return f"# hello {msg['server']} protocol v{msg['version']} epoch {msg['epoch']}"
    return f"# {msgspec.json.encode(msg).decode()}"


def stream_url(url: str, encoding: str) -> str:
    """The gateway URL to open: a bare host means /v1/stream; the encoding goes in the query."""
    split = urlsplit(url)
    path = split.path if split.path not in ("", "/") else "/v1/stream"
    query = split.query
    if encoding != "json" and "encoding=" not in query:
        query = f"{query}&encoding={encoding}" if query else f"encoding={encoding}"
    return urlunsplit((split.scheme, split.netloc, path, query, ""))


async def tail(
    url: str,
    streams: list[str],
    *,
    count: int | None = None,
    duration: float | None = None,
    encoding: str = "json",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    formatter: Callable[[dict[str, Any]], str] = format_message,
) -> int:
    """Subscribe and print until ``count`` records or ``duration`` seconds; the exit status."""
    checker = SequenceChecker()
    records = 0
    refused = False
    target = stream_url(url, encoding)
    deadline = math.inf if duration is None else trio.current_time() + duration
    try:
        async with open_websocket_url(target, connect_timeout=10) as ws:
            if streams:
                request = {"op": "subscribe", "id": "tail", "streams": streams}
                await ws.send_message(msgspec.json.encode(request).decode())
            with trio.move_on_at(deadline):
                while count is None or records < count:
                    data = await ws.get_message()
                    try:
                        if isinstance(data, bytes) and encoding == "msgpack":
                            msg = msgspec.msgpack.decode(data)
                        else:
                            msg = msgspec.json.decode(data)
                    except msgspec.DecodeError as exc:
                        print(f"tail: undecodable message: {exc}", file=err)
                        checker.problems += 1
                        continue
                    if not isinstance(msg, dict):
                        print(f"tail: unexpected message: {str(msg)[:200]}", file=err)
                        checker.problems += 1
                        continue
                    print(formatter(msg), file=out, flush=True)
                    if msg.get("type") == "error":
                        refused = True
                        print(f"tail: refused: {msg.get('message')}", file=err)
                    elif msg.get("type") not in _RESPONSES:
                        records += 1
                    for note in checker.check(msg):
                        print(f"tail: {note}", file=err, flush=True)
    except HandshakeError as exc:
        print(f"tail: cannot connect to {target}: {exc}", file=err)
        return EXIT_CONNECTION
    except OSError as exc:
        print(f"tail: cannot connect to {target}: {exc}", file=err)
        return EXIT_CONNECTION
    except ConnectionClosed as exc:
        reason = exc.reason
        what = f"{reason.code} {reason.reason or ''}".strip() if reason else "unknown"
        print(f"tail: connection closed by the gateway: {what}", file=err)
        return EXIT_GAPS if checker.gaps or checker.problems else EXIT_CONNECTION
    print(
        f"tail: {records} records, {checker.gaps} gaps, {checker.problems} other problems",
        file=err,
    )
    if checker.gaps or checker.problems:
        return EXIT_GAPS
    return EXIT_REFUSED if refused else EXIT_OK


def main(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print("tail: --count must be at least 1", file=sys.stderr)
        return EXIT_REFUSED
    if args.duration is not None and not args.duration > 0:
        print("tail: --duration must be positive", file=sys.stderr)
        return EXIT_REFUSED
    try:
        return trio.run(
            lambda: tail(
                args.url,
                args.streams,
                count=args.count,
                duration=args.duration,
                encoding=args.encoding,
            )
        )
    except KeyboardInterrupt:
        return 130


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="subscribe to streams, print records and check sequence numbers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="gateway URL, e.g. ws://127.0.0.1:8765 or .../v1/book/BTCUSD")
    parser.add_argument("streams", nargs="*", help="streams or patterns, e.g. book.BTCUSD trades.*")
    parser.add_argument("--count", type=int, help="stop after this many records")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    parser.set_defaults(func=main)

"""``paxos-gateway tail URL STREAM...``: a small subscriber that prints records and checks them.

Built on the subscriber client (``gateway.client``): prints one readable line per message on
stdout while the client checks each stream's sequence numbers — after ``subscribed`` the
stream continues from the announced head (records at or below it are the initial values), a
book snapshot resets the position, a resume continues from ``from_seq``. Gaps, repeats and
epoch changes are reported on stderr; a gap also makes the client resubscribe the stream for
a fresh state, so what follows is right again.

Exit status: 0 all good; 1 a gap or other sequence problem was seen; 2 a request was refused
or the arguments are wrong; 3 the connection failed or was closed by the gateway early.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TextIO

import msgspec
import trio

from gateway.client import (
    ClientEncoding,
    Closed,
    Connected,
    ConnectError,
    Duplicate,
    EpochMismatch,
    Event,
    Gap,
    ProtocolProblem,
    RecordReceived,
    RequestRefused,
    Resumed,
    ResumeFailed,
    SubscriptionChanged,
)
from gateway.client.connection import stream_url
from gateway.client.trio_client import open_client
from gateway.ingest.decimals import to_str

__all__ = ["event_line", "format_message", "main", "register", "stream_url", "tail"]

EXIT_OK, EXIT_GAPS, EXIT_REFUSED, EXIT_CONNECTION = 0, 1, 2, 3


def _num(value: Any) -> str:
    # Decimals print fixed-point, as on the wire ("0.00000001", never "1E-8").
    return to_str(value) if isinstance(value, Decimal) else str(value)


def _levels(levels: list[Any]) -> str:
    return f"{_num(levels[0][1])} @ {_num(levels[0][0])}" if levels else "-"


def format_message(msg: dict[str, Any]) -> str:
    """One human line for a decoded message."""
    kind = msg.get("type")
    head = f"{msg.get('stream')} #{msg.get('seq')}"
    match kind:
        case "trade":
            return (
                f"{head} trade {_num(msg['amount'])} @ {_num(msg['price'])} ({msg['match_number']})"
            )
        case "book_update":
            return f"{head} {msg['side']} {_num(msg['price'])} = {_num(msg['amount'])}"
        case "book_snapshot":
            return (
                f"{head} SNAPSHOT ({msg['reason']}{', resync' if msg['resync'] else ''}) "
                f"{len(msg['bids'])} bids / {len(msg['asks'])} asks, best bid "
                f"{_levels(msg['bids'])}, best ask {_levels(msg['asks'])}"
            )
        case "price":
            return f"{head} price {_num(msg['price'])}"
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


def event_line(event: Event) -> tuple[dict[str, Any] | None, str | None]:
    """The message an event carries (as a plain dict, for ``format_message``) and the note
    for stderr it calls for."""
    match event:
        case RecordReceived(record=record):
            return _plain(record), None
        case Connected(hello=hello):
            return _plain(hello), None
        case SubscriptionChanged(answer=answer):
            return _plain(answer), None
        case Resumed(stream=stream, from_seq=first, to_seq=last):
            return {"type": "resumed", "stream": stream, "from_seq": first, "to_seq": last}, None
        case ResumeFailed(stream=stream, reason=reason, message=message):
            msg = {"type": "resume_failed", "stream": stream, "reason": reason, "message": message}
            return msg, None
        case RequestRefused(code=code, message=message):
            return {"type": "error", "code": code, "message": message}, f"refused: {message}"
        case Gap(stream=stream, expected=want, got=seq):
            return None, f"{stream}: GAP: expected seq {want}, got {seq} ({seq - want} missing)"
        case Duplicate(stream=stream, expected=want, got=seq):
            return None, f"{stream}: seq went back: expected {want}, got {seq}"
        case EpochMismatch(stream=stream, held=held, got=got):
            return None, f"{stream}: epoch changed {held} -> {got} (gateway restart)"
        case ProtocolProblem(detail=detail):
            return None, detail
    return None, None


def _plain(msg: msgspec.Struct) -> dict[str, Any]:
    plain: dict[str, Any] = msgspec.to_builtins(msg, builtin_types=(Decimal,))
    return plain


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
    records = 0
    refused = False
    closed: Closed | None = None
    wire: ClientEncoding = "msgpack" if encoding == "msgpack" else "json"
    target = stream_url(url, wire)
    deadline = math.inf if duration is None else trio.current_time() + duration
    try:
        async with open_client(
            url, streams, encoding=wire, reconnect=False, keep_books=False,
        ) as client:  # fmt: skip
            with trio.move_on_at(deadline):
                async for event in client:
                    if isinstance(event, Closed):
                        closed = event
                        break
                    msg, note = event_line(event)
                    if msg is not None:
                        print(formatter(msg), file=out, flush=True)
                    if note is not None:
                        print(f"tail: {note}", file=err, flush=True)
                    if isinstance(event, RequestRefused):
                        refused = True
                    elif isinstance(event, RecordReceived):
                        records += 1
                        if count is not None and records >= count:
                            break
            stats = client.session.stats
    except ConnectError as exc:
        print(f"tail: cannot connect to {target}: {exc}", file=err)
        return EXIT_CONNECTION
    gaps, problems = stats.gaps, stats.problems + stats.duplicates
    if closed is not None:
        what = f"{closed.code} {closed.reason}".strip() if closed.code else "unknown"
        print(f"tail: connection closed by the gateway: {what}", file=err)
        return EXIT_GAPS if gaps or problems else EXIT_CONNECTION
    print(f"tail: {records} records, {gaps} gaps, {problems} other problems", file=err)
    if gaps or problems:
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

"""Routing a subscriber connection (pure): what its URL asks for, or the HTTP refusal.

Paths (``docs/protocol.md`` is the full description):

* ``/v1/stream[?encoding=json|msgpack]``: the multiplexed endpoint; requests per ``protocol``.
* ``/v1/{book,trades,price,status}/{MARKET|FEED|*}[?encoding=..][&epoch=E&seq=S]``: the same
  endpoint, subscribed to one stream or pattern at connect time (no request needed).
* ``/executiondata[/M]``, ``/marketdata[/M]``, ``/marketdata/stablecoin[/M]``: Paxos mirrors.

``io.server`` calls ``route`` at the handshake and answers a ``RouteError`` with its status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.contract.protocol import (
    Encoding,
    ResumeFrom,
    StreamNameError,
    encoding_from_query,
    parse_stream,
)
from gateway.fanout import mirror

__all__ = ["SHORTCUT_KINDS", "Route", "RouteError", "route"]

SHORTCUT_KINDS: Final = ("book", "trades", "price", "status")
_DIGITS: Final = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class Route:
    """What a connection's URL asks for."""

    encoding: Encoding
    streams: tuple[str, ...] = ()
    resume: dict[str, ResumeFrom] = field(default_factory=dict)
    mirror: bool = False


class RouteError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def route(target: str) -> Route:
    """Parse a request target (path and query); raise ``RouteError`` with the HTTP status."""
    split = urlsplit(target)
    path = unquote(split.path)
    mirrored = mirror.mirror_route(path)
    if mirrored is not None:
        # A Paxos client's URL: whatever it puts in the query is not ours to judge.
        return Route(Encoding.PAXOS, (mirrored.stream,), mirror=True)
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "v1":
        raise RouteError(404, f"no such path {path[:200]!r}; see /v1/stream")
    try:
        query = dict(parse_qsl(split.query, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise RouteError(400, f"bad query string: {exc}") from None
    encoding = encoding_from_query(query.pop("encoding", None))
    if encoding is None:
        raise RouteError(400, "encoding must be json or msgpack")
    epoch, seq = query.pop("epoch", None), query.pop("seq", None)
    if query:
        raise RouteError(400, f"unknown query parameter(s): {', '.join(sorted(query))[:200]}")
    if parts == ["v1", "stream"]:
        if epoch is not None or seq is not None:
            raise RouteError(400, "epoch/seq resume the stream of a shortcut path only")
        return Route(encoding)
    if len(parts) != 3 or parts[1] not in SHORTCUT_KINDS:
        raise RouteError(
            404,
            f"no such path {path[:200]!r}; use /v1/stream or /v1/{{book,trades,price,status}}/NAME",
        )
    name = f"{parts[1]}.{parts[2]}"
    try:
        parsed = parse_stream(name)
    except StreamNameError as exc:
        raise RouteError(404, str(exc)) from None
    resume: dict[str, ResumeFrom] = {}
    if epoch is not None or seq is not None:
        if parsed.is_pattern:
            raise RouteError(400, "epoch/seq need a single stream, not a pattern")
        if (
            epoch is None
            or seq is None
            or not _DIGITS.fullmatch(epoch)
            or not _DIGITS.fullmatch(seq)
        ):
            raise RouteError(
                400, "resume needs both epoch and seq, as decimal digits (epoch as it was sent)"
            )
        if int(epoch) >= 2**63 or int(seq) >= 2**63:
            raise RouteError(400, "epoch/seq out of range")
        resume[name] = ResumeFrom(epoch=str(int(epoch)), seq=int(seq))
    return Route(encoding, (name,), resume)

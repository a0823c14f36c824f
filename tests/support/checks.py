"""Checks after (or during) an end-to-end run: books against the simulator's truth, bounded
structures, leaked subscribers, and each subscriber's records against what the simulator sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from gateway.app import Gateway
from gateway.simulator import Simulator
from tests.support.client_workers import Subscriber


def book_levels(gateway: Gateway, market: str) -> tuple[list[Any], list[Any]] | None:
    for feed in gateway.feeds:
        book = feed.session.books.get(market)
        if book is not None:
            return book.bids(), book.asks()
    return None


async def wait_books_equal_truth(
    sim: Simulator,
    gateway: Gateway,
    markets: Iterable[str],
    timeout: float = 30,
    *,
    ready_feeds: Iterable[str] | None = None,
) -> None:
    """After ``sim.pause()``: the gateway catches up (and finishes any reconnect) by itself.

    ``ready_feeds``: names of the feeds that must be ready too (default: every feed)."""
    markets = list(markets)
    names = None if ready_feeds is None else set(ready_feeds)
    with trio.fail_after(timeout):
        while True:
            if all(book_levels(gateway, m) == sim.truth(m) for m in markets) and all(
                f.session.ready for f in gateway.feeds if names is None or f.spec.name in names
            ):
                return
            await trio.sleep(0.02)


def bounded_problems(gateway: Gateway) -> list[str]:
    """Every structure that must stay bounded, checked against its limit (after a run)."""
    problems: list[str] = []
    server = gateway.config.server
    hub = gateway.hub
    for name, st in hub._streams.items():
        if len(st.history) > server.history:
            problems.append(f"{name}: history {len(st.history)} > {server.history}")
    for sub in hub.subscribers:
        if not sub.closed and sub.queued_bytes > sub.buffer_bytes:
            problems.append(f"subscriber {sub.id}: {sub.queued_bytes} B > {sub.buffer_bytes} B")
    for feed in gateway.feeds:
        session = feed.session
        dedup = session._dedup
        if len(dedup) > dedup.capacity or len(dedup._order) != len(dedup):
            problems.append(f"{feed.spec.name}: dedup {len(dedup)} > {dedup.capacity}")
        for market, sync in session._book_frames.sync.items():
            if len(sync.held) > session._book_frames.max_held:
                problems.append(f"{feed.spec.name}: {len(sync.held)} updates held for {market}")
            if sync.fragments is not None:
                bids, asks = sync.fragments
                if len(bids) + len(asks) > session._book_frames.max_snapshot_levels:
                    problems.append(f"{feed.spec.name}: snapshot fragments of {market} too big")
    return problems


def leaked_subscribers(gateway: Gateway) -> list[str]:
    """After every client is gone: anything the gateway still holds for a subscriber."""
    hub = gateway.hub
    leaks = [f"hub subscriber {s.id}" for s in hub.subscribers]
    if gateway.server.subscriber_count:
        leaks.append(f"server connections: {gateway.server.subscriber_count}")
    leaks += [f"{name}: {len(st.subscribers)} attached" for name, st in hub._streams.items()
              if st.subscribers]  # fmt: skip
    watches = hub.patterns._by_pattern
    leaks += [f"pattern {p}: {len(subs)}" for p, (_, subs) in watches.items() if subs]
    return leaks


def pattern_matches(pattern: str, stream: str) -> bool:
    p_kind, _, p_key = pattern.partition(".")
    kind, _, key = stream.partition(".")
    return p_kind in ("*", kind) and p_key in ("*", key)


def subscriber_problems(sub: Subscriber, sim: Simulator, markets: Iterable[str]) -> list[str]:
    """What a checking client would complain about: sequence problems (``Model``), books that
    differ from the simulator's truth, executions published twice or never sent."""
    problems = [f"{sub.name}: {p}" for p in sub.view.problems[:5]]
    for market in markets:
        stream = f"book.{market}"
        book = sub.view.books.get(stream)
        if book is not None and book != sim.truth(market):
            problems.append(f"{sub.name}: {stream} differs from the truth")
    problems += [f"{sub.name}: {p}" for p in trade_problems(sub, sim)]
    return problems


def trade_problems(sub: Subscriber, sim: Simulator) -> list[str]:
    """The same execution under two different positions is a duplicate; a resent initial
    value (same stream, epoch and seq, after a reconnect) is not."""
    positions: dict[str, set[tuple[str, int, int]]] = {}
    for match_number, stream, epoch, seq in sub.view.trades:
        positions.setdefault(match_number, set()).add((stream, epoch, seq))
    sent = {e.match_number for e in sim.sent_executions}
    dups = [m for m, where in positions.items() if len(where) > 1]
    unknown = [m for m in positions if m not in sent]
    return [f"execution {m} published twice: {sorted(positions[m])}" for m in dups[:3]] + [
        f"execution {m} was never sent" for m in unknown[:3]
    ]


def missing_trades(sub: Subscriber, sim: Simulator, since: int) -> list[str]:
    """Executions generated from ``sim.sent_executions[since]`` on that ``sub`` subscribed to
    but does not hold (for phases in which the executions feed was never interrupted)."""
    held = set(sub.trade_ids())
    return [
        e.match_number
        for e in sim.sent_executions[since:]
        if any(pattern_matches(p, f"trades.{e.market}") for p in sub.streams)
        and e.match_number not in held
    ]


def statuses(sub: Subscriber, stream: str | None = None) -> list[tuple[str, str]]:
    """(state, reason) of every status record ``sub`` received (on ``stream``)."""
    return [(state, reason) for s, state, reason in sub.view.statuses if stream in (None, s)]


def snapshot_reasons(sub: Subscriber) -> list[str]:
    return [s["reason"] for s in sub.view.snapshots]

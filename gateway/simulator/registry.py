"""Which simulator connections get which events, and the signals around that.

``Registry`` holds the live connections and their subscriptions by ``(feed, market)`` (market
None: every market of the feed), hands each generated event's text to every connection whose
path covers it (``dispatch``), and carries two signals: *changed* (connections opened, closed
or drained, a batch generated: ``wait_until`` re-checks its predicate) and *space* (with
backpressure, the generator waits until no reading client's queue is above the high-water
mark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from gateway.simulator.events import Feed

if TYPE_CHECKING:
    from gateway.simulator.connection import Connection

__all__ = ["Registry"]


class Registry:
    def __init__(self, send_buffer: int) -> None:
        self.connections: dict[int, Connection] = {}
        self.routes: dict[tuple[Feed, str | None], set[Connection]] = {}
        self.high_water = send_buffer // 2
        self._changed = trio.Event()
        self._space = trio.Event()
        self.space_needed = False

    # -- who gets what

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.notify()

    def route(self, conn: Connection) -> None:
        """From now on ``conn`` gets the events of its feed and market."""
        self.routes.setdefault((conn.feed, conn.market), set()).add(conn)

    def remove(self, conn: Connection) -> None:
        self.routes.get((conn.feed, conn.market), set()).discard(conn)
        del self.connections[conn.id]
        self.release_space()
        self.notify()

    def select(self, path: str | None, *, streaming: bool = False) -> list[Connection]:
        wanted = None if path is None else "/" + path.strip("/")
        return [
            c
            for c in self.connections.values()
            if (wanted is None or c.path == wanted) and (c.streaming or not streaming)
        ]

    def subscribers(self, feed: Feed, market: str) -> Iterable[Connection]:
        yield from self.routes.get((feed, market), ())
        yield from self.routes.get((feed, None), ())

    def dispatch(self, feed: Feed, market: str, text: str) -> None:
        routes = self.routes
        conns = routes.get((feed, market))
        if conns:
            for conn in conns:
                conn.push(text)
        conns = routes.get((feed, None))
        if conns:
            for conn in conns:
                conn.push(text)

    # -- changed

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    # -- backpressure

    def busy(self) -> bool:
        """A reading client's queue is at or above the high-water mark."""
        high = self.high_water
        return any(
            c.queued >= high and not c.stalled and not c.dead for c in self.connections.values()
        )

    async def wait_for_space(self) -> None:
        self._space = trio.Event()
        self.space_needed = True
        await self._space.wait()

    def release_space(self) -> None:
        if self.space_needed:
            self.space_needed = False
            self._space.set()

"""The connection loop, for any event loop: connect, subscribe, receive, resume, reconnect.

``Client`` drives a ``ClientSession`` over a ``Transport`` that an adapter supplies (asyncio
with ``websockets`` in ``asyncio_client``, trio with ``trio-websocket`` in ``trio_client``).
It awaits only the transport and the adapter's ``sleep``, so the same code runs under asyncio
and trio, and it starts no task of its own: everything happens inside ``__anext__``, in the
consumer's task, and a consumer that stops iterating stops reading (the gateway then
conflates its books or, past its buffer, disconnects it; both are repaired here).

Reconnects wait a delay from ``gateway.retry.backoff.Backoff``: exponential with full jitter between
a floor and a cap, reset once a connection has been healthy for a while.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Final, Protocol, TypedDict, Unpack

from gateway.client import events as ev
from gateway.client.codec import ClientEncoding
from gateway.client.connection import auth_headers, stream_url
from gateway.client.session import ClientSession
from gateway.ingest.book import OrderBook
from gateway.retry.backoff import Backoff

__all__ = [
    "CLIENT_CLOSE_REASON",
    "Client",
    "ClientError",
    "ClientOptions",
    "ConnectError",
    "Connector",
    "Transport",
    "TransportClosed",
    "default_backoff",
]

log: Final = logging.getLogger("gateway.client")

CLIENT_CLOSE_REASON: Final = "client closing"
# Handshake answers that no retry can change: a wrong URL or a missing/wrong token.
FATAL_STATUSES: Final = frozenset((400, 401, 403, 404))


class ClientError(Exception):
    pass


class ConnectError(ClientError):
    """The client could not (re)connect and gave up: ``status`` is the HTTP answer to the
    handshake if there was one (401: the token; 404: the path)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def fatal(self) -> bool:
        return self.status in FATAL_STATUSES


class TransportClosed(Exception):
    """The connection ended; ``code`` None when there was no closing handshake."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class Transport(Protocol):
    async def send(self, data: str) -> None:
        """Raise ``TransportClosed`` if the connection is gone."""

    async def receive(self) -> bytes | str:
        """One whole message; raise ``TransportClosed`` when the connection ends."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a handshake, bounded in time; never raise."""

    async def abort(self) -> None:
        """Drop the connection at once, without a closing handshake; never raise."""


Connector = Callable[[str, list[tuple[str, str]]], Awaitable[Transport]]
"""Open a connection to the URL with these extra handshake headers; raise ``ConnectError``."""


def default_backoff() -> Backoff:
    # A local gateway restarts in about a second: the first retry comes soon, and the cap
    # keeps a long outage from being hammered; jitter spreads many clients' reconnects.
    return Backoff(initial=0.1, maximum=10.0, healthy_after=10.0)


class ClientOptions(TypedDict, total=False):
    """What a client can be told, whichever adapter runs it."""

    token: str | None
    """Bearer token for ``Authorization`` (None: the gateway requires none)."""
    encoding: ClientEncoding
    """``json`` (default) or ``msgpack``."""
    keep_books: bool
    """Keep an ``OrderBook`` per ``book.*`` stream (default True)."""
    reconnect: bool
    """Reconnect (resuming) after a lost connection (default True); off, a lost connection
    ends the client with ``Closed``."""
    max_attempts: int | None
    """Consecutive failed connection attempts before ``ConnectError`` (default None: never
    give up, except on HTTP 400, 401, 403 and 404, which no retry changes)."""
    backoff: Backoff | None
    """Reconnect delays (default ``default_backoff()``)."""


class Client:
    """Iterate it for events; ``close()`` (or leaving ``async with``) ends it cleanly."""

    def __init__(
        self,
        url: str,
        streams: Iterable[str] = (),
        *,
        connector: Connector,
        sleep: Callable[[float], Awaitable[object]],
        clock: Callable[[], float],
        **options: Unpack[ClientOptions],
    ) -> None:
        encoding = options.get("encoding", "json")
        self.session = ClientSession(
            streams, encoding=encoding, keep_books=options.get("keep_books", True)
        )
        self.url = stream_url(url, encoding)
        self._headers = auth_headers(options.get("token"))
        self._connector = connector
        self._sleep = sleep
        self._clock = clock
        self.reconnect = options.get("reconnect", True)
        self.max_attempts = options.get("max_attempts")
        self.backoff = options.get("backoff") or default_backoff()
        self._transport: Transport | None = None
        self._events: deque[ev.Event] = deque()
        self._delay: float | None = None  # sleep this long before the next attempt
        self._failed_attempts = 0
        self._connections = 0
        self._opened_at = 0.0
        self._received = False
        self._closing = False
        self._done = False

    # -- the consumer's side

    @property
    def books(self) -> dict[str, OrderBook]:
        return self.session.books

    def book(self, stream: str) -> OrderBook | None:
        return self.session.book(stream)

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def connections(self) -> int:
        """Connections opened so far (1 + reconnects)."""
        return self._connections

    async def subscribe(self, streams: Iterable[str]) -> None:
        self.session.subscribe(streams)
        await self._flush()

    async def unsubscribe(self, streams: Iterable[str]) -> None:
        self.session.unsubscribe(streams)
        await self._flush()

    async def ping(self, request_id: int | str | None = None) -> None:
        self.session.ping(request_id)
        await self._flush()

    async def close(self) -> None:
        """Close the connection with 1000 and end the iteration (after a ``Closed`` event)."""
        if self._done:
            return
        self._closing = True
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close(1000, CLIENT_CLOSE_REASON)
            self._events.extend(self.session.connection_lost(1000, CLIENT_CLOSE_REASON))
        self._finish(1000, CLIENT_CLOSE_REASON)

    async def abort(self) -> None:
        """Drop the current connection as if the network failed (for tests and drills); the
        client reconnects and resumes as after any lost connection."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.abort()
            self._lost(None, "aborted by the client")

    async def _reconnect_now(self, reason: str) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close(1000, reason)
            self._lost(1000, reason)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> ev.Event:
        events = self._events
        while not events:
            if self._done:
                raise StopAsyncIteration
            transport = self._transport
            if transport is None:
                await self._connect()
                continue
            try:
                data = await transport.receive()
            except TransportClosed as exc:
                if self._transport is transport:  # not already closed by close()/abort()
                    self._transport = None
                    self._lost(exc.code, exc.reason)
                continue
            self._received = True
            events.extend(self.session.receive(data))
            await self._flush()
            if self.session.reconnect_wanted and self._transport is not None:
                await self._reconnect_now("resubscribing for a fresh state")
        return events.popleft()

    # -- connecting

    async def _connect(self) -> None:
        if self._delay is not None:
            delay, self._delay = self._delay, None
            await self._sleep(delay)
            if self._done:
                return
        try:
            transport = await self._connector(self.url, self._headers)
        except ConnectError as exc:
            if self._closing:
                return  # closed by another task while this one was connecting
            self._failed_attempts += 1
            gave_up = (
                exc.fatal
                or not self.reconnect
                or (self.max_attempts is not None and self._failed_attempts >= self.max_attempts)
            )
            if gave_up:
                self._done = True
                raise
            self._schedule_retry(str(exc))
            return
        if self._closing:
            await transport.close(1000, CLIENT_CLOSE_REASON)
            return
        self._failed_attempts = 0
        self._connections += 1
        self._transport = transport
        self._opened_at = self._clock()
        self._received = False
        log.info("connected to %s", self.url)
        self.session.connection_made()
        await self._flush()

    def _schedule_retry(self, error: str) -> None:
        self._delay = self.backoff.next_delay()
        attempt = self.backoff.failures
        log.info("reconnecting in %.2f s (attempt %d): %s", self._delay, attempt, error)
        self._events.append(ev.Reconnecting(attempt, self._delay, error))

    def _lost(self, code: int | None, reason: str) -> None:
        self._events.extend(self.session.connection_lost(code, reason))
        self.backoff.connection_ended(self._clock() - self._opened_at, received_data=self._received)
        if self._closing or not self.reconnect:
            self._finish(code, reason)
        else:
            self._schedule_retry(f"connection closed: {code} {reason}".strip())

    def _finish(self, code: int | None, reason: str) -> None:
        if not self._done:
            self._done = True
            self._events.append(ev.Closed(code, reason))

    async def _flush(self) -> None:
        frames = self.session.data_to_send()
        transport = self._transport
        if transport is None:
            return  # the next connection sends what matters (the subscribe with resume)
        for frame in frames:
            try:
                await transport.send(frame)
            except TransportClosed as exc:
                if self._transport is transport:
                    self._transport = None
                    self._lost(exc.code, exc.reason)
                return

"""The client on asyncio, over the ``websockets`` library (``pip install paxos-gateway[client]``).

    async with connect("ws://127.0.0.1:8765", ["book.BTCUSD", "trades.*"]) as client:
        async for event in client:
            ...

Cancelling the task that iterates is safe: leaving ``async with`` closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Final, Unpack

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from gateway.client.driver import Client, ClientOptions, ConnectError, TransportClosed

__all__ = ["connect"]

# A 10,000-level book snapshot is about 0.5 MB of JSON; leave room for deeper books.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
CLOSE_TIMEOUT: Final = 5.0


class _WebsocketsTransport:
    __slots__ = ("_ws",)

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, data: str) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> bytes | str:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int, reason: str) -> None:
        # Bounded by the connection's close_timeout; a transport error at this point means the
        # connection is gone anyway.
        with contextlib.suppress(OSError, ConnectionClosed):
            await self._ws.close(code, reason)

    async def abort(self) -> None:
        self._ws.transport.abort()
        with contextlib.suppress(OSError, ConnectionClosed, asyncio.TimeoutError):
            await asyncio.wait_for(self._ws.wait_closed(), CLOSE_TIMEOUT)


def _closed(exc: ConnectionClosed) -> TransportClosed:
    if exc.rcvd is None:
        return TransportClosed(None, "connection lost without a closing handshake")
    return TransportClosed(exc.rcvd.code, exc.rcvd.reason)


def connect(
    url: str,
    streams: Iterable[str] = (),
    *,
    open_timeout: float = 10.0,
    websockets_options: dict[str, Any] | None = None,
    **options: Unpack[ClientOptions],
) -> Client:
    """A client for the gateway at ``url`` (``ws://host:port``, or a full ``/v1/...`` URL);
    ``options``: ``token``, ``encoding``, ``keep_books``, ``reconnect``, ``max_attempts``,
    ``backoff`` (``ClientOptions``). ``websockets_options`` go to
    ``websockets.asyncio.client.connect`` (e.g. ``ssl``)."""

    async def open_connection(target: str, headers: list[tuple[str, str]]) -> _WebsocketsTransport:
        options: dict[str, Any] = {
            "max_size": MAX_MESSAGE_BYTES,
            "open_timeout": open_timeout,
            "close_timeout": CLOSE_TIMEOUT,
            **(websockets_options or {}),
        }
        try:
            ws = await ws_connect(target, additional_headers=headers, **options)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectError(f"{target}: HTTP {status}", status=status) from None
        except InvalidURI as exc:
            raise ConnectError(f"{target}: {exc}", status=400) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"{target}: {exc or type(exc).__name__}") from None
        return _WebsocketsTransport(ws)

    def clock() -> float:
        return asyncio.get_running_loop().time()

    return Client(
        url,
        streams,
        connector=open_connection,
        sleep=asyncio.sleep,
        clock=clock,
        **options,
    )

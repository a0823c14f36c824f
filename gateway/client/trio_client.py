"""The client on trio, over ``trio-websocket``.

    async with open_client("ws://127.0.0.1:8765", ["book.BTCUSD", "trades.*"]) as client:
        async for event in client:
            ...

The connection's reader task lives in a nursery owned by ``open_client``: nothing outlives
the ``async with`` block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from gateway.backoff import Backoff
from gateway.client.codec import ClientEncoding
from gateway.client.driver import Client, ConnectError, TransportClosed

__all__ = ["TrioTransport", "open_client"]

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
CLOSE_TIMEOUT: Final = 5.0


class TrioTransport:
    """A ``trio-websocket`` connection as the client's ``Transport`` (for custom connectors)."""

    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, data: str) -> None:
        try:
            await self._ws.send_message(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> bytes | str:
        try:
            message: bytes | str = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        return message

    async def close(self, code: int, reason: str) -> None:
        # Shielded: closing must finish (and stop the reader task) even when the caller is
        # being cancelled, or the nursery would wait for it.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await self._ws.aclose(code, reason)
        if scope.cancelled_caught:
            await self.abort()

    async def abort(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._ws._stream)
            # trio-websocket's reader task may be blocked handing a message to a queue nobody
            # reads any more; closing the queue's receiving end lets it finish (its own aclose
            # does the same), or the nursery would wait for it forever.
            await self._ws._recv_channel.aclose()


def _closed(exc: ConnectionClosed) -> TransportClosed:
    reason = exc.reason
    if reason is None or reason.code == 1006:
        return TransportClosed(None, "connection lost without a closing handshake")
    return TransportClosed(reason.code, reason.reason or "")


@asynccontextmanager
async def open_client(
    url: str,
    streams: Iterable[str] = (),
    *,
    token: str | None = None,
    encoding: ClientEncoding = "json",
    keep_books: bool = True,
    reconnect: bool = True,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    connect_timeout: float = 10.0,
) -> AsyncIterator[Client]:
    """A client for the gateway at ``url``; closed (1000) when the block ends."""
    async with trio.open_nursery() as nursery:

        async def open_connection(target: str, headers: list[tuple[str, str]]) -> TrioTransport:
            raw = [(k.encode(), v.encode()) for k, v in headers]
            try:
                with trio.fail_after(connect_timeout):
                    ws = await connect_websocket_url(
                        nursery, target, extra_headers=raw, max_message_size=MAX_MESSAGE_BYTES
                    )
            except ConnectionRejected as exc:
                raise ConnectError(
                    f"{target}: HTTP {exc.status_code}", status=exc.status_code
                ) from None
            except trio.TooSlowError:
                raise ConnectError(f"{target}: no answer within {connect_timeout} s") from None
            except (OSError, HandshakeError) as exc:
                raise ConnectError(f"{target}: {exc or type(exc).__name__}") from None
            except ValueError as exc:  # a malformed URL
                raise ConnectError(f"{target}: {exc}", status=400) from None
            except RuntimeError as exc:  # the block is ending: its nursery takes no new reader
                raise ConnectError(f"{target}: client closed ({exc})") from None
            return TrioTransport(ws)

        client = Client(
            url,
            streams,
            connector=open_connection,
            sleep=trio.sleep,
            clock=trio.current_time,
            token=token,
            encoding=encoding,
            keep_books=keep_books,
            reconnect=reconnect,
            max_attempts=max_attempts,
            backoff=backoff,
        )
        try:
            yield client
        finally:
            await client.close()

"""The client on trio, over ``trio-websocket``.

    async with open_client("ws://127.0.0.1:8765", ["book.BTCUSD", "trades.*"]) as client:
        async for event in client:
            ...

Each connection (and trio-websocket's reader task for it) lives in a task of a nursery owned
by ``open_client``: nothing outlives the ``async with`` block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final, Unpack

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from gateway.client.driver import Client, ClientOptions, ConnectError, TransportClosed

__all__ = ["TrioTransport", "open_client"]

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
CLOSE_TIMEOUT: Final = 5.0


class TrioTransport:
    """A ``trio-websocket`` connection as the client's ``Transport`` (for custom connectors).
    ``finished`` is set once the connection is over, whoever ended it."""

    __slots__ = ("_ws", "finished")

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self.finished = trio.Event()

    async def send(self, data: str) -> None:
        try:
            await self._ws.send_message(data)
        except ConnectionClosed as exc:
            self.finished.set()
            raise _closed(exc) from None

    async def receive(self) -> bytes | str:
        try:
            message: bytes | str = await self._ws.get_message()
        except ConnectionClosed as exc:
            self.finished.set()
            raise _closed(exc) from None
        return message

    async def close(self, code: int, reason: str) -> None:
        # Shielded: closing must finish (and stop the reader task) even when the caller is
        # being cancelled, or the nursery would wait for it.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await self._ws.aclose(code, reason)
        if scope.cancelled_caught:
            await self.abort()
        self.finished.set()

    async def abort(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._ws._stream)
            # trio-websocket's reader task may be blocked handing a message to a queue nobody
            # reads any more; closing the queue's receiving end lets it finish (its own aclose
            # does the same), or the nursery would wait for it forever.
            await self._ws._recv_channel.aclose()
        self.finished.set()


def _closed(exc: ConnectionClosed) -> TransportClosed:
    reason = exc.reason
    if reason is None or reason.code == 1006:
        return TransportClosed(None, "connection lost without a closing handshake")
    return TransportClosed(reason.code, reason.reason or "")


async def _hold_connection(
    target: str,
    headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
    *,
    task_status: trio.TaskStatus[TrioTransport],
) -> None:
    """One connection in a task of its own, with trio-websocket's own nursery for its reader:
    a refused handshake raises here, to the caller of ``start``, never into the client's
    nursery; the task ends when the connection does."""
    transport: TrioTransport | None = None
    try:
        async with open_websocket_url(
            target, extra_headers=headers, max_message_size=MAX_MESSAGE_BYTES,
            connect_timeout=connect_timeout, disconnect_timeout=CLOSE_TIMEOUT,
        ) as ws:  # fmt: skip
            transport = TrioTransport(ws)
            task_status.started(transport)
            await transport.finished.wait()
    except (ConnectionClosed, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        if transport is None:
            raise  # a failed connect: ``start`` reports it


@asynccontextmanager
async def open_client(
    url: str,
    streams: Iterable[str] = (),
    *,
    connect_timeout: float = 10.0,
    **options: Unpack[ClientOptions],
) -> AsyncIterator[Client]:
    """A client for the gateway at ``url``; closed (1000) when the block ends. ``options``:
    ``token``, ``encoding``, ``keep_books``, ``reconnect``, ``max_attempts``, ``backoff``
    (``ClientOptions``).

    Errors leave the block as themselves (a ``ConnectError``, the block's own exception), not
    wrapped in the nursery's exception group, unless there really are several."""
    try:
        async with _client_in_nursery(url, streams, connect_timeout, options) as client:
            yield client
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def _client_in_nursery(
    url: str, streams: Iterable[str], connect_timeout: float, options: ClientOptions
) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:

        async def open_connection(target: str, headers: list[tuple[str, str]]) -> TrioTransport:
            raw = [(k.encode(), v.encode()) for k, v in headers]
            try:
                transport: TrioTransport = await nursery.start(
                    _hold_connection, target, raw, connect_timeout
                )
            except ConnectionRejected as exc:
                status = exc.status_code
                raise ConnectError(f"{target}: HTTP {status}", status=status) from None
            except ConnectionTimeout:
                raise ConnectError(f"{target}: no answer within {connect_timeout} s") from None
            except (OSError, HandshakeError, ConnectionClosed) as exc:
                raise ConnectError(f"{target}: {exc or type(exc).__name__}") from None
            except ValueError as exc:  # a malformed URL
                raise ConnectError(f"{target}: {exc}", status=400) from None
            except RuntimeError as exc:  # the block is ending: its nursery takes no new task
                raise ConnectError(f"{target}: client closed ({exc})") from None
            return transport

        client = Client(
            url,
            streams,
            connector=open_connection,
            sleep=trio.sleep,
            clock=trio.current_time,
            **options,
        )
        try:
            yield client
        finally:
            await client.close()

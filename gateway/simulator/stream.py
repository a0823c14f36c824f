"""A byte stream that can be stalled: the network going silent without closing.

trio-websocket answers pings in its own reader task, so refusing to send data is not
enough to look dead: a stall must stop the connection below the WebSocket layer. While
stalled, ``send_all`` blocks (data and pongs alike) and received bytes are held back from
the WebSocket parser, so a ping is never answered. Held bytes are delivered in order on
``unstall``, so the connection carries on intact.

End of file from the peer is still noticed while stalled, so a client that gives up on a
stalled connection really ends it here too. That needs someone reading the socket while
stalled: the WebSocket reader task normally, but it may itself be blocked in ``send_all``
(answering a ping), so whichever task is blocked in ``send_all`` reads when nobody else
does. Sends are serialized here (trio-websocket's pongs and the simulator's batched data
frames share the stream) and only the WebSocket reader calls ``receive_some``.
"""

from __future__ import annotations

import trio


class StallableStream(trio.abc.Stream):
    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self._stalled = False
        self._peer_gone = False
        self._receiving = False  # some task is inside ``inner.receive_some``
        self._receive_scope: trio.CancelScope | None = None
        self._held: list[bytes] = []
        self._changed = trio.Event()
        self._send_lock = trio.StrictFIFOLock()

    @property
    def stalled(self) -> bool:
        return self._stalled

    def stall(self) -> None:
        self._stalled = True
        self._notify()

    def unstall(self) -> None:
        if self._stalled:
            self._stalled = False
            if self._receive_scope is not None:
                self._receive_scope.cancel()  # stop holding: the bytes go to the reader now
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _hold_incoming(self, max_bytes: int | None) -> None:
        """While stalled: read and hold incoming bytes until unstalled or end of file."""
        self._receiving = True
        try:
            while self._stalled and not self._peer_gone:
                with trio.CancelScope() as scope:
                    self._receive_scope = scope
                    # cancelling a pending receive loses no bytes (trio's guarantee)
                    received = await self._inner.receive_some(max_bytes)
                self._receive_scope = None
                if scope.cancelled_caught:
                    continue
                if not received:
                    self._peer_gone = True
                else:
                    self._held.append(bytes(received))  # a copy: bytearrays get reused
        finally:
            self._receiving = False
            self._receive_scope = None
            self._notify()

    async def _wait_while_stalled(self, max_bytes: int | None) -> None:
        while self._stalled and not self._peer_gone:
            if self._receiving:
                await self._changed.wait()
            else:
                await self._hold_incoming(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            await self._wait_while_stalled(None)
            if self._peer_gone:
                raise trio.BrokenResourceError("peer closed the connection")
            await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait_while_stalled(None)
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self._wait_while_stalled(max_bytes)
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            return data
        if self._peer_gone:
            return b""
        self._receiving = True
        try:
            return await self._inner.receive_some(max_bytes)
        finally:
            self._receiving = False
            self._notify()

    async def aclose(self) -> None:
        self._peer_gone = True
        self._notify()
        await self._inner.aclose()

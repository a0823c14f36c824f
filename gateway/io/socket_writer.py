"""The fast send path's socket side: pre-built WebSocket frames written straight to the socket.

Why trio-websocket's send path is bypassed
-------------------------------------------

``WebSocketConnection.send_message`` frames every message with wsproto (~4 us per frame, per
subscriber, although a server-to-client frame is unmasked and therefore the same bytes for every
subscriber of an encoding), takes the connection's send lock and awaits ``send_all``: about
three scheduler round-trips per delivery. Measured on the 2-core reference machine it costs ~68%
of the gateway's CPU: ~21k deliveries/s at 100 subscribers, against ~108k/s for an asyncio
``websockets.broadcast()`` server. Its public API has no way to send bytes that are already
framed, nor to write without a task switch, nor to send several messages in one write. So,
after trio-websocket's handshake, this module takes over the *data* path of a connection:

* a record is encoded and framed once per encoding (``fanout.wsframe.build_frame``, cached on
  the hub's shared ``OutFrame``); every subscriber's buffer refers to those same bytes;
* at the end of each publish (one upstream read's records), in the publishing task, the
  ``Flusher`` (``delivery``) writes what each ready subscriber has queued, all of it joined
  into one non-blocking ``write`` (no task switch per subscriber, and the records of one read
  are coalesced into one send);
* only what the socket does not take at once (a backlog) is left to the subscriber's own writer
  task, which waits for the socket to become writable (``SocketWriter.send``).

trio-websocket keeps everything else: the handshake, reading and reassembling requests, pings,
pongs and the closing handshake. Those control frames are still written by trio-websocket,
under its ``_stream_lock``; ``adopt`` replaces that lock with a ``WriterLock``, which the data
path takes too (synchronously, in the flusher), so exactly one writer is on the socket at any
time and frames never interleave: a control frame waits for the end of the data frame being
written (and the writer lets it in between two chunks of a long backlog). A chunk left
half-written when its writer is cancelled makes the stream unusable, so
``SocketWriter.abort`` closes the socket at once instead of letting a close frame follow half
a frame.

The private attributes used (``WebSocketConnection._stream`` and ``._stream_lock``) are touched
in ``adopt`` only, only for the trio-websocket versions listed in ``SUPPORTED_VERSIONS`` (those
tested: ``tests/component/test_delivery.py`` checks that ``_send`` still writes under
``_stream_lock``), and only over a plain ``trio.SocketStream``. Otherwise ``adopt`` returns
None and ``delivery`` falls back to ``send_message`` (correct, slower). One more is read, never
written: ``_close_reason``, which the public ``closed`` property returns (the same test checks
that), looked at before every write: an attribute load instead of a Python call per delivery
(with the flusher's joined round, the real gateway's user-space instructions per delivery went
from 6,544 to 5,678: ``bench.message_cost``, docs/performance.md). Extensions: trio-websocket's
server accepts none (no permessage-deflate), so the payload of a frame is the message itself.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any, Final, Protocol

import trio

__all__ = ["FAST_PATH_AVAILABLE", "SocketWriter", "WriterLock", "adopt"]

log = logging.getLogger("gateway.fastsend")

# trio-websocket releases whose private ``_stream``/``_stream_lock`` this module relies on.
SUPPORTED_VERSIONS: Final = ("0.11.", "0.12.")


def _installed_version() -> str:
    try:
        return _dist_version("trio-websocket")
    except PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


TRIO_WEBSOCKET_VERSION: Final = _installed_version()
FAST_PATH_AVAILABLE: Final = TRIO_WEBSOCKET_VERSION.startswith(SUPPORTED_VERSIONS)
if not FAST_PATH_AVAILABLE:  # pragma: no cover - depends on the installed version
    log.warning(
        "trio-websocket %s is not a version the fast send path was tested with (%s); "
        "subscribers are served through send_message (correct, slower)",
        TRIO_WEBSOCKET_VERSION,
        ", ".join(v + "x" for v in SUPPORTED_VERSIONS),
    )


class WriterLock:
    """The one lock of a connection's write side, taken by trio-websocket's ``_send`` (control
    frames, as ``async with``) and by the data path (``try_acquire`` from the flusher, without a
    task switch; ``acquire`` from the writer task).

    ``release`` hands the lock straight to the longest waiter, so a waiting pong or close frame
    cannot be overtaken by a burst of data writes."""

    __slots__ = ("_lot", "held")

    def __init__(self) -> None:
        self.held = False
        self._lot = trio.lowlevel.ParkingLot()

    def locked(self) -> bool:
        return self.held

    @property
    def waiting(self) -> int:
        return len(self._lot)

    def try_acquire(self) -> bool:
        if self.held:
            return False
        self.held = True
        return True

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.held:
            self.held = True
            return
        # Woken by ``release`` with the lock already ours; a cancel before that leaves it alone.
        await self._lot.park()

    def release(self) -> None:
        assert self.held, "release of a WriterLock that is not held"
        if self._lot:
            self._lot.unpark(count=1)  # ownership passes on: held stays True
        else:
            self.held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _Connection(Protocol):
    """What a ``SocketWriter`` looks at of trio-websocket's ``WebSocketConnection``: what its
    ``closed`` property returns, None until the closing handshake has begun."""

    _close_reason: object


class SocketWriter:
    """The write side of one adopted connection.

    ``write_now`` (synchronous) writes what the socket takes at once; whatever it does not take
    stays in ``tail`` and the lock stays held for the writer task, which finishes it with
    ``send``. ``mid_frame`` is true while a taken chunk is not completely written: then only
    ``abort`` may follow, never another frame."""

    __slots__ = ("broken", "error", "fileno", "lock", "sock", "tail", "ws")

    def __init__(self, ws: _Connection, sock: trio.socket.SocketType, lock: WriterLock) -> None:
        self.ws = ws  # only its ``_close_reason`` is looked at (``_Connection``)
        self.sock = sock
        # The descriptor is looked up for each write (``_write``), through the standard
        # library socket under trio's when there is one: a C call instead of trio's Python
        # ``fileno`` wrapper, on the path taken once per delivery. Either answers -1 once
        # the socket is closed.
        raw = getattr(sock, "_sock", None)
        self.fileno: Callable[[], int] = (
            raw.fileno if isinstance(raw, socket.socket) else sock.fileno
        )
        self.lock = lock
        self.tail: memoryview | None = None
        self.error: Exception | None = None  # a failed synchronous write, for the writer task
        self.broken = False

    @property
    def mid_frame(self) -> bool:
        return self.tail is not None

    def writable_now(self) -> bool:
        """Whether ``write_now`` may be used: no one else is writing, nothing is pending."""
        return not self.lock.held and self.error is None and not self.broken

    def _write(self, data: bytes | memoryview) -> int:
        if self.ws._close_reason is not None or self.broken:
            # trio-websocket has begun (or finished) the closing handshake: no data after it.
            raise trio.ClosedResourceError("the WebSocket is closing")
        # Looked up for each write: a closed socket's descriptor number may already belong to
        # another connection.
        fd = self.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket is closed")
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError(str(exc)) from exc
            raise trio.BrokenResourceError(str(exc)) from exc

    def write_now(self, data: bytes) -> bool:
        """Write without waiting; the caller checked ``writable_now``. True: all written. False:
        the rest is in ``tail`` (the lock is then held for the writer task) or the write failed
        (``error``); either way the writer task must be woken."""
        # The hot path (once per subscriber per round), so ``_write`` is inlined for its common
        # case; anything unusual goes through ``_write`` for the error handling.
        n = -1
        if self.ws._close_reason is None:
            fd = self.fileno()
            if fd >= 0:
                try:
                    n = os.write(fd, data)
                except OSError:
                    n = -1
                if n == len(data):
                    return True
        if n < 0:
            try:
                n = self._write(data)
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                self.error = exc
                return False
            if n == len(data):
                return True
        self.keep_tail(data, n)
        return False

    def keep_tail(self, data: bytes, n: int) -> None:
        """Only ``n`` bytes of ``data`` were written: the rest is the writer task's, and the
        stream is its until then."""
        self.lock.held = True
        self.tail = memoryview(data)[n:]

    def take_error(self) -> None:
        """Raise the error of a failed synchronous write, if any."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    async def send(self, data: bytes | None = None) -> None:
        """Write ``data`` (or the pending ``tail``) completely; the caller holds the lock."""
        if data is not None:
            assert self.tail is None
            self.tail = memoryview(data)
        tail = self.tail
        assert tail is not None
        while True:
            n = self._write(tail)
            tail = tail[n:]
            if not tail:
                break
            self.tail = tail
            await trio.lowlevel.wait_writable(self.sock)
        self.tail = None

    def abort(self) -> None:
        """Close the socket now (a chunk was cut off: no frame may follow it) and let anyone
        waiting for the lock through, to fail at once on the closed stream."""
        self.broken = True
        self.sock.close()  # wakes tasks waiting on the socket with ClosedResourceError
        if self.tail is not None:  # the cut-off chunk held the lock: nobody else does
            self.tail = None
            self.lock.release()


async def adopt(ws: Any) -> SocketWriter | None:
    """Take over the data path of an accepted trio-websocket server connection, or None if
    this trio-websocket version or this kind of stream is not supported (use
    ``send_message`` then). The ONE place that changes trio-websocket's private state (its
    ``_close_reason`` is read elsewhere, checked here)."""
    if not FAST_PATH_AVAILABLE:
        return None  # pragma: no cover - depends on the installed version
    stream = getattr(ws, "_stream", None)
    old = getattr(ws, "_stream_lock", None)
    if not isinstance(stream, trio.SocketStream) or not isinstance(old, trio.StrictFIFOLock):
        return None
    if not hasattr(ws, "_close_reason") or ws._close_reason is not ws.closed:
        return None
    lock = WriterLock()
    lock.held = True  # until the writes already under way on the old lock are done
    ws._stream_lock = lock  # from now on every trio-websocket _send() takes our lock
    try:
        if old.locked() or old.statistics().tasks_waiting:
            async with old:  # FIFO: everyone queued on the old lock has written before us
                pass
    finally:
        lock.release()
    return SocketWriter(ws, stream.socket, lock)

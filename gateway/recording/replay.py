"""A replay server: serves a recording (``gateway.recording.format``) as if it were Paxos.

Each recorded feed is served at its URL's path (``/marketdata``, ``/executiondata/BTCUSD``...).
A feed's recording is a series of connections, split by its ``connected``/``disconnected``
events. A client that connects to the feed's path gets the next connection's frames, timed as
recorded relative to that connection's start (divided by ``speed``; ``speed=0`` sends as fast
as the client reads), and a recorded ``disconnected`` ends the client's connection at that
point: abruptly (TCP closed, the client sees 1006) unless upstream had closed it with a close
frame (``closed_by_server``), which is replayed as a 1001 close. The client reconnects (as the
gateway does) and the replay goes on with the next recorded connection. After the last frame a
connection stays open and silent, like an idle Paxos market.

One client at a time per feed: a second connection to a path waits until the first one is
gone, then continues where it stopped. (If the gateway itself closes a connection, e.g. for a
crossed book the recorder did not react to, the rest of that recorded connection goes to its
next connection; the recording, not the client, decides what is sent.)

Unknown paths are refused with HTTP 404. The file is read twice, streaming: once to check it
at construction (``RecordingError`` naming the line), then per feed while serving.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import trio
import trio_websocket

from gateway.recording.format import (
    Entry,
    Event,
    RecordedFrame,
    RecordingError,
    read_recording,
    validate,
)

__all__ = ["FeedReplay", "ReplayServer", "register"]

log = logging.getLogger("gateway.simulator.replay")

_CONNECTION_ERRORS = (
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)
_CLOSE_TIMEOUT = 1.0
_NS = 1_000_000_000


class FeedReplay:
    """One recorded feed being served; counters for tests and logs."""

    def __init__(self, path: Path, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.path = "/" + urlsplit(url).path.strip("/")
        self.connections = 0
        """Client connections accepted so far."""
        self.frames_sent = 0
        self.segments_done = 0
        """Recorded connections fully served (ended by a recorded disconnect)."""
        self.done = trio.Event()
        """Set when every recorded frame of the feed has been sent."""
        self._file = path
        self._entries: Iterator[Entry] | None = None
        self._pushed: Entry | None = None
        self._lock = trio.Lock()

    def _next(self) -> Entry | None:
        if self._pushed is not None:
            entry, self._pushed = self._pushed, None
            return entry
        if self._entries is None:
            self._entries = (e for e in read_recording(self._file) if e.feed == self.name)
        return next(self._entries, None)

    def close(self) -> None:
        if self._entries is not None:
            close = getattr(self._entries, "close", None)
            if close is not None:
                close()

    async def serve(self, ws: trio_websocket.WebSocketConnection, speed: float) -> str | None:
        """Send the next recorded connection to ``ws``. Returns how it was recorded to end
        (the disconnect reason, ``""`` for a new recorded connection) or None at the end of
        the recording."""
        started = trio.current_time()
        base: int | None = None
        entry = self._next()
        if isinstance(entry, Event) and entry.event == "connected":
            base = entry.t
            entry = self._next()
        while entry is not None:
            if base is None:
                base = entry.t
            try:
                if speed > 0:
                    await trio.sleep_until(started + max(0, entry.t - base) / _NS / speed)
                if isinstance(entry, RecordedFrame):
                    await ws.send_message(entry.payload)
            except BaseException:
                self._pushed = entry  # not delivered: the next connection gets it
                raise
            if isinstance(entry, RecordedFrame):
                self.frames_sent += 1
            elif entry.event == "disconnected":
                self.segments_done += 1
                return entry.reason
            else:  # a new connection without a recorded disconnect before it
                self._pushed = entry
                self.segments_done += 1
                return ""
            entry = self._next()
        self.done.set()
        return None


class ReplayServer:
    """Serves a recording on ``host:port`` (port 0: any free port). See the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        handshake_timeout: float = 10.0,
    ) -> None:
        if not speed >= 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed!r}")
        self.path = Path(path)
        self.header, self.frames, self.events = validate(self.path)
        self.speed = speed
        self.host = host
        self.port = port
        self.handshake_timeout = handshake_timeout
        self.feeds: dict[str, FeedReplay] = {}
        self._by_path: dict[str, FeedReplay] = {}
        for feed in self.header.feeds:
            replay = FeedReplay(self.path, feed.name, feed.url)
            self.feeds[feed.name] = replay
            self._by_path.setdefault(replay.path, replay)
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` once ``serve`` has started."""
        if self._url is None:
            raise RuntimeError("the replay server is not serving yet")
        return self._url

    def url_for(self, feed: str) -> str:
        return self.url + self.feeds[feed].path

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``nursery.start`` returns the base URL."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        host, port = listeners[0].socket.getsockname()[:2]
        self._url = f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle_tcp, listeners)
                log.info("replay: serving %s on %s", self.path, self._url)
                task_status.started(self._url)
        finally:
            for feed in self.feeds.values():
                feed.close()

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._handle_websocket(nursery, stream)
                except _CONNECTION_ERRORS:
                    pass
                finally:
                    nursery.cancel_scope.cancel()  # the WebSocket reader task
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle_websocket(self, nursery: trio.Nursery, stream: trio.SocketStream) -> None:
        request: trio_websocket.WebSocketRequest | None = None
        with trio.move_on_after(self.handshake_timeout):
            request = await trio_websocket.wrap_server_stream(nursery, stream)
        if request is None:
            return
        path = "/" + request.path.split("?", 1)[0].strip("/")
        feed = self._by_path.get(path)
        if feed is None:
            await request.reject(404, body=b"Not Found")
            return
        ws = await request.accept()
        async with feed._lock:
            feed.connections += 1
            ending = await self._stream_to(feed, ws)
        if ending is None:
            return
        if ending == "closed_by_server":
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await ws.aclose(1001, "replayed close")
        # Anything else (connection_lost, ping_timeout, ...): drop TCP, as a dead upstream does;
        # _handle_tcp closes the stream.

    async def _stream_to(
        self, feed: FeedReplay, ws: trio_websocket.WebSocketConnection
    ) -> str | None:
        """Serve one recorded connection; None if the client left first."""
        ending: str | None = None
        async with trio.open_nursery() as nursery:

            async def watch_peer() -> None:
                # Clients send nothing; reading just notices the peer closing.
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    while True:
                        await ws.get_message()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_peer)
            with contextlib.suppress(*_CONNECTION_ERRORS):
                result = await feed.serve(ws, self.speed)
                if result is None:
                    await trio.sleep_forever()  # recording exhausted: stay open and silent
                ending = result
            nursery.cancel_scope.cancel()
        return ending


# -- the command ------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "replay",
        help="serve a recording (from 'paxos-gateway record') as a Paxos feed server",
        description="Serve a recording on 127.0.0.1: each recorded feed at its path, frames at "
        "the recorded pace (or --speed times faster; 0 = as fast as possible), recorded "
        "disconnects closing the client's connection. Point the gateway at it with "
        "--set upstream.base_url=ws://HOST:PORT and the same feed paths.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="recording to serve")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="time factor: 1 = as recorded, 10 = ten times faster, 0 = as fast as possible",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.set_defaults(func=run)


async def _serve(server: ReplayServer) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        print(
            f"replaying {server.path} ({server.frames} frames, {server.events} connection "
            f"events, speed {server.speed:g}) on {url}",
            flush=True,
        )
        for feed in server.feeds.values():
            print(f"  {feed.name}: {url}{feed.path}", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        server = ReplayServer(args.file, speed=args.speed, host=args.host, port=args.port)
    except OSError as exc:
        print(f"replay: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (RecordingError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(partial(_serve, server))
    except OSError as exc:
        print(f"replay: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped
    return 0

"""A ``websockets`` (asyncio) subscriber that checks everything it receives with ``Model``.

A WebSocket library other than the server's own, on an asyncio loop in a process of its own,
so it cannot share scheduling with the gateway. Used by the soak benchmark and by the test
suite's end-to-end rig (``tests/support/client_workers.py``), both in worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.downstream_model import Model


def as_levels(side: dict[Decimal, Decimal], best_first_descending: bool) -> list[Any]:
    return sorted(side.items(), reverse=best_first_descending)


@dataclass
class CheckingSubscriber:
    """One ``websockets`` client checking everything it receives with ``Model``."""

    name: str
    streams: list[str]
    model: Model = field(default_factory=Model)
    ws: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    closed_code: int | None = None
    read_delay: float = 0.0
    """Seconds to sleep after each message: a slow reader."""
    rcvbuf: int | None = None
    """SO_RCVBUF for the socket (set before connecting): a small one makes a subscriber that
    stops reading push back on the gateway at once instead of after megabytes of kernel buffer."""
    opens: int = 0
    _aborting: bool = False

    async def open(self, base_url: str, resume: dict[str, dict[str, int]] | None = None) -> None:
        url = f"{base_url}/v1/stream"
        extra: dict[str, Any] = {}
        if self.rcvbuf is not None:
            extra["sock"] = await _small_buffer_socket(url, self.rcvbuf)
        self.closed_code = None
        # Generous: a busy 2-core runner may be slow, and speed is the benchmark's business.
        self.ws = await connect(url, max_queue=None, open_timeout=60, **extra)
        self.opens += 1
        request: dict[str, Any] = {"op": "subscribe", "id": self.name, "streams": self.streams}
        if resume:
            request["resume"] = resume
        await self.ws.send(json.dumps(request))
        self.reader = asyncio.get_running_loop().create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                msg = json.loads(message)
                if msg.get("type") != "hello":
                    self.model.feed(msg)
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
        except ConnectionClosed:
            pass  # an abnormal close is kept in ``closed_code``, which tests check
        except Exception as exc:  # the model records it; the test asserts no problems
            self.model.problems.append(f"{self.name}: reader failed: {exc!r}")
        finally:
            if ws.close_code is not None and ws.close_code != 1000 and not self._aborting:
                self.closed_code = ws.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader
        self.ws = None

    async def abort(self) -> None:
        """Vanish: drop the TCP connection (RST) without a closing handshake."""
        self._aborting = True
        if self.ws is not None:
            sock = self.ws.transport.get_extra_info("socket")
            # Linger 0: close sends RST, as a crashed host's kernel would (unless the gateway
            # closed the connection first, and the socket with it).
            if sock is not None and sock.fileno() >= 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.ws.transport.abort()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader
        self.ws = None
        self._aborting = False

    def pause_reading(self) -> None:
        """Stop reading the socket (the gateway's writes back up); pings go unanswered too."""
        if self.ws is not None:
            self.ws.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.ws is not None:
            self.ws.transport.resume_reading()

    async def churn(self, streams: list[str], cycles: int) -> None:
        """Unsubscribe and subscribe ``streams`` again ``cycles`` times without waiting for the
        answers: each subscribe queues a fresh book snapshot. A subscriber that also stops
        reading fills the kernel's socket buffers (megabytes on loopback) in moments."""
        assert self.ws is not None
        for i in range(cycles):
            await self.ws.send(json.dumps({"op": "unsubscribe", "id": f"u{i}", "streams": streams}))
            await self.ws.send(json.dumps({"op": "subscribe", "id": f"c{i}", "streams": streams}))

    def trade_ids(self) -> list[str]:
        return [r["match_number"] for r in self.model.records if r["type"] == "trade"]

    def resume_positions(self) -> dict[str, dict[str, Any]]:
        return {
            s: {"epoch": rec_epoch, "seq": seq}
            for s, (rec_epoch, seq) in self.model.positions.items()
            if s in self.streams
        }

    @property
    def connected(self) -> bool:
        return self.reader is not None and not self.reader.done()

    def subscribed_streams(self) -> set[str]:
        """Every concrete stream a ``subscribed`` answer (or pattern announcement) named."""
        answers = [r for r in self.model.responses if r["type"] == "subscribed"]
        return {st["stream"] for r in answers for st in r["streams"]}

    def reached(self, heads: dict[str, int]) -> bool:
        return all(self.model.held.get(s, 0) >= h for s, h in heads.items())

    def reached_heads(self, heads: dict[str, int]) -> bool:
        """Holds every stream it subscribed to up to its head in ``heads``."""
        return self.reached({n: heads[n] for n in self.subscribed_streams() if heads.get(n, 0)})


async def wait_all_reached(
    subs: Iterable[CheckingSubscriber], heads_of: Any, timeout: float = 60
) -> None:
    """Poll (from asyncio) until each subscriber holds its streams' heads."""
    subs = list(subs)
    deadline = asyncio.get_running_loop().time() + timeout
    while not all(s.reached(heads_of(s)) for s in subs):
        if asyncio.get_running_loop().time() > deadline:
            late = [s.name for s in subs if not s.reached(heads_of(s))][:5]
            raise TimeoutError(f"subscribers never reached the heads: {late}")
        await asyncio.sleep(0.02)


async def _small_buffer_socket(url: str, rcvbuf: int) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return sock

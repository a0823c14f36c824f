"""A nursery that contains each task's failure to that task: the subscriber server's
``handler_nursery`` for trio-websocket.

trio-websocket 0.12.2 answers a ping that arrives after the closing handshake has begun with a
Pong that wsproto refuses (``LocalProtocolError`` in ``LOCAL_CLOSING``), and the error escapes
its per-connection reader task. Seen in the reconnect-storm test at shutdown: one client's late
ping took the whole subscriber server down. The connection is over by then anyway, so one
library failure ends one connection: logged and counted
(``paxos_gateway_connection_task_failures_total``), never the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["ContainedNursery"]


class ContainedNursery:
    """``start_soon`` into ``nursery``; an ``Exception`` from the task goes to ``on_failure``
    (``Cancelled`` is a ``BaseException``: shutdown still goes through)."""

    def __init__(self, nursery: trio.Nursery, on_failure: Callable[[Exception], None]) -> None:
        self._nursery = nursery
        self._on_failure = on_failure

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        self._nursery.start_soon(self._contained, fn, args, name=name or fn)

    async def _contained(
        self, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # Cancelled is a BaseException: shutdown still goes through
            self._on_failure(exc)

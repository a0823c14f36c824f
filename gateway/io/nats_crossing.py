"""The crossing between trio and the NATS bridge's asyncio loop thread, shared by its modules.

A future completed on the loop thread wakes trio once (``TrioToken.run_sync_soon``): no worker
thread per call, and a trio caller that is cancelled cancels the future (and so the asyncio task
behind it). The errors every bridge module may raise live here too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class NatsUnavailable(Exception):
    """NATS could not be reached (at start, or the connection is closed for good)."""


class BridgeClosed(Exception):
    """The bridge's loop has ended: no call can be made through it any more."""


async def wait_future(future: concurrent.futures.Future[T], token: trio.lowlevel.TrioToken) -> T:
    """Wait in trio for a future completed by the loop thread: one wake-up, no worker thread."""
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()


def text_headers(headers: dict[str, Any] | None) -> dict[str, str] | None:
    return None if headers is None else {str(k): str(v) for k, v in headers.items()}

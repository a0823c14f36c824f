"""The NATS bridge's loop thread: connect, then keep the connection until told to stop.

Runs as ``asyncio.run(loop_main(...))`` in the thread ``open_bridge`` starts. The start is
reported through a ``concurrent.futures.Future`` (the loop, the client and the stop event, or
``NatsUnavailable`` naming the last connect error); nats-py's connection-state callbacks go to
``state`` on this thread, which must only hand the value on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable

import nats
from nats.aio.client import Client

from gateway.io.nats_crossing import NatsUnavailable


async def loop_main(
    servers: str | list[str],
    name: str,
    connect_timeout: float,
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, Client, asyncio.Event]],
    state: Callable[[str], None],
) -> None:
    stop = asyncio.Event()

    async def disconnected() -> None:
        state("disconnected")

    async def reconnected() -> None:
        state("connected")

    async def closed() -> None:
        state("closed")

    errors: list[Exception] = []

    async def error(exc: Exception) -> None:
        # nats-py reports every failed (re)connect attempt here; the last one explains a
        # failed start, and the state says enough afterwards.
        del errors[:-1]
        errors.append(exc)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers,
                name=name,
                connect_timeout=connect_timeout,
                # Reconnect forever once running (nats-py keeps the subscriptions and the
                # ordered consumer resumes); at start this loops too, so the whole start is
                # bounded by wait_for and reported with the last attempt's error.
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                closed_cb=closed,
                error_cb=error,
            ),
            timeout=connect_timeout,
        )
    except (Exception, asyncio.CancelledError) as exc:
        cause = errors[-1] if errors else exc
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # trio gave up first
            started.set_exception(
                NatsUnavailable(
                    f"cannot connect to NATS at {servers} within {connect_timeout} s: {cause!r}"
                )
            )
        return
    try:
        started.set_result((asyncio.get_running_loop(), nc, stop))
    except concurrent.futures.InvalidStateError:
        # The trio side was cancelled while we connected: nobody will use this connection.
        await nc.close()
        return
    try:
        await stop.wait()
    finally:
        if not nc.is_closed:
            await nc.close()

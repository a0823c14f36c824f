"""Checking subscribers in worker processes, driven from the test's trio loop.

Why processes: with the gateway, the simulator and 200 checking clients in one interpreter,
the clients' JSON decoding and checking compete with the gateway for one GIL. In the reconnect
storm that starved the client side for up to 13 s: handshakes hit their 10 s timeout and the
market moved past the history, so the test failed 5 runs of 5 while the gateway was fine
(against a standalone gateway with clients in separate processes, 200 simultaneous resumes took
0.2-0.6 s and all resumed). So the clients run where the soak tool runs them: ``WORKERS``
processes, each an asyncio loop of ``bench.checking_subscriber.CheckingSubscriber``s (the
``websockets`` library, a client other than the server's own), each checking every record with
``bench.downstream_model.Model``.

The test side holds ``Subscriber`` handles and ``ClientWorkers``. Every operation names the
subscribers it acts on; its answer carries their fresh ``ClientView``, a compact summary of what
each checked (problems, answers, heads, books, trades, statuses), so assertions read plain
attributes and the records themselves never cross the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any

import trio

from bench.checking_subscriber import CheckingSubscriber, as_levels
from bench.procs import die_with_parent

WORKERS = 2
"""One per core of the CI machine; the gateway under test shares them."""

Levels = list[tuple[Decimal, Decimal]]


@dataclass(frozen=True)
class ClientView:
    """What one checking client holds, as the test reads it after an operation."""

    problems: list[str] = field(default_factory=list)
    """Sequence problems and error answers (``Model.problems``), and reader failures."""
    responses: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)
    """Last seq applied, per stream."""
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    """Each book snapshot's stream, seq, reason and resync flag (not its levels)."""
    books: dict[str, tuple[Levels, Levels]] = field(default_factory=dict)
    """Per book stream: bids best first (descending), asks best first (ascending)."""
    trades: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(match_number, stream, epoch, seq) of every trade record."""
    statuses: list[tuple[str, str, str]] = field(default_factory=list)
    """(stream, state, reason) of every status record."""
    opens: int = 0
    closed_code: int | None = None
    """Close code of an abnormal end of the last connection (None: open, or closed by us)."""
    connected: bool = False


# -- worker side: asyncio, one loop per process --------------------------------------------------


def view_of(client: CheckingSubscriber) -> ClientView:
    model = client.model
    records = model.records
    return ClientView(
        problems=list(model.problems),
        responses=list(model.responses),
        held=dict(model.held),
        snapshots=[
            {k: s[k] for k in ("stream", "seq", "reason", "resync")} for s in model.snapshots
        ],
        books={
            stream: (as_levels(bids, True), as_levels(model.asks.get(stream, {}), False))
            for stream, bids in model.bids.items()
        },
        trades=[
            (r["match_number"], r["stream"], r["epoch"], r["seq"])
            for r in records
            if r["type"] == "trade"
        ],
        statuses=[(r["stream"], r["state"], r["reason"]) for r in records if r["type"] == "status"],
        opens=client.opens,
        closed_code=client.closed_code,
        connected=client.connected,
    )


async def _wait_all(
    clients: list[CheckingSubscriber],
    done: Callable[[CheckingSubscriber], bool],
    timeout: float,
    what: str,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while late := [c.name for c in clients if not done(c)]:
        if loop.time() > deadline:
            raise TimeoutError(f"not {what} within {timeout} s: {late[:5]}")
        await asyncio.sleep(0.02)


class _WorkerState:
    """The clients of one worker process and the operations the test may ask for."""

    def __init__(self) -> None:
        self.clients: dict[str, CheckingSubscriber] = {}

    def pick(self, names: Iterable[str]) -> list[CheckingSubscriber]:
        return [self.clients[n] for n in names]

    async def add(
        self, names: list[str], specs: list[tuple[str, list[str], float, int | None]]
    ) -> None:
        for name, streams, read_delay, rcvbuf in specs:
            self.clients[name] = CheckingSubscriber(
                name, streams, read_delay=read_delay, rcvbuf=rcvbuf
            )

    async def open(self, names: list[str], base_url: str, resume: bool) -> None:
        await asyncio.gather(
            *(
                c.open(base_url, (c.resume_positions() or None) if resume else None)
                for c in self.pick(names)
            )
        )

    async def close(self, names: list[str]) -> None:
        await asyncio.gather(*(c.close() for c in self.pick(names)))

    async def abort(self, names: list[str]) -> None:
        await asyncio.gather(*(c.abort() for c in self.pick(names)))

    async def churn(self, names: list[str], streams: list[str], cycles: int) -> None:
        await asyncio.gather(*(c.churn(streams, cycles) for c in self.pick(names)))

    async def pause_reading(self, names: list[str]) -> None:
        for c in self.pick(names):
            c.pause_reading()

    async def resume_reading(self, names: list[str]) -> None:
        for c in self.pick(names):
            c.resume_reading()

    async def wait_reached(self, names: list[str], heads: dict[str, int], timeout: float) -> None:
        await _wait_all(self.pick(names), lambda c: c.reached_heads(heads), timeout, "caught up")

    async def wait_reached_or_ended(
        self, names: list[str], heads: dict[str, int], timeout: float
    ) -> None:
        await _wait_all(
            self.pick(names),
            lambda c: not c.connected or c.reached_heads(heads),
            timeout,
            "caught up nor closed",
        )

    async def view(self, names: list[str]) -> None:
        """Nothing to do: every answer carries the named clients' views."""


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[int, str, list[str], tuple[Any, ...]] | None] = asyncio.Queue()

    def receive() -> None:
        # A blocking reader thread: the pipe is not a socket asyncio can watch portably, and
        # the test side never sends more than a few small commands at a time.
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            loop.call_soon_threadsafe(inbox.put_nowait, msg)
            if msg is None:
                return

    threading.Thread(target=receive, daemon=True).start()
    state = _WorkerState()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(call_id: int, op: str, names: list[str], args: tuple[Any, ...]) -> None:
        try:
            await getattr(state, op)(names, *args)
            answer: tuple[int, bool, Any] = (
                call_id,
                True,
                {c.name: view_of(c) for c in state.pick(names)},
            )
        except Exception:
            answer = (call_id, False, traceback.format_exc())
        conn.send(answer)

    while (msg := await inbox.get()) is not None:
        task = loop.create_task(handle(*msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*(c.abort() for c in state.clients.values()), return_exceptions=True)


def _worker_main(conn: Connection) -> None:
    die_with_parent()
    asyncio.run(_serve(conn))


# -- test side: trio -------------------------------------------------------------------------------


@dataclass(eq=False)
class Subscriber:
    """The test's handle on one checking client; ``view`` is refreshed by every operation."""

    name: str
    streams: list[str]
    read_delay: float = 0.0
    rcvbuf: int | None = None
    view: ClientView = field(default_factory=ClientView)
    worker: int = -1

    @property
    def closed_code(self) -> int | None:
        return self.view.closed_code

    @property
    def opens(self) -> int:
        return self.view.opens

    @property
    def connected(self) -> bool:
        return self.view.connected

    def trade_ids(self) -> list[str]:
        return [t[0] for t in self.view.trades]


class _Worker:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.calls = itertools.count()
        self.waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self.gone: str | None = None

    async def call(self, op: str, names: list[str], *args: Any) -> dict[str, ClientView]:
        if self.gone:
            raise RuntimeError(self.gone)
        call_id = next(self.calls)
        done, result = trio.Event(), []
        self.waiting[call_id] = (done, result)
        self.conn.send((call_id, op, names, args))
        await done.wait()
        ok, value = result
        if not ok:
            raise RuntimeError(f"client worker failed in {op}:\n{value}")
        assert isinstance(value, dict)
        return value

    async def dispatch(self) -> None:
        """Hand each answer to its caller; if the worker dies, fail every caller."""
        try:
            while True:
                await trio.lowlevel.wait_readable(self.conn.fileno())
                call_id, ok, value = self.conn.recv()
                done, result = self.waiting.pop(call_id)
                result += [ok, value]
                done.set()
        except (EOFError, OSError) as exc:
            self.gone = f"client worker exited: {exc!r}"
            for done, result in self.waiting.values():
                result += [False, self.gone]
                done.set()
            self.waiting.clear()


class ClientWorkers:
    """``WORKERS`` processes of checking clients; subscribers are spread over them in turn."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._workers = workers
        self._next = itertools.cycle(range(len(workers)))

    async def _each(
        self, subs: Iterable[Subscriber], op: str, *args: Any, timeout: float = 60
    ) -> None:
        """Run ``op`` in every worker holding some of ``subs``, concurrently; refresh views."""
        subs = list(subs)
        by_worker: dict[int, list[Subscriber]] = {}
        for sub in subs:
            by_worker.setdefault(sub.worker, []).append(sub)

        async def one(index: int, group: list[Subscriber]) -> None:
            views = await self._workers[index].call(op, [s.name for s in group], *args)
            for sub in group:
                sub.view = views[sub.name]

        with trio.fail_after(timeout + 10):  # the worker's own deadline comes first
            async with trio.open_nursery() as nursery:
                for index, group in by_worker.items():
                    nursery.start_soon(one, index, group)

    async def add(self, subs: Iterable[Subscriber]) -> None:
        new = [s for s in subs if s.worker < 0]
        for sub in new:
            sub.worker = next(self._next)
        for index, worker in enumerate(self._workers):
            specs = [(s.name, s.streams, s.read_delay, s.rcvbuf) for s in new if s.worker == index]
            if specs:
                await worker.call("add", [name for name, *_ in specs], specs)

    async def open(self, subs: Iterable[Subscriber], base_url: str, *, resume: bool) -> None:
        subs = list(subs)
        await self.add(subs)
        await self._each(subs, "open", base_url, resume)

    async def close(self, subs: Iterable[Subscriber]) -> None:
        await self._each(subs, "close")

    async def abort(self, subs: Iterable[Subscriber]) -> None:
        await self._each(subs, "abort")

    async def churn(self, subs: Iterable[Subscriber], streams: list[str], cycles: int) -> None:
        await self._each(subs, "churn", streams, cycles)

    async def pause_reading(self, subs: Iterable[Subscriber]) -> None:
        await self._each(subs, "pause_reading")

    async def resume_reading(self, subs: Iterable[Subscriber]) -> None:
        await self._each(subs, "resume_reading")

    async def wait_reached(
        self, subs: Iterable[Subscriber], heads: dict[str, int], timeout: float = 60
    ) -> None:
        """Until each of ``subs`` holds every stream it subscribed to up to ``heads``."""
        await self._each(subs, "wait_reached", heads, timeout, timeout=timeout)

    async def wait_reached_or_ended(
        self, subs: Iterable[Subscriber], heads: dict[str, int], timeout: float = 60
    ) -> None:
        await self._each(subs, "wait_reached_or_ended", heads, timeout, timeout=timeout)

    async def refresh(self, subs: Iterable[Subscriber]) -> None:
        await self._each(subs, "view")


@contextlib.asynccontextmanager
async def client_workers(count: int = WORKERS) -> AsyncIterator[ClientWorkers]:
    """Start ``count`` worker processes; on exit their clients vanish and they are reaped."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs trio threads
    workers: list[_Worker] = []
    try:
        for _ in range(count):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(theirs,), daemon=True)
            process.start()
            theirs.close()
            workers.append(_Worker(process, ours))
        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(worker.dispatch)
            try:
                yield ClientWorkers(workers)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for worker in workers:
            worker.conn.close()  # the worker's inbox sees EOF: its clients vanish, it exits
        for worker in workers:
            await _reap(worker.process)


async def _reap(process: multiprocessing.process.BaseProcess) -> None:
    for _ in range(100):  # 5 s for the clients to vanish, then it is killed
        if not process.is_alive():
            break
        await trio.sleep(0.05)
    else:
        process.kill()
    await trio.to_thread.run_sync(process.join, 5)

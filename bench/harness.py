"""The benchmark's side of its helper processes: the feeder and the subscriber processes are
driven over ``multiprocessing`` pipes, one command and one answer at a time, every wait with a
deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import psutil  # type: ignore[import-untyped]

__all__ = ["BenchError", "Clients", "Feeder", "call", "cpu_seconds"]


class BenchError(Exception):
    pass


def call(conn: Connection, command: tuple[Any, ...], timeout: float) -> tuple[Any, ...]:
    conn.send(command)
    if not conn.poll(timeout):
        raise BenchError(f"no answer to {command[0]!r} within {timeout}s")
    reply: tuple[Any, ...] = conn.recv()
    return reply


@dataclass
class Clients:
    conns: list[Connection]
    lost: str | None = None  # why the pipes are out of step for good (every command fails)
    # The processes that still owe the answer to a command that timed out. Before the next
    # command the harness waits up to ``LATE_GRACE`` for those answers and drops them: a
    # subscriber process checking a long deferred backlog (N = 500 at 5,000 msg/s) can take
    # longer than one command's timeout, and every later measurement failed because of it.
    late: list[Connection] = field(default_factory=list)
    late_why: str = ""

    LATE_GRACE: ClassVar[float] = 120.0

    def _catch_up(self) -> None:
        deadline = time.monotonic() + self.LATE_GRACE
        for conn in self.late:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                self.lost = self.late_why
                raise BenchError(f"subscriber processes out of step since: {self.lost}")
            conn.recv()  # the late answer, to a command that has already failed
        self.late = []

    def broadcast(self, commands: list[tuple[Any, ...]], timeout: float) -> list[tuple[Any, ...]]:
        if self.lost is not None:
            raise BenchError(f"subscriber processes out of step since: {self.lost}")
        if self.late:
            self._catch_up()
        for conn, command in zip(self.conns, commands, strict=True):
            conn.send(command)
        replies = []
        deadline = time.monotonic() + timeout
        for i, conn in enumerate(self.conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                # A late answer would be taken for the answer to the next command.
                self.late_why = f"no answer to {commands[0][0]!r} within {timeout:g} s"
                self.late = self.conns[i:]
                raise BenchError(f"subscriber process: {self.late_why}")
            replies.append(conn.recv())
        return replies

    def all(self, command: tuple[Any, ...], timeout: float = 30.0) -> list[tuple[Any, ...]]:
        return self.broadcast([command] * len(self.conns), timeout)

    def stats(self) -> tuple[int, int, int, int]:
        """(records received, last receive monotonic ns, fewest of one connection, open).

        Raises ``BenchError`` if a subscriber saw a broken frame or a record out of order."""
        replies = self.all(("stats",))
        violations = [v for r in replies for v in r[5]]
        if violations:
            raise BenchError(f"a subscriber's check failed: {violations}")
        return (
            sum(r[1] for r in replies),
            max(r[2] for r in replies),
            min((r[3] for r in replies if r[4]), default=0),
            sum(r[4] for r in replies),
        )

    def wait_total(self, target: int, stall: float, deadline: float) -> tuple[int, int]:
        """Poll until ``target`` records arrived, nothing arrived for ``stall`` s, or deadline."""
        total, last, _, _ = self.stats()
        progress_at = time.monotonic()
        while total < target and time.monotonic() < deadline:
            time.sleep(0.02)
            now_total, last, _, _ = self.stats()
            if now_total != total:
                total, progress_at = now_total, time.monotonic()
            elif time.monotonic() - progress_at > stall:
                break
        return total, last

    def quiesce(self, quiet: float = 0.15, limit: float = 5.0) -> int:
        total = self.stats()[0]
        deadline = time.monotonic() + limit
        stable_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - stable_since < quiet:
            time.sleep(0.03)
            now_total = self.stats()[0]
            if now_total != total:
                total, stable_since = now_total, time.monotonic()
        return total


@dataclass
class Feeder:
    conn: Connection
    port: int

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)

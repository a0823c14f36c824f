"""Child-process hygiene: every process the harness starts dies with it, even on SIGKILL."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent exits."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def server_arguments(parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command line of every server under test (``servers.ServerSpec.command``): dies with
    the harness, reads ``--upstream URL`` and ``--max-seconds S`` (and what ``parser`` adds)."""
    die_with_parent()
    parser = parser or argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    return parser.parse_args()


def free_port() -> int:
    """An ephemeral port on 127.0.0.1, for a server that cannot report the port it bound."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ephemeral ports on 127.0.0.1. Every socket is held until all are
    picked: one at a time, the kernel may hand out a port it just gave back (a three-node NATS
    cluster once got its first node's client port as that node's route port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next stdout line of ``proc``, failing after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or (proc.poll() is not None and not select.select([fd], [], [], 0)[0]):
            raise RuntimeError(f"{proc.args!r}: no line within {timeout}s (rc={proc.poll()})")
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"{proc.args!r} closed stdout (rc={proc.wait(5)})")
            buf += chunk
    return buf.decode().strip()


class Reaper:
    """Owns every child; ``close()`` (also on error / Ctrl-C) terminates and then kills them."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        self.processes: list[BaseProcess] = []

    def popen(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, **kwargs)  # type: ignore[call-overload]
        self.popens.append(proc)
        return proc  # type: ignore[no-any-return]

    def adopt(self, process: BaseProcess) -> BaseProcess:
        self.processes.append(process)
        return process

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
        if proc in self.popens:
            self.popens.remove(proc)

    def close(self) -> None:
        for proc in list(self.popens):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for process in self.processes:
            with contextlib.suppress(Exception):
                if process.is_alive():
                    process.terminate()
                    process.join(3)
                if process.is_alive():
                    process.kill()
                    process.join(3)
        self.processes.clear()

    @contextlib.contextmanager
    def scope(self) -> Iterator[Reaper]:
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        try:
            yield self
        finally:
            self.close()
            signal.signal(signal.SIGTERM, previous)

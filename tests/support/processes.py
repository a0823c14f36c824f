"""Helpers (no tests): gateway and simulator processes started as an operator would
(``python -m gateway ...``), their JSON log lines read by a thread, readiness polled over HTTP."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

STARTUP_TIMEOUT = 20.0
READY_TIMEOUT = 20.0


@dataclass
class Process:
    popen: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def start_reader(self, stream: IO[str]) -> None:
        # A thread drains the pipe so the child can never block on a full pipe buffer.
        def pump() -> None:
            for line in stream:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next_line(self, deadline: float) -> str | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no output in time; seen so far:\n" + "".join(self.seen))
        try:
            line = self.lines.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError("no output in time; seen so far:\n" + "".join(self.seen)) from None
        if line is not None:
            self.seen.append(line)
        return line

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def spawn(args: list[str], reader: str) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAXOS_GATEWAY__")}
    popen = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if reader == "stderr" else subprocess.DEVNULL,
        text=True,
        env=env,
    )
    process = Process(popen)
    stream = popen.stderr if reader == "stderr" else popen.stdout
    assert stream is not None
    process.start_reader(stream)
    if reader == "stderr":
        # Nothing of interest on stdout; drain it anyway.
        assert popen.stdout is not None
        threading.Thread(target=popen.stdout.read, daemon=True).start()
    return process


@pytest.fixture
def simulator_urls() -> Iterator[tuple[str, str]]:
    """The simulator's WebSocket base URL and its REST base URL."""
    sim = spawn(["simulate", "--port", "0", "--seed", "7", "--rate", "200"], reader="stdout")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        ws_url = rest_url = ""
        while not (ws_url and rest_url):
            line = sim.next_line(deadline)
            assert line is not None, "simulator exited: " + "".join(sim.seen)
            ws = re.search(r"(ws://127\.0\.0\.1:\d+)", line)
            rest = re.search(r"REST API on (http://127\.0\.0\.1:\d+/v2)", line)
            ws_url = ws_url or (ws.group(1) if ws else "")
            rest_url = rest_url or (rest.group(1) if rest else "")
        yield ws_url, rest_url
    finally:
        sim.stop()


def wait_for_event(process: Process, event: str, deadline: float) -> dict[str, Any]:
    while True:
        line = process.next_line(deadline)
        if line is None:
            raise AssertionError(f"gateway exited before {event!r}:\n" + "".join(process.seen))
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # not a log line of ours (e.g. a warning from a library)
        if obj.get("event") == event:
            return dict(obj)


def wait_ready(metrics_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(metrics_url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = e.read().decode()
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise AssertionError(f"gateway not ready within {READY_TIMEOUT} s: {last}")

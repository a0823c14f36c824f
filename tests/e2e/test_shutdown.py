"""The shutdown contract, end to end: a real ``paxos-gateway run`` process gets SIGTERM.

Simulator and gateway are separate processes started like an operator would; a subscriber
connected with the ``websockets`` library must see close code 1001 and the gateway must exit 0
within a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
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
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 20.0
READY_TIMEOUT = 20.0
DRAIN_TIMEOUT = 2.0
EXIT_BOUND = 15.0  # drain timeout + upstream close + interpreter exit, with a wide margin


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


def test_sigterm_closes_subscribers_with_1001_and_exits_0(simulator_urls: tuple[str, str]) -> None:
    gateway = spawn(
        [
            "run",
            "--port", "0",
            "--metrics-port", "0",
            "--log-format", "json",
            "--set", f"upstream.base_url={simulator_urls[0]}",
            "--set", f"backfill.rest_url={simulator_urls[1]}",
            "--set", "upstream.allow_fast_retry=true",
            "--set", "upstream.backoff_initial=0.1",
            "--set", "upstream.connect_interval=0",
            "--set", "metrics.host=127.0.0.1",
            "--set", f"shutdown.drain_timeout={DRAIN_TIMEOUT}",
        ],
        reader="stderr",
    )  # fmt: skip
    try:
        started = wait_for_event(gateway, "started", time.monotonic() + STARTUP_TIMEOUT)
        wait_ready(started["metrics_url"])

        with connect(started["subscriber_url"] + "/v1/stream", open_timeout=5) as ws:
            ws.send(json.dumps({"op": "subscribe", "id": 1, "streams": ["book.BTCUSD"]}))
            types: set[str] = set()
            deadline = time.monotonic() + 10
            while "book_snapshot" not in types:
                assert time.monotonic() < deadline, f"no snapshot; got {types}"
                types.add(json.loads(ws.recv(timeout=5))["type"])

            gateway.popen.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100_000):  # drain what is still in flight, bounded
                    ws.recv(timeout=EXIT_BOUND)
            assert closed.value.rcvd is not None, "closed without a close frame"
            assert closed.value.rcvd.code == 1001
            assert "shutting down" in closed.value.rcvd.reason

        assert gateway.popen.wait(timeout=EXIT_BOUND) == 0
        assert time.monotonic() - sent_at < EXIT_BOUND
        events = set()
        for _ in range(1000):
            line = gateway.next_line(time.monotonic() + 5)
            if line is None:
                break
        for line in gateway.seen:
            with contextlib.suppress(json.JSONDecodeError):
                events.add(json.loads(line).get("event"))
        assert {"signal", "shutdown_begin", "shutdown_complete"} <= events
    finally:
        gateway.stop()


def test_sigterm_before_any_subscriber_exits_0_promptly(simulator_urls: tuple[str, str]) -> None:
    gateway = spawn(
        [
            "run", "--port", "0", "--metrics-port", "0", "--log-format", "json",
            "--set", f"upstream.base_url={simulator_urls[0]}",
            "--set", f"backfill.rest_url={simulator_urls[1]}",
            "--set", "upstream.allow_fast_retry=true",
            "--set", "upstream.backoff_initial=0.1",
            "--set", "upstream.connect_interval=0",
            "--set", "metrics.host=127.0.0.1",
        ],
        reader="stderr",
    )  # fmt: skip
    try:
        wait_for_event(gateway, "started", time.monotonic() + STARTUP_TIMEOUT)
        gateway.popen.send_signal(signal.SIGTERM)
        # Nothing to drain: the default 10 s drain timeout must not be waited out.
        assert gateway.popen.wait(timeout=8) == 0
    finally:
        gateway.stop()

"""The cluster roles as an operator runs them: ``python -m gateway run --role ...`` processes
on a real nats-server, the simulator process as Paxos, a ``websockets`` subscriber on an edge.
Then a new edge process starts, catches up from the checkpoints, and the subscriber moves to
it and resumes where it was.

Ingest failover: the leader is killed (SIGKILL) or paused (SIGSTOP, a stale leader), a standby
takes over, and the edge's subscriber sees one epoch with no gap and no repeat, a ``takeover``
snapshot where the new leader began. The takeover times are printed (``-s``), never asserted.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from bench.nats_server import NatsServer
from tests.support.processes import STARTUP_TIMEOUT, Process, spawn, wait_for_event, wait_ready

pytestmark = pytest.mark.slow

BOOK = "book.BTCUSD"
TAKEOVER_BOUND = 60.0  # s: a generous bound on waiting, not a measured claim
LEASE_TTL = "2"


def start_gateway(
    sim: tuple[str, str], nats: str, role: str, holder: str
) -> tuple[Process, str, str]:
    process = spawn(
        [
            "run", "--role", role, "--port", "0", "--metrics-port", "0", "--log-format", "json",
            "--feed", "/marketdata/BTCUSD", "--feed", "/marketdata/ETHUSD",
            "--set", f"upstream.base_url={sim[0]}",
            "--set", "backfill.enabled=false",
            "--set", "upstream.allow_fast_retry=true",
            "--set", "upstream.backoff_initial=0.1",
            "--set", "upstream.connect_interval=0",
            "--set", "metrics.host=127.0.0.1",
            "--set", f"cluster.nats_urls={nats}",
            "--set", f"cluster.holder={holder}",
            "--set", f"cluster.lease_ttl={LEASE_TTL}",
            "--set", "cluster.checkpoint_interval=0.5",
            "--set", "cluster.max_age=600",
        ],
        reader="stderr",
    )  # fmt: skip
    started = wait_for_event(process, "started", time.monotonic() + STARTUP_TIMEOUT)
    wait_ready(started["metrics_url"])
    return process, started["subscriber_url"], started["metrics_url"]


def readyz(metrics_url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(metrics_url + "/readyz", timeout=5) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    return body


def ingest_state(metrics_url: str) -> str:
    state: str = readyz(metrics_url)["feeds"]["ingest"]["state"]
    return state


def until(check: Callable[[], bool], what: str, bound: float = TAKEOVER_BOUND) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"not within {bound} s: {what}"
        time.sleep(0.05)


class Reader:
    """The book stream's records as one edge subscriber gets them."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.records: list[dict[str, Any]] = []

    def until(self, done: Callable[[dict[str, Any]], bool], limit: int = 200_000) -> dict[str, Any]:
        for _ in range(limit):
            obj = json.loads(self.ws.recv(timeout=TAKEOVER_BOUND))
            if obj.get("stream") == BOOK and obj["type"] in (
                "book_snapshot",
                "book_update",
                "status",
            ):
                self.records.append(obj)
                if done(obj):
                    return obj
        raise AssertionError("message limit reached")

    def check_contiguous(self, *, joined: bool = True) -> None:
        """``joined``: a late joiner's records, which begin with the book's latest status (an
        older seq) before the snapshot valid at the head: the check starts at that snapshot."""
        first = 0
        if joined:
            first = next(i for i, r in enumerate(self.records) if r["type"] == "book_snapshot")
        seqs = [r["seq"] for r in self.records[first:]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or repeat"
        assert len({r["epoch"] for r in self.records}) == 1, "epoch changed"


def is_takeover(obj: dict[str, Any]) -> bool:
    return obj["type"] == "book_snapshot" and obj["reason"] == "takeover"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGCONT)
        process.stop()


def test_ingest_failover_kill_and_pause_keeps_one_epoch_without_gaps(
    simulator_urls: tuple[str, str], nats_server: NatsServer, processes: list[Process]
) -> None:
    a, _, a_ops = start_gateway(simulator_urls, nats_server.url, "ingest", "ingest-a")
    processes.append(a)
    until(lambda: ingest_state(a_ops).startswith("leader"), "ingest-a leads")
    b, _, b_ops = start_gateway(simulator_urls, nats_server.url, "ingest", "ingest-b")
    processes.append(b)
    edge, edge_url, _ = start_gateway(simulator_urls, nats_server.url, "edge", "edge-1")
    processes.append(edge)
    assert ingest_state(b_ops).startswith("standby")

    with connect(edge_url + "/v1/stream", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "id": 1, "streams": [BOOK]}))
        reader = Reader(ws)
        reader.until(lambda o: o["type"] == "book_update")

        # 1. A stale leader: ingest-a paused; ingest-b takes over; ingest-a resumes and must
        # neither write nor lead (its TTL bound has passed; a write would be fenced).
        a.popen.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        reader.until(is_takeover)
        print(f"\ntakeover after SIGSTOP of the leader: {time.monotonic() - paused:.2f} s")
        assert ingest_state(b_ops).startswith("leader")
        a.popen.send_signal(signal.SIGCONT)
        until(lambda: ingest_state(a_ops).startswith("standby"), "ingest-a stands by")
        reader.until(lambda o: o["type"] == "book_update")

        # 2. The leader killed: ingest-a takes over again.
        b.popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        reader.until(is_takeover)
        print(f"takeover after SIGKILL of the leader: {time.monotonic() - killed:.2f} s")
        reader.until(lambda o: o["type"] == "book_update")
        assert ingest_state(a_ops).startswith("leader")

        # 3. A new edge process starts (as after an edge restart: it begins at the checkpoints
        # and catches up); the subscriber then moves there and resumes where it is.
        late, late_url, _ = start_gateway(simulator_urls, nats_server.url, "edge", "edge-2")
        processes.append(late)
        # A record the leader received after the new edge was ready, so after the checkpoint
        # it started from (the same host's clock: receive_time is the ingest's time_ns).
        ready_at = time.time_ns()
        last = reader.until(
            lambda o: o["type"] == "book_update" and int(o["receive_time"]) > ready_at
        )

    reader.check_contiguous()
    assert sum(1 for r in reader.records if is_takeover(r)) == 2
    with connect(late_url + "/v1/stream", open_timeout=10) as ws:
        point = {BOOK: {"epoch": last["epoch"], "seq": last["seq"]}}
        ws.send(json.dumps({"op": "subscribe", "id": 2, "streams": [BOOK], "resume": point}))
        answer: dict[str, Any] = {}
        for _ in range(1000):
            answer = json.loads(ws.recv(timeout=TAKEOVER_BOUND))
            if answer["type"] in ("resumed", "resume_failed"):
                break
        assert answer["type"] == "resumed", answer
        moved = Reader(ws)
        moved.records.append(last)
        moved.until(lambda o: o["seq"] >= last["seq"] + 20)
    moved.check_contiguous(joined=False)

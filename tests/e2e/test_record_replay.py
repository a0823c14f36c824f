"""Record (``gateway.recording.record``) from the real simulator, replay
(``gateway.recording.replay``) into the real upstream task, and the recording file format
(``gateway.recording.format``).

Real sockets on 127.0.0.1 (port 0), under a MockClock that autojumps only after 50 ms of real
idleness (as in test_upstream.py): backoff and recorded pauses take no real time.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected, open_websocket_url

from gateway.config import UpstreamConfig
from gateway.contract.records import BookSnapshot, Record, Status
from gateway.ingest.feeds import FeedSpec, feed_from_url
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.connect_gate import ConnectGate
from gateway.io.metrics import Metrics
from gateway.io.upstream import FeedState, run_feed
from gateway.recording import record as record_command
from gateway.recording import replay as replay_module
from gateway.recording.format import (
    Event,
    RecordedFrame,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    feed_session,
    read_recording,
    validate,
)
from gateway.recording.replay import ReplayServer
from gateway.simulator import SimulatorConfig
from gateway.simulator.server import Simulator

EPOCH = "1700000000000000000"
SEC = 1_000_000_000


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


def settings() -> UpstreamConfig:
    return UpstreamConfig(
        backoff_initial=0.5,
        backoff_max=1.0,
        ping_interval=5.0,
        ping_timeout=5.0,
        connect_timeout=5.0,
        connect_interval=0.0,
        allow_fast_retry=True,
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll on the (mock) clock; bounded in virtual time. Each idle poll costs the autojump
    threshold in real time, hence the coarse interval."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.5)


def recorded_frames(path: Path, feed: str) -> int:
    return sum(1 for e in read_recording(path) if isinstance(e, RecordedFrame) and e.feed == feed)


def data_records(records: list[Record]) -> list[Record]:
    """Records without what legitimately differs between two runs (receive times, statuses)."""
    return [msgspec.structs.replace(r, receive_time="0") for r in records if type(r) is not Status]


def book_levels(session: FeedNormalizer) -> dict[str, Any]:
    return {m: (b.bids(), b.asks()) for m, b in sorted(session.books.items())}


async def record_from_simulator(path: Path, sim: Simulator, feeds: list[FeedSpec]) -> None:
    """Record ``feeds`` with one upstream drop of the book feed in the middle; returns when the
    recording holds everything the simulator sent (so its books equal the truth)."""

    counts: dict[int, int] = {}  # connection id -> messages sent, dropped ones included

    def sent() -> int:
        counts.update({c.id: c.messages_sent for c in sim.connections})
        return sum(counts.values())

    with path.open("wb") as out:
        writer = RecordingWriter(out, [(f.name, f.url) for f in feeds], 0)
        async with trio.open_nursery() as nursery:
            result = await nursery.start(
                lambda task_status: record_command.record(
                    feeds, writer, settings(), flush_interval=0.2, task_status=task_status
                )
            )
            await sim.wait_for_connections(len(feeds))
            for round_ in range(2):
                sim.resume()
                await sim.wait_for_events(sim.events_generated + 150)
                sim.pause()
                await sim.wait_idle()
                target = sent()
                await wait_until(lambda: result.frames == target)  # noqa: B023 - awaited at once
                if round_ == 0:
                    assert sim.drop_all("/marketdata") == 1
                    await wait_until(lambda: result.states[0].connections == 2)
                    await sim.wait_for_connections(len(feeds))
                    await sim.wait_idle()
            nursery.cancel_scope.cancel()
    assert result.stopped_by == "cancelled"


async def test_replay_reproduces_the_recorded_books_and_reconnects(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "sim.jsonl"
    sim = Simulator(
        SimulatorConfig(seed=11, markets=["BTCUSD", "ETHUSD"], stablecoins=(), levels=20, rate=0.0)
    )
    sim.pause()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(sim.serve)
        feeds = [
            feed_from_url(url + "/marketdata", "book"),
            feed_from_url(url + "/executiondata", "trades"),
        ]
        await record_from_simulator(path, sim, feeds)
        truth = {m: sim.truth(m) for m in sim.markets}
        nursery.cancel_scope.cancel()

    entries = list(read_recording(path))
    events = [(e.feed, e.event, e.reason) for e in entries if isinstance(e, Event)]
    assert sorted(events[:2]) == [("book", "connected", ""), ("trades", "connected", "")]
    assert events[2:] == [("book", "disconnected", "connection_lost"), ("book", "connected", "")]

    # Straight from the file into fresh sessions: the simulator's truth.
    direct = {f.name: FeedNormalizer(f, EPOCH) for f in feeds}
    direct_records = {f.name: feed_session(entries, f.name, direct[f.name]) for f in feeds}
    assert {m: (b.bids(), b.asks()) for m, b in direct["book"].books.items()} == truth

    # Replayed over real connections at high speed into the real upstream task.
    replay = ReplayServer(path, speed=0)
    async with trio.open_nursery() as nursery:
        base = await nursery.start(replay.serve)
        sessions: dict[str, FeedNormalizer] = {}
        published: dict[str, list[Record]] = {}
        states: dict[str, FeedState] = {}
        gate = ConnectGate(0.0)
        for feed in feeds:
            spec = feed_from_url(base + urlsplit(feed.url).path, feed.name)
            sessions[feed.name] = FeedNormalizer(spec, EPOCH)
            out = published[feed.name] = []
            states[feed.name] = await nursery.start(
                lambda task_status, spec=spec, out=out: run_feed(
                    spec,
                    sessions[spec.name],
                    lambda recs, _mono: out.extend(recs),
                    settings(),
                    Metrics(),
                    connect_gate=gate,
                    task_status=task_status,
                )
            )
        for feed in feeds:
            state, total = states[feed.name], recorded_frames(path, feed.name)
            await wait_until(lambda: state.messages == total)  # noqa: B023 - awaited at once
        await wait_until(lambda: replay.feeds["book"].done.is_set())
        nursery.cancel_scope.cancel()

    # The recorded disconnect was replayed: the book feed connected twice.
    assert states["book"].connections == 2
    assert replay.feeds["book"].connections == 2
    assert states["trades"].connections == 1
    for feed in feeds:
        assert book_levels(sessions[feed.name]) == book_levels(direct[feed.name])
        assert data_records(published[feed.name]) == data_records(direct_records[feed.name])
    snapshots = [r for r in published["book"] if isinstance(r, BookSnapshot)]
    assert [s.reason for s in snapshots] == ["initial", "initial", "reconnect", "reconnect"]


async def test_max_frames_stops_the_recording(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    sim = Simulator(SimulatorConfig(seed=3, markets=["BTCUSD"], stablecoins=(), levels=5, rate=0))
    path = tmp_path / "capped.jsonl"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(sim.serve)
        feeds = [feed_from_url(url + "/marketdata/BTCUSD")]
        with path.open("wb") as out:
            writer = RecordingWriter(out, [(f.name, f.url) for f in feeds], 0)
            with trio.fail_after(60):
                result = await record_command.record(feeds, writer, settings(), max_frames=25)
        nursery.cancel_scope.cancel()
    assert result.stopped_by == "max_frames"
    assert result.frames == 25
    header, frames, events = validate(path)
    assert [f.name for f in header.feeds] == ["marketdata/BTCUSD"]
    assert (frames, events) == (25, 1)  # "connected"; our own shutdown is not recorded


async def test_duration_stops_the_recording(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    path = tmp_path / "timed.jsonl"
    # Nothing listens there: the recorder keeps retrying until the duration is over.
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, lambda s: s.aclose(), 0)
        port = listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()
    feeds = [feed_from_url(f"ws://127.0.0.1:{port}/executiondata")]
    with path.open("wb") as out:
        writer = RecordingWriter(out, [(f.name, f.url) for f in feeds], 0)
        with trio.fail_after(60):
            result = await record_command.record(feeds, writer, settings(), duration=5.0)
    assert result.stopped_by == "duration"
    assert validate(path)[1:] == (0, 0)


# -- the replay server on hand-written recordings ------------------------------------------------


def write_recording(path: Path, feeds: dict[str, str], lines: list[dict[str, Any]]) -> None:
    header = {
        "format": "paxos-gateway-recording",
        "version": 1,
        "feeds": [{"name": n, "url": u} for n, u in feeds.items()],
        "started_at": 0,
    }
    path.write_text("".join(json.dumps(x) + "\n" for x in [header, *lines]))


def execution(n: int) -> str:
    return json.dumps(
        {
            "market": "BTCUSD",
            "price": "100",
            "amount": "1",
            "executed_at": f"2023-03-13T18:46:{n:02d}Z",
            "match_number": f"M{n:011d}",
        }
    )


async def test_replay_timing_and_recorded_disconnects(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "hand.jsonl"
    feed = "trades"
    write_recording(
        path,
        {feed: "wss://ws.paxos.com/executiondata"},
        [
            {"t": 10 * SEC, "feed": feed, "event": "connected"},
            {"t": 11 * SEC, "feed": feed, "frame": execution(1)},
            {"t": 14 * SEC, "feed": feed, "frame": execution(2)},
            {"t": 15 * SEC, "feed": feed, "event": "disconnected", "reason": "connection_lost"},
            {"t": 20 * SEC, "feed": feed, "event": "connected"},
            {"t": 20 * SEC, "feed": feed, "frame": execution(2)},  # Paxos replays the last one
            {"t": 22 * SEC, "feed": feed, "frame": execution(3)},
        ],
    )
    replay = ReplayServer(path, speed=2.0)
    arrivals: list[tuple[float, str]] = []
    async with trio.open_nursery() as nursery:
        base = await nursery.start(replay.serve)
        spec = feed_from_url(base + "/executiondata", feed)
        session = FeedNormalizer(spec, EPOCH)

        def publish(records: list[Record], _mono: int) -> None:
            for r in records:
                kind = f"Status.{r.state}" if isinstance(r, Status) else type(r).__name__
                arrivals.append((trio.current_time(), kind))

        state = await nursery.start(
            lambda task_status: run_feed(
                spec,
                session,
                publish,
                settings(),
                Metrics(),
                connect_gate=ConnectGate(0.0),
                task_status=task_status,
            )
        )
        await wait_until(lambda: state.messages == 4)
        await trio.sleep(30)  # the recording is over: the connection stays open and silent
        assert state.connected and state.connections == 2
        nursery.cancel_scope.cancel()

    trades = [t for t, kind in arrivals if kind == "Trade"]
    assert len(trades) == 3  # the replayed execution is deduplicated
    # Recorded offsets from each connection's start, halved by speed 2: 0.5 s and 2 s, then
    # (after the reconnect) 0 s and 1 s.
    start = arrivals[0][0]
    assert trades[0] - start == pytest.approx(0.5, abs=0.05)
    assert trades[1] - start == pytest.approx(2.0, abs=0.05)
    second_start = [t for t, kind in arrivals if kind == "Status.connected"][-1]
    assert trades[2] - second_start == pytest.approx(1.0, abs=0.05)
    assert session.stats.duplicates_suppressed == 1
    assert replay.feeds[feed].frames_sent == 4
    assert replay.feeds[feed].done.is_set()


async def test_replay_refuses_unknown_paths(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    write_recording(path, {"book": "wss://ws.paxos.com/marketdata"}, [])
    replay = ReplayServer(path, speed=0)
    async with trio.open_nursery() as nursery:
        base = await nursery.start(replay.serve)
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(base + "/executiondata"):
                pass
        assert info.value.status_code == 404
        nursery.cancel_scope.cancel()


# -- the file format ------------------------------------------------------------------------------


def test_writer_and_reader_round_trip() -> None:
    buf = io.BytesIO()
    writer = RecordingWriter(buf, [("book", "wss://ws.paxos.com/marketdata")], 5)
    text = '{"type":"UPDATE","market":"BTCUSD","side":"BUY","price":"1","amount":"0"}\n\u00e9'
    writer.event(6, "book", "connected")
    writer.frame(7, "book", text)
    writer.frame(8, "book", b"\x00\xffbinary")
    writer.event(9, "book", "disconnected", "ping_timeout")
    assert (writer.frames, writer.events) == (2, 2)
    with pytest.raises(ValueError, match="not in the recording"):
        writer.frame(10, "other", "x")
    buf.seek(0)
    reader = RecordingReader(buf)
    assert reader.header.started_at == 5
    entries = list(reader)
    assert entries == [
        Event(6, "book", "connected", "", 2),
        RecordedFrame(7, "book", text, 3),
        RecordedFrame(8, "book", b"\x00\xffbinary", 4),
        Event(9, "book", "disconnected", "ping_timeout", 5),
    ]


HEADER = (
    '{"format":"paxos-gateway-recording","version":1,'
    '"feeds":[{"name":"book","url":"wss://ws.paxos.com/marketdata"}],"started_at":0}'
)
GOOD = '{"t":1,"feed":"book","frame":"{}"}'

BAD_FILES = [
    ("", 1, "empty file"),
    ("not json\n", 1, "not a recording header"),
    ('{"format":"other","version":1,"feeds":[],"started_at":0}\n', 1, "format is 'other'"),
    (HEADER.replace('"version":1', '"version":2') + "\n", 1, "version 2 is not supported"),
    (
        HEADER.replace('"name":"book","url":"wss://ws.paxos.com/marketdata"', "").replace(
            "[{}]", "[]"
        )
        + "\n",
        1,
        "no feeds",
    ),
    (f"{HEADER}\n{GOOD}\n{{oops\n", 3, "bad entry"),
    (f"{HEADER}\n{GOOD}\n{GOOD}\n" + '{"t":1,"feed":"trades","frame":"x"}\n', 4, "'trades'"),
    (f"{HEADER}\n" + '{"feed":"book","frame":"x"}\n', 2, "missing required field `t`"),
    (f"{HEADER}\n" + '{"t":-1,"feed":"book","frame":"x"}\n', 2, "negative time"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book"}\n', 2, "exactly one of"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book","frame":"x","event":"connected"}\n', 2, "exactly one"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book","event":"paused"}\n', 2, "bad entry"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book","binary":"***"}\n', 2, "not base64"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book","frame":"x","reason":"y"}\n', 2, "event entries"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book","frame":1}\n', 2, "bad entry"),
    (f"{HEADER}\n" + '{"t":1,"feed":"book","frame":"x","extra":1}\n', 2, "unknown field"),
]


@pytest.mark.parametrize(("content", "line", "message"), BAD_FILES)
def test_bad_recordings_are_rejected_naming_the_line(
    tmp_path: Path, content: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RecordingError) as info:
        validate(path)
    assert f"{path}: line {line}: " in str(info.value)
    assert message in str(info.value)
    # The replay server checks the whole file before serving.
    with pytest.raises(RecordingError, match=f"line {line}"):
        ReplayServer(path)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text(f"{HEADER}\n\n{GOOD}\n\n")
    assert validate(path)[1:] == (1, 0)


# -- the commands ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paxos-gateway")
    sub = p.add_subparsers()
    record_command.register(sub)
    replay_module.register(sub)
    return p


def test_commands_parse() -> None:
    args = parser().parse_args(
        [
            "record",
            "--out",
            "x.jsonl",
            "--feed",
            "/marketdata",
            "--feed",
            "/executiondata",
            "--duration",
            "2.5",
            "--max-frames",
            "10",
        ]
    )
    assert args.func is record_command.run
    assert (args.feeds, args.duration, args.max_frames) == (
        ["/marketdata", "/executiondata"],
        2.5,
        10,
    )
    args = parser().parse_args(["replay", "x.jsonl", "--speed", "0", "--port", "0"])
    assert args.func is replay_module.run
    assert (args.file, args.speed, args.port) == (Path("x.jsonl"), 0.0, 0)


@pytest.mark.parametrize(
    "flag", [["--duration", "0"], ["--max-frames", "-1"], ["--max-frames", "x"]]
)
def test_record_rejects_bad_limits(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["record", "--out", "x", *flag])
    assert info.value.code == 2


def test_record_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(
        ["record", "--out", str(tmp_path / "x.jsonl"), "--feed", "/nonsense"]
    )
    assert args.func(args) == 2
    assert "record:" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_replay_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{HEADER}\nnope\n")
    args = parser().parse_args(["replay", str(path)])
    assert args.func(args) == 2
    assert "line 2" in capsys.readouterr().err
    args = parser().parse_args(["replay", str(tmp_path / "missing.jsonl")])
    assert args.func(args) == 2

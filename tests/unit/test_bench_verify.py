"""The bench subscribers' frame and seq checks (``bench.verify``): a benchmark that counts
what it cannot verify would count torn frames and lost records as deliveries."""

from __future__ import annotations

import asyncio
import struct
from array import array

import pytest

from bench import subscribers, wsframes
from bench.verify import FrameChecker

STAMP = 1_700_000_000_000_000_000


def record(seq: int, stream: str = "trades.BTCUSD", stamp: int = STAMP) -> bytes:
    payload = (
        f'{{"type":"trade","exchange_time":"{stamp}","stream":"{stream}","seq":{seq},"epoch":"1"}}'
    ).encode()
    return wsframes.server_frame(payload)


def test_counts_records_in_order_across_split_chunks() -> None:
    stream = b"".join(record(s) for s in range(5, 25))
    checker = FrameChecker()
    total = 0
    for cut in range(0, len(stream), 7):  # every frame torn somewhere
        total += checker.feed(stream[cut : cut + 7])
    assert total == 20
    assert checker.count == 20
    assert checker.violations == []
    assert checker.carry == b""


def test_responses_are_frames_but_not_records() -> None:
    hello = wsframes.server_frame(b'{"type":"hello","version":1}')
    subscribed = wsframes.server_frame(
        b'{"type":"subscribed","streams":[{"stream":"trades.BTCUSD","epoch":"1","seq":0}]}'
    )
    checker = FrameChecker()
    assert checker.feed(hello + subscribed + record(1)) == 1
    assert checker.violations == []


def test_a_gap_a_repeat_and_a_reordering_are_violations() -> None:
    checker = FrameChecker()
    checker.feed(record(1) + record(2) + record(4) + record(4) + record(3))
    assert checker.violations == [
        "trades.BTCUSD: seq 4 after 2",
        "trades.BTCUSD: seq 4 after 4",
        "trades.BTCUSD: seq 3 after 4",
    ]


def test_seq_is_per_stream() -> None:
    checker = FrameChecker()
    checker.feed(record(7, "a") + record(100, "b") + record(8, "a") + record(101, "b"))
    assert checker.violations == []
    assert checker.count == 4


def test_a_torn_frame_is_caught_not_counted() -> None:
    # Half a frame, then a whole one: the header of the second is read as payload of the
    # first, so the stream no longer parses into records in order.
    a, b = record(1), record(2)
    checker = FrameChecker()
    checker.feed(a[: len(a) // 2] + b + record(3) + record(4) * 3)
    assert checker.violations or checker.count < 6


def test_masked_and_control_frames_are_violations() -> None:
    checker = FrameChecker()
    checker.feed(wsframes.client_frame(b'{"stream":"x","seq":1}'))
    assert checker.violations == ["masked frame at byte 0"]
    ping = FrameChecker()
    ping.feed(wsframes.server_frame(b"", wsframes.OP_PING) + record(1))
    assert ping.violations == ["unexpected frame header byte 0x89"]
    assert ping.count == 1


def test_close_ends_the_stream() -> None:
    checker = FrameChecker()
    checker.feed(record(1) + wsframes.server_frame(struct.pack("!H", 1000), wsframes.OP_CLOSE))
    assert checker.closed
    assert checker.count == 1


def test_long_frames_and_latency_samples() -> None:
    padding = "x" * 70_000
    payload = (
        f'{{"type":"trade","pad":"{padding}","exchange_time":"1000000000000000000",'
        f'"stream":"s","seq":1}}'
    ).encode()
    samples: array[int] = array("q")
    checker = FrameChecker()
    frame = wsframes.server_frame(payload) + record(2, "s", 1_000_000_000_000_000_500)
    assert checker.feed(frame[:100], 1_000_000_000_000_001_000, samples) == 0
    assert checker.feed(frame[100:], 1_000_000_000_000_001_000, samples) == 2
    assert list(samples) == [1000, 500]
    assert checker.violations == []


def test_the_gateways_initial_state_then_live_records_from_the_head() -> None:
    subscribed = wsframes.server_frame(
        b'{"type":"subscribed","id":1,"streams":[{"stream":"trades.BTCUSD","epoch":"1",'
        b'"seq":10}],"patterns":[]}'
    )
    checker = FrameChecker()
    # Initial state: the feed's status (seq 1) and the last trade (seq 10); then live from 11.
    checker.feed(subscribed + record(1) + record(10) + record(11) + record(12))
    assert checker.violations == []
    assert checker.count == 4
    late = FrameChecker()
    late.feed(subscribed + record(10) + record(12))  # live must start at head + 1
    assert late.violations == ["trades.BTCUSD: seq 12 after 10"]
    unordered = FrameChecker()
    unordered.feed(subscribed + record(9) + record(3) + record(11))
    assert unordered.violations == ["trades.BTCUSD: catch-up seq 3 out of order"]


def _streaming_subscriber() -> tuple[subscribers.Shared, subscribers.Subscriber]:
    shared = subscribers.Shared()
    sub = subscribers.Subscriber(shared, "127.0.0.1", 1, "/", None)
    sub.streaming = True  # past the handshake
    return shared, sub


def _receive(shared: subscribers.Shared, sub: subscribers.Subscriber, chunk: bytes) -> None:
    shared.buffer[: len(chunk)] = chunk
    sub.buffer_updated(len(chunk))


def test_latency_mode_checks_later_in_arrival_order_and_counts_only_then() -> None:
    async def main() -> None:
        shared, sub = _streaming_subscriber()
        shared.latency_on = True
        first = record(1, stamp=STAMP)
        _receive(shared, sub, first[:9])  # a frame torn across two reads
        _receive(shared, sub, first[9:] + record(2, stamp=STAMP + 10))
        _receive(shared, sub, record(4, stamp=STAMP + 20))  # 3 is missing
        assert shared.count == 0 and list(shared.samples) == []  # kept, not checked yet
        sub.check_deferred()
        assert shared.count == 3
        assert len(shared.samples) == 3 and all(s > 0 for s in shared.samples)
        assert shared.violations == ["trades.BTCUSD: seq 4 after 2"]
        assert shared.deferred_bytes == 0 and sub.deferred == []

    asyncio.run(main())


def test_over_the_limit_a_read_is_checked_at_once_after_what_was_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        shared, sub = _streaming_subscriber()
        shared.latency_on = True
        monkeypatch.setattr(subscribers, "DEFER_LIMIT", len(record(1)) + 1)
        _receive(shared, sub, record(1))
        _receive(shared, sub, record(2))  # still under the limit when it arrived: kept
        assert shared.count == 0
        _receive(shared, sub, record(3))  # over it: everything checked, in order
        assert shared.count == 3 and shared.violations == []
        assert shared.deferred_bytes == 0
        shared.latency_on = False
        _receive(shared, sub, record(5))  # outside latency mode: checked on arrival
        assert shared.count == 4
        assert shared.violations == ["trades.BTCUSD: seq 5 after 3"]

    asyncio.run(main())

"""The bench subscribers' frame and seq checks (``bench.verify``): a benchmark that counts
what it cannot verify would count torn frames and lost records as deliveries."""

from __future__ import annotations

import struct
from array import array

from bench import wsframes
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

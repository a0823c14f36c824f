from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.retry.backoff import Backoff

initials = st.floats(min_value=0.001, max_value=100.0, allow_nan=False)
factors = st.floats(min_value=1.0, max_value=1000.0, allow_nan=False)
multipliers = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@given(initials, factors, multipliers, seeds, st.integers(min_value=1, max_value=200))
def test_every_delay_is_within_floor_and_cap(
    initial: float, factor: float, multiplier: float, seed: int, n: int
) -> None:
    maximum = initial * factor
    b = Backoff(initial, maximum, multiplier=multiplier, rng=random.Random(seed))
    for _ in range(n):
        ceiling = b.ceiling()
        delay = b.next_delay()
        assert initial <= delay <= maximum
        assert delay <= ceiling


@given(initials, factors, multipliers, st.integers(min_value=0, max_value=5000))
def test_ceiling_grows_monotonically_up_to_the_cap(
    initial: float, factor: float, multiplier: float, n: int
) -> None:
    maximum = initial * factor
    b = Backoff(initial, maximum, multiplier=multiplier)
    assert b.ceiling(n) <= b.ceiling(n + 1) <= maximum
    assert b.ceiling(n) >= initial


def test_first_retry_is_jittered_above_the_floor() -> None:
    b = Backoff(1.0, 60.0, rng=random.Random(7))
    firsts = []
    for _ in range(200):
        b.reset()
        firsts.append(b.next_delay())
    assert min(firsts) >= 1.0
    assert max(firsts) <= 2.0
    # Jittered, not a constant: feeds dropped together must not retry in lockstep.
    assert max(firsts) - min(firsts) > 0.5


def test_ceiling_doubles_then_caps() -> None:
    b = Backoff(1.0, 60.0)
    assert [b.ceiling(n) for n in range(8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_delays_grow_on_a_failure_streak_and_reach_the_cap() -> None:
    b = Backoff(1.0, 60.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(40)]
    assert b.failures == 40
    # Full jitter is noisy, so compare averages of windows, not single draws.
    assert sum(delays[:3]) / 3 < sum(delays[20:]) / 20
    assert max(delays) <= 60.0
    assert max(delays[20:]) > 30.0


def test_huge_streak_does_not_overflow() -> None:
    b = Backoff(1.0, 60.0, rng=random.Random(3))
    assert b.ceiling(10**6) == 60.0
    b._failures = 10**6
    assert 1.0 <= b.next_delay() <= 60.0


def test_multiplier_one_is_constant_ceiling() -> None:
    b = Backoff(0.5, 10.0, multiplier=1.0, rng=random.Random(0))
    assert {b.next_delay() for _ in range(20)} == {0.5}


def test_only_failures_grow_the_streak() -> None:
    b = Backoff(1.0, 60.0, rng=random.Random(2))
    for _ in range(5):
        b.next_delay()
    # Accepted but never delivered anything (however long it lived): a failure.
    assert not b.reset_unless_failed(delivered=False)
    assert b.failures == 5
    # Delivered data, however briefly: no failure, reconnect at once.
    assert b.reset_unless_failed(delivered=True)
    assert b.failures == 0
    for _ in range(3):
        b.next_delay()
    # The server's 1001 "going away" (a deploy on its side): no failure either.
    assert b.reset_unless_failed(delivered=False, going_away=True)
    assert b.failures == 0
    assert 1.0 <= b.next_delay() <= 2.0


def test_the_stricter_rule_resets_only_after_a_healthy_connection() -> None:
    # (the subscriber client's rule: gateway/client/driver.py)
    b = Backoff(1.0, 60.0, healthy_after=10.0, rng=random.Random(2))
    for _ in range(5):
        b.next_delay()
    assert not b.connection_ended(0.5, received_data=True)
    assert not b.connection_ended(3600.0, received_data=False)
    assert b.failures == 5
    assert b.connection_ended(10.0, received_data=True)
    assert b.failures == 0


@given(seeds)
def test_same_seed_same_delays(seed: int) -> None:
    a = Backoff(1.0, 60.0, rng=random.Random(seed))
    b = Backoff(1.0, 60.0, rng=random.Random(seed))
    assert [a.next_delay() for _ in range(10)] == [b.next_delay() for _ in range(10)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0.0}, "initial must be > 0"),
        ({"initial": -1.0}, "initial must be > 0"),
        ({"initial": float("nan")}, "initial must be > 0"),
        ({"initial": 5.0, "maximum": 1.0}, "must be >= initial"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"healthy_after": -1.0}, "healthy_after must be >= 0"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]

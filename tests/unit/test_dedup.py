from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest.dedup import RecentIds


def test_duplicates_are_reported() -> None:
    ids = RecentIds(4)
    assert ids.add("6AJVAX7BTCH8")
    assert not ids.add("6AJVAX7BTCH8")
    assert "6AJVAX7BTCH8" in ids and len(ids) == 1


def test_oldest_is_forgotten_first() -> None:
    ids = RecentIds(3)
    for key in "abc":
        assert ids.add(key)
    assert ids.add("d")  # evicts "a"
    assert "a" not in ids and all(k in ids for k in "bcd")
    assert not ids.add("b")  # a repeat does not refresh or evict
    assert ids.add("a")  # forgotten, so new again; evicts "b"
    assert "b" not in ids and len(ids) == 3


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RecentIds(0)


@given(st.integers(1, 8), st.lists(st.sampled_from("abcdefghijkl"), max_size=300))
def test_matches_a_fifo_window_model(capacity: int, keys: list[str]) -> None:
    ids = RecentIds(capacity)
    window: deque[str] = deque()
    for key in keys:
        expected_new = key not in window
        assert ids.add(key) is expected_new
        if expected_new:
            window.append(key)
            if len(window) > capacity:
                window.popleft()
        assert len(ids) == len(window) <= capacity
        assert all(k in ids for k in window)

"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from trio.testing import MockClock


@pytest.fixture
def slow_autojump() -> MockClock:
    # jumps only after 50 ms of real idleness, so loopback I/O always completes first
    return MockClock(autojump_threshold=0.05)

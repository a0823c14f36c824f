"""The soak's leak figures: what grows with time, not with the number of connections."""

from __future__ import annotations

import pytest

from bench.soak_report import _trend


def test_fds_that_follow_the_connections_are_not_a_leak() -> None:
    # 150 or 300 subscribers in waves, 2 fds each, and 0.01 fd/s that grows with time alone.
    conns = [(i * 5.0, 300 if (i // 20) % 2 else 150) for i in range(200)]
    points = [(t, 10 + 2 * c + 0.01 * t) for t, c in conns]
    plain = _trend(points, 0.25)
    fitted = _trend(points, 0.25, conns)
    assert fitted["per_connection"] == pytest.approx(2.0)
    assert fitted["leak_slope_per_hour"] == pytest.approx(36.0)
    # 600 s between the mean times of the first and the last fifth after the warm-up
    assert fitted["leak_growth"] == pytest.approx(0.01 * 600)
    assert plain["slope_per_hour"] > 300  # the waves alone would look like a leak


def test_constant_connections_fall_back_to_the_plain_slope() -> None:
    points = [(i * 5.0, 100.0 + i) for i in range(40)]
    trend = _trend(points, 0.0, [(t, 300) for t, _ in points])
    assert "per_connection" not in trend
    assert trend["slope_per_hour"] == pytest.approx(720.0)

"""The replica's lag, from the primary's WAL positions over time (jobq.replica.LagClock)."""

from __future__ import annotations

import pytest

from jobq.replica import LagClock


def test_lag_is_the_age_of_the_oldest_position_not_replayed() -> None:
    clock = LagClock()
    assert clock.observe(10.0, primary=100, replayed=100) == 0.0
    assert clock.observe(11.0, primary=200, replayed=150) == 0.0  # seen just now
    assert clock.observe(12.0, primary=300, replayed=150) == pytest.approx(1.0)
    assert clock.observe(13.5, primary=300, replayed=250) == pytest.approx(1.5)  # 300 at 12.0
    assert clock.observe(14.0, primary=300, replayed=300) == 0.0

"""Read-replica routing's pure parts: the lag clock, and which settings make sense."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobq import JobQueue
from jobq.config import Settings
from jobq.errors import ConfigurationError
from jobq.replica import LagClock


def test_lag_is_the_age_of_the_oldest_position_not_replayed() -> None:
    clock = LagClock()
    assert clock.observe(10.0, primary=100, replayed=100) == 0.0
    assert clock.observe(11.0, primary=200, replayed=150) == 0.0  # seen just now
    assert clock.observe(12.0, primary=300, replayed=150) == pytest.approx(1.0)
    assert clock.observe(13.5, primary=300, replayed=250) == pytest.approx(1.5)  # 300 at 12.0
    assert clock.observe(14.0, primary=300, replayed=300) == 0.0


def test_a_read_replica_must_be_postgres() -> None:
    with pytest.raises(ValidationError, match="read_database_url"):
        Settings(read_database_url="sqlite:///replica.db")


def test_a_read_replica_needs_a_postgres_primary(tmp_path: Path) -> None:
    settings = Settings(read_database_url="postgresql://replica/db")
    jq = JobQueue(f"sqlite:///{tmp_path / 'jobq.db'}", settings=settings)
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        _ = jq.read_router

"""SQLite has no caller's transaction to join: ``connection=`` is refused, naming PostgreSQL."""

from __future__ import annotations

import pytest

from jobq import JobQueue
from jobq.errors import UnsupportedFeatureError


async def test_sqlite_refuses_a_callers_transaction(sqlite_url: str) -> None:
    jq = JobQueue(sqlite_url)
    try:
        with pytest.raises(UnsupportedFeatureError, match="PostgreSQL"):
            jq.enqueue_sync("k", connection=object())
        with pytest.raises(UnsupportedFeatureError, match="PostgreSQL"):
            jq.enqueue_many_sync([], connection=object())  # even with nothing to enqueue
        with pytest.raises(UnsupportedFeatureError, match="PostgreSQL"):
            await jq.enqueue_many([], connection=object())
    finally:
        await jq.close()

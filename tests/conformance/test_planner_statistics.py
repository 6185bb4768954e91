"""PostgreSQL plans the claim from the jobs table's statistics; a backlog loaded since the
last ANALYZE must not be claimed by sorting every queued row (the 1,000,000-job drain ran at
a tenth of its speed for its first 30 seconds that way)."""

from __future__ import annotations

from typing import Any

import psycopg

from jobq.storage import connect
from jobq.storage.base import NewJob
from jobq.storage.sqlfiles import load_queries
from tests.waiting import eventually


def claim_plan(url: str) -> str:
    query = load_queries("postgres")["claim_batch_any_queue"]
    with psycopg.connect(url, autocommit=True) as conn:
        rows: list[Any] = conn.execute(
            "EXPLAIN " + query, {"limit": 1000, "worker_id": "planner-test"}
        ).fetchall()
    return "\n".join(row[0] for row in rows)


async def test_a_backlog_loaded_since_the_last_analyze_is_claimed_through_the_index(
    pg_url: str,
) -> None:
    driver = connect(pg_url)
    try:
        await driver.enqueue_many([NewJob(kind="noop") for _ in range(20_000)])
        before = claim_plan(pg_url)
        # The plan a table gets while its statistics still say "small": sort them all.
        assert "Sort" in before, before
        # Statistics reach pg_stat_user_tables within about a second of the commit.
        await eventually(driver.refresh_statistics, what="the stale statistics to be seen")
        after = claim_plan(pg_url)
        assert "Sort" not in after and "jobq_jobs_claim_any_queue" in after, after
        assert not await driver.refresh_statistics()  # fresh now: nothing to do
    finally:
        await driver.close()


async def test_a_small_table_is_left_to_autovacuum(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO jobq_jobs (kind) SELECT 'noop' FROM generate_series(1, 50)")
        conn.execute("SELECT pg_stat_force_next_flush()")  # counted now, not in 10 s

    async def inserts_counted() -> bool:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'jobq_jobs'"
            ).fetchone()
        return row is not None and row[0] >= 50

    await eventually(inserts_counted, what="the inserts to reach the statistics views")
    driver = connect(pg_url)
    try:
        assert not await driver.refresh_statistics()
    finally:
        await driver.close()

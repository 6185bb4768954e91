"""Claims must walk the claim index, never sort the backlog. PostgreSQL plans the claim from
the jobs table's statistics: a backlog loaded since the last ANALYZE must not be claimed by
sorting every queued row (the 1,000,000-job drain ran at a tenth of its speed for its first
30 seconds that way)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobq.storage import connect
from jobq.storage.base import NewJob
from jobq.storage.sqlfiles import load_queries


@pytest.fixture
def pg_url(pg_url: str) -> str:
    """The test database, with autovacuum kept off the jobs table so that the statistics
    these tests look at are the ones they made (the CI server may run autovacuum)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobq_jobs SET (autovacuum_enabled = false)")
    return pg_url


def claim_plan(url: str) -> str:
    query = load_queries("postgres")["claim_batch_any_queue"]
    with psycopg.connect(url, autocommit=True) as conn:
        rows: list[Any] = conn.execute(
            "EXPLAIN " + query, {"limit": 1000, "worker_id": "planner-test", "commit": None}
        ).fetchall()
    return "\n".join(row[0] for row in rows)


def waiting_estimate(url: str) -> float:
    query = "EXPLAIN (FORMAT JSON) SELECT 1 FROM jobq_jobs WHERE status IN ('queued', 'retrying')"
    with psycopg.connect(url, autocommit=True) as conn:
        row: Any = conn.execute(query).fetchone()
    return float(row[0][0]["Plan"]["Plan Rows"])


async def test_a_backlog_loaded_since_the_last_analyze_is_claimed_through_the_index(
    pg_url: str,
) -> None:
    driver = connect(pg_url)
    try:
        await driver.enqueue_many([NewJob(kind="noop") for _ in range(20_000)])
        before = claim_plan(pg_url)
        # The plan a never-analyzed table gets: sort every waiting job.
        assert "Sort" in before, before
        assert await driver.refresh_statistics()
        after = claim_plan(pg_url)
        assert "Sort" not in after and "jobq_jobs_claim_any_queue" in after, after
        assert not await driver.refresh_statistics()  # fresh now: nothing to do
    finally:
        await driver.close()


async def test_statistics_from_an_idle_queue_are_refreshed_when_a_backlog_arrives(
    pg_url: str,
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobq_jobs (kind, status, finished_at)"
            " SELECT 'noop', 'succeeded', now() FROM generate_series(1, 5000)"
        )
        conn.execute("ANALYZE jobq_jobs")  # statistics of a queue with nothing waiting
    driver = connect(pg_url)
    try:
        await driver.enqueue_many([NewJob(kind="noop") for _ in range(5000)])
        assert waiting_estimate(pg_url) < 100  # the statistics say none wait
        assert await driver.refresh_statistics()
        assert waiting_estimate(pg_url) > 4000
    finally:
        await driver.close()


async def test_a_short_queue_is_left_alone(pg_url: str) -> None:
    driver = connect(pg_url)
    try:
        await driver.enqueue_many([NewJob(kind="noop") for _ in range(500)])
        assert not await driver.refresh_statistics()  # any plan is fast for 500 jobs
    finally:
        await driver.close()


# The batch statements that name their jobs by id must reach them through the primary key:
# a status-partial index holds an entry for every job that has ever been in that status
# until a VACUUM, and a bitmap scan of it (which never marks those entries dead) grew with
# every job a worker had run (see complete_many in queries.sql).
BY_ID_STATEMENTS = {
    "complete_many": {"ids": "{1,2}", "attempts": "{1,1}", "results": None},
    "fail_many": {
        "ids": "{1,2}",
        "attempts": "{1,1}",
        "errors": "{a,b}",
        "tracebacks": "{a,b}",
        "retry_in_s": "{1,1}",
    },
    "claim_ids": {"ids": "{1,2}", "worker_id": "w", "commit": "off"},
}


@pytest.mark.parametrize("query_name", sorted(BY_ID_STATEMENTS))
def test_batches_by_id_never_read_a_status_index(pg_url: str, query_name: str) -> None:
    query = load_queries("postgres")[query_name]
    with psycopg.connect(pg_url) as conn:
        # Many finished jobs, few running, none waiting: statistics that make the status
        # indexes look like the cheapest way to the rows.
        conn.execute(
            "INSERT INTO jobq_jobs (kind, status, attempt, locked_by, finished_at)"
            " SELECT 'noop', 'succeeded', 1, 'w', now() FROM generate_series(1, 20000)"
        )
        conn.execute(
            "INSERT INTO jobq_jobs (kind, status, attempt, locked_by)"
            " SELECT 'noop', 'running', 1, 'w' FROM generate_series(1, 50)"
        )
        conn.execute("ANALYZE jobq_jobs")
        # Without nested loops, the cheapest way to the few rows a status guard selects would
        # be that status's partial index, if the guard could use it.
        conn.execute("SET LOCAL enable_nestloop = off")
        rows: list[Any] = conn.execute("EXPLAIN " + query, BY_ID_STATEMENTS[query_name]).fetchall()
        conn.rollback()
    plan = "\n".join(row[0] for row in rows)
    assert "jobq_jobs_pkey" in plan, plan
    assert "jobq_jobs_running_by_worker" not in plan, plan
    assert "jobq_jobs_claim_" not in plan and "jobq_jobs_rare_status" not in plan, plan

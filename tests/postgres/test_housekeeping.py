"""The maintenance leader's upkeep of the PostgreSQL jobs table: retention that never deletes
a job requeued meanwhile (row locks), and a VACUUM where nothing else reclaims the dead row
versions every claim would walk past."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from jobq import JobQueue, JobStatus
from jobq.storage import connect
from jobq.storage.base import ClaimParams, Failure, NewJob
from jobq.storage.sqlfiles import load_queries

from ..conformance.test_housekeeping import finish_all
from ..conformance.test_worker import fast_settings
from ..waiting import eventually


async def test_retention_leaves_alone_a_job_requeued_while_it_runs(pg_url: str) -> None:
    # The purge picks its ids first, then deletes them; a dead-letter job requeued in between
    # must be re-checked, not deleted as the failed job it was.
    driver = connect(pg_url)
    try:
        (job,) = await driver.enqueue_many([NewJob(kind="k", max_attempts=1)])
        (claimed,) = await driver.claim_batch(ClaimParams("w", limit=1))
        await driver.fail_many([Failure(job.id, claimed.attempt, "boom", None, None)])
        requeue = load_queries("postgres")["requeue"]
        async with await psycopg.AsyncConnection.connect(pg_url) as requeuer:
            await requeuer.execute(requeue, {"ids": [job.id]})  # row locked, not committed
            purge = asyncio.create_task(driver.purge_finished(JobStatus.FAILED, 0, 100))
            await eventually(lambda: waiting_on_a_lock(pg_url), what="the purge to wait")
            await requeuer.commit()
        assert await purge == 0
        assert (await driver.get(job.id)).status is JobStatus.QUEUED
    finally:
        await driver.close()


async def waiting_on_a_lock(url: str) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(query)).fetchone()
    return bool(row and row[0])


def without_autovacuum(url: str) -> str:
    """The test database with autovacuum kept off the jobs table (it may be on where the
    tests run), so that every VACUUM these tests see is jobq's."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobq_jobs SET (autovacuum_enabled = false)")
    return url


def make_dead_rows(url: str, count: int) -> None:
    """``count`` dead row versions in the jobs table, already in the server's statistics
    (pg_stat_force_next_flush: PostgreSQL 15 and later)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobq_jobs SET updated_at = now()"
            " WHERE id IN (SELECT id FROM jobq_jobs ORDER BY id LIMIT %s)",
            (count,),
        )
        conn.execute("SELECT pg_stat_force_next_flush()")  # flushed as this statement ends


def vacuum_state(url: str) -> tuple[int, int]:
    """(vacuums of the jobs table so far, dead row versions in it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row: Any = conn.execute(
            "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables"
            " WHERE relid = 'jobq_jobs'::regclass"
        ).fetchone()
    return int(row[0]), int(row[1])


async def test_the_jobs_table_is_vacuumed_once_enough_dead_rows_wait(pg_url: str) -> None:
    driver = connect(without_autovacuum(pg_url))
    try:
        await driver.enqueue_many([NewJob(kind="k") for _ in range(3000)])
        make_dead_rows(pg_url, 3000)
        vacuums, dead = vacuum_state(pg_url)
        assert dead >= 3000
        assert not await driver.vacuum_jobs(10_000)  # too few to be worth it
        assert vacuum_state(pg_url) == (vacuums, dead)
        assert await driver.vacuum_jobs(2000)
        assert vacuum_state(pg_url) == (vacuums + 1, 0)
    finally:
        await driver.close()


async def test_dead_rows_an_old_snapshot_keeps_do_not_make_every_round_vacuum(
    pg_url: str,
) -> None:
    driver = connect(without_autovacuum(pg_url))
    try:
        await driver.enqueue_many([NewJob(kind="k") for _ in range(3000)])
        async with await psycopg.AsyncConnection.connect(pg_url) as reader:
            await reader.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await reader.execute("SELECT count(*) FROM jobq_jobs")  # its snapshot, held open
            make_dead_rows(pg_url, 3000)
            vacuums, _ = vacuum_state(pg_url)
            assert await driver.vacuum_jobs(2000)
            assert vacuum_state(pg_url) == (vacuums + 1, 3000)  # the reader still sees them
            assert not await driver.vacuum_jobs(2000)  # nothing new since: not again
            make_dead_rows(pg_url, 2000)
            assert await driver.vacuum_jobs(2000)  # 2,000 more since the last one
        assert vacuum_state(pg_url)[0] == vacuums + 2
    finally:
        await driver.close()


async def test_the_leading_worker_vacuums_the_jobs_table(pg_url: str) -> None:
    jq = JobQueue(settings=fast_settings(without_autovacuum(pg_url), vacuum_dead_rows=1000))
    try:
        # Finished jobs: no claim, rescue or retention reads their rows, so no page pruning
        # takes dead versions off the count before the worker looks.
        await finish_all(jq.driver, 3000)
        make_dead_rows(pg_url, 3000)
        vacuums, _ = vacuum_state(pg_url)
        worker = jq.worker(concurrency=1)
        running = asyncio.create_task(worker.run())

        async def vacuumed() -> bool:
            count, dead = await asyncio.to_thread(vacuum_state, pg_url)
            return count > vacuums and dead == 0

        await eventually(vacuumed, what="the leader's VACUUM")
        worker.stop()
        await asyncio.wait_for(running, 30)
    finally:
        await jq.close()

"""The maintenance leader's upkeep of the jobs table: retention that keeps pace with any rate
of work, never deleting a job that came back to life, and a VACUUM where nothing else
reclaims the dead row versions every claim would walk past."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from jobq import JobQueue, JobStatus
from jobq.storage import connect
from jobq.storage.base import ClaimParams, Completion, Driver, Failure, NewJob
from jobq.storage.sqlfiles import load_queries
from jobq.worker import runtime

from ..waiting import eventually
from ..worker.processes import sql
from .test_worker import fast_settings


async def finish_all(driver: Driver, count: int) -> None:
    """``count`` jobs enqueued, claimed and completed."""
    await driver.enqueue_many([NewJob(kind="k") for _ in range(count)])
    while claimed := await driver.claim_batch(ClaimParams("w", limit=1000)):
        await driver.complete_many([Completion(j.id, j.attempt) for j in claimed])


async def test_one_round_of_retention_deletes_every_expired_job(db_url: str) -> None:
    # Many batches' worth: one round deletes them all, rather than leaving the rest to later
    # rounds, however fast jobs finish.
    jq = JobQueue(settings=fast_settings(db_url, retention=timedelta(0)))
    try:
        await finish_all(jq.driver, 12_000)
        worker = jq.worker(concurrency=1)
        worker.is_leader = True
        await worker._purge_expired()
        assert await jq.stats() == []
    finally:
        await jq.close()


async def test_a_round_of_retention_gives_every_status_its_turn(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "PURGE_BATCH", 10)
    monkeypatch.setattr(runtime, "PURGE_BATCHES_PER_STATUS", 3)
    settings = fast_settings(db_url, retention=timedelta(0), failed_retention=timedelta(0))
    jq = JobQueue(settings=settings)
    try:
        (doomed,) = await jq.driver.enqueue_many([NewJob(kind="k", max_attempts=1)])
        (claimed,) = await jq.driver.claim_batch(ClaimParams("w", limit=1))
        await jq.driver.fail_many([Failure(doomed.id, claimed.attempt, "boom", None, None)])
        await finish_all(jq.driver, 100)
        worker = jq.worker(concurrency=1)
        worker.is_leader = True
        # Succeeded jobs beyond a round's share: the round stops short of them, says so (the
        # next round comes at once), and still gets to the failed job.
        assert await worker._purge_expired() == (31, True)
        assert [(s.status, s.count) for s in await jq.stats()] == [(JobStatus.SUCCEEDED, 70)]
    finally:
        await jq.close()


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


def rows_in(url: str, table: str) -> int:
    [(count,)] = sql(url, f"SELECT count(*) FROM {table}")
    assert isinstance(count, int)
    return count


async def test_retention_takes_the_jobs_error_history_and_dependency_rows(db_url: str) -> None:
    driver = connect(db_url)
    try:
        (parent,) = await driver.enqueue_many([NewJob(kind="k")])
        (child,) = await driver.enqueue_many(
            [NewJob(kind="k", max_attempts=1, depends_on=[parent.id])]
        )
        assert rows_in(db_url, "jobq_job_dependencies") == 1
        (claimed,) = await driver.claim_batch(ClaimParams("w", limit=1))
        await driver.complete_many([Completion(claimed.id, claimed.attempt)])
        (claimed,) = await driver.claim_batch(ClaimParams("w", limit=1))  # the child, due now
        assert claimed.id == child.id
        await driver.fail_many([Failure(child.id, claimed.attempt, "boom", None, None)])
        assert rows_in(db_url, "jobq_job_errors") == 1
        assert await driver.purge_finished(JobStatus.FAILED, 0, 100) == 1
        assert await driver.purge_finished(JobStatus.SUCCEEDED, 0, 100) == 1
        assert await driver.stats() == []
        assert rows_in(db_url, "jobq_job_errors") == 0
        assert rows_in(db_url, "jobq_job_dependencies") == 0
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


async def test_sqlite_has_nothing_to_vacuum(sqlite_url: str) -> None:
    # A deleted or updated row's space is free at once there; its index entries go with it.
    driver = connect(sqlite_url)
    try:
        await finish_all(driver, 200)
        assert not await driver.vacuum_jobs(1)
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

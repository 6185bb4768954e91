"""The maintenance leader's retention on every driver: it keeps pace with any rate of work,
gives every status its turn, and takes a job's error history and dependency rows with it.
PostgreSQL's own upkeep (row locks, VACUUM) is in tests/postgres/test_housekeeping.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobq import JobQueue, JobStatus, maintenance
from jobq.storage import connect
from jobq.storage.base import ClaimParams, Completion, Driver, Failure, NewJob

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
        worker.maintenance.is_leader = True
        await worker.maintenance.purge_expired()
        assert await jq.stats() == []
    finally:
        await jq.close()


async def test_a_round_of_retention_gives_every_status_its_turn(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "PURGE_BATCH", 10)
    monkeypatch.setattr(maintenance, "PURGE_BATCHES_PER_STATUS", 3)
    settings = fast_settings(db_url, retention=timedelta(0), failed_retention=timedelta(0))
    jq = JobQueue(settings=settings)
    try:
        (doomed,) = await jq.driver.enqueue_many([NewJob(kind="k", max_attempts=1)])
        (claimed,) = await jq.driver.claim_batch(ClaimParams("w", limit=1))
        await jq.driver.fail_many([Failure(doomed.id, claimed.attempt, "boom", None, None)])
        await finish_all(jq.driver, 100)
        worker = jq.worker(concurrency=1)
        worker.maintenance.is_leader = True
        # Succeeded jobs beyond a round's share: the round stops short of them, says so (the
        # next round comes at once), and still gets to the failed job.
        assert await worker.maintenance.purge_expired() == (31, True)
        assert [(s.status, s.count) for s in await jq.stats()] == [(JobStatus.SUCCEEDED, 70)]
    finally:
        await jq.close()


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


async def test_the_maintenance_leader_expires_idempotency_keys(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any process may lead (a worker, or an API without workers): expiry runs wherever the
    # lease is held, never in every API process on its own.
    monkeypatch.setattr(maintenance, "IDEMPOTENCY_SWEEP_EVERY_S", 0.01)
    jq = JobQueue(settings=fast_settings(db_url, idempotency_ttl_s=0.001))
    keeper = jq.maintenance()
    try:
        (job,) = await jq.enqueue_many([jq.new_job("k", idempotency_key="once")])
        await keeper.round()
        assert keeper.is_leader

        async def key_forgotten() -> bool:
            return await jq.find_by_idempotency_key("once") is None

        await eventually(key_forgotten, what="the expired key cleared")
        assert (await jq.get(job.id)).idempotency_key is None  # the job itself stays
    finally:
        await keeper.stop()
        await jq.close()

"""JobQueue, the one front door: what library callers learn is what HTTP clients learn."""

from __future__ import annotations

import pytest

from jobq import (
    EnqueueOutcome,
    InvalidTransitionError,
    JobNotFoundError,
    JobQueue,
    JobStatus,
    SchemaMissingError,
)
from jobq.access import Access
from jobq.storage.base import ListParams


async def test_submit_says_what_became_of_each_job(jq: JobQueue) -> None:
    first = jq.new_job("k", {"n": 1}, idempotency_key="order-1")
    held = jq.new_job("k", {"n": 2}, unique_key="refresh")
    (a, b) = await jq.submit([first, held])
    assert (a.outcome, b.outcome) == (EnqueueOutcome.CREATED, EnqueueOutcome.CREATED)
    again = await jq.submit(
        [
            jq.new_job("k", {"n": 1}, idempotency_key="order-1"),  # the same job again
            jq.new_job("k", {"n": 9}, idempotency_key="order-1"),  # another job, same key
            jq.new_job("k", {"n": 3}, unique_key="refresh"),  # the key's holder is active
            jq.new_job("k", {"n": 4}),
        ]
    )
    assert [e.outcome for e in again] == [
        EnqueueOutcome.REPLAYED,
        EnqueueOutcome.KEY_REUSED,
        EnqueueOutcome.UNIQUE_KEY_HELD,
        EnqueueOutcome.CREATED,
    ]
    assert [e.job.id for e in again[:3]] == [a.job.id, a.job.id, b.job.id]
    assert [e.created for e in again] == [False, False, False, True]


async def test_two_requests_of_one_batch_with_one_key_create_one_job(jq: JobQueue) -> None:
    twice = [jq.new_job("k", {"n": 1}, idempotency_key="k1") for _ in range(2)]
    first, second = await jq.submit(twice)
    assert first.outcome is EnqueueOutcome.CREATED
    assert second.outcome is EnqueueOutcome.REPLAYED
    assert first.job.id == second.job.id


async def test_retry_is_for_failed_or_cancelled_jobs(jq: JobQueue) -> None:
    job = await jq.enqueue("k")
    with pytest.raises(InvalidTransitionError, match="only failed or cancelled"):
        await jq.retry(job.id)
    await jq.cancel(job.id)
    assert (await jq.retry(job.id)).status == "queued"
    with pytest.raises(JobNotFoundError):
        await jq.retry(job.id + 1000)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
async def test_a_database_never_migrated_says_to_run_migrate(
    dialect: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{'pg' if dialect == 'postgres' else 'sqlite'}_url_unmigrated")
    jq = JobQueue(url)
    try:
        with pytest.raises(SchemaMissingError, match=r"run `jobq migrate`.*jq\.migrate\(\)"):
            await jq.enqueue("k")
        with pytest.raises(SchemaMissingError):
            await jq.find(1)
        await jq.migrate()
        assert (await jq.enqueue("k")).id == 1
    finally:
        await jq.close()


async def test_an_access_keeps_a_tenant_to_its_own_jobs(jq: JobQueue) -> None:
    """Every managing method that takes an ``access`` leaves other tenants' jobs alone and
    answers as if they did not exist; the dashboard relies on it for tenant-bound keys."""
    acme = Access(tenant="acme", scopes=frozenset({"jobs:manage"}))
    ours, theirs = await jq.enqueue_many(
        [jq.new_job("nobody-runs-this", {}, tenant=t, max_attempts=1) for t in ("acme", "other")]
    )
    await jq.run_worker(burst=True)  # an unknown kind fails at once: two dead letters
    assert {(await jq.get(j.id)).status for j in (ours, theirs)} == {JobStatus.FAILED}

    assert (await jq.get(ours.id, access=acme)).id == ours.id
    with pytest.raises(JobNotFoundError):
        await jq.get(theirs.id, access=acme)
    assert await jq.find(theirs.id, access=acme) is None
    listed = await jq.list_jobs(ListParams(statuses=[JobStatus.FAILED]), access=acme)
    assert [j.id for j in listed] == [ours.id]

    assert await jq.requeue([ours.id, theirs.id], access=acme) == [ours.id]
    assert (await jq.get(theirs.id)).status is JobStatus.FAILED
    await jq.cancel(ours.id)
    await jq.requeue([ours.id])  # failed again below, by the same unknown kind
    await jq.run_worker(burst=True)
    assert await jq.discard([ours.id, theirs.id], access=acme) == [ours.id]
    assert await jq.find(ours.id) is None
    assert (await jq.get(theirs.id)).status is JobStatus.FAILED

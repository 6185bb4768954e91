"""Unique jobs, dependencies, limits, tenant fairness and quotas, on every driver."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from jobq import JobQueue
from jobq.config import Settings
from jobq.errors import InvalidJobError, TenantQuotaExceeded
from jobq.model import JobStatus
from jobq.storage import connect
from jobq.storage.base import (
    ClaimLimits,
    ClaimParams,
    Completion,
    Driver,
    Failure,
    ListParams,
    NewJob,
    RateLimit,
)


async def status_of(driver: Driver, job_id: int) -> JobStatus:
    job = await driver.get(job_id)
    assert job is not None
    return job.status


async def claim(driver: Driver, limit: int, **options: object) -> list[int]:
    jobs = await driver.claim_batch(ClaimParams("w", limit, **options))  # type: ignore[arg-type]
    return [j.id for j in jobs]


# ---------------------------------------------------------------- unique jobs


async def test_a_unique_key_held_by_an_active_job_returns_that_job(driver: Driver) -> None:
    (first,) = await driver.enqueue_many([NewJob(kind="k", unique_key="report:7")])
    again, other = await driver.enqueue_many(
        [NewJob(kind="k", unique_key="report:7"), NewJob(kind="k", unique_key="report:8")]
    )
    assert again.id == first.id and other.id != first.id
    # Still held while it runs; released once it has succeeded.
    assert await claim(driver, 1) == [first.id]
    (while_running,) = await driver.enqueue_many([NewJob(kind="k", unique_key="report:7")])
    assert while_running.id == first.id
    await driver.complete_many([Completion(first.id, 1)])
    (after,) = await driver.enqueue_many([NewJob(kind="k", unique_key="report:7")])
    assert after.id != first.id and after.status is JobStatus.QUEUED


async def test_unique_states_can_keep_the_key_after_success(driver: Driver) -> None:
    once = NewJob(kind="k", unique_key="once", unique_states=(JobStatus.SUCCEEDED,))
    (first,) = await driver.enqueue_many([once])
    await claim(driver, 1)
    await driver.complete_many([Completion(first.id, 1)])
    (again,) = await driver.enqueue_many([once])
    assert again.id == first.id and again.status is JobStatus.SUCCEEDED
    # A failure does not hold it: the next enqueue makes a new job.
    (second,) = await driver.enqueue_many([NewJob(kind="k", unique_key="f")])
    await claim(driver, 1)
    await driver.fail_many([Failure(second.id, 1, "boom")])
    (third,) = await driver.enqueue_many([NewJob(kind="k", unique_key="f")])
    assert third.id != second.id
    # ...and requeueing the failed one would make two holders: it stays failed.
    assert await driver.requeue([second.id]) == []
    assert await status_of(driver, second.id) is JobStatus.FAILED


async def test_fifty_concurrent_enqueues_with_one_key_make_one_job(db_url: str) -> None:
    # Separate drivers (separate connections, for SQLite separate writers) racing.
    drivers = [connect(db_url) for _ in range(5)]
    try:
        results = await asyncio.gather(
            *(
                drivers[i % 5].enqueue_many([NewJob(kind="k", unique_key="one", payload={"i": i})])
                for i in range(50)
            )
        )
        ids = {jobs[0].id for jobs in results}
        assert len(ids) == 1
        assert len(await drivers[0].list_jobs(ListParams())) == 1
    finally:
        for d in drivers:
            await d.close()


# ---------------------------------------------------------------- dependencies


async def test_a_dependent_waits_until_every_parent_succeeds(driver: Driver) -> None:
    a, b = await driver.enqueue_many([NewJob(kind="a"), NewJob(kind="b")])
    (child,) = await driver.enqueue_many([NewJob(kind="c", depends_on=(a.id, b.id))])
    assert child.status is JobStatus.WAITING and child.depends_on == [a.id, b.id]
    assert sorted(await claim(driver, 10)) == [a.id, b.id]  # the child is not claimable
    await driver.complete_many([Completion(a.id, 1)])
    assert await status_of(driver, child.id) is JobStatus.WAITING
    await driver.complete_many([Completion(b.id, 1)])
    assert await status_of(driver, child.id) is JobStatus.QUEUED
    assert await claim(driver, 10) == [child.id]


async def test_a_failed_parent_cancels_its_dependents_down_the_chain(driver: Driver) -> None:
    (parent,) = await driver.enqueue_many([NewJob(kind="p", max_attempts=1)])
    (child,) = await driver.enqueue_many([NewJob(kind="c", depends_on=(parent.id,))])
    (grandchild,) = await driver.enqueue_many([NewJob(kind="g", depends_on=(child.id,))])
    await claim(driver, 1)
    await driver.fail_many([Failure(parent.id, 1, "boom")])
    for job_id in (child.id, grandchild.id):
        job = await driver.get(job_id)
        assert job is not None and job.status is JobStatus.CANCELLED
    child_job, grandchild_job = await driver.get(child.id), await driver.get(grandchild.id)
    assert child_job is not None and child_job.last_error == f"dependency {parent.id} failed"
    assert grandchild_job is not None
    assert grandchild_job.last_error == f"dependency {child.id} cancelled"


async def test_dependents_of_finished_parents_start_settled(driver: Driver) -> None:
    done, doomed = await driver.enqueue_many([NewJob(kind="a"), NewJob(kind="b")])
    await claim(driver, 2)
    await driver.complete_many([Completion(done.id, 1)])
    await driver.cancel(doomed.id)  # running: a cancel request
    await driver.finish_cancelled(doomed.id, 1, "cancelled by request")
    ready, orphan = await driver.enqueue_many(
        [NewJob(kind="r", depends_on=(done.id,)), NewJob(kind="o", depends_on=(doomed.id,))]
    )
    assert ready.status is JobStatus.QUEUED
    assert orphan.status is JobStatus.CANCELLED
    assert orphan.last_error == f"dependency {doomed.id} cancelled"


async def test_cancelling_a_queued_parent_cancels_the_dependents(driver: Driver) -> None:
    (parent,) = await driver.enqueue_many([NewJob(kind="p")])
    (child,) = await driver.enqueue_many([NewJob(kind="c", depends_on=(parent.id,))])
    await driver.cancel(parent.id)
    assert await status_of(driver, child.id) is JobStatus.CANCELLED


async def test_depending_on_an_unknown_job_is_refused_and_inserts_nothing(
    driver: Driver,
) -> None:
    with pytest.raises(InvalidJobError, match="no job with id 999"):
        await driver.enqueue_many([NewJob(kind="ok"), NewJob(kind="c", depends_on=(999,))])
    assert await claim(driver, 10) == []


# ---------------------------------------------------------------- limits


async def test_a_kind_concurrency_limit_caps_claims_across_workers(driver: Driver) -> None:
    await driver.enqueue_many([NewJob(kind="slow") for _ in range(6)] + [NewJob(kind="free")])
    limits = ClaimLimits(max_running_by_kind={"slow": 2})
    first = await driver.claim_batch(ClaimParams("w1", 10, limits=limits))
    assert Counter(j.kind for j in first) == {"slow": 2, "free": 1}
    assert await driver.claim_batch(ClaimParams("w2", 10, limits=limits)) == []
    one_slow = next(j for j in first if j.kind == "slow")
    await driver.complete_many([Completion(one_slow.id, 1)])
    again = await driver.claim_batch(ClaimParams("w2", 10, limits=limits))
    assert [j.kind for j in again] == ["slow"]


async def test_a_queue_concurrency_limit_caps_the_queue(driver: Driver) -> None:
    await driver.enqueue_many([NewJob(kind="k", queue="narrow") for _ in range(5)])
    await driver.enqueue_many([NewJob(kind="k", queue="wide") for _ in range(5)])
    limits = ClaimLimits(max_running_by_queue={"narrow": 1})
    jobs = await driver.claim_batch(ClaimParams("w", 20, limits=limits))
    assert Counter(j.queue for j in jobs) == {"narrow": 1, "wide": 5}


async def test_a_rate_limit_caps_starts_in_the_window(driver: Driver) -> None:
    await driver.enqueue_many([NewJob(kind="api") for _ in range(10)])
    limits = ClaimLimits(rate_by_kind={"api": RateLimit(starts=3, per_s=3600)})
    first = await driver.claim_batch(ClaimParams("w", 10, limits=limits))
    await driver.complete_many([Completion(j.id, 1) for j in first])
    # Finished or not, three starts within the hour use the allowance up.
    assert len(first) == 3
    assert await driver.claim_batch(ClaimParams("w", 10, limits=limits)) == []


async def test_the_plain_claim_is_unchanged_when_no_limit_is_set(driver: Driver) -> None:
    await driver.enqueue_many([NewJob(kind="k", priority=p) for p in (1, 5, 3)])
    jobs = await driver.claim_batch(ClaimParams("w", 10, limits=ClaimLimits()))
    assert [j.priority for j in jobs] == [5, 3, 1]


# ---------------------------------------------------------------- tenants


async def test_fair_claims_finish_a_small_tenant_within_the_first_300(driver: Driver) -> None:
    """Tenant A has 10,000 jobs queued before B's 100: in plain order B would wait for all of
    A. Served round-robin, B's jobs are all among the first 300 claimed."""
    await driver.enqueue_many([NewJob(kind="k", tenant="A") for _ in range(10_000)])
    await driver.enqueue_many([NewJob(kind="k", tenant="B") for _ in range(100)])
    claimed: list[str | None] = []
    while claimed.count("B") < 100:
        jobs = await driver.claim_batch(ClaimParams("w", 10, fair_tenants=True))
        await driver.complete_many([Completion(j.id, 1) for j in jobs])
        claimed += [j.tenant for j in jobs]
    last_b = len(claimed) - claimed[::-1].index("B")
    print(f"\nB's last job was claim number {last_b}")
    assert last_b <= 300
    # Without fairness, the next claims are A's, oldest first.
    plain = await driver.claim_batch(ClaimParams("w", 10))
    assert {j.tenant for j in plain} == {"A"}


async def test_fair_claims_still_serve_jobs_without_a_tenant(driver: Driver) -> None:
    await driver.enqueue_many([NewJob(kind="k", tenant="t"), NewJob(kind="k")])
    jobs = await driver.claim_batch(ClaimParams("w", 5, fair_tenants=True))
    assert sorted(j.tenant or "" for j in jobs) == ["", "t"]


async def test_a_tenant_over_its_quota_is_refused(db_url: str) -> None:
    driver = connect(db_url, Settings(database_url=db_url, tenant_max_queued=3))
    try:
        await driver.enqueue_many([NewJob(kind="k", tenant="a") for _ in range(3)])
        with pytest.raises(TenantQuotaExceeded, match="'a'"):
            await driver.enqueue_many([NewJob(kind="k", tenant="a")])
        await driver.enqueue_many([NewJob(kind="k", tenant="b")])  # others are not affected
        await driver.claim_batch(ClaimParams("w", 1, queues=None))
        await driver.enqueue_many([NewJob(kind="k", tenant="a")])  # room again once one runs
    finally:
        await driver.close()


async def test_a_bad_tenant_deep_in_a_batch_under_a_quota_is_refused_as_bad(db_url: str) -> None:
    """The quota's check reads the batch's tenants before anything is stored, so they are
    checked first: a bad one is refused as such, not as a database error or a quota."""
    driver = connect(db_url, Settings(database_url=db_url, tenant_max_queued=1))
    try:
        batch = [NewJob(kind="k", tenant="a") for _ in range(150)]
        batch[120] = NewJob(kind="k", tenant="nul\x00here")
        with pytest.raises(InvalidJobError, match="tenant"):
            await driver.enqueue_many(batch)
        assert await driver.stats() == []
    finally:
        await driver.close()


@pytest.mark.parametrize("path", ["enqueue_many", "enqueue_many_ids", "enqueue_many_sync"])
@pytest.mark.parametrize("size", [1, 150])  # 150: above PostgreSQL's COPY threshold
async def test_every_insert_path_checks_the_tenant_quota(db_url: str, path: str, size: int) -> None:
    driver = connect(db_url, Settings(database_url=db_url, tenant_max_queued=size + 1))
    try:

        async def insert(jobs: list[NewJob]) -> int:
            if path == "enqueue_many_sync":
                return len(await asyncio.to_thread(driver.enqueue_many_sync, jobs))
            return len(await getattr(driver, path)(jobs))

        await driver.enqueue_many([NewJob(kind="k", tenant="a")])
        with pytest.raises(TenantQuotaExceeded, match="'a'"):
            await insert([NewJob(kind="k", tenant="a") for _ in range(size + 1)])
        assert await insert([NewJob(kind="k", tenant="a") for _ in range(size)]) == size
        assert sum(s.count for s in await driver.stats()) == size + 1  # nothing more
    finally:
        await driver.close()


async def test_a_chain_links_each_step_to_the_one_before(jq: JobQueue) -> None:
    """Each step's jobs depend on every job of the step before; a group is one step."""
    first, left, right, last = await jq.chain(
        NewJob(kind="fetch"),
        jq.group(NewJob(kind="resize", payload={"size": 64}), NewJob(kind="resize")),
        NewJob(kind="notify"),
    )
    assert first.depends_on == [] and first.status == JobStatus.QUEUED
    assert left.depends_on == right.depends_on == [first.id]
    assert sorted(last.depends_on) == sorted([left.id, right.id])
    assert {left.status, right.status, last.status} == {JobStatus.WAITING}


@pytest.mark.parametrize(
    "bad",
    [NewJob(kind="k", payload={"text": "nul\x00here"}), NewJob(kind="k", priority=5000)],
    ids=["payload", "priority"],
)
async def test_a_bad_step_refuses_the_chain_before_any_of_it_is_in(
    jq: JobQueue, bad: NewJob
) -> None:
    with pytest.raises(InvalidJobError):
        await jq.chain(NewJob(kind="first"), jq.group(NewJob(kind="second"), bad))
    assert await jq.list(limit=10) == []


async def test_a_chain_with_an_empty_step_is_refused(jq: JobQueue) -> None:
    """An empty step would link the next one to nothing, so it would not wait at all."""
    with pytest.raises(InvalidJobError, match="at least one job"):
        await jq.chain(NewJob(kind="first"), [], NewJob(kind="last"))
    assert await jq.list(limit=10) == []


async def test_an_empty_queue_no_attempts_or_a_bad_delay_is_refused(
    jq: JobQueue,
) -> None:
    with pytest.raises(InvalidJobError, match="queue"):
        await jq.enqueue("k", queue="")
    with pytest.raises(InvalidJobError, match="max_attempts"):
        await jq.enqueue("k", max_attempts=0)
    for delay in (float("nan"), float("inf"), -1.0):
        with pytest.raises(InvalidJobError, match="delay must be"):
            await jq.enqueue("k", delay=delay)
    with pytest.raises(InvalidJobError, match="past the year 9999"):
        await jq.enqueue("k", delay=1e12)
    assert await jq.list(limit=10) == []


async def test_progress_and_results_that_cannot_be_stored_are_refused_alike(
    driver: Driver,
) -> None:
    """A NUL, or what JSON cannot hold: PostgreSQL would fail on it with its own error where
    SQLite would store it; both refuse it, before writing."""
    [job] = await driver.enqueue_many([NewJob(kind="k")])
    for value, message in [("a\x00b", "U\\+0000"), ({1, 2}, "not JSON-serializable")]:
        with pytest.raises(InvalidJobError, match=message):
            await driver.set_progress(job.id, 0, {"percent": 1, "message": value})
        with pytest.raises(InvalidJobError, match=message):
            await driver.store_result(job.id, 0, {"value": value})

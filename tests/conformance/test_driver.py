"""One behaviour, every driver: the storage operations the queue is built on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobq.errors import InvalidJobError
from jobq.model import Job, JobStatus
from jobq.storage.base import (
    CancelOutcome,
    ClaimParams,
    Completion,
    Driver,
    Failure,
    ListParams,
    NewJob,
    WorkerRegistration,
)


async def enqueue(driver: Driver, *jobs: NewJob) -> list[int]:
    return [j.id for j in await driver.enqueue_many(jobs)]


async def test_enqueue_returns_jobs_in_request_order(driver: Driver) -> None:
    jobs = await driver.enqueue_many(
        [NewJob(kind=f"k{i}", payload={"i": i}, queue="q", priority=i) for i in range(5)]
    )
    assert [j.kind for j in jobs] == [f"k{i}" for i in range(5)]
    assert [j.payload for j in jobs] == [{"i": i} for i in range(5)]
    assert all(j.status is JobStatus.QUEUED and j.attempt == 0 for j in jobs)
    assert jobs == sorted(jobs, key=lambda j: j.id)
    stored = await driver.get(jobs[2].id)
    assert stored is not None
    assert (stored.kind, stored.queue, stored.priority, stored.payload) == ("k2", "q", 2, {"i": 2})


async def test_invalid_job_in_a_batch_inserts_nothing(driver: Driver) -> None:
    with pytest.raises(InvalidJobError, match="priority"):
        await driver.enqueue_many([NewJob(kind="ok"), NewJob(kind="bad", priority=5000)])
    with pytest.raises(InvalidJobError, match="kind"):
        await driver.enqueue_many([NewJob(kind="")])
    with pytest.raises(InvalidJobError, match="timezone"):
        await driver.enqueue_many([NewJob(kind="k", run_at=datetime(2030, 1, 1))])
    assert await driver.list_jobs(ListParams()) == []


async def test_idempotency_key_returns_the_existing_job(driver: Driver) -> None:
    first = await driver.enqueue_many([NewJob(kind="k", idempotency_key="abc")])
    again = await driver.enqueue_many(
        [NewJob(kind="k", idempotency_key="abc"), NewJob(kind="other")]
    )
    assert again[0].id == first[0].id
    assert again[1].id != first[0].id
    assert len(await driver.list_jobs(ListParams())) == 2


async def test_claim_order_is_priority_then_run_at_then_id(driver: Driver) -> None:
    now = datetime.now(UTC)
    ids = await enqueue(
        driver,
        NewJob(kind="low", priority=-5),
        NewJob(kind="old", run_at=now - timedelta(minutes=5)),
        NewJob(kind="high", priority=10),
        NewJob(kind="new"),
        NewJob(kind="also-high", priority=10),
    )
    claimed = await driver.claim_batch(ClaimParams("w", limit=10))
    assert [j.id for j in claimed] == [ids[2], ids[4], ids[1], ids[3], ids[0]]
    assert all(j.status is JobStatus.RUNNING and j.attempt == 1 for j in claimed)
    assert all(j.locked_by == "w" for j in claimed)


async def test_batch_claim_respects_limit_queue_and_run_at(driver: Driver) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await enqueue(driver, *[NewJob(kind="a", queue="a") for _ in range(5)])
    await enqueue(driver, NewJob(kind="b", queue="b"), NewJob(kind="a", queue="a", run_at=later))
    first = await driver.claim_batch(ClaimParams("w", limit=3, queues=["a"]))
    assert len(first) == 3 and {j.queue for j in first} == {"a"}
    rest = await driver.claim_batch(ClaimParams("w", limit=10, queues=["a"]))
    assert len(rest) == 2  # the delayed job is not due
    assert await driver.count_claimable(["a"]) == 0
    assert await driver.count_claimable(None) == 1
    assert [j.queue for j in await driver.claim_batch(ClaimParams("w", limit=10))] == ["b"]


async def test_a_claim_over_several_queues_takes_the_best_of_all_in_order(
    driver: Driver,
) -> None:
    """Priority, then run_at, then id, across the queues a worker serves; other queues and
    jobs not yet due are left alone."""
    later = datetime.now(UTC) + timedelta(hours=1)
    a = await enqueue(driver, *[NewJob(kind="k", queue="a", priority=p) for p in (0, 5, 1, 5)])
    b = await enqueue(driver, *[NewJob(kind="k", queue="b", priority=p) for p in (3, 0, 9)])
    await enqueue(
        driver,
        NewJob(kind="k", queue="c", priority=100),
        NewJob(kind="k", queue="a", priority=50, run_at=later),
    )
    first = await driver.claim_batch(ClaimParams("w", limit=4, queues=["a", "b", "a"]))
    assert [j.id for j in first] == [b[2], a[1], a[3], b[0]]
    rest = await driver.claim_batch(ClaimParams("w", limit=10, queues=["b", "a"]))
    assert [j.id for j in rest] == [a[2], a[0], b[1]]
    assert all(j.status is JobStatus.RUNNING and j.attempt == 1 for j in first + rest)
    assert await driver.count_claimable(["a", "b"]) == 0
    assert await driver.count_claimable(["c"]) == 1


async def test_concurrent_claimers_never_share_a_job(driver: Driver) -> None:
    await enqueue(driver, *[NewJob(kind="k") for _ in range(300)])

    async def claimer(name: str) -> list[int]:
        got: list[int] = []
        while batch := await driver.claim_batch(ClaimParams(name, limit=7)):
            got.extend(j.id for j in batch)
        return got

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    every = [job_id for ids in results for job_id in ids]
    assert len(every) == 300 and len(set(every)) == 300


async def test_completion_stores_result_and_is_guarded_by_attempt(driver: Driver) -> None:
    a, b = await enqueue(driver, NewJob(kind="a"), NewJob(kind="b"))
    await driver.claim_batch(ClaimParams("w", limit=2))
    changed = await driver.complete_many(
        [Completion(a, 1, {"answer": 42}), Completion(b, 7, None)]  # b: not its attempt
    )
    assert changed == [a]
    job_a, job_b = await driver.get(a), await driver.get(b)
    assert job_a is not None and job_b is not None
    assert job_a.status is JobStatus.SUCCEEDED and job_a.result == {"answer": 42}
    assert job_a.finished_at is not None
    assert job_b.status is JobStatus.RUNNING
    assert await driver.complete_many([Completion(a, 1, None)]) == []  # not twice


async def test_completions_store_every_result_exactly(driver: Driver) -> None:
    """One batch of completions whose results hold what array and JSON syntax treat
    specially (quotes, backslashes, braces, commas, the word NULL), beside jobs without one."""
    results: list[object] = [
        None,
        {"quote": 'say "hi"', "slash": "a\\b", "both": '\\"', "braces": "{a,b}"},
        "NULL",
        "",
        ["x", None, 1.5, {"nested": "}{,"}],
        None,
        "ünïcødé ✓ tab\there\nnew line",
        0,
        False,
    ]
    ids = await enqueue(driver, *(NewJob(kind="r") for _ in results))
    await driver.claim_batch(ClaimParams("w", limit=len(ids)))
    batch = [Completion(job_id, 1, result) for job_id, result in zip(ids, results, strict=True)]
    done = await driver.complete_many(batch[::-1])  # in any order: each row gets its own
    assert sorted(done) == sorted(ids)
    for job_id, result in zip(ids, results, strict=True):
        stored = await driver.get(job_id)
        assert stored is not None and stored.status is JobStatus.SUCCEEDED
        assert stored.result == result
    # A batch where no job returned anything stores no result at all.
    more = await enqueue(driver, NewJob(kind="r"), NewJob(kind="r"))
    await driver.claim_batch(ClaimParams("w", limit=2))
    assert sorted(await driver.complete_many([Completion(i, 1, None) for i in more])) == more
    assert [(await driver.get(i)).result for i in more] == [None, None]  # type: ignore[union-attr]


async def test_a_stale_attempt_beside_the_running_one_in_a_batch_is_ignored(
    driver: Driver,
) -> None:
    """One flush can hold two outcomes of a job: a stalled attempt's and the one that
    replaced it. Whatever the order, the running attempt's outcome is the one written."""
    [job_id] = await enqueue(driver, NewJob(kind="k", max_attempts=5))
    for attempt in (1, 2):
        await driver.claim_batch(ClaimParams("w", limit=1))
        if attempt == 1:  # due again at once: the next claim makes attempt 2
            await driver.fail_many([Failure(job_id, 1, "stalled", None, retry_in_s=0)])
    done = await driver.complete_many([Completion(job_id, 2, "new"), Completion(job_id, 1, "old")])
    assert done == [job_id]
    job = await driver.get(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.result == "new"
    [fresh] = await enqueue(driver, NewJob(kind="k", max_attempts=5))
    for attempt in (1, 2):
        await driver.claim_batch(ClaimParams("w", limit=1))
        if attempt == 1:
            await driver.fail_many([Failure(fresh, 1, "stalled", None, retry_in_s=0)])
    assert await driver.fail_many(
        [Failure(fresh, 2, "second", None), Failure(fresh, 1, "first", None)]
    ) == [fresh]
    failed = await driver.get(fresh)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.last_error == "second"


async def test_a_batch_of_failures_gives_each_job_its_own_outcome(driver: Driver) -> None:
    ids = await enqueue(driver, *(NewJob(kind="f", max_attempts=3) for _ in range(4)))
    await driver.claim_batch(ClaimParams("w", limit=4))
    failures = [
        Failure(ids[0], 1, "first", "tb-0", retry_in_s=None),
        Failure(ids[1], 1, "second", "tb-1", retry_in_s=60),
        Failure(ids[2], 2, "not its attempt", "tb-2", retry_in_s=None),
        Failure(ids[3], 1, "fourth", None, retry_in_s=None),
    ]
    changed = await driver.fail_many(failures[::-1])
    assert sorted(changed) == [ids[0], ids[1], ids[3]]
    expected = {
        ids[0]: (JobStatus.FAILED, "first", "tb-0"),
        ids[1]: (JobStatus.RETRYING, "second", "tb-1"),
        ids[3]: (JobStatus.FAILED, "fourth", None),
    }
    for job_id, (status, error, traceback) in expected.items():
        job = await driver.get(job_id)
        assert job is not None and job.status is status and job.last_error == error
        [recorded] = await driver.job_errors(job_id)
        assert (recorded.attempt, recorded.error, recorded.traceback) == (1, error, traceback)
    untouched = await driver.get(ids[2])
    assert untouched is not None and untouched.status is JobStatus.RUNNING
    assert await driver.job_errors(ids[2]) == []


async def test_failure_schedules_a_retry_and_records_the_error(driver: Driver) -> None:
    (job_id,) = await enqueue(driver, NewJob(kind="k", max_attempts=3))
    await driver.claim_batch(ClaimParams("w", limit=1))
    assert await driver.fail_many([Failure(job_id, 1, "boom", "Traceback...", 3600.0)]) == [job_id]
    job = await driver.get(job_id)
    assert job is not None
    assert job.status is JobStatus.RETRYING and job.last_error == "boom"
    assert job.run_at > datetime.now(UTC) + timedelta(minutes=59)
    assert await driver.claim_batch(ClaimParams("w", limit=1)) == []  # not due yet
    (error,) = await driver.job_errors(job_id)
    assert (error.attempt, error.error, error.traceback) == (1, "boom", "Traceback...")


async def test_retry_due_now_is_claimed_again_then_exhausts_to_failed(driver: Driver) -> None:
    (job_id,) = await enqueue(driver, NewJob(kind="k", max_attempts=2))
    (first,) = await driver.claim_batch(ClaimParams("w", limit=1))
    await driver.fail_many([Failure(job_id, first.attempt, "one", None, 0.0)])
    (second,) = await driver.claim_batch(ClaimParams("w", limit=1))
    assert second.id == job_id and second.attempt == 2
    await driver.fail_many([Failure(job_id, 2, "two", None, None)])
    job = await driver.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.finished_at is not None
    assert [e.error for e in await driver.job_errors(job_id)] == ["one", "two"]


async def test_requeue_resets_attempts_and_keeps_history(driver: Driver) -> None:
    (job_id,) = await enqueue(driver, NewJob(kind="k", max_attempts=1))
    await driver.claim_batch(ClaimParams("w", limit=1))
    await driver.fail_many([Failure(job_id, 1, "dead", None, None)])
    (other,) = await enqueue(driver, NewJob(kind="k"))
    assert await driver.requeue([job_id, other]) == [job_id]  # only failed/cancelled move
    job = await driver.get(job_id)
    assert job is not None and job.status is JobStatus.QUEUED and job.attempt == 0
    assert len(await driver.job_errors(job_id)) == 1
    claimed = await driver.claim_batch(ClaimParams("w", limit=2, queues=["default"]))
    assert [(j.id, j.attempt) for j in claimed] == [(other, 1), (job_id, 1)]  # by run_at


async def test_cancel_outcomes(driver: Driver) -> None:
    queued, running, done = await enqueue(driver, *[NewJob(kind=k) for k in "abc"])
    later = (await driver.enqueue_many([NewJob(kind="d")]))[0].id
    claimed = await driver.claim_batch(ClaimParams("w", limit=3))
    # Put "a" back in the queue so we have one queued, one running, one finished.
    by_kind = {j.kind: j for j in claimed}
    await driver.hand_back(by_kind["a"].id, by_kind["a"].attempt, "test")
    await driver.complete_many([Completion(done, by_kind["c"].attempt)])

    result = await driver.cancel(queued)
    assert result.outcome is CancelOutcome.CANCELLED
    assert result.job is not None and result.job.status is JobStatus.CANCELLED

    result = await driver.cancel(running)
    assert result.outcome is CancelOutcome.REQUESTED
    assert await driver.cancel_requested_among("w") == {running}
    assert await driver.finish_cancelled(running, by_kind["b"].attempt, "stopped on request")
    job = await driver.get(running)
    assert job is not None and job.status is JobStatus.CANCELLED

    assert (await driver.cancel(done)).outcome is CancelOutcome.TERMINAL
    assert (await driver.cancel(10**9)).outcome is CancelOutcome.NOT_FOUND
    assert (await driver.cancel(later)).outcome is CancelOutcome.CANCELLED


async def test_hand_back_does_not_count_the_attempt(driver: Driver) -> None:
    (job_id,) = await enqueue(driver, NewJob(kind="k"))
    (job,) = await driver.claim_batch(ClaimParams("w", limit=1))
    assert await driver.hand_back(job_id, job.attempt, "shutdown")
    again = await driver.get(job_id)
    assert again is not None and again.status is JobStatus.QUEUED and again.attempt == 0


async def test_rescue_of_a_dead_workers_jobs(driver: Driver) -> None:
    ids = await enqueue(driver, NewJob(kind="k"), NewJob(kind="k", max_attempts=1))
    await driver.register_worker(WorkerRegistration("ghost", "h", 1, None, 2))
    await driver.claim_batch(ClaimParams("ghost", limit=2))
    await driver.register_worker(WorkerRegistration("alive", "h", 2, None, 2))
    assert await driver.rescue_stale(lease_s=3600) == []  # ghost still counts as alive
    # A lease of 0 s: every heartbeat already lies in the past, so both workers count as dead.
    rescued = await driver.rescue_stale(lease_s=0)
    assert sorted(rescued) == ids
    first, second = await driver.get(ids[0]), await driver.get(ids[1])
    assert first is not None and second is not None
    assert first.status is JobStatus.RETRYING and second.status is JobStatus.FAILED
    assert "ghost" in (first.last_error or "")
    assert len(await driver.job_errors(ids[0])) == 1
    assert await driver.rescue_stale(lease_s=0) == []  # once only
    assert {w.id for w in await driver.workers()} == set()  # stale rows removed


async def test_heartbeat_keeps_a_worker_alive(driver: Driver) -> None:
    await driver.register_worker(WorkerRegistration("w1", "host", 123, ["a", "b"], 4))
    assert await driver.heartbeat("w1")
    (info,) = await driver.workers()
    assert (info.id, info.pid, info.queues, info.concurrency) == ("w1", 123, ["a", "b"], 4)
    await driver.unregister_worker("w1")
    assert not await driver.heartbeat("w1")


async def test_list_filters_and_keyset_pagination(driver: Driver) -> None:
    ids = await enqueue(
        driver, *[NewJob(kind="even" if i % 2 == 0 else "odd", queue="q") for i in range(10)]
    )
    page1 = await driver.list_jobs(ListParams(limit=4))
    assert [j.id for j in page1] == sorted(ids, reverse=True)[:4]
    page2 = await driver.list_jobs(ListParams(limit=4, before_id=page1[-1].id))
    assert [j.id for j in page2] == sorted(ids, reverse=True)[4:8]
    evens = await driver.list_jobs(ListParams(kind="even"))
    assert len(evens) == 5 and {j.kind for j in evens} == {"even"}
    assert await driver.list_jobs(ListParams(queue="nope")) == []
    await driver.claim_batch(ClaimParams("w", limit=3))
    running = await driver.list_jobs(ListParams(statuses=[JobStatus.RUNNING]))
    assert len(running) == 3
    future = datetime.now(UTC) + timedelta(days=1)
    assert await driver.list_jobs(ListParams(created_after=future)) == []
    assert len(await driver.list_jobs(ListParams(created_before=future))) == 10


async def test_listing_by_each_status_finds_exactly_its_jobs(driver: Driver) -> None:
    # Each status is read through a different index on PostgreSQL (claim, running, rare
    # statuses, primary key): every one must list all of its jobs and only those, newest
    # first, alone, together and page by page.
    ids = await enqueue(driver, *[NewJob(kind="k", max_attempts=2) for _ in range(9)])
    claimed = await driver.claim_batch(ClaimParams("w", limit=6))
    assert sorted(j.id for j in claimed) == ids[:6]
    await driver.complete_many([Completion(j.id, j.attempt) for j in claimed[:2]])
    await driver.fail_many([Failure(ids[2], 1, "gave up", None, None)])
    await driver.fail_many([Failure(ids[3], 1, "again later", None, 3600)])
    assert (await driver.cancel(ids[6])).outcome is CancelOutcome.CANCELLED
    (waiting,) = await driver.enqueue_many([NewJob(kind="k", depends_on=(ids[7],))])
    expected = {
        JobStatus.SUCCEEDED: [ids[1], ids[0]],
        JobStatus.FAILED: [ids[2]],
        JobStatus.RETRYING: [ids[3]],
        JobStatus.RUNNING: [ids[5], ids[4]],
        JobStatus.CANCELLED: [ids[6]],
        JobStatus.QUEUED: [ids[8], ids[7]],
        JobStatus.WAITING: [waiting.id],
    }
    for status, wanted in expected.items():
        listed = await driver.list_jobs(ListParams(statuses=[status]))
        assert [j.id for j in listed] == wanted, status
        assert {j.status for j in listed} == {status}
    dead = await driver.list_jobs(ListParams(statuses=[JobStatus.FAILED, JobStatus.CANCELLED]))
    assert [j.id for j in dead] == [ids[6], ids[2]]
    first = await driver.list_jobs(ListParams(statuses=[JobStatus.SUCCEEDED], limit=1))
    rest = await driver.list_jobs(
        ListParams(statuses=[JobStatus.SUCCEEDED], limit=1, before_id=first[0].id)
    )
    assert [j.id for j in [*first, *rest]] == expected[JobStatus.SUCCEEDED]
    assert await driver.purge_finished(JobStatus.CANCELLED, 0, 10) == 1
    assert await driver.list_jobs(ListParams(statuses=[JobStatus.CANCELLED])) == []


async def test_stats_count_by_queue_and_status(driver: Driver) -> None:
    await enqueue(driver, NewJob(kind="k", queue="a"), NewJob(kind="k", queue="a"))
    await enqueue(driver, NewJob(kind="k", queue="b"))
    await driver.claim_batch(ClaimParams("w", limit=1, queues=["b"]))
    stats = {(s.queue, s.status): s.count for s in await driver.stats()}
    assert stats == {("a", JobStatus.QUEUED): 2, ("b", JobStatus.RUNNING): 1}


async def test_listener_hears_new_jobs_and_cancels(driver: Driver) -> None:
    heard: list[tuple[str, str]] = []
    got_new, got_cancel = asyncio.Event(), asyncio.Event()

    def handler(kind: str, value: str) -> None:
        heard.append((kind, value))
        if kind == "new" and value == "mail":
            got_new.set()
        if kind == "cancel":
            got_cancel.set()

    listener = await driver.listen(handler)
    try:
        (job_id,) = await enqueue(driver, NewJob(kind="k", queue="mail"))
        await asyncio.wait_for(got_new.wait(), 5)
        await driver.claim_batch(ClaimParams("w", limit=1))
        await driver.cancel(job_id)
        await asyncio.wait_for(got_cancel.wait(), 5)
        assert ("cancel", str(job_id)) in heard
    finally:
        await listener.close()


async def test_a_failure_after_a_cancel_request_ends_cancelled(driver: Driver) -> None:
    (job_id,) = await enqueue(driver, NewJob(kind="k", max_attempts=5))
    await driver.claim_batch(ClaimParams("w", limit=1))
    assert (await driver.cancel(job_id)).outcome is CancelOutcome.REQUESTED
    await driver.fail_many([Failure(job_id, 1, "broke while stopping", None, 0.0)])
    job = await driver.get(job_id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED  # not retried
    assert [e.error for e in await driver.job_errors(job_id)] == ["broke while stopping"]


async def test_leadership_is_held_by_one_holder_until_it_lapses(driver: Driver) -> None:
    assert await driver.take_leadership("maintenance", "a", 3600)
    assert not await driver.take_leadership("maintenance", "b", 3600)
    assert await driver.take_leadership("maintenance", "a", 3600)  # renewal
    assert await driver.take_leadership("other-duty", "b", 3600)  # leases are per name
    await driver.give_up_leadership("maintenance", "a")
    assert await driver.take_leadership("maintenance", "b", 0)  # a lease that lapses at once
    assert await driver.take_leadership("maintenance", "c", 3600)  # ...is taken over
    assert not await driver.take_leadership("maintenance", "b", 3600)


async def test_retention_purges_old_finished_jobs_in_batches(driver: Driver) -> None:
    ids = await enqueue(driver, *[NewJob(kind="k", max_attempts=1) for _ in range(7)])
    claimed = await driver.claim_batch(ClaimParams("w", limit=6))
    await driver.complete_many([Completion(j.id, j.attempt) for j in claimed[:4]])
    await driver.fail_many([Failure(j.id, j.attempt, "x", None, None) for j in claimed[4:]])
    assert await driver.purge_finished(JobStatus.SUCCEEDED, 3600, 100) == 0  # too recent
    assert await driver.purge_finished(JobStatus.SUCCEEDED, 0, 3) == 3  # one batch
    assert await driver.purge_finished(JobStatus.SUCCEEDED, 0, 3) == 1
    assert await driver.purge_finished(JobStatus.FAILED, 0, 100) == 2
    remaining = await driver.list_jobs(ListParams())
    assert {j.status for j in remaining} == {JobStatus.QUEUED}  # the unclaimed one
    assert [j.id for j in remaining] == [ids[6]]
    assert await driver.job_errors(claimed[4].id) == []  # history went with its job


async def test_enqueued_jobs_equal_what_is_stored(driver: Driver) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    batch = [
        NewJob(kind="a", payload={"n": 1, "nested": {"x": [1, 2]}}, priority=3, tenant="t1"),
        NewJob(kind="b", queue="q2", run_at=later, max_attempts=9, timeout_s=2.5),
        NewJob(kind="c", idempotency_key="key-1", request_id="req-1"),
        NewJob(kind="c", idempotency_key="key-1"),  # the same key twice in one batch
        NewJob(kind="d", unique_key="u-1", request_fingerprint="f" * 64),
    ]
    returned = await driver.enqueue_many(batch)
    assert returned[2] == returned[3]
    for job in returned:
        assert job == await driver.get(job.id)
    assert len(await driver.list_jobs(ListParams())) == 4


async def test_expired_idempotency_keys_are_forgotten_and_can_be_used_again(
    driver: Driver,
) -> None:
    (first,) = await driver.enqueue_many([NewJob(kind="k", idempotency_key="once")])
    assert await driver.forget_idempotency_keys(3600) == 0  # not expired yet
    assert await driver.get_by_idempotency_key("once") == first
    assert await driver.forget_idempotency_keys(0) == 1
    assert await driver.get_by_idempotency_key("once") is None
    (second,) = await driver.enqueue_many([NewJob(kind="k", idempotency_key="once")])
    assert second.id != first.id  # the key names a new job now; the old job stays
    kept = await driver.get(first.id)
    assert kept is not None and kept.idempotency_key is None


BAD_JOBS = {
    "payload": (NewJob(kind="k", payload={"text": "nul\x00here"}), "U\\+0000"),
    "priority": (NewJob(kind="k", priority=5000), "priority"),
    "kind": (NewJob(kind=""), "kind"),
    "queue": (NewJob(kind="k", queue="q" * 200), "queue"),  # the first job of its queue
    "tenant": (NewJob(kind="k", tenant=5), "tenant must be a string"),  # type: ignore[arg-type]
    "empty tenant": (NewJob(kind="k", tenant=""), "tenant must not be empty"),
    "empty idempotency key": (NewJob(kind="k", idempotency_key=""), "must not be empty"),
    "priority, not an integer": (NewJob(kind="k", priority=1.5), "integer"),  # type: ignore[arg-type]
    "priority, a bool": (NewJob(kind="k", priority=True), "integer"),
    "timeout, not a number": (NewJob(kind="k", timeout_s=float("nan")), "timeout"),
    # In UTC, 0000-12-31: PostgreSQL stored it and then could not give it back.
    "run_at, year 0 in UTC": (
        NewJob(kind="k", run_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        "run_at must be between",
    ),
    "parent, not an id": (NewJob(kind="k", depends_on=("1",)), "depends_on"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("bad", sorted(BAD_JOBS))
async def test_a_bad_job_deep_in_a_large_batch_stores_none_of_it(driver: Driver, bad: str) -> None:
    """A large plain batch goes out in slices (COPY on PostgreSQL), its jobs checked as the
    slices are built; a job that cannot be stored, past the first slices, refuses the whole
    batch, from async and sync code alike, and the driver stays usable."""
    batch = [NewJob(kind="k", payload={"n": i}) for i in range(2_150)]
    job, message = BAD_JOBS[bad]
    batch[1_500] = job
    with pytest.raises(InvalidJobError, match=message):
        await driver.enqueue_many(batch)
    with pytest.raises(InvalidJobError, match=message):
        await asyncio.to_thread(driver.enqueue_many_sync, batch)
    with pytest.raises(InvalidJobError, match=message):
        await driver.enqueue_many_ids(batch)
    assert await driver.list_jobs(ListParams(limit=10)) == []
    assert len(await driver.enqueue_many(batch[:1_500])) == 1_500


async def test_a_single_plain_job_equals_what_is_stored(driver: Driver) -> None:
    """One job without keys takes each driver's shortest insert; what it returns is what
    a read gives back."""
    later = datetime.now(UTC) + timedelta(minutes=5)
    for new in (
        NewJob(kind="k"),
        NewJob(
            kind="k2",
            queue="q",
            payload={"a": [1, "two", None], "b": {"c": 1.5}},
            priority=-3,
            run_at=later,
            max_attempts=2,
            tenant="t",
            timeout_s=4,
            request_id="req-1",
        ),
    ):
        [job] = await driver.enqueue_many([new])
        stored = await driver.get(job.id)
        assert job == stored
        assert stored is not None and type(job.timeout_s) is type(stored.timeout_s)


async def test_a_large_plain_batch_equals_what_is_stored(driver: Driver) -> None:
    """Large batches without keys take PostgreSQL's COPY path (written in slices of 1,000
    rows): the same jobs, the same fields, whatever characters the payloads and names hold."""
    count = 2_150  # three slices, the last one partial
    later = datetime.now(UTC) + timedelta(hours=1)
    tricky = ["back\\slash", "tab\there", "new\nline", "cr\rhere", "\\N", "ünïcødé ✓", ""]
    batch = [
        NewJob(
            kind=f"k.{i % 3}",
            queue="q\\" if i % 7 == 0 else "default",
            payload={"text": tricky[i % len(tricky)], "n": i, "nested": {"a": [1.5, None]}},
            priority=(i % 5) - 2,
            run_at=later if i % 4 == 0 else None,
            max_attempts=1 + i % 9,
            tenant=None if i % 2 else f"tenant\t{i % 3}",
            timeout_s=2.5 if i % 3 == 0 else None,
            request_id="req\\1" if i % 5 == 0 else None,
        )
        for i in range(count)
    ]
    returned = await driver.enqueue_many(batch)
    assert [j.payload["n"] for j in returned] == list(range(count))
    assert returned == sorted(returned, key=lambda j: j.id)
    assert all(type(j.timeout_s) in (float, type(None)) for j in returned)
    stored: list[Job] = []
    while page := await driver.list_jobs(
        ListParams(limit=1000, before_id=stored[-1].id if stored else None)
    ):
        stored += page
    assert sorted(stored, key=lambda j: j.id) == returned


async def test_a_large_batch_due_now_is_stored_as_returned(driver: Driver) -> None:
    """Without any run_at in the batch, PostgreSQL's COPY leaves the column to its default:
    each job is due at the batch's creation time, in the database as in what was returned
    (whose times come from the statement that reserved the ids)."""
    batch = [NewJob(kind="k", payload={"n": i}, priority=i % 3) for i in range(1_050)]
    returned = await driver.enqueue_many(batch)
    stored = await driver.list_jobs(ListParams(limit=2000))
    assert sorted(stored, key=lambda j: j.id) == returned
    assert {(j.run_at, j.created_at) for j in stored} == {(returned[0].created_at,) * 2}


async def test_enqueue_many_ids_names_each_stored_job_in_request_order(driver: Driver) -> None:
    """The ids-only insert (the bulk route's): a large plain batch (COPY on PostgreSQL, ids
    chosen under the write lock on SQLite), one plain job, and batches with keys (which take
    the insert that returns Jobs) all answer with the id of each requested job."""
    batch = [NewJob(kind="k", payload={"n": i}, queue=f"q{i % 3}") for i in range(1_150)]
    ids = await driver.enqueue_many_ids(batch)
    assert ids == sorted(ids) and len(set(ids)) == len(batch)
    for position in (0, 999, 1_000, 1_149):
        stored = await driver.get(ids[position])
        assert stored is not None
        assert (stored.payload, stored.queue) == (batch[position].payload, batch[position].queue)
    [single] = await driver.enqueue_many_ids([NewJob(kind="one", payload={"x": 1})])
    one = await driver.get(single)
    assert one is not None and (one.kind, one.payload) == ("one", {"x": 1})
    assert await driver.enqueue_many_ids([]) == []
    first = await driver.enqueue_many_ids([NewJob(kind="keyed", idempotency_key="key-9")])
    again = await driver.enqueue_many_ids(
        [NewJob(kind="plain"), NewJob(kind="keyed", idempotency_key="key-9")]
    )
    assert again[1] == first[0] and again[0] not in first
    assert len(await driver.list_jobs(ListParams(limit=2000))) == 1_150 + 1 + 2


async def test_a_bad_job_in_an_ids_only_batch_stores_none_of_it(driver: Driver) -> None:
    batch = [NewJob(kind="k", payload={"n": i}) for i in range(1_200)]
    batch[1_100] = NewJob(kind="k", payload={"text": "nul\x00here"})
    with pytest.raises(InvalidJobError):
        await driver.enqueue_many_ids(batch)
    with pytest.raises(InvalidJobError, match="priority"):
        await driver.enqueue_many_ids([NewJob(kind="k"), NewJob(kind="k", priority=5000)])
    assert await driver.list_jobs(ListParams(limit=10)) == []

"""The worker on every driver: drain, retry, dead-letter, cancel, the demo kinds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobq import JobContext, JobQueue, JobStatus, Settings
from jobq.errors import DoNotRetry, JobCancelled
from jobq.storage.base import CancelOutcome
from jobq.worker.simulated import PLANS, register_demo_tasks

from ..waiting import eventually


def fast_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "poll_interval_s": 0.05,
        "completion_flush_s": 0.001,
        "retry_base_s": 0.0,
        "retry_cap_s": 0.0,
        "simulated_time_scale": 0.0,
        "heartbeat_s": 0.2,
        "shutdown_grace_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def jq(db_url: str) -> AsyncIterator[JobQueue]:
    queue = JobQueue(settings=fast_settings(db_url))
    yield queue
    await queue.close()


async def test_burst_worker_drains_everything_then_exits(jq: JobQueue) -> None:
    seen: list[int] = []

    @jq.task
    async def record(ctx: JobContext, n: int) -> int:
        seen.append(n)
        return n * 2

    await jq.enqueue_many([record.job(n=i) for i in range(120)])
    await asyncio.wait_for(jq.run_worker(concurrency=8, burst=True), 60)
    assert sorted(seen) == list(range(120))
    jobs = await jq.list(limit=1000)
    assert len(jobs) == 120
    assert all(j.status is JobStatus.SUCCEEDED and j.attempt == 1 for j in jobs)
    assert {j.payload["n"] * 2 for j in jobs} == {j.result for j in jobs}
    assert await jq.workers() == []  # unregistered on exit


async def test_claims_ask_for_at_most_half_the_slots_and_never_more_than_are_free(
    jq: JobQueue,
) -> None:
    @jq.task
    async def step(ctx: JobContext) -> None:
        await asyncio.sleep(0)

    await jq.enqueue_many([step.job() for _ in range(60)])
    worker = jq.worker(concurrency=8, burst=True)
    asked: list[tuple[int, int]] = []  # (jobs asked for, jobs running at that moment)
    claim = worker.driver.claim_batch

    async def recording_claim(params: Any) -> Any:
        asked.append((params.limit, len(worker.running_job_ids)))
        return await claim(params)

    worker.driver.claim_batch = recording_claim  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(), 60)
    assert worker.processed == 60
    assert asked and all(1 <= limit <= 4 for limit, _ in asked)
    assert all(limit + running <= 8 for limit, running in asked)
    assert any(limit == 4 for limit, _ in asked)


async def test_sync_tasks_run_in_threads(jq: JobQueue) -> None:
    @jq.task
    def blocking(ctx: JobContext, x: int) -> int:
        return x + 1

    job = await blocking.defer(x=41)
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    assert (await jq.get(job.id)).result == 42


async def test_always_failing_task_exhausts_to_failed_with_history(jq: JobQueue) -> None:
    @jq.task(max_attempts=3)
    async def broken(ctx: JobContext) -> None:
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    job = await broken.defer()
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    failed = await jq.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.attempt == 3
    errors = await jq.errors(job.id)
    assert [e.attempt for e in errors] == [1, 2, 3]
    assert errors[2].error == "RuntimeError: attempt 3 broke"
    assert errors[0].traceback is not None and "RuntimeError" in errors[0].traceback

    assert await jq.requeue([job.id]) == [job.id]
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    again = await jq.get(job.id)
    assert again.status is JobStatus.FAILED
    # The history is chronological: the requeued run's attempts come after the first run's.
    assert [e.attempt for e in await jq.errors(job.id)] == [1, 2, 3, 1, 2, 3]


async def test_retry_for_and_do_not_retry(jq: JobQueue) -> None:
    @jq.task(max_attempts=5, retry_for=(ConnectionError,))
    async def picky(ctx: JobContext, kind: str) -> None:
        if kind == "value":
            raise ValueError("not retryable by policy")
        raise DoNotRetry("give up now")

    value_job = await picky.defer(kind="value")
    stop_job = await picky.defer(kind="stop")
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    for job_id in (value_job.id, stop_job.id):
        job = await jq.get(job_id)
        assert job.status is JobStatus.FAILED and job.attempt == 1


async def test_timeout_fails_the_attempt_and_retries(jq: JobQueue) -> None:
    @jq.task(max_attempts=2, timeout=0.05)
    async def slow(ctx: JobContext) -> None:
        await asyncio.Event().wait()  # never finishes by itself

    job = await slow.defer()
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    done = await jq.get(job.id)
    assert done.status is JobStatus.FAILED and done.attempt == 2
    assert [e.error for e in await jq.errors(job.id)] == ["timed out after 0.05s"] * 2


async def test_retry_scheduling_uses_the_seeded_jitter(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url, retry_base_s=600.0, retry_cap_s=900.0))
    try:

        @jq.task(max_attempts=3)
        async def flaky(ctx: JobContext) -> None:
            raise ConnectionError("down")

        job = await flaky.defer()
        worker = jq.worker(burst=True)
        worker.rng = random.Random(3)
        await asyncio.wait_for(worker.run(), 30)
        retrying = await jq.get(job.id)
        assert retrying.status is JobStatus.RETRYING and retrying.attempt == 1
        expected = random.Random(3).uniform(600.0, 1800.0)
        delay = (retrying.run_at - retrying.updated_at).total_seconds()
        assert abs(delay - min(900.0, expected)) < 1.0
    finally:
        await jq.close()


async def test_cancel_of_a_running_job_reaches_its_task(jq: JobQueue) -> None:
    started = asyncio.Event()

    @jq.task
    async def long_one(ctx: JobContext) -> None:
        started.set()
        for _ in range(10_000):
            if await ctx.wait_cancelled(timeout=0.05):
                ctx.raise_if_cancelled()

    job = await long_one.defer()
    worker = jq.worker(concurrency=2)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 15)
        result = await jq.cancel(job.id)
        assert result.outcome is CancelOutcome.REQUESTED
        cancelled = await eventually(
            lambda: _status_is(jq, job.id, JobStatus.CANCELLED), what="job cancelled"
        )
        assert cancelled
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
    assert (await jq.get(job.id)).status is JobStatus.CANCELLED


async def _status_is(jq: JobQueue, job_id: int, status: JobStatus) -> bool:
    return (await jq.get(job_id)).status is status


async def test_demo_kinds_fail_once_then_succeed_deterministically(jq: JobQueue) -> None:
    register_demo_tasks(jq, time_scale=0)
    jobs = await jq.enqueue_many([jq.tasks[k].job(n=i) for i in range(40) for k in PLANS])
    await asyncio.wait_for(jq.run_worker(concurrency=16, burst=True), 60)
    from jobq.worker.simulated import draw

    for job in jobs:
        done = await jq.get(job.id)
        plan = PLANS[job.kind]
        fails_first = any(draw(job.id, 1, i) < s.fail_prob for i, s in enumerate(plan))
        assert done.status is JobStatus.SUCCEEDED
        assert done.attempt == (2 if fails_first else 1), job
    assert any(j.attempt == 2 for j in [await jq.get(j.id) for j in jobs])


async def test_demo_job_cancelled_between_steps(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url, simulated_time_scale=20.0))
    try:
        register_demo_tasks(jq)  # resize_image: 2 s then 4 s at this scale
        job = await jq.tasks["resize_image"].defer()
        worker = jq.worker()
        run = asyncio.create_task(worker.run())
        try:
            await eventually(lambda: _status_is(jq, job.id, JobStatus.RUNNING), what="running")
            assert (await jq.cancel(job.id)).outcome is CancelOutcome.REQUESTED
            await eventually(
                lambda: _status_is(jq, job.id, JobStatus.CANCELLED), what="cancelled", timeout=30
            )
        finally:
            worker.stop(graceful=False)
            await asyncio.wait_for(run, 30)
    finally:
        await jq.close()


async def test_graceful_stop_lets_in_flight_jobs_finish(jq: JobQueue) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    @jq.task
    async def waits(ctx: JobContext) -> str:
        started.set()
        await release.wait()
        return "finished"

    job = await waits.defer()
    worker = jq.worker()
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    worker.stop()
    release.set()
    await asyncio.wait_for(run, 30)
    done = await jq.get(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.result == "finished"


async def test_forced_stop_hands_running_jobs_back(jq: JobQueue) -> None:
    started = asyncio.Event()

    @jq.task
    async def stuck(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await stuck.defer()
    worker = jq.worker()
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    worker.stop(graceful=False)
    await asyncio.wait_for(run, 30)
    back = await jq.get(job.id)
    assert back.status is JobStatus.QUEUED and back.attempt == 0


async def test_unknown_kind_fails_without_retrying(jq: JobQueue) -> None:
    job = await jq.enqueue("nobody_handles_this", {"x": 1})
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    failed = await jq.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert "no task named" in (failed.last_error or "")


async def test_job_cancelled_exception_ends_cancelled(jq: JobQueue) -> None:
    @jq.task
    async def quits(ctx: JobContext) -> None:
        raise JobCancelled("changed my mind")

    job = await quits.defer()
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    assert (await jq.get(job.id)).status is JobStatus.CANCELLED


async def test_retry_at_schedules_the_next_attempt_when_asked(jq: JobQueue) -> None:
    from datetime import UTC, datetime, timedelta

    from jobq.errors import RetryAt

    when = datetime.now(UTC) + timedelta(hours=2)

    @jq.task(max_attempts=3)
    async def later(ctx: JobContext) -> None:
        raise RetryAt(when, "upstream says: come back in two hours")

    job = await later.defer()
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    retrying = await jq.get(job.id)
    assert retrying.status is JobStatus.RETRYING
    assert abs((retrying.run_at - when).total_seconds()) < 5
    (error,) = await jq.errors(job.id)
    assert "come back in two hours" in error.error


async def test_progress_is_visible_while_running_and_wait_returns_the_result(
    jq: JobQueue,
) -> None:
    reported = asyncio.Event()
    release = asyncio.Event()

    @jq.task
    async def long_report(ctx: JobContext) -> dict[str, str]:
        await ctx.progress(50, "half way")
        reported.set()
        await release.wait()
        return {"done": "yes"}

    job = await long_report.defer()
    worker = jq.worker()
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(reported.wait(), 15)
        running = await jq.get(job.id)
        assert running.status is JobStatus.RUNNING
        assert running.progress == {"percent": 50, "message": "half way"}
        with pytest.raises(TimeoutError, match="still running"):
            await jq.wait(job.id, timeout=0.1)
        release.set()
        finished = await jq.wait(job.id, timeout=15)
        assert finished.status is JobStatus.SUCCEEDED
        assert finished.result == {"done": "yes"}
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


async def test_progress_refuses_nonsense_and_lost_attempts(jq: JobQueue) -> None:
    @jq.task(max_attempts=1)
    async def bad_report(ctx: JobContext) -> None:
        await ctx.progress(150)

    job = await bad_report.defer()
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    failed = await jq.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert "between 0 and 100" in (failed.last_error or "")
    assert failed.progress is None
    assert not await jq.driver.set_progress(job.id, 1, {"percent": 1})  # not running now


async def test_unstorable_results_and_errors_fail_their_job_not_the_batch(jq: JobQueue) -> None:
    """A return value JSON cannot hold, or text with U+0000 (which PostgreSQL cannot store),
    ends its own job failed with a clear error; an error message with U+0000 is stored with
    the character escaped. Neither may stall the batch of outcomes it is written with."""

    @jq.task
    async def returns(ctx: JobContext, what: str) -> Any:
        if what == "object":
            return object()
        if what == "nul":
            return {"text": "a\x00b"}
        if what == "raise":
            raise DoNotRetry("bad\x00byte")
        return what

    kinds = ["object", "nul", "raise", "fine", "fine"]
    jobs = await jq.enqueue_many([returns.job(what=w) for w in kinds])
    await asyncio.wait_for(jq.run_worker(concurrency=8, burst=True), 30)
    stored = {j.id: j for j in await jq.list(limit=10)}
    outcome = [stored[j.id] for j in jobs]
    assert [j.status for j in outcome] == [JobStatus.FAILED] * 3 + [JobStatus.SUCCEEDED] * 2
    assert "cannot be stored" in (outcome[0].last_error or "")
    assert "U+0000" in (outcome[1].last_error or "")
    assert outcome[2].last_error == "DoNotRetry: bad\\x00byte"
    assert [j.result for j in outcome[3:]] == ["fine", "fine"]
    assert outcome[0].attempt == outcome[1].attempt == 1  # not retried: it would fail again

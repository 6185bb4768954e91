"""The process executor on a real worker: hard timeouts, memory limits, crashes, recycling,
progress, cancellation and logging across the process boundary."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from jobq import JobQueue, JobStatus
from jobq.errors import ConfigurationError
from jobq.model import Job
from jobq.worker.runtime import Worker

from ..conformance.test_worker import fast_settings
from ..waiting import eventually
from . import executor_tasks as t


@pytest.fixture
async def jq(db_url: str) -> AsyncIterator[JobQueue]:
    queue = JobQueue(
        settings=fast_settings(
            db_url, process_pool_size=1, process_cancel_grace_s=0.3, shutdown_grace_s=1.0
        )
    )
    yield queue
    await queue.close()


class Running:
    """A worker running in the background of a test, stopped (and awaited) at the end."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run())

    async def stop(self) -> None:
        self.worker.stop()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def start(jq: JobQueue) -> AsyncIterator[Any]:
    running: list[Running] = []

    def start_worker(**options: Any) -> Running:
        r = Running(jq.worker(**options))
        running.append(r)
        return r

    yield start_worker
    for r in running:
        await r.stop()


async def finished(jq: JobQueue, job: Job, timeout: float = 30) -> Job:
    return await jq.wait(job.id, timeout=timeout)


async def test_a_hung_task_is_killed_at_its_timeout_and_the_next_job_runs(
    jq: JobQueue, start: Any
) -> None:
    hang = jq.task(executor="process", timeout=1, max_attempts=1)(t.hang)
    double = jq.task(executor="process")(t.double)
    hung = await hang.defer()
    start(concurrency=2)
    await eventually(lambda: _status_is(jq, hung, JobStatus.RUNNING), what="hung job running")
    # The one child is busy with the hung job: this one can only run once it is killed.
    quick = await double.defer(n=21)
    hung_done = await finished(jq, hung)
    assert hung_done.status is JobStatus.FAILED
    assert hung_done.last_error == "timed out after 1 s (killed)"
    quick_done = await finished(jq, quick)
    assert quick_done.status is JobStatus.SUCCEEDED and quick_done.result == 42


async def test_memory_limit_fails_the_job_and_a_sibling_succeeds(jq: JobQueue, start: Any) -> None:
    hog = jq.task(executor="process", memory_limit_mb=64, max_attempts=1)(t.hog)
    double = jq.task(executor="process")(t.double)
    big = await hog.defer(mb=1024)
    small = await hog.defer(mb=8)  # within the limit: runs in the same kind of child
    sibling = await double.defer(n=4)
    jq.settings = jq.settings.model_copy(update={"process_pool_size": 2})
    start(concurrency=3)
    big_done = await finished(jq, big)
    assert big_done.status is JobStatus.FAILED
    assert big_done.last_error is not None
    assert big_done.last_error.startswith("exceeded 64 MB")
    assert (await finished(jq, small)).result == 8
    assert (await finished(jq, sibling)).result == 8


async def test_a_segfault_fails_the_attempt_and_the_retry_runs(jq: JobQueue, start: Any) -> None:
    crash = jq.task(executor="process", max_attempts=2, retry_base=0, retry_cap=0)(t.segfault_first)
    job = await crash.defer()
    running = start(concurrency=2)
    done = await finished(jq, job)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == "survived attempt 2"
    errors = await jq.errors(job.id)
    assert [e.attempt for e in errors] == [1]
    assert errors[0].error == "child process died: killed by signal SIGSEGV"
    assert not running.task.done()  # the worker lives on


async def test_exit_code_of_a_child_that_exits_is_the_error(jq: JobQueue, start: Any) -> None:
    exit_hard = jq.task(executor="process", max_attempts=1)(t.exit_hard)
    double = jq.task(executor="process")(t.double)
    job = await exit_hard.defer(code=3)
    after = await double.defer(n=1)
    start(concurrency=1)
    done = await finished(jq, job)
    assert (done.status, done.last_error) == (
        JobStatus.FAILED,
        "child process died: exited with code 3",
    )
    assert (await finished(jq, after)).result == 2


async def test_progress_logs_and_cooperative_cancellation_from_a_child(
    jq: JobQueue, start: Any
) -> None:
    task = jq.task(executor="process")(t.report_then_wait_for_cancel)
    job = await task.defer()
    with capture_logs() as logs:
        start(concurrency=1)

        async def half_way() -> bool:
            progress = (await jq.get(job.id)).progress
            return progress == {"percent": 50.0, "message": "half way"}

        await eventually(half_way, what="progress reported from the child")
        await jq.cancel(job.id)
        done = await finished(jq, job)
    assert done.status is JobStatus.CANCELLED
    assert done.last_error is not None and "terminated" not in done.last_error
    relayed = [e for e in logs if e["event"] == "half way there"]
    assert relayed, logs
    assert relayed[0]["step"] == 1
    assert relayed[0]["child_pid"] != os.getpid()


async def test_a_task_deaf_to_cancellation_is_terminated_after_the_grace(
    jq: JobQueue, start: Any
) -> None:
    task = jq.task(executor="process")(t.deaf_to_cancel)
    double = jq.task(executor="process")(t.double)
    job = await task.defer()
    start(concurrency=2)
    await eventually(lambda: _status_is(jq, job, JobStatus.RUNNING), what="job running")

    async def started() -> bool:
        return (await jq.get(job.id)).progress is not None

    await eventually(started, what="the child started the job")
    await jq.cancel(job.id)
    done = await finished(jq, job)
    assert done.status is JobStatus.CANCELLED
    assert done.last_error is not None and "terminated after a grace of 0.3 s" in done.last_error
    assert (await finished(jq, await double.defer(n=5))).result == 10


async def test_children_are_recycled_after_max_jobs(jq: JobQueue, start: Any) -> None:
    jq.settings = jq.settings.model_copy(update={"process_max_jobs_per_child": 2})
    task = jq.task(executor="process")(t.whose_pid)
    jobs = [await task.defer() for _ in range(6)]
    start(concurrency=1)
    pids = [(await finished(jq, j)).result for j in jobs]
    assert os.getpid() not in pids
    assert len(set(pids)) == 3
    assert all(pids.count(p) == 2 for p in set(pids))


async def test_async_tasks_failures_and_retry_for_cross_the_boundary(
    jq: JobQueue, start: Any
) -> None:
    in_child = jq.task(executor="process")(t.async_in_child)
    tx = jq.task(executor="process", max_attempts=1)(t.uses_transaction)
    picky = jq.task(executor="process", max_attempts=3, retry_for=(KeyError,))(
        t.fails_with_value_error
    )
    a, b, c = await in_child.defer(n=7), await tx.defer(), await picky.defer()
    start(concurrency=1)
    done = await finished(jq, a)
    assert done.result["n"] == 7 and done.result["pid"] != os.getpid()
    assert done.progress == {"percent": 100.0, "message": "done"}
    failed_tx = await finished(jq, b)
    assert failed_tx.last_error is not None
    assert "ctx.transaction() is not available" in failed_tx.last_error
    # ValueError is not in retry_for: no second attempt, though the class lives in the child.
    not_retried = await finished(jq, c)
    assert (not_retried.status, not_retried.attempt) == (JobStatus.FAILED, 1)
    assert not_retried.last_error == "ValueError: bad input"
    errors = await jq.errors(c.id)
    assert errors[0].traceback is not None and "fails_with_value_error" in errors[0].traceback


async def test_a_function_the_child_cannot_import_is_refused_at_registration(
    jq: JobQueue,
) -> None:
    def local(ctx: Any) -> None:
        return None

    with pytest.raises(ConfigurationError, match="importable module"):
        jq.task(executor="process")(local)


async def test_shutdown_waits_for_a_child_then_hands_its_job_back(jq: JobQueue) -> None:
    jq.settings = jq.settings.model_copy(update={"shutdown_grace_s": 0.5})
    hang = jq.task(executor="process")(t.hang)
    job = await hang.defer()
    worker = jq.worker(concurrency=1)
    running = asyncio.create_task(worker.run())
    await eventually(lambda: _status_is(jq, job, JobStatus.RUNNING), what="job running")
    worker.stop()
    await asyncio.wait_for(running, 30)
    back = await jq.get(job.id)
    assert back.status is JobStatus.QUEUED
    assert worker._processes is not None and worker._processes.children == 0


async def _status_is(jq: JobQueue, job: Job, status: JobStatus) -> bool:
    return (await jq.get(job.id)).status is status


async def test_a_task_that_raises_keeps_its_child(jq: JobQueue, start: Any) -> None:
    pid = jq.task(executor="process")(t.whose_pid)
    fails = jq.task(executor="process", max_attempts=1)(t.fails_with_value_error)
    first = await pid.defer()
    start(concurrency=1)
    before = (await finished(jq, first)).result
    assert (await finished(jq, await fails.defer())).status is JobStatus.FAILED
    assert (await finished(jq, await pid.defer())).result == before


async def test_a_child_killed_from_outside_fails_only_its_attempt(jq: JobQueue, start: Any) -> None:
    """What the kernel's OOM killer does to a child: SIGKILL. The attempt fails with the
    signal and is retried in a fresh child."""
    task = jq.task(executor="process", max_attempts=2, retry_base=0, retry_cap=0)(
        t.tell_pid_then_hang
    )
    job = await task.defer()
    running = start(concurrency=1)

    async def child_pid() -> int:
        progress = (await jq.get(job.id)).progress
        return int(progress["message"]) if progress else 0

    pid = await eventually(child_pid, what="the child's pid")
    os.kill(pid, signal.SIGKILL)

    async def second_attempt() -> bool:
        return (await jq.get(job.id)).attempt == 2

    await eventually(second_attempt, what="the retry")
    errors = await jq.errors(job.id)
    assert [(e.attempt, e.error) for e in errors] == [
        (1, "child process died: killed by signal SIGKILL")
    ]
    assert not running.task.done()

    async def another_child() -> bool:
        return await child_pid() not in (0, pid)

    await eventually(another_child, what="the retry running in a fresh child")


async def test_the_worker_default_sends_sync_tasks_to_children(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url, executor="process", process_pool_size=1))
    try:
        pid = jq.task(t.whose_pid)
        job = await pid.defer()
        await asyncio.wait_for(jq.run_worker(concurrency=1, burst=True), 60)
        done = await jq.get(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.result != os.getpid()

        @jq.task
        def nested(ctx: Any) -> None:
            return None

        with pytest.raises(ConfigurationError, match="importable module"):
            jq.worker(concurrency=1)
    finally:
        await jq.close()

"""Paused queues: no worker claims their jobs until they are resumed, on every driver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from jobq import JobContext, JobQueue, JobStatus
from jobq.errors import InvalidJobError
from jobq.storage.base import ClaimParams

from ..waiting import eventually
from .test_worker import fast_settings


def with_task(jq: JobQueue) -> JobQueue:
    @jq.task
    async def noop(ctx: JobContext) -> str:
        return "done"

    return jq


@contextlib.asynccontextmanager
async def running_worker(jq: JobQueue, queues: Sequence[str] | None) -> AsyncIterator[None]:
    worker = jq.worker(queues=queues, concurrency=4)
    run = asyncio.create_task(worker.run())
    try:
        await eventually(jq.workers, what="the worker registered")
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


async def succeeded(jq: JobQueue, job_id: int) -> bool:
    return (await jq.get(job_id)).status is JobStatus.SUCCEEDED


async def test_pause_and_resume_are_idempotent_and_listed(jq: JobQueue) -> None:
    assert await jq.pause_queue("mail") is True
    assert await jq.pause_queue("mail") is False
    assert set(await jq.paused_queues()) == {"mail"}
    assert await jq.resume_queue("mail") is True
    assert await jq.resume_queue("mail") is False
    assert await jq.paused_queues() == {}
    with pytest.raises(InvalidJobError):
        await jq.pause_queue("")


@pytest.mark.parametrize("served", [None, ["mail", "other"]], ids=["every-queue", "named"])
async def test_a_paused_queue_keeps_its_jobs_until_resumed(
    db_url: str, served: list[str] | None
) -> None:
    jq = with_task(JobQueue(settings=fast_settings(db_url)))
    # A second JobQueue, as another process would be: it learns of the pause from the
    # database (notification or its next look), not from this one's memory.
    admin = JobQueue(settings=fast_settings(db_url))
    try:
        async with running_worker(jq, served):
            await admin.pause_queue("mail")
            held = await admin.enqueue("noop", queue="mail")
            # A job enqueued after the held one, in a queue that is not paused: once it has
            # run, the worker has claimed since the held job was there.
            control = await admin.enqueue("noop", queue="other")
            await eventually(lambda: succeeded(jq, control.id), what="the control job ran")
            assert (await jq.get(held.id)).status is JobStatus.QUEUED
            await admin.resume_queue("mail")
            await eventually(lambda: succeeded(jq, held.id), what="the resumed job ran")
    finally:
        await jq.close()
        await admin.close()


async def test_a_burst_worker_stops_when_only_paused_work_is_left(jq: JobQueue) -> None:
    with_task(jq)
    await jq.pause_queue("mail")
    held = await jq.enqueue("noop", queue="mail")
    other = await jq.enqueue("noop", queue="other")
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    assert (await jq.get(other.id)).status is JobStatus.SUCCEEDED
    assert (await jq.get(held.id)).status is JobStatus.QUEUED


async def test_with_nothing_paused_the_claim_is_the_plain_one(jq: JobQueue) -> None:
    """No paused queue: the worker asks for exactly the queues it serves (the plain claim,
    with no exclusion); with one paused, a worker of every queue names the others."""
    with_task(jq)
    asked: list[Sequence[str] | None] = []
    claim = jq.driver.claim_batch

    async def spy(params: ClaimParams) -> Any:
        asked.append(params.queues)
        return await claim(params)

    jq.driver.claim_batch = spy  # type: ignore[method-assign]
    first = await jq.enqueue("noop", queue="a")
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    assert (await jq.get(first.id)).status is JobStatus.SUCCEEDED
    assert asked and all(q is None for q in asked)
    asked.clear()
    await jq.pause_queue("b")
    second = await jq.enqueue("noop", queue="a")
    await jq.enqueue("noop", queue="b")
    await asyncio.wait_for(jq.run_worker(burst=True), 30)
    assert (await jq.get(second.id)).status is JobStatus.SUCCEEDED
    assert asked and all(q is not None and "b" not in q for q in asked)

"""The synchronous API (``defer_sync``, ``enqueue_sync``, ``enqueue_many_sync``, ``get_sync``):
the same inserts and reads as the asynchronous one, over connections of its own, from any
thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobq import JobContext, JobQueue
from jobq.errors import (
    InvalidJobError,
    JobNotFoundError,
)
from jobq.model import JobStatus
from jobq.storage.base import NewJob


async def test_every_insert_path_returns_what_is_stored(jq: JobQueue) -> None:
    """One plain job, a large plain batch (COPY on PostgreSQL), keys, unique keys and
    dependencies: what the sync API returns is what a read gives back."""
    later = datetime.now(UTC) + timedelta(minutes=5)
    [single] = await asyncio.to_thread(
        jq.enqueue_many_sync,
        [NewJob(kind="k", payload={"a": [1, None]}, priority=-2, run_at=later, timeout_s=3)],
    )
    batch = [NewJob(kind="b", payload={"n": i}, tenant=f"t{i % 2}") for i in range(1_200)]
    plain = await asyncio.to_thread(jq.enqueue_many_sync, batch)
    keyed = [
        NewJob(kind="c", idempotency_key="key-1"),
        NewJob(kind="c", idempotency_key="key-1"),
        NewJob(kind="d", unique_key="u-1"),
        NewJob(kind="e", depends_on=(single.id,)),
    ]
    with_keys = await asyncio.to_thread(jq.enqueue_many_sync, keyed)
    assert with_keys[0] == with_keys[1]
    assert with_keys[3].status is JobStatus.WAITING
    again = await asyncio.to_thread(jq.enqueue_sync, "c", idempotency_key="key-1")
    assert again == with_keys[0]

    returned = [single, *plain, *with_keys]
    assert [j.payload["n"] for j in plain] == list(range(1_200))
    for job in returned:
        assert job == await jq.get(job.id)
    for job in (single, plain[-1], *with_keys):
        assert job == await asyncio.to_thread(jq.get_sync, job.id)
    assert sum(s.count for s in await jq.stats()) == 1 + 1_200 + 3


def test_a_program_without_an_event_loop_enqueues_and_reads_its_jobs(db_url: str) -> None:
    with JobQueue(db_url) as jq:

        @jq.task(queue="mail", priority=3)
        def send(ctx: JobContext, to: str) -> None: ...

        job = send.configure(delay=60).defer_sync(to="a@b.c")
        stored = jq.get_sync(job.id)
        assert stored == job
        assert (stored.kind, stored.queue, stored.priority, stored.payload) == (
            "send",
            "mail",
            3,
            {"to": "a@b.c"},
        )
        assert stored.run_at > stored.created_at + timedelta(seconds=59)
        with pytest.raises(JobNotFoundError):
            jq.get_sync(job.id + 1000)


async def test_bad_input_is_refused_and_stores_nothing(jq: JobQueue) -> None:
    with pytest.raises(InvalidJobError, match="priority"):
        await asyncio.to_thread(
            jq.enqueue_many_sync, [NewJob(kind="ok"), NewJob(kind="bad", priority=5000)]
        )
    batch = [NewJob(kind="k", payload={"n": i}) for i in range(300)]
    batch[250] = NewJob(kind="k", payload={"text": "nul\x00here"})
    with pytest.raises(InvalidJobError):
        await asyncio.to_thread(jq.enqueue_many_sync, batch)
    with pytest.raises(InvalidJobError, match="depends_on"):
        await asyncio.to_thread(jq.enqueue_sync, "k", depends_on=[123456])
    assert await jq.stats() == []
    # Still usable after the refusals.
    assert len(await asyncio.to_thread(jq.enqueue_many_sync, batch[:250])) == 250


async def test_threads_enqueue_at_once_and_every_job_is_stored_once(jq: JobQueue) -> None:
    threads, each = 8, 40
    start = threading.Barrier(threads)
    ids: list[list[int]] = [[] for _ in range(threads)]

    def produce(index: int) -> None:
        start.wait(timeout=30)
        for n in range(each):
            ids[index].append(jq.enqueue_sync("k", {"thread": index, "n": n}).id)

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(threads) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, produce, i) for i in range(threads)))
    every = [job_id for produced in ids for job_id in produced]
    assert len(set(every)) == threads * each
    stored = await jq.list(limit=1000)
    assert sorted(j.id for j in stored) == sorted(every)
    assert {(j.payload["thread"], j.payload["n"]) for j in stored} == {
        (i, n) for i in range(threads) for n in range(each)
    }


async def test_a_sync_task_defers_follow_up_work_that_a_worker_runs(jq: JobQueue) -> None:
    """The common case: a sync task (in the worker's thread pool) enqueues the next step."""
    done: list[Any] = []

    @jq.task
    def second(ctx: JobContext, value: int) -> int:
        done.append(value)
        return value * 2

    @jq.task
    def first(ctx: JobContext, value: int) -> int:
        return second.defer_sync(value=value + 1).id

    job = await first.defer(value=1)
    await jq.run_worker(concurrency=4, burst=True)
    parent = await jq.get(job.id)
    assert parent.status is JobStatus.SUCCEEDED
    child = await jq.get(parent.result)
    assert (child.kind, child.status, child.result) == ("second", JobStatus.SUCCEEDED, 4)
    assert done == [2]

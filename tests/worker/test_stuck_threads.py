"""Sync tasks that hang past their timeout: their threads are counted as stuck, the worker
claims fewer jobs meanwhile, and fresh jobs run instead of timing out unstarted."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from jobq import JobContext, JobQueue, JobStatus
from jobq.api import create_app

from ..conformance.test_worker import fast_settings
from ..waiting import eventually
from .processes import deaths, start_workers

HUNG = 8


@pytest.fixture
async def jq(db_url: str) -> AsyncIterator[JobQueue]:
    queue = JobQueue(settings=fast_settings(db_url))
    yield queue
    await queue.close()


async def test_hung_sync_threads_do_not_fail_fresh_jobs(jq: JobQueue) -> None:
    release = threading.Event()

    @jq.task(timeout=1, max_attempts=1)
    def hang(ctx: JobContext) -> None:
        release.wait(60)  # the hung workload; set at the end of the test

    @jq.task(timeout=1, max_attempts=1)
    def quick(ctx: JobContext, n: int) -> int:
        return n + 1

    hung = [await hang.defer() for _ in range(HUNG)]
    worker = jq.worker(concurrency=10)
    running = asyncio.create_task(worker.run())
    app = create_app(jq)
    try:
        for job in hung:
            done = await jq.wait(job.id, timeout=30)
            assert (done.status, done.last_error) == (JobStatus.FAILED, "timed out after 1s")
        # Their threads still run: these must get threads of their own and run at once,
        # not wait behind the hung ones and fail as "timed out" without having started.
        fresh = [await quick.defer(n=n) for n in range(6)]
        for n, job in enumerate(fresh):
            done = await jq.wait(job.id, timeout=30)
            assert (done.status, done.result) == (JobStatus.SUCCEEDED, n + 1), done.last_error
        assert worker.stuck_threads == HUNG

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            listed = (await http.get("/workers")).json()
        assert [w["stuck_threads"] for w in listed] == [HUNG]
        text = worker.metrics.render().decode()
        assert f"jobq_worker_stuck_threads {HUNG:.1f}" in text
    finally:
        release.set()

    async def unstuck() -> bool:
        return worker.stuck_threads == 0

    await eventually(unstuck, what="stuck threads returned")
    worker.stop()
    await asyncio.wait_for(running, 30)


async def test_stuck_threads_take_slots_from_claims(jq: JobQueue) -> None:
    release = threading.Event()
    started: list[float] = []

    @jq.task(timeout=0.2, max_attempts=1)
    def hang(ctx: JobContext) -> None:
        started.append(time.monotonic())
        release.wait(60)

    jobs = [await hang.defer() for _ in range(3)]
    worker = jq.worker(concurrency=2)
    running = asyncio.create_task(worker.run())
    try:

        async def both_stuck() -> bool:
            return worker.stuck_threads == 2

        await eventually(both_stuck, what="two stuck threads")
        # Every slot is held by a stuck thread: the third job is not claimed.
        assert (await jq.get(jobs[2].id)).status is JobStatus.QUEUED
        assert len(started) == 2
    finally:
        release.set()
    # Released, the threads return, their slots come back and the third job is claimed.
    third = await jq.wait(jobs[2].id, timeout=30)
    assert third.status is JobStatus.SUCCEEDED
    worker.stop()
    await asyncio.wait_for(running, 30)


async def test_a_worker_process_exits_despite_a_stuck_thread(db_url: str) -> None:
    """SIGTERM: the job in a child is handed back after the grace and its child stopped;
    the stuck thread is not waited for. (The hung tasks run for ten minutes.)"""
    jq = JobQueue(settings=fast_settings(db_url))
    try:
        # As the app's task would enqueue it (this JobQueue does not register it).
        [stuck] = await jq.enqueue_many(
            [replace(jq.new_job("hang_in_thread", max_attempts=1), timeout_s=1.0)]
        )
        [worker] = start_workers(
            db_url,
            1,
            app="tests.worker.executor_app:jq",
            env={"JOBQ_SHUTDOWN_GRACE_S": "1", "JOBQ_PROCESS_POOL_SIZE": "1"},
        )
        try:
            done = await jq.wait(stuck.id, timeout=60)
            assert done.last_error == "timed out after 1s", deaths([worker])
            in_child = await jq.enqueue("hang_in_child")

            async def child_running() -> bool:
                return (await jq.get(in_child.id)).status is JobStatus.RUNNING

            await eventually(child_running, timeout=60, what="the child's job running")
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert code == 0, deaths([worker])
        assert (await jq.get(in_child.id)).status is JobStatus.QUEUED  # handed back
    finally:
        await jq.close()

"""Poison jobs in a real worker process; enqueueing inside the caller's own transaction."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from jobq import JobQueue, JobStatus
from jobq.storage.base import NewJob

from ..worker.processes import REPO, sql


def burst_worker(db_url: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "jobq.cli", "worker", "tests.worker.process_app:jq", "--burst"],
        cwd=REPO,
        env={**os.environ, "JOBQ_DATABASE_URL": db_url, "JOBQ_LOG_LEVEL": "WARNING"},
        capture_output=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr.decode()


async def test_always_failing_task_dead_letters_then_requeue_runs_it_again(pg_url: str) -> None:
    jq = JobQueue(pg_url)
    try:
        (job,) = await jq.enqueue_many([NewJob(kind="always_fails", max_attempts=3)])
        burst_worker(pg_url)
        failed = await jq.get(job.id)
        assert failed.status is JobStatus.FAILED and failed.attempt == 3
        errors = await jq.errors(job.id)
        assert [(e.attempt, e.error) for e in errors] == [
            (n, f"RuntimeError: broken on attempt {n}") for n in (1, 2, 3)
        ]
        assert all(e.traceback and "RuntimeError" in e.traceback for e in errors)
        assert await jq.requeue([job.id]) == [job.id]
        burst_worker(pg_url)
        again = await jq.get(job.id)
        assert again.status is JobStatus.FAILED
        assert [e.attempt for e in await jq.errors(job.id)] == [1, 2, 3, 1, 2, 3]
    finally:
        await jq.close()


async def test_enqueue_in_the_callers_transaction_commits_or_rolls_back_with_it(
    pg_url: str,
) -> None:
    jq = JobQueue(pg_url)
    sql(pg_url, "CREATE TABLE orders (id int PRIMARY KEY)")
    try:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES (1)")
                kept = await jq.enqueue("send_email", {"order": 1}, connection=conn)
            try:
                async with conn.transaction():
                    await conn.execute("INSERT INTO orders VALUES (2)")
                    await jq.enqueue("send_email", {"order": 2}, connection=conn)
                    raise RuntimeError("the order failed")
            except RuntimeError:
                pass
        jobs = await jq.list()
        assert [(j.id, j.payload) for j in jobs] == [(kept.id, {"order": 1})]
        assert sql(pg_url, "SELECT id FROM orders") == [(1,)]
    finally:
        await jq.close()

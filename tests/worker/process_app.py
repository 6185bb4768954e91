"""The app the multi-process tests run in real worker processes (``jobq worker``)."""

from __future__ import annotations

import asyncio
import os

from jobq import JobContext, JobQueue

jq = JobQueue()  # JOBQ_DATABASE_URL from the test's environment


@jq.task
async def record(ctx: JobContext, n: int) -> int:
    """Writes one processed_log row in the same transaction that completes the job."""
    await asyncio.sleep(float(os.environ.get("TEST_JOB_SECONDS", "0")))
    async with ctx.transaction() as conn:
        if jq.driver.dialect == "postgres":
            await conn.execute(
                "INSERT INTO processed_log (job_id, attempt, pid) VALUES (%s, %s, %s)",
                (ctx.job.id, ctx.attempt, os.getpid()),
            )
        else:
            await conn.execute(
                "INSERT INTO processed_log (job_id, attempt, pid) VALUES (?, ?, ?)",
                (ctx.job.id, ctx.attempt, os.getpid()),
            )
    return n


@jq.task(max_attempts=3, retry_base=0, retry_cap=0)
async def always_fails(ctx: JobContext) -> None:
    raise RuntimeError(f"broken on attempt {ctx.attempt}")

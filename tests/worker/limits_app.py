"""The app of the limit tests' worker processes: a capped kind and a rate-limited kind."""

from __future__ import annotations

import asyncio
import os

from jobq import JobContext, JobQueue
from tests.worker.processes import sql

jq = JobQueue()  # JOBQ_DATABASE_URL from the test's environment
MAX_RUNNING = 3
RATE = (5, 1.0)  # five starts in any second


@jq.task(max_running=MAX_RUNNING)
async def capped(ctx: JobContext) -> None:
    """Counts itself in while it runs; the probe row keeps the highest count ever seen."""
    url = jq.settings.database_url
    bigger = "greatest" if jq.driver.dialect == "postgres" else "max"
    await asyncio.to_thread(
        sql, url, f"UPDATE cap_probe SET running = running + 1, peak = {bigger}(peak, running + 1)"
    )
    await asyncio.sleep(float(os.environ.get("TEST_JOB_SECONDS", "0.2")))
    await asyncio.to_thread(sql, url, "UPDATE cap_probe SET running = running - 1")


@jq.task(rate_limit=RATE)
async def rated(ctx: JobContext) -> None:
    """Nothing to do: the test reads the jobs' start times."""

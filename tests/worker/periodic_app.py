"""The app the periodic-job process tests run in real worker processes (``jobq worker``).
Kept apart from process_app: its schedule enqueues a job every second in any worker that
loads it, which the other multi-process tests would count."""

from __future__ import annotations

from jobq import JobContext, JobQueue

jq = JobQueue()  # JOBQ_DATABASE_URL from the test's environment


@jq.periodic("* * * * * *", payload={"label": "every second"})  # six fields: seconds last
async def every_second(ctx: JobContext, label: str, tick: str) -> str:
    return tick

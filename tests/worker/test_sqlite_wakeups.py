"""SQLite has no LISTEN/NOTIFY: a worker in one process learns of jobs another process
enqueued by watching the file's change counter, not only at its next poll."""

from __future__ import annotations

from jobq import JobQueue, JobStatus

from ..waiting import eventually
from .process_app import record
from .processes import count_is, sql, start_workers, stop_workers


async def test_an_idle_sqlite_worker_wakes_for_jobs_another_process_enqueues(
    sqlite_url: str,
) -> None:
    sql(
        sqlite_url,
        "CREATE TABLE processed_log (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
        "pid INTEGER NOT NULL)",
    )
    # Its next poll a minute away and no heartbeat meanwhile (a heartbeat is a commit too):
    # the worker can start these jobs within the deadline only if their commits wake it.
    quiet = {"JOBQ_POLL_INTERVAL_S": "60", "JOBQ_HEARTBEAT_S": "30", "JOBQ_LEASE_S": "120"}
    workers = start_workers(sqlite_url, 1, env=quiet)
    jq = JobQueue(sqlite_url)
    try:
        await eventually(
            lambda: count_is(sqlite_url, "SELECT count(*) FROM jobq_workers", 1),
            timeout=60,
            what="a registered worker",
        )
        # The first job may meet the worker's first claim; the later ones find it waiting.
        for n in range(3):
            (job,) = await jq.enqueue_many([record.job(n=n)])

            async def succeeded(job_id: int = job.id) -> bool:
                return (await jq.get(job_id)).status is JobStatus.SUCCEEDED

            await eventually(succeeded, timeout=15, what=f"job {n} to run")
    finally:
        await jq.close()
        assert stop_workers(workers) == [0]

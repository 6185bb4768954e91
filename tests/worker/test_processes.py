"""Seed 002's concurrency test, stronger: real worker processes, exactly-once checked in a
log table written in each job's own transaction."""

from __future__ import annotations

from jobq import JobQueue

from ..waiting import eventually
from .process_app import record
from .processes import count_is, sql, start_workers, stop_workers

JOBS = 200
PROCESSES = 8


async def test_200_jobs_8_processes_each_processed_exactly_once(db_url: str) -> None:
    sql(
        db_url,
        "CREATE TABLE processed_log (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
        "pid INTEGER NOT NULL)",
    )
    workers = start_workers(db_url, PROCESSES, args=["--concurrency", "4"])
    try:
        # Enqueue only once every worker is up and idle, so they really compete.
        await eventually(
            lambda: count_is(db_url, "SELECT count(*) FROM jobq_workers", PROCESSES),
            timeout=60,
            what="8 registered workers",
        )
        jq = JobQueue(db_url)
        try:
            await jq.enqueue_many([record.job(n=i) for i in range(JOBS)])
        finally:
            await jq.close()
        await eventually(
            lambda: count_is(
                db_url, "SELECT count(*) FROM jobq_jobs WHERE status = 'succeeded'", JOBS
            ),
            timeout=120,
            what="all jobs succeeded",
        )
    finally:
        codes = stop_workers(workers)
    errors = [p.stderr.read().decode() for p in workers if p.stderr]
    assert codes == [0] * PROCESSES, errors

    rows = sql(db_url, "SELECT job_id, count(*) FROM processed_log GROUP BY job_id")
    assert len(rows) == JOBS
    assert all(n == 1 for _, n in rows)
    assert sql(db_url, "SELECT count(*) FROM processed_log") == [(JOBS,)]
    assert sql(db_url, "SELECT min(attempt), max(attempt) FROM jobq_jobs") == [(1, 1)]
    pids = sql(db_url, "SELECT count(DISTINCT pid) FROM processed_log")[0][0]
    assert isinstance(pids, int) and pids >= 2, "work should be spread over processes"
    assert sql(db_url, "SELECT count(*) FROM jobq_workers") == [(0,)]  # all unregistered

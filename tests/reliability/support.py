"""What the reliability tests share: fast leases, the processed_log table, enqueueing the
``record`` jobs of tests/worker/process_app.py, and checks of the database afterwards."""

from __future__ import annotations

import subprocess

from jobq.storage import connect
from jobq.storage.base import NewJob

from ..waiting import eventually
from ..worker.processes import RUNNING, count_is, sql, start_workers

# A killed worker's jobs are rescued about a second after it dies.
FAST_LEASE = {"JOBQ_LEASE_S": "1.0", "JOBQ_HEARTBEAT_S": "0.2", "JOBQ_POLL_INTERVAL_S": "0.1"}

SUCCEEDED = "SELECT count(*) FROM jobq_jobs WHERE status = 'succeeded'"


def create_log(db_url: str) -> None:
    """The table ``record`` jobs write one row to, in the transaction completing the job."""
    sql(
        db_url,
        "CREATE TABLE processed_log (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
        "pid INTEGER NOT NULL)",
    )


async def enqueue_records(
    db_url: str, count: int, max_attempts: int = 50, kind: str = "record"
) -> list[int]:
    driver = connect(db_url)
    try:
        jobs = await driver.enqueue_many(
            [NewJob(kind=kind, payload={"n": i}, max_attempts=max_attempts) for i in range(count)]
        )
    finally:
        await driver.close()
    return [j.id for j in jobs]


async def start_busy_worker(
    db_url: str, running: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """One worker process, returned once ``running`` of its jobs are under way."""
    (worker,) = start_workers(db_url, 1, env=env, args=["-c", str(max(1, running))])
    await eventually(lambda: count_is(db_url, RUNNING, running), what=f"{running} running")
    return worker


def assert_each_job_succeeded_exactly_once(db_url: str, total: int) -> None:
    """Every job succeeded, none is left in another status (running included), and each has
    exactly one processed_log row, written by the attempt that completed it."""
    assert sql(db_url, "SELECT status, count(*) FROM jobq_jobs GROUP BY status") == [
        ("succeeded", total)
    ]
    per_job = sql(db_url, "SELECT job_id, count(*) FROM processed_log GROUP BY job_id")
    assert len(per_job) == total
    assert {n for _, n in per_job} == {1}
    mismatched = sql(
        db_url,
        "SELECT j.id, j.attempt, p.attempt FROM jobq_jobs j JOIN processed_log p "
        "ON p.job_id = j.id WHERE p.attempt <> j.attempt",
    )
    assert mismatched == [], "an effect was written by an attempt that did not complete the job"


def assert_every_attempt_accounted_for(db_url: str) -> None:
    """A succeeded job's attempts before the last each left one error row (a failure or a
    rescue): nothing was retried silently, nothing recorded twice."""
    unaccounted = sql(
        db_url,
        "SELECT j.id, j.attempt, count(e.job_id) FROM jobq_jobs j "
        "LEFT JOIN jobq_job_errors e ON e.job_id = j.id "
        "GROUP BY j.id, j.attempt HAVING count(e.job_id) <> j.attempt - 1",
    )
    assert unaccounted == []

"""Global limits hold across real worker processes, on both databases."""

from __future__ import annotations

from jobq import JobQueue

from ..waiting import eventually
from .limits_app import MAX_RUNNING, RATE
from .processes import count_is, sql, start_workers, stop_workers

APP = "tests.worker.limits_app:jq"
SUCCEEDED = "SELECT count(*) FROM jobq_jobs WHERE status = 'succeeded'"


async def enqueue(db_url: str, kind: str, count: int) -> None:
    jq = JobQueue(db_url)
    try:
        await jq.migrate()
        await jq.enqueue_many([jq.new_job(kind) for _ in range(count)])
    finally:
        await jq.close()


async def test_a_concurrency_limit_of_3_holds_with_4_worker_processes(db_url: str) -> None:
    sql(db_url, "CREATE TABLE cap_probe (running INTEGER NOT NULL, peak INTEGER NOT NULL)")
    sql(db_url, "INSERT INTO cap_probe VALUES (0, 0)")
    jobs = 24
    await enqueue(db_url, "capped", jobs)
    workers = start_workers(db_url, 4, app=APP, args=["--concurrency", "4"])
    try:
        await eventually(lambda: count_is(db_url, SUCCEEDED, jobs), timeout=120, what="all ran")
    finally:
        codes = stop_workers(workers)
    assert codes == [0] * 4, [p.stderr.read().decode()[-2000:] for p in workers if p.stderr]
    [(running, peak)] = sql(db_url, "SELECT running, peak FROM cap_probe")
    print(f"\npeak running: {peak} (limit {MAX_RUNNING}, 16 slots offered)")
    assert running == 0
    assert 2 <= peak <= MAX_RUNNING  # ran side by side, never past the limit


async def test_a_rate_limit_holds_over_every_window(db_url: str) -> None:
    starts, per_s = RATE
    jobs = 20
    await enqueue(db_url, "rated", jobs)
    workers = start_workers(db_url, 2, app=APP, args=["--concurrency", "8"])
    try:
        await eventually(lambda: count_is(db_url, SUCCEEDED, jobs), timeout=120, what="all ran")
    finally:
        codes = stop_workers(workers)
    assert codes == [0, 0]
    if db_url.startswith("sqlite"):
        rows = sql(db_url, "SELECT started_at FROM jobq_jobs ORDER BY started_at")
        times = [float(r[0]) for r in rows]  # type: ignore[arg-type]
    else:
        rows = sql(
            db_url, "SELECT extract(epoch FROM started_at) FROM jobq_jobs ORDER BY started_at"
        )
        times = [float(r[0]) for r in rows]  # type: ignore[arg-type]
    # Every window of per_s seconds, starting at any start, holds at most `starts` starts.
    busiest = max(sum(1 for t in times if s <= t < s + per_s) for s in times)
    span = times[-1] - times[0]
    print(f"\n{jobs} starts over {span:.2f} s; busiest {per_s} s window: {busiest}")
    assert busiest <= starts
    assert span >= (jobs / starts - 1) * per_s  # the allowance, not the workers, set the pace

"""Cancelling a running demo job in a real worker process; rescuers racing each other."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from jobq.model import JobStatus
from jobq.storage import connect
from jobq.storage.base import ClaimParams, NewJob

from ..waiting import eventually
from ..worker.processes import REPO, sql, start_workers, stop_workers

STEP_SCALE = 4.0  # resize_image's steps become 0.4 s and 0.8 s


async def test_cancel_of_a_running_demo_job_lands_within_a_second(db_url: str) -> None:
    url = db_url
    kind = "sqlite" if url.startswith("sqlite") else "postgres"
    driver = connect(url)
    try:
        (job,) = await driver.enqueue_many([NewJob(kind="resize_image", max_attempts=3)])
        workers = start_workers(
            url, 1, app=None, env={"JOBQ_SIMULATED_TIME_SCALE": str(STEP_SCALE)}
        )
        try:
            await eventually(lambda: _status(driver, job.id, JobStatus.RUNNING), what="running")
            asked = time.monotonic()
            await driver.cancel(job.id)
            await eventually(lambda: _status(driver, job.id, JobStatus.CANCELLED), interval=0.005)
            took = time.monotonic() - asked
        finally:
            assert stop_workers(workers) == [0]
    finally:
        await driver.close()
    # The task stops at its next step boundary: at most one step (0.8 s) after the worker
    # hears of the cancel (NOTIFY on PostgreSQL, a 0.5 s poll on SQLite).
    print(f"\n{kind}: cancelled {took * 1000:.0f} ms after the request")
    assert took < (1.0 if kind == "postgres" else 1.5)


async def _status(driver: object, job_id: int, status: JobStatus) -> bool:
    job = await driver.get(job_id)  # type: ignore[attr-defined]
    return job is not None and job.status is status


RESCUER = """
import asyncio, json, sys, time
from jobq.storage import connect
async def main():
    driver = connect(sys.argv[1])
    await driver.open()
    start_at = float(sys.argv[2])
    while time.time() < start_at:  # line up the three processes on one instant
        await asyncio.sleep(0.001)
    print(json.dumps(await driver.rescue_stale(0)))
    await driver.close()
asyncio.run(main())
"""


async def test_concurrent_rescuers_rescue_each_job_once(db_url: str) -> None:
    url = db_url
    driver = connect(url)
    try:
        await driver.enqueue_many([NewJob(kind="k") for _ in range(200)])
        assert len(await driver.claim_batch(ClaimParams("dead-worker", limit=200))) == 200
    finally:
        await driver.close()
    start_at = time.time() + 2.0
    rescuers = [
        subprocess.Popen(  # noqa: ASYNC220 - starting processes, not waiting on them
            [sys.executable, "-c", RESCUER, url, str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in rescuers]
    assert [p.returncode for p in rescuers] == [0, 0, 0], [err for _, err in outputs]
    rescued = [json.loads(out) for out, _ in outputs]
    every = [job_id for ids in rescued for job_id in ids]
    assert len(every) == 200 and len(set(every)) == 200  # each once, none twice
    assert sql(url, "SELECT count(*) FROM jobq_job_errors") == [(200,)]
    assert sql(url, "SELECT count(*) FROM jobq_jobs WHERE status = 'retrying'") == [(200,)]

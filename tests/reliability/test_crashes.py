"""Crashes: kill -9 of workers, mid-job and at random points; SIGTERM and a second signal."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time

import psycopg

from ..waiting import eventually
from ..worker.processes import count_is, sql, start_workers, started, stop_workers
from .support import (
    FAST_LEASE,
    SUCCEEDED,
    assert_each_job_succeeded_exactly_once,
    assert_every_attempt_accounted_for,
    create_log,
    enqueue_records,
    start_busy_worker,
)


async def test_kill_9_mid_job_the_job_is_rescued_and_succeeds(pg_url: str) -> None:
    create_log(pg_url)
    (job_id,) = await enqueue_records(pg_url, 1)
    doomed = await start_busy_worker(pg_url, 1, {**FAST_LEASE, "TEST_JOB_SECONDS": "60"})
    [(doomed_id,)] = sql(pg_url, "SELECT locked_by FROM jobq_jobs WHERE id = %s", [job_id])
    doomed.send_signal(signal.SIGKILL)
    assert doomed.wait(30) == -signal.SIGKILL
    rescuer = start_workers(pg_url, 1, env={**FAST_LEASE, "TEST_JOB_SECONDS": "0"})
    try:
        await eventually(
            lambda: count_is(pg_url, SUCCEEDED, 1), timeout=60, what="the job rescued, succeeded"
        )
    finally:
        assert stop_workers(rescuer) == [0]
    [(attempt, locked_by)] = sql(pg_url, "SELECT attempt, locked_by FROM jobq_jobs")
    assert attempt == 2 and locked_by != doomed_id  # another worker ran the second attempt
    errors = sql(pg_url, "SELECT attempt, error FROM jobq_job_errors WHERE job_id = %s", [job_id])
    assert errors == [(1, f"lease expired: worker {doomed_id} stopped heartbeating")]
    assert sql(pg_url, "SELECT job_id, attempt FROM processed_log") == [(job_id, 2)]


async def test_random_kills_leave_exactly_one_effect_per_job(pg_url: str) -> None:
    """Workers SIGKILLed at random moments while 300 jobs drain: each job's effect row is
    written in the transaction that completes it, so none is lost and none doubled."""
    create_log(pg_url)
    total = 300
    await enqueue_records(pg_url, total)
    env = {**FAST_LEASE, "TEST_JOB_SECONDS": "0.1"}  # about 2.5 s of work for 3 workers
    rng = random.Random(20261124)
    alive: list[subprocess.Popen[bytes]] = start_workers(pg_url, 3, env=env, args=["-c", "4"])
    kills = 0
    try:
        for _ in range(6):
            # The fault schedule itself (not a wait for a condition): run a random while,
            # then SIGKILL one or two workers wherever they are, and start replacements.
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            if await count_is(pg_url, SUCCEEDED, total):
                break
            for victim in rng.sample(alive, k=rng.choice([1, 2])):
                victim.send_signal(signal.SIGKILL)
                victim.wait(30)
                alive.remove(victim)
                kills += 1
            alive += start_workers(pg_url, 3 - len(alive), env=env, args=["-c", "4"])
        await eventually(lambda: count_is(pg_url, SUCCEEDED, total), timeout=120, what="all done")
        # Replacements started in the last round may still be importing; a graceful stop
        # needs them started first.
        await eventually(lambda: started(pg_url, alive), timeout=60, what="workers started")
    finally:
        codes = stop_workers(alive)
    assert codes == [0] * len(codes)
    assert_each_job_succeeded_exactly_once(pg_url, total)
    assert_every_attempt_accounted_for(pg_url)
    # The kills did land mid-job: some attempts were lost and rescued.
    [(rescued,)] = sql(
        pg_url, "SELECT count(*) FROM jobq_job_errors WHERE error LIKE 'lease expired:%%'"
    )
    print(f"\n{kills} workers killed, {rescued} attempts rescued")
    assert kills >= 2 and isinstance(rescued, int) and rescued >= 1


async def test_sigterm_lets_in_flight_jobs_finish_then_exits_0(pg_url: str) -> None:
    create_log(pg_url)
    await enqueue_records(pg_url, 4)
    env = {"TEST_JOB_SECONDS": "1.5", "JOBQ_SHUTDOWN_GRACE_S": "30"}
    worker = await start_busy_worker(pg_url, 4, env)  # all 4 started
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert_each_job_succeeded_exactly_once(pg_url, 4)
    assert sql(pg_url, "SELECT max(attempt) FROM jobq_jobs") == [(1,)]
    assert sql(pg_url, "SELECT count(*) FROM jobq_workers") == [(0,)]


async def test_past_the_grace_period_jobs_are_handed_back(pg_url: str) -> None:
    create_log(pg_url)
    await enqueue_records(pg_url, 2)
    env = {"TEST_JOB_SECONDS": "120", "JOBQ_SHUTDOWN_GRACE_S": "0.5"}
    worker = await start_busy_worker(pg_url, 2, env)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert sql(pg_url, "SELECT status, attempt, count(*) FROM jobq_jobs GROUP BY 1, 2") == [
        ("queued", 0, 2)  # attempt not counted
    ]
    assert sql(pg_url, "SELECT count(*) FROM jobq_job_errors") == [(0,)]
    assert sql(pg_url, "SELECT count(*) FROM processed_log") == [(0,)]
    assert sql(pg_url, "SELECT count(*) FROM jobq_workers") == [(0,)]


async def test_a_second_signal_stops_at_once(pg_url: str) -> None:
    create_log(pg_url)
    await enqueue_records(pg_url, 1)
    env = {"TEST_JOB_SECONDS": "120", "JOBQ_SHUTDOWN_GRACE_S": "300"}
    worker = await start_busy_worker(pg_url, 1, env)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(30) == 0
    assert time.monotonic() - signalled < 5  # not the 300 s grace period
    assert sql(pg_url, "SELECT status, attempt FROM jobq_jobs") == [("queued", 0)]


async def test_sigterm_during_start_up_is_a_clean_stop(pg_url: str) -> None:
    """A worker told to stop while it is still starting (here: its schema check waits on a
    lock another process holds on the migrations table) exits 0 once it can, and claims
    nothing on the way out."""
    create_log(pg_url)
    await enqueue_records(pg_url, 3)
    with psycopg.connect(pg_url) as holder:
        holder.execute("LOCK TABLE jobq_migrations IN ACCESS EXCLUSIVE MODE")
        (worker,) = start_workers(pg_url, 1)
        waiting_for_lock = (
            "SELECT count(*) FROM pg_locks WHERE relation = 'jobq_migrations'::regclass "
            "AND NOT granted"
        )
        await eventually(lambda: count_is(pg_url, waiting_for_lock, 1), timeout=60)
        worker.send_signal(signal.SIGTERM)
        holder.rollback()  # release the lock: the worker may go on starting
    assert worker.wait(60) == 0
    assert sql(pg_url, "SELECT status, attempt, count(*) FROM jobq_jobs GROUP BY 1, 2") == [
        ("queued", 0, 3)
    ]
    assert sql(pg_url, "SELECT count(*) FROM jobq_workers") == [(0,)]

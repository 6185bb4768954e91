"""Periodic jobs across real worker processes: every worker runs the scheduler, each tick
still becomes exactly one job."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta

from ..waiting import eventually
from .processes import REPO, at_least, sql, start_workers, started, stop_workers

PROCESSES = 3
TICKS = 5
APP = "tests.worker.periodic_app:jq"
KIND = "every_second"  # its schedule: "* * * * * *", every second


async def test_each_tick_is_one_job_however_many_workers_schedule(db_url: str) -> None:
    workers = start_workers(db_url, PROCESSES, app=APP)
    try:
        await eventually(lambda: started(db_url, workers), timeout=60, what="workers started")
        await eventually(
            lambda: at_least(
                db_url,
                f"SELECT count(*) FROM jobq_jobs WHERE kind = '{KIND}' AND status = 'succeeded'",
                TICKS,
            ),
            timeout=60,
            what=f"{TICKS} periodic jobs run",
        )
    finally:
        codes = stop_workers(workers)
    errors = [p.stderr.read().decode() for p in workers if p.stderr]
    assert codes == [0] * PROCESSES, errors

    rows = sql(db_url, f"SELECT idempotency_key, payload FROM jobq_jobs WHERE kind = '{KIND}'")
    payloads = [p if isinstance(p, dict) else json.loads(str(p)) for _, p in rows]
    per_tick = Counter(p["tick"] for p in payloads)
    assert len(per_tick) >= TICKS
    assert set(per_tick.values()) == {1}, per_tick  # one job per tick, not one per worker
    assert {key for key, _ in rows} == {f"periodic:{KIND}:{tick}" for tick in per_tick}
    assert all(p["label"] == "every second" for p in payloads)
    ticks = sorted(datetime.fromisoformat(t) for t in per_tick)
    assert all(t.microsecond == 0 and t.utcoffset() == timedelta(0) for t in ticks)
    # Consecutive seconds while the workers ran: no tick was skipped. (The first is left out:
    # it is the missed tick the first worker enqueued at start, which may lag.)
    gaps = [b - a for a, b in itertools.pairwise(ticks[1:])]
    assert all(gap == timedelta(seconds=1) for gap in gaps), ticks


def test_cli_lists_schedules_with_their_next_tick() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "jobq.cli", "schedules", APP],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.strip().splitlines()
    assert header.split() == ["NAME", "CRON", "TZ", "TASK", "NEXT", "TICK"]
    assert line.startswith(f"{KIND} ") and "* * * * * *" in line
    assert datetime.fromisoformat(line.split()[-1]).utcoffset() == timedelta(0)
    demo = subprocess.run(
        [sys.executable, "-m", "jobq.cli", "schedules"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert (demo.returncode, demo.stdout.strip()) == (0, "no schedules")

"""The per-minute summary of finished jobs behind the dashboard's charts, on every driver:
summarized and live counts agree, and an unsummarized stretch is reported, not counted."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg

from jobq import JobContext, JobQueue, JobStatus
from jobq.errors import DoNotRetry
from jobq.rollup import LIVE_MAX

from .test_worker import fast_settings


async def finish_jobs(jq: JobQueue, ok: int, bad: int) -> None:
    @jq.task
    async def work(ctx: JobContext, fail: bool) -> None:
        if fail:
            raise DoNotRetry("no")

    await jq.enqueue_many([work.job(fail=i >= ok) for i in range(ok + bad)])
    await asyncio.wait_for(jq.run_worker(burst=True), 60)


def age_finished_jobs(url: str, minutes: int) -> None:
    """Move every finish time back, as if the jobs had finished that long ago."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE jobq_jobs SET finished_at = finished_at - ?", (minutes * 60,))
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE jobq_jobs SET finished_at = finished_at - make_interval(mins => %s)",
                (minutes,),
            )


def totals(rows: list[tuple[int, JobStatus, int]]) -> dict[JobStatus, int]:
    out: dict[JobStatus, int] = {}
    for _, status, n in rows:
        out[status] = out.get(status, 0) + n
    return out


async def test_summarized_counts_match_the_live_ones(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url))
    try:
        await finish_jobs(jq, ok=7, bad=3)
        age_finished_jobs(db_url, 5)
        now = datetime.now(UTC)
        since = now - timedelta(hours=1)
        live = await jq.finished_counts(since, 60, now)
        assert totals(live.rows) == {JobStatus.SUCCEEDED: 7, JobStatus.FAILED: 3}
        while await jq.roll_up_finished():
            pass
        summarized = await jq.finished_counts(since, 60, now)
        assert summarized.rows == live.rows
        assert summarized.gap is None
        by_hour = await jq.finished_counts(now - timedelta(days=1), 3600, now)
        assert totals(by_hour.rows) == {JobStatus.SUCCEEDED: 7, JobStatus.FAILED: 3}
    finally:
        await jq.close()


async def test_an_unsummarized_stretch_is_a_gap_not_a_count(db_url: str) -> None:
    jq = JobQueue(settings=fast_settings(db_url))
    try:
        await finish_jobs(jq, ok=4, bad=0)
        age_finished_jobs(db_url, 60)  # an hour ago, and nothing summarized yet
        now = datetime.now(UTC)
        counts = await jq.finished_counts(now - timedelta(hours=2), 60, now)
        assert counts.rows == []
        assert counts.gap is not None
        assert counts.gap[1] == now - LIVE_MAX
        while await jq.roll_up_finished():
            pass
        counts = await jq.finished_counts(now - timedelta(hours=2), 60, now)
        assert totals(counts.rows) == {JobStatus.SUCCEEDED: 4}
        assert counts.gap is None
    finally:
        await jq.close()

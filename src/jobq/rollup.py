"""Jobs finished per minute, summarized in the database for the dashboard's charts.

Counting a day of finished jobs at every page view reads every one of them (900,000 jobs:
2.9 s). Instead the maintenance leader summarizes each minute once, shortly after it
closes (``roll_up``), into ``jobq_finished_minutes``, and a chart reads those rows plus a
live count of the minutes since the summary's watermark. The live part is capped at
``LIVE_MAX``: while the summary is further behind (no worker has led yet, or it is still
catching up after a long stop), the minutes in between are reported as a gap instead of
being counted at page time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import JobStatus
from .storage.base import Driver

SPAN_S = 3600  # most seconds one summary step covers: short transactions
LAG_S = 30  # a minute is summarized once it has been closed this long
KEEP_S = 2 * 86400  # the summary forgets minutes older than this
LIVE_MAX = timedelta(minutes=15)


async def roll_up(driver: Driver) -> bool:
    """One summary step; True when more is left (call again at once)."""
    return await driver.roll_up_finished(SPAN_S, LAG_S, KEEP_S)


@dataclass(frozen=True, slots=True)
class FinishedCounts:
    rows: list[tuple[int, JobStatus, int]]  # (bucket start, succeeded or failed, count)
    gap: tuple[datetime, datetime] | None  # minutes neither summarized nor counted live


async def finished_counts(
    driver: Driver, since: datetime, bucket_s: int, now: datetime
) -> FinishedCounts:
    through, summarized = await driver.finished_rollup(since)
    live_from = since if through is None else max(since, through)
    gap = None
    if now - live_from > LIVE_MAX:
        gap = (live_from, now - LIVE_MAX)
        live_from = now - LIVE_MAX
    live = await driver.finished_counts(live_from, 60)
    buckets: dict[tuple[int, JobStatus], int] = {}
    for minute, status, jobs in [*summarized, *live]:
        key = (minute // bucket_s * bucket_s, status)
        buckets[key] = buckets.get(key, 0) + jobs
    return FinishedCounts([(b, s, n) for (b, s), n in sorted(buckets.items())], gap)

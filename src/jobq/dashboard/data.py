"""What the dashboard's pages show, read through JobQueue and shaped for the templates.

Every read is bounded, so a page costs the same with a thousand jobs or millions: counts by
queue read at most ``COUNT_CAP`` waiting jobs and ``RARE_CAP`` of each other status (a count
that reaches its cap shows as "2,000+"),
percentiles come from a bounded sample of each bucket (the latest jobs that succeeded in
it), and the throughput counts come from the per-minute summary (rollup.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from markupsafe import Markup

from ..app import JobQueue
from ..model import JobStatus, WorkerInfo
from ..periodic import Schedule
from ..storage.base import FinishedSample
from .charts import Series, lines, stacked_bars

COUNT_CAP = 100_000  # jobs waiting to run, counted through the claim index only
RARE_CAP = 2_000  # jobs of the other statuses, each read from the table
# QUEUED stands for "waiting to run": queued or retrying (see Driver.status_by_queue).
ACTIVE_STATUSES = (JobStatus.WAITING, JobStatus.RUNNING, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    span: timedelta
    bucket_s: int
    label_format: str
    per_bucket: int  # the percentiles' sample: at most this many jobs of each bucket


HOUR = Window("last hour", timedelta(hours=1), 60, "%H:%M", 20)
DAY = Window("last day", timedelta(days=1), 3600, "%H:00", 60)


@dataclass(slots=True)
class WindowCharts:
    window: Window
    finished: int
    failed: int
    throughput: Markup
    waited: Markup
    ran: Markup
    sampled: int
    gap: tuple[datetime, datetime] | None


@dataclass(slots=True)
class QueueRow:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    capped: set[str] = field(default_factory=set)
    oldest_waiting_s: float | None = None
    paused_at: datetime | None = None
    max_running: int | None = None

    def count(self, status: str) -> str:
        n = self.counts.get(status, 0)
        return f"{n:,}+" if status in self.capped else f"{n:,}"


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return cuts[9], cuts[18]  # p50, p95


def _bucket_starts(now: datetime, window: Window) -> list[int]:
    end = int(now.timestamp()) // window.bucket_s * window.bucket_s
    count = int(window.span.total_seconds()) // window.bucket_s
    return [end - window.bucket_s * i for i in range(count - 1, -1, -1)]


async def window_charts(jq: JobQueue, window: Window, now: datetime) -> WindowCharts:
    starts = _bucket_starts(now, window)
    since = datetime.fromtimestamp(starts[0], UTC)
    done: dict[int, int] = {}
    failed: dict[int, int] = {}
    counts = await jq.finished_counts(since, window.bucket_s, now)
    for bucket, status, n in counts.rows:
        (done if status is JobStatus.SUCCEEDED else failed)[bucket] = n
    sample = await jq.finished_sample(since, window.bucket_s, window.per_bucket)
    labels = [datetime.fromtimestamp(s, UTC).strftime(window.label_format) for s in starts]
    waited, ran = _percentile_series(sample, starts, window.bucket_s)
    title = window.name
    return WindowCharts(
        window=window,
        finished=sum(done.values()),
        failed=sum(failed.values()),
        throughput=stacked_bars(
            f"Jobs finished, {title} (UTC)",
            labels,
            [
                Series("succeeded", "ok", [done.get(s, 0) for s in starts]),
                Series("failed", "bad", [failed.get(s, 0) for s in starts]),
            ],
        ),
        waited=lines(f"Time in queue, {title}", labels, waited, " s"),
        ran=lines(f"Run time, {title}", labels, ran, " s"),
        sampled=len(sample),
        gap=counts.gap,
    )


def _percentile_series(
    sample: Sequence[FinishedSample], starts: list[int], bucket_s: int
) -> tuple[list[Series], list[Series]]:
    first = starts[0]
    waits: list[list[float]] = [[] for _ in starts]
    runs: list[list[float]] = [[] for _ in starts]
    for row in sample:
        index = int((row.finished_at - first) // bucket_s)
        if 0 <= index < len(starts):
            waits[index].append(max(0.0, row.waited_s))
            runs[index].append(max(0.0, row.ran_s))
    out = []
    for per_bucket in (waits, runs):
        pairs = [_quantiles(values) for values in per_bucket]
        out.append(
            [
                Series("p50", "p50", [p[0] for p in pairs]),
                Series("p95", "p95", [p[1] for p in pairs]),
            ]
        )
    return out[0], out[1]


async def queue_rows(jq: JobQueue, now: datetime) -> list[QueueRow]:
    rows: dict[str, QueueRow] = {}
    totals: dict[JobStatus, int] = {}
    paused = await jq.paused_queues()
    counts = [
        *await jq.counts_by_queue([JobStatus.QUEUED], COUNT_CAP),
        *await jq.counts_by_queue(ACTIVE_STATUSES, RARE_CAP),
    ]
    for count in counts:
        row = rows.setdefault(count.queue, QueueRow(count.queue))
        row.counts[str(count.status)] = count.count
        totals[count.status] = totals.get(count.status, 0) + count.count
        if count.status is JobStatus.QUEUED and count.oldest_run_at is not None:
            row.oldest_waiting_s = max(0.0, (now - count.oldest_run_at).total_seconds())
    for status, total in totals.items():
        cap = COUNT_CAP if status is JobStatus.QUEUED else RARE_CAP
        if total >= cap:  # only part of this status was read: counts are lower bounds
            for row in rows.values():
                if str(status) in row.counts:
                    row.capped.add(str(status))
    for name, since in paused.items():
        rows.setdefault(name, QueueRow(name)).paused_at = since
    for name, limit in jq.queue_limits.items():
        rows.setdefault(name, QueueRow(name)).max_running = limit
    return sorted(rows.values(), key=lambda r: r.name)


@dataclass(frozen=True, slots=True)
class WorkerRow:
    info: WorkerInfo
    in_flight: int
    heartbeat_age_s: float
    alive: bool


async def worker_rows(jq: JobQueue, now: datetime) -> list[WorkerRow]:
    running = await jq.running_by_worker()
    lease = jq.settings.lease_s
    rows = []
    for w in await jq.workers():
        age = max(0.0, (now - w.heartbeat_at).total_seconds())
        rows.append(WorkerRow(w, running.get(w.id, 0), age, age < lease))
    return rows


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    schedule: Schedule
    next_tick: datetime
    last_job_id: int | None
    last_status: str | None
    last_tick: datetime | None


LOOK_BACK_TICKS = 3  # how many past ticks to look for the last run among


async def schedule_rows(jq: JobQueue, now: datetime) -> list[ScheduleRow]:
    """Each schedule's next tick, and its latest job among the last few ticks (found by the
    tick's idempotency key, through its unique index)."""
    rows = []
    for s in jq.schedules:
        found = None
        for tick in _past_ticks(s, now, LOOK_BACK_TICKS):
            job = await jq.find_by_idempotency_key(s.idempotency_key(tick))
            if job is not None:
                found = (tick, job)
                break
        rows.append(
            ScheduleRow(
                s,
                s.next_tick(now),
                found[1].id if found else None,
                str(found[1].status) if found else None,
                found[0] if found else None,
            )
        )
    return rows


def _past_ticks(schedule: Schedule, now: datetime, count: int) -> list[datetime]:
    ticks = [schedule.previous_tick(now)]
    while len(ticks) < count:
        ticks.append(schedule.previous_tick(ticks[-1] - timedelta(microseconds=1)))
    return ticks

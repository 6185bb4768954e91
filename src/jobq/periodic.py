"""Periodic jobs: cron schedules that the workers turn into jobs, exactly once per tick.

``@jq.periodic("*/5 * * * *")`` registers a task and a :class:`Schedule`. Every worker of a
JobQueue that has schedules runs a small scheduler loop (:class:`Scheduler`) beside its claim
loop. At each tick the loop enqueues the schedule's job with an idempotency key made of the
schedule's name and the tick's time in UTC (``periodic:<name>:<ISO tick>``). However many
workers enqueue the same tick, the jobs table's unique index on ``idempotency_key`` keeps
one job: the others get the existing job back. No lock, no leader, no check-then-insert.

Times. Cron expressions are read in UTC unless the schedule has a ``tz`` (then in that zone,
DST included); ticks are stored and keyed in UTC. The loop reads the worker host's clock
(``datetime.now(UTC)``); the job's ``run_at`` is the tick, so a host whose clock runs a little
ahead does not make the job run before its time by the database's clock.

Missed ticks. At each look (on start, and after every sleep) a schedule's due ticks are those
since the last tick this loop handled (on start: all past ticks). Only the most recent of
them is enqueued, and only if it is no older than the schedule's ``max_lateness``; the older
ones are skipped. So workers that were all down over many ticks run the job once when they
come back (if the last missed tick is recent enough), never a burst of catch-up runs. The
default ``max_lateness`` is one hour: a deploy or a restart that spans a tick still runs it,
while a daily or weekly job is not started at a surprising time after a long outage. For
schedules more frequent than hourly, the most recent tick is always within it.

Exactly once holds while the tick's job still holds its key: keep the retention of finished
jobs (``JOBQ_RETENTION``) and ``JOBQ_IDEMPOTENCY_TTL_S`` longer than ``max_lateness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

import structlog
from croniter import CroniterBadDateError, croniter

from .errors import ConfigurationError, InvalidJobError
from .storage.common import refuse_unstorable_job

if TYPE_CHECKING:
    from .model import Job
    from .observability.tracing import JobTracer
    from .storage.base import NewJob
    from .task import AsyncTaskFunction, SyncTaskFunction, Task

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_LATENESS = timedelta(hours=1)
KEY_PREFIX = "periodic"
TICK_PARAMETER = "tick"  # the payload key (and task parameter) that receives the tick time
MAX_SLEEP_S = 60.0  # re-read the clock at least this often (wall-clock jumps)
RETRY_S = 1.0  # after a failed enqueue, try again this soon (unless a tick comes sooner)
_EARLY_WAKE_S = 0.001  # sleep a hair past the tick: a timer may fire a little early

log = structlog.get_logger("jobq.periodic")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule that enqueues a job of ``task`` (a task name) at each tick.

    ``cron``: five fields (minute hour day-of-month month day-of-week), or six with a last
    field for seconds (``"* * * * * */10"``: every 10 seconds), or an alias like ``@hourly``.
    Read in ``tz`` (UTC by default). ``payload`` is passed to the task at every tick; with
    ``pass_tick`` the tick's time (UTC, ISO 8601) is added to it under ``"tick"``.
    """

    name: str
    cron: str
    task: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None  # None: the task's
    priority: int | None = None  # None: the task's
    max_lateness: timedelta = DEFAULT_MAX_LATENESS
    tz: tzinfo = UTC
    pass_tick: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("a schedule needs a name")
        fields = self.cron.split()
        if not (len(fields) == 1 and fields[0].startswith("@")) and len(fields) not in (5, 6):
            raise ConfigurationError(
                f"schedule {self.name!r}: cron {self.cron!r} must have 5 fields, or 6 with "
                "seconds last"
            )
        if not croniter.is_valid(self.cron):
            raise ConfigurationError(f"schedule {self.name!r}: invalid cron {self.cron!r}")
        if self.max_lateness <= timedelta(0):
            raise ConfigurationError(f"schedule {self.name!r}: max_lateness must be positive")
        if TICK_PARAMETER in self.payload:
            raise ConfigurationError(
                f"schedule {self.name!r}: the payload key {TICK_PARAMETER!r} is reserved"
            )
        try:
            self.next_tick(utc_now())
        except CroniterBadDateError as exc:  # e.g. "0 0 30 2 *": February 30th never comes
            raise ConfigurationError(
                f"schedule {self.name!r}: cron {self.cron!r} never fires"
            ) from exc

    # ------------------------------------------------------------------ ticks
    def _local(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("pass a timezone-aware datetime (e.g. datetime.now(UTC))")
        return when.astimezone(self.tz)

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``, in UTC."""
        tick: datetime = croniter(self.cron, self._local(after)).get_next(datetime)
        return tick.astimezone(UTC)

    def previous_tick(self, at: datetime) -> datetime:
        """The last tick at or before ``at``, in UTC."""
        before: datetime = croniter(self.cron, self._local(at)).get_prev(datetime)
        following = self.next_tick(before)  # get_prev is strict: ``at`` may be a tick itself
        return following if following <= at else before.astimezone(UTC)

    def due_tick(self, now: datetime, after: datetime | None = None) -> datetime | None:
        """The one tick to enqueue at ``now``, given that the ticks up to ``after`` were
        handled (None: nothing was yet): the most recent tick at or before ``now``, if it is
        later than ``after`` and no older than ``max_lateness``. Older unhandled ticks are
        skipped, never caught up one by one."""
        tick = self.previous_tick(now)
        if after is not None and tick <= after:
            return None
        if now - tick > self.max_lateness:
            return None
        return tick

    # ------------------------------------------------------------------ jobs
    def idempotency_key(self, tick: datetime) -> str:
        return f"{KEY_PREFIX}:{self.name}:{tick.astimezone(UTC).isoformat()}"

    def job_payload(self, tick: datetime) -> dict[str, Any]:
        payload = dict(self.payload)
        if self.pass_tick:
            payload[TICK_PARAMETER] = tick.astimezone(UTC).isoformat()
        return payload

    def job_of(self, task: Task[Any, Any], tick: datetime) -> NewJob:
        """The job of this tick."""
        return task.configure(
            queue=self.queue,
            priority=self.priority,
            run_at=tick,
            idempotency_key=self.idempotency_key(tick),
        ).job(**self.job_payload(tick))

    async def enqueue(self, host: ScheduleHost, tick: datetime) -> Job:
        """Enqueue this tick's job, or get the one another worker enqueued already. Traced,
        a tick starts a trace of its own: it belongs to no request."""
        job = self.job_of(host.tasks[self.task], tick)
        tracer = host.tracer
        if tracer is None:
            return (await host.enqueue_many([job]))[0]
        with tracer.new_trace():
            return (await host.enqueue_many([job]))[0]

    @classmethod
    def for_task(
        cls,
        task: Task[Any, Any],
        cron: str,
        *,
        name: str | None = None,
        payload: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_lateness: timedelta | float = DEFAULT_MAX_LATENESS,
        tz: str | tzinfo | None = None,
    ) -> Schedule:
        """A schedule of ``task``, checked against the task's signature: the payload (and
        the tick, when the function takes a ``tick`` parameter) must bind to it."""
        parameters = inspect.signature(task.func).parameters.values()
        pass_tick = any(
            p.name == TICK_PARAMETER or p.kind is p.VAR_KEYWORD for p in list(parameters)[1:]
        )
        schedule = cls(
            name=name or task.name,
            cron=cron,
            task=task.name,
            payload=dict(payload or {}),
            queue=queue,
            priority=priority,
            max_lateness=(
                max_lateness
                if isinstance(max_lateness, timedelta)
                else timedelta(seconds=max_lateness)
            ),
            tz=_zone(tz),
            pass_tick=pass_tick,
        )
        try:
            # A job the database would refuse is refused here, at registration, not at each
            # tick (where it could only be logged, and no job would ever be made).
            refuse_unstorable_job(schedule.job_of(task, utc_now()))
        except InvalidJobError as exc:
            raise ConfigurationError(f"schedule {schedule.name!r}: {exc}") from exc
        return schedule


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {tz!r}") from exc


class PeriodicDecorator(Protocol):
    """What ``@jq.periodic(...)`` returns: registers a function as a task (or takes a Task
    already registered) and schedules it; returns the Task."""

    @overload
    def __call__(self, func: Task[P, R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, func: AsyncTaskFunction[P, R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, func: SyncTaskFunction[P, R], /) -> Task[P, R]: ...


# ---------------------------------------------------------------------- the loop


class ScheduleHost(Protocol):
    """What the scheduler loop needs: the schedules and their tasks, the tracer, and an
    enqueue through the front door (a JobQueue, or the services it gives a worker)."""

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]: ...
    @property
    def schedules(self) -> Sequence[Schedule]: ...
    @property
    def tracer(self) -> JobTracer | None: ...
    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]: ...


class Scheduler:
    """Enqueues the due ticks of a JobQueue's schedules; one per worker.

    Keeps, per schedule, the last tick it handled (enqueued, found enqueued, or skipped as
    too late), so that each tick is looked at once by this loop; across loops and processes
    the idempotency key makes it one job.
    """

    def __init__(
        self,
        host: ScheduleHost,
        schedules: Sequence[Schedule] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        logger: Any = None,
    ) -> None:
        self.host = host
        self.schedules = list(host.schedules if schedules is None else schedules)
        self.clock = clock
        self.log = logger if logger is not None else log
        self.handled: dict[str, datetime | None] = {s.name: None for s in self.schedules}

    async def run_once(self, now: datetime) -> datetime:
        """Enqueue what is due at ``now``; returns when to look again: the next tick of any
        schedule, or sooner to retry a failed enqueue."""
        wake = datetime.max.replace(tzinfo=UTC)
        for schedule in self.schedules:
            tick = schedule.due_tick(now, self.handled[schedule.name])
            if tick is not None:
                try:
                    job = await schedule.enqueue(self.host, tick)
                except Exception as exc:  # outage: try again soon, while it is not too late
                    self.log.warning(
                        "periodic enqueue failed; retrying",
                        schedule=schedule.name,
                        tick=tick.isoformat(),
                        error=str(exc),
                    )
                    wake = min(wake, now + timedelta(seconds=RETRY_S))
                    continue
                self.log.debug(
                    "periodic job enqueued",
                    schedule=schedule.name,
                    tick=tick.isoformat(),
                    job_id=job.id,
                )
            self.handled[schedule.name] = schedule.previous_tick(now)
            wake = min(wake, schedule.next_tick(now))
        return wake if self.schedules else now + timedelta(seconds=MAX_SLEEP_S)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set (or the task is cancelled): enqueue what is due, sleep
        until the next tick of any schedule (at most MAX_SLEEP_S)."""
        while not stopping.is_set():
            try:
                wake = await self.run_once(self.clock())
            except Exception:  # a bug here must not end the loop, nor fail the worker's stop
                self.log.exception("periodic scheduler failed; retrying")
                wake = self.clock() + timedelta(seconds=RETRY_S)
            delay = (wake - self.clock()).total_seconds() + _EARLY_WAKE_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=min(max(0.0, delay), MAX_SLEEP_S))


def start_scheduler(
    host: ScheduleHost, stopping: asyncio.Event, logger: Any = None
) -> asyncio.Task[None] | None:
    """The scheduler loop as an asyncio task, or None when ``host`` has no schedules."""
    if not host.schedules:
        return None
    scheduler = Scheduler(host, logger=logger)
    return asyncio.create_task(scheduler.run(stopping), name="jobq-periodic")

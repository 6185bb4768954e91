"""Periodic schedules without a database: tick arithmetic, the missed-tick policy, the
scheduler's bookkeeping (with enqueue replaced), and registration through jq.periodic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobq import ConfigurationError, JobContext, JobQueue, NewJob
from jobq.periodic import DEFAULT_MAX_LATENESS, RETRY_S, Schedule, Scheduler


def at(hour: int, minute: int, second: int = 0, micro: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, minute, second, micro, tzinfo=UTC)


def every(cron: str, **kwargs: Any) -> Schedule:
    return Schedule(name="s", cron=cron, task="t", **kwargs)


# ---------------------------------------------------------------------------- ticks


def test_next_tick_is_strictly_after() -> None:
    s = every("*/5 * * * *")
    assert s.next_tick(at(12, 3)) == at(12, 5)
    assert s.next_tick(at(12, 5)) == at(12, 10)
    assert s.next_tick(at(12, 4, 59, 999_999)) == at(12, 5)
    assert s.next_tick(at(23, 58)) == at(0, 0, day=2)


def test_previous_tick_is_at_or_before() -> None:
    s = every("*/5 * * * *")
    assert s.previous_tick(at(12, 5)) == at(12, 5)
    assert s.previous_tick(at(12, 5, 0, 1)) == at(12, 5)
    assert s.previous_tick(at(12, 9, 59)) == at(12, 5)
    assert s.previous_tick(at(0, 2, day=2)) == at(0, 0, day=2)


def test_sixth_field_is_seconds() -> None:
    s = every("* * * * * */10")
    assert s.next_tick(at(12, 0, 5, 500_000)) == at(12, 0, 10)
    assert s.previous_tick(at(12, 0, 5, 500_000)) == at(12, 0, 0)
    assert s.previous_tick(at(12, 0, 10)) == at(12, 0, 10)
    each = every("* * * * * *")
    assert each.next_tick(at(12, 0, 59, 999_000)) == at(12, 1, 0)


def test_aliases() -> None:
    assert every("@hourly").next_tick(at(12, 30)) == at(13, 0)


def test_results_are_utc_whatever_the_input_zone() -> None:
    from zoneinfo import ZoneInfo

    paris_noon = datetime(2024, 5, 1, 14, 0, tzinfo=ZoneInfo("Europe/Paris"))  # 12:00 UTC
    tick = every("*/5 * * * *").next_tick(paris_noon)
    assert tick == at(12, 5) and tick.utcoffset() == timedelta(0)


def test_tz_reads_the_cron_in_that_zone() -> None:
    from zoneinfo import ZoneInfo

    s = every("0 9 * * *", tz=ZoneInfo("Europe/Paris"))
    assert s.next_tick(at(0, 0)) == at(7, 0)  # CEST, UTC+2
    winter = datetime(2024, 1, 10, 0, 0, tzinfo=UTC)
    assert s.next_tick(winter) == datetime(2024, 1, 10, 8, 0, tzinfo=UTC)  # CET, UTC+1


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        every("* * * * *").next_tick(datetime(2024, 5, 1))


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * * *", "5 fields"),
        ("61 * * * *", "invalid cron"),
        ("every minute", "5 fields"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron_is_a_configuration_error(cron: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        every(cron)


def test_max_lateness_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_lateness"):
        every("* * * * *", max_lateness=timedelta(0))


# ---------------------------------------------------------------------------- missed ticks


def test_on_start_the_most_recent_missed_tick_is_due() -> None:
    s = every("*/5 * * * *")
    assert s.max_lateness == DEFAULT_MAX_LATENESS == timedelta(hours=1)
    assert s.due_tick(at(12, 7)) == at(12, 5)  # workers down since 10:00: 12:05 only
    assert s.due_tick(at(12, 5)) == at(12, 5)  # exactly on the tick


def test_a_missed_tick_older_than_max_lateness_is_skipped() -> None:
    daily = every("0 3 * * *")
    assert daily.due_tick(at(3, 59)) == at(3, 0)
    assert daily.due_tick(at(4, 0)) == at(3, 0)  # exactly max_lateness late: still run
    assert daily.due_tick(at(4, 0, 0, 1)) is None
    assert daily.due_tick(at(20, 0)) is None
    patient = every("0 3 * * *", max_lateness=timedelta(hours=18))
    assert patient.due_tick(at(20, 0)) == at(3, 0)


def test_a_handled_tick_is_not_due_again() -> None:
    s = every("*/5 * * * *")
    assert s.due_tick(at(12, 7), after=at(12, 5)) is None
    assert s.due_tick(at(12, 10), after=at(12, 5)) == at(12, 10)
    # Several ticks since the last one handled (a stalled loop): only the latest.
    assert s.due_tick(at(12, 31), after=at(12, 5)) == at(12, 30)


# ---------------------------------------------------------------------------- the loop


def make_app(tmp_path: Path) -> JobQueue:
    return JobQueue(f"sqlite:///{tmp_path / 'never-opened.db'}")


class Recorder:
    """Stands in for JobQueue.enqueue_many: records the jobs, or fails while told to."""

    def __init__(self) -> None:
        self.jobs: list[NewJob] = []
        self.failing = False

    async def __call__(self, jobs: list[NewJob], **_: Any) -> list[Any]:
        if self.failing:
            raise ConnectionError("database down")
        self.jobs.extend(jobs)
        return [SimpleNamespace(id=len(self.jobs)) for _ in jobs]

    @property
    def keys(self) -> list[str | None]:
        return [j.idempotency_key for j in self.jobs]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[JobQueue, Recorder]:
    jq = make_app(tmp_path)
    recorder = Recorder()
    monkeypatch.setattr(jq, "enqueue_many", recorder)
    return jq, recorder


async def test_scheduler_enqueues_each_tick_once_and_skips_missed_ones(
    app: tuple[JobQueue, Recorder],
) -> None:
    jq, recorder = app

    @jq.periodic("*/5 * * * *")
    async def cleanup(ctx: JobContext) -> None:
        pass

    scheduler = Scheduler(jq)
    # Start at 12:07 after a long stop: the 12:05 tick only; next look at 12:10.
    assert await scheduler.run_once(at(12, 7)) == at(12, 10)
    # Woken early or twice: nothing new.
    assert await scheduler.run_once(at(12, 9, 59, 999_000)) == at(12, 10)
    assert await scheduler.run_once(at(12, 10, 0, 1_000)) == at(12, 15)
    # The loop stalled 20 minutes (suspended host): 12:30 only, not 12:15, 12:20, 12:25.
    assert await scheduler.run_once(at(12, 31)) == at(12, 35)
    assert recorder.keys == [
        "periodic:cleanup:2024-05-01T12:05:00+00:00",
        "periodic:cleanup:2024-05-01T12:10:00+00:00",
        "periodic:cleanup:2024-05-01T12:30:00+00:00",
    ]
    assert [j.run_at for j in recorder.jobs] == [at(12, 5), at(12, 10), at(12, 30)]


async def test_scheduler_retries_a_failed_enqueue_while_not_too_late(
    app: tuple[JobQueue, Recorder],
) -> None:
    jq, recorder = app

    @jq.periodic("0 * * * *", max_lateness=90)  # seconds
    async def hourly(ctx: JobContext) -> None:
        pass

    scheduler = Scheduler(jq)
    recorder.failing = True
    now = at(12, 0, 0, 5_000)
    assert await scheduler.run_once(now) == now + timedelta(seconds=RETRY_S)
    recorder.failing = False
    assert await scheduler.run_once(at(12, 1)) == at(13, 0)
    assert recorder.keys == ["periodic:hourly:2024-05-01T12:00:00+00:00"]
    # The next tick fails until it is too late: then it is skipped, not run at 13:05.
    recorder.failing = True
    await scheduler.run_once(at(13, 0))
    recorder.failing = False
    assert await scheduler.run_once(at(13, 5)) == at(14, 0)
    assert len(recorder.jobs) == 1


async def test_scheduler_sleeps_until_the_next_tick_of_any_schedule(
    app: tuple[JobQueue, Recorder],
) -> None:
    jq, _ = app

    @jq.periodic("0 * * * *")
    async def hourly(ctx: JobContext) -> None:
        pass

    @jq.periodic("* * * * * */20")
    async def often(ctx: JobContext) -> None:
        pass

    @jq.periodic("0 0 1 1 *")
    async def yearly(ctx: JobContext) -> None:
        pass

    scheduler = Scheduler(jq, [jq.schedules[0], jq.schedules[2]])
    assert await scheduler.run_once(at(12, 30)) == at(13, 0)
    assert await Scheduler(jq).run_once(at(12, 30, 5)) == at(12, 30, 20)


# ---------------------------------------------------------------------------- registration


async def test_periodic_registers_a_task_and_a_schedule(app: tuple[JobQueue, Recorder]) -> None:
    jq, recorder = app

    @jq.periodic(
        "*/5 * * * *", name="report", payload={"kind": "daily"}, queue="reports", priority=7
    )
    async def make_report(ctx: JobContext, kind: str, tick: str) -> str:
        return f"{kind}@{tick}"

    assert jq.tasks["report"] is make_report
    (schedule,) = jq.schedules
    assert (schedule.name, schedule.task, schedule.pass_tick) == ("report", "report", True)
    await schedule.enqueue(jq, at(12, 5))
    (job,) = recorder.jobs
    assert job.kind == "report"
    assert job.payload == {"kind": "daily", "tick": "2024-05-01T12:05:00+00:00"}
    assert (job.queue, job.priority, job.run_at) == ("reports", 7, at(12, 5))
    assert job.idempotency_key == "periodic:report:2024-05-01T12:05:00+00:00"


async def test_periodic_on_an_existing_task_keeps_its_options(
    app: tuple[JobQueue, Recorder],
) -> None:
    jq, recorder = app

    @jq.periodic("0 * * * *", name="sync-eu", payload={"region": "eu"})
    @jq.periodic("0 * * * *", name="sync-us", payload={"region": "us"})
    @jq.task(queue="sync", max_attempts=2, timeout=30)
    def sync(ctx: JobContext, region: str) -> None:
        pass

    assert [s.name for s in jq.schedules] == ["sync-us", "sync-eu"]
    assert all(s.task == "sync" and not s.pass_tick for s in jq.schedules)
    for schedule in jq.schedules:
        await schedule.enqueue(jq, at(12, 0))
    assert [j.payload for j in recorder.jobs] == [{"region": "us"}, {"region": "eu"}]
    assert {(j.queue, j.max_attempts, j.timeout_s) for j in recorder.jobs} == {("sync", 2, 30)}
    assert len(set(recorder.keys)) == 2


def test_periodic_refuses_bad_configurations(tmp_path: Path) -> None:
    jq = make_app(tmp_path)

    @jq.periodic("* * * * *")
    async def ping(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="already exists"):
        jq.periodic("*/2 * * * *", name="ping")(ping)
    with pytest.raises(ConfigurationError, match="missing a required argument"):

        @jq.periodic("* * * * *")
        async def needs_an_argument(ctx: JobContext, to: str) -> None:
            pass

    assert "needs_an_argument" not in jq.tasks  # nothing half-registered
    with pytest.raises(ConfigurationError, match="reserved"):

        @jq.periodic("* * * * *", payload={"tick": "mine"})
        async def takes_tick(ctx: JobContext, tick: str) -> None:
            pass

    with pytest.raises(ConfigurationError, match="time zone"):

        @jq.periodic("* * * * *", tz="Mars/Olympus_Mons")
        async def martian(ctx: JobContext) -> None:
            pass

    # A job the database would refuse is refused at registration, not at every tick.
    with pytest.raises(ConfigurationError, match="not JSON-serializable"):

        @jq.periodic("* * * * *", payload={"tags": {"a", "b"}})
        async def tagged(ctx: JobContext, tags: set[str]) -> None:
            pass

    with pytest.raises(ConfigurationError, match="priority"):

        @jq.periodic("* * * * *", priority=5000)
        async def urgent(ctx: JobContext) -> None:
            pass

    other = make_app(tmp_path)
    with pytest.raises(ConfigurationError, match="another JobQueue"):
        other.periodic("* * * * *")(ping)
    assert [s.name for s in jq.schedules] == ["ping"] and not other.schedules


def test_tz_by_name_and_lateness_in_seconds(tmp_path: Path) -> None:
    jq = make_app(tmp_path)

    @jq.periodic("30 8 * * 1-5", tz="America/New_York", max_lateness=600)
    async def standup(ctx: JobContext, **extra: Any) -> None:
        pass

    (s,) = jq.schedules
    assert s.pass_tick and s.max_lateness == timedelta(minutes=10)
    assert s.next_tick(at(0, 0)) == at(12, 30)  # Wednesday 08:30 EDT

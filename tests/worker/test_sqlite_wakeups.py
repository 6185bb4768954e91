"""SQLite has no LISTEN/NOTIFY: a worker in one process learns of jobs another process
enqueued by watching the file's change counter, not only at its next poll."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from jobq import JobQueue, JobStatus
from jobq.storage import connect
from jobq.storage.base import NewJob
from jobq.storage.sqlite.watch import CommitWatcher

from ..waiting import eventually
from .process_app import record
from .processes import count_is, sql, start_workers, stop_workers


async def test_an_idle_sqlite_worker_wakes_for_jobs_another_process_enqueues(
    sqlite_url: str,
) -> None:
    sql(
        sqlite_url,
        "CREATE TABLE processed_log (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
        "pid INTEGER NOT NULL)",
    )
    # Its next poll a minute away and no heartbeat meanwhile (a heartbeat is a commit too):
    # the worker can start these jobs within the deadline only if their commits wake it.
    quiet = {"JOBQ_POLL_INTERVAL_S": "60", "JOBQ_HEARTBEAT_S": "30", "JOBQ_LEASE_S": "120"}
    workers = start_workers(sqlite_url, 1, env=quiet)
    jq = JobQueue(sqlite_url)
    try:
        await eventually(
            lambda: count_is(sqlite_url, "SELECT count(*) FROM jobq_workers", 1),
            timeout=60,
            what="a registered worker",
        )
        # The first job may meet the worker's first claim; the later ones find it waiting.
        for n in range(3):
            (job,) = await jq.enqueue_many([record.job(n=n)])

            async def succeeded(job_id: int = job.id) -> bool:
                return (await jq.get(job_id)).status is JobStatus.SUCCEEDED

            await eventually(succeeded, timeout=15, what=f"job {n} to run")
    finally:
        await jq.close()
        assert stop_workers(workers) == [0]


def _due_later() -> NewJob:
    return NewJob(kind="k", run_at=datetime.now(UTC) + timedelta(hours=1))


@pytest.mark.parametrize(
    ("queues", "quiet", "wakes"),
    [
        # Most commits are not new work (completions, heartbeats), and a wake would cost the
        # worker a claim, which takes the file's write lock.
        pytest.param(None, _due_later, NewJob(kind="k"), id="nothing-due"),
        # A worker serving queue "a" would make a claim for nothing on every commit of "b".
        pytest.param(
            ["a"],
            lambda: NewJob(kind="k", queue="b"),
            NewJob(kind="k", queue="a"),
            id="other-queue",
        ),
    ],
)
async def test_the_watcher_wakes_only_for_a_job_due_in_the_listeners_queues(
    sqlite_url: str, queues: list[str] | None, quiet: Callable[[], NewJob], wakes: NewJob
) -> None:
    driver = connect(sqlite_url)
    await driver.open()
    calls: list[tuple[str, str]] = []
    listener = await driver.listen(lambda kind, value: calls.append((kind, value)), queues)
    other = JobQueue(sqlite_url)  # another connection, as another process would have
    try:
        assert isinstance(listener, CommitWatcher)
        await other.enqueue_many([quiet()])

        await seen_by(listener, commits=1)
        assert calls == []  # no wake
        await other.enqueue_many([wakes])

        async def woken() -> bool:
            return bool(calls)

        await eventually(woken, what="a wake")
        assert calls == [("new", "*")]
    finally:
        await listener.close()
        await other.close()
        await driver.close()


async def seen_by(listener: CommitWatcher, commits: int) -> None:
    """Wait until the watcher has looked at ``commits`` commits, then let the wake-ups it
    handed to the event loop run: it hands them over before it counts the commit."""

    async def looked() -> bool:
        return listener.changes_seen >= commits

    await eventually(looked, what="the watcher to see the commit")
    await asyncio.sleep(0)

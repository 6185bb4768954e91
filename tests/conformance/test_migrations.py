"""Migrations on every driver: up, down, up again leaves the same schema; concurrent starts
apply each migration once; an edited migration is refused."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from jobq.errors import DatabaseUnavailableError, MigrationError
from jobq.model import JobStatus
from jobq.storage import connect, sqlfiles
from jobq.storage.base import ClaimParams, Completion, Driver, Failure, NewJob
from jobq.storage.sqlfiles import load_migrations


@pytest.fixture(params=["sqlite", "postgres"])
def unmigrated_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url_unmigrated" if request.param == "sqlite" else "pg_url_unmigrated"
    url: str = request.getfixturevalue(name)
    return url


def schema_of(url: str) -> list[tuple[object, ...]]:
    """Everything a migration creates, in a stable order."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return sorted(
                conn.execute(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master "
                    "WHERE name LIKE 'jobq%' AND name <> 'jobq_migrations'"
                ).fetchall()
            )
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            """SELECT table_name, column_name, data_type, domain_name, is_nullable,
                      column_default
               FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name LIKE 'jobq%%'
                 AND table_name <> 'jobq_migrations'"""
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'jobq%%' "
            "AND tablename <> 'jobq_migrations'"
        ).fetchall()
        constraints = conn.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
               FROM pg_constraint WHERE conrelid::regclass::text LIKE 'jobq%%'
                 AND conrelid::regclass::text <> 'jobq_migrations'"""
        ).fetchall()
        options = conn.execute(
            "SELECT relname, reloptions::text FROM pg_class WHERE relname LIKE 'jobq%%'"
            " AND relname NOT LIKE 'jobq_migrations%%'"
        ).fetchall()
        domains = conn.execute(
            """SELECT t.typname, format_type(t.typbasetype, t.typtypmod), c.conname,
                      pg_get_constraintdef(c.oid)
               FROM pg_type t LEFT JOIN pg_constraint c ON c.contypid = t.oid
               WHERE t.typtype = 'd' AND t.typname LIKE 'jobq%%'"""
        ).fetchall()
        return sorted(
            [("column", *c) for c in columns]
            + [("domain", *d) for d in domains]
            + [("index", *i) for i in indexes]
            + [("constraint", *c) for c in constraints]
            + [("options", *o) for o in options],
            key=repr,
        )


async def test_up_down_up_leaves_the_same_schema(unmigrated_url: str) -> None:
    driver = connect(unmigrated_url)
    try:
        newest = len(load_migrations(driver.dialect))
        assert await driver.migrate() == list(range(1, newest + 1))
        assert await driver.migrate() == []  # idempotent
        first = schema_of(unmigrated_url)
        assert any("jobq_jobs" in repr(row) for row in first)
        assert await driver.rollback(newest) == list(range(newest, 0, -1))
        assert schema_of(unmigrated_url) == []
        assert await driver.applied_migrations() == []
        assert await driver.migrate() == list(range(1, newest + 1))
        assert schema_of(unmigrated_url) == first
    finally:
        await driver.close()


async def test_each_rollback_restores_the_schema_before_its_migration(
    unmigrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = load_migrations("sqlite" if unmigrated_url.startswith("sqlite") else "postgres")
    driver = connect(unmigrated_url)
    try:
        schemas = [schema_of(unmigrated_url)]
        for count in range(1, len(every) + 1):  # up one migration at a time
            monkeypatch.setattr(sqlfiles, "load_migrations", lambda _, k=count: every[:k])
            assert await driver.migrate() == [every[count - 1].version]
            schemas.append(schema_of(unmigrated_url))
        monkeypatch.undo()
        for count in range(len(every), 0, -1):
            assert await driver.rollback(1) == [every[count - 1].version]
            assert schema_of(unmigrated_url) == schemas[count - 1], every[count - 1].name
    finally:
        await driver.close()


async def test_concurrent_migrations_apply_once(unmigrated_url: str) -> None:
    drivers = [connect(unmigrated_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(d.migrate() for d in drivers))
        applied = sorted(v for r in results for v in r)
        assert applied == list(range(1, len(load_migrations(drivers[0].dialect)) + 1))
    finally:
        for d in drivers:
            await d.close()


async def test_edited_migration_is_refused(unmigrated_url: str) -> None:
    driver = connect(unmigrated_url)
    try:
        await driver.migrate()
        table = "jobq_migrations"
        if unmigrated_url.startswith("sqlite"):
            with sqlite3.connect(unmigrated_url.removeprefix("sqlite:///")) as conn:
                conn.execute(f"UPDATE {table} SET checksum = 'tampered' WHERE version = 1")
        else:
            with psycopg.connect(unmigrated_url) as conn:
                conn.execute(f"UPDATE {table} SET checksum = 'tampered' WHERE version = 1")
        with pytest.raises(MigrationError, match="checksum"):
            await driver.migrate()
        with pytest.raises(MigrationError):
            await driver.rollback(0)
    finally:
        await driver.close()


def rows_of(url: str) -> list[tuple[Any, ...]]:
    """Every job, error and dependency row, as stored."""
    tables = ("jobq_jobs", "jobq_job_errors", "jobq_job_dependencies")
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [
                (t, *row)
                for t in tables
                for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            ]
    with psycopg.connect(url) as conn:
        return [
            (t, *row)
            for t in tables
            for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
        ]


async def _claim_one(driver: Driver, queue: str) -> Any:
    [job] = await driver.claim_batch(ClaimParams("migration-test", 1, [queue]))
    return job


async def _queue_in_every_status(driver: Driver) -> dict[int, JobStatus]:
    """A running queue's jobs: one in each status (and a scheduled one), each made the way
    the queue makes it."""
    later = datetime.now(UTC) + timedelta(hours=1)
    queued, scheduled, parent, to_cancel = await driver.enqueue_many(
        [
            NewJob(kind="k", queue="idle", payload={"n": 1}),
            NewJob(kind="k", queue="idle", run_at=later),
            NewJob(kind="k", queue="parents"),
            NewJob(kind="k", queue="idle", priority=7),
        ]
    )
    [waiting] = await driver.enqueue_many([NewJob(kind="k", queue="idle", depends_on=(parent.id,))])
    made: dict[int, JobStatus] = {
        queued.id: JobStatus.QUEUED,
        scheduled.id: JobStatus.QUEUED,
        parent.id: JobStatus.QUEUED,
        waiting.id: JobStatus.WAITING,
    }
    for status in ("running", "retrying", "succeeded", "failed"):
        await driver.enqueue_many([NewJob(kind="k", queue=status, max_attempts=3, timeout_s=9.5)])
        job = await _claim_one(driver, status)
        if status == "retrying":
            await driver.fail_many([Failure(job.id, job.attempt, "boom", "tb", retry_in_s=3600)])
        elif status == "succeeded":
            await driver.complete_many([Completion(job.id, job.attempt, {"ok": True})])
        elif status == "failed":
            await driver.fail_many([Failure(job.id, job.attempt, "boom", "tb")])
        made[job.id] = JobStatus(status)
    await driver.cancel(to_cancel.id)
    made[to_cancel.id] = JobStatus.CANCELLED
    return made


async def _dependents_still_released(driver: Driver, queue: str) -> None:
    """The parent's completion still queues its waiting dependent (a trigger on the table)."""
    [parent] = await driver.enqueue_many([NewJob(kind="k", queue=queue)])
    [child] = await driver.enqueue_many([NewJob(kind="k", queue="idle", depends_on=(parent.id,))])
    assert (await driver.get(child.id)).status == JobStatus.WAITING  # type: ignore[union-attr]
    claimed = await _claim_one(driver, queue)
    assert claimed.id == parent.id
    await driver.complete_many([Completion(parent.id, claimed.attempt)])
    assert (await driver.get(child.id)).status == JobStatus.QUEUED  # type: ignore[union-attr]


async def test_latest_migration_carries_a_running_queue_up_and_down(
    unmigrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs in every status, their errors and dependencies, are carried across the newest
    migration and back unchanged, and the queue keeps working on either side."""
    every = load_migrations("sqlite" if unmigrated_url.startswith("sqlite") else "postgres")
    driver = connect(unmigrated_url)
    try:
        monkeypatch.setattr(sqlfiles, "load_migrations", lambda _: every[:-1])
        await driver.migrate()
        monkeypatch.undo()
        made = await _queue_in_every_status(driver)
        assert set(made.values()) == set(JobStatus)
        before = rows_of(unmigrated_url)

        assert await driver.migrate() == [every[-1].version]
        assert rows_of(unmigrated_url) == before
        await _still_works(driver, unmigrated_url, made, "parents-up")

        after_up = rows_of(unmigrated_url)
        assert await driver.rollback(1) == [every[-1].version]
        assert rows_of(unmigrated_url) == after_up
        await _still_works(driver, unmigrated_url, made, "parents-down")
    finally:
        await driver.close()


async def _still_works(
    migrated_by: Driver, url: str, made: dict[int, JobStatus], queue: str
) -> None:
    """Each job reads back in its status, and dependents are released, from a process
    started after the migration and from the one that ran it (whose connections prepared
    statements before it: a call may fail once per connection, DatabaseUnavailableError,
    and the next succeeds)."""
    fresh = connect(url)
    try:
        for job_id, status in made.items():
            assert (await fresh.get(job_id)).status == status  # type: ignore[union-attr]
        await _dependents_still_released(fresh, queue)
    finally:
        await fresh.close()
    for attempt in range(50):  # more than the connections its pool holds
        try:
            await _dependents_still_released(migrated_by, f"{queue}-{attempt}")
            break
        except DatabaseUnavailableError:
            continue
    else:
        raise AssertionError("the migrating process's driver never recovered")


# One row the database must refuse for each of its rules on a job's columns.
BAD_ROWS = [
    ("status", "INSERT INTO jobq_jobs (kind, status) VALUES ('k', 'lost')"),
    ("queue", "INSERT INTO jobq_jobs (kind, queue) VALUES ('k', '')"),
    ("kind", "INSERT INTO jobq_jobs (kind) VALUES (repeat('k', 129))"),
    ("payload", "INSERT INTO jobq_jobs (kind, payload) VALUES ('k', '[1]')"),
    ("priority", "INSERT INTO jobq_jobs (kind, priority) VALUES ('k', 1001)"),
    ("max_attempts", "INSERT INTO jobq_jobs (kind, max_attempts) VALUES ('k', 0)"),
    ("attempt", "INSERT INTO jobq_jobs (kind, attempt, max_attempts) VALUES ('k', 3, 2)"),
    ("timeout", "INSERT INTO jobq_jobs (kind, timeout_s) VALUES ('k', 0)"),
    ("running", "INSERT INTO jobq_jobs (kind, status) VALUES ('k', 'running')"),
    ("update", "UPDATE jobq_jobs SET priority = -1001"),
    ("copy", "COPY jobq_jobs (kind, priority) FROM STDIN"),
]


def _refuse(conn: psycopg.Connection[Any], rule: str, sql: str) -> None:
    if rule == "copy":
        with conn.cursor().copy(sql) as copy:
            copy.write_row(("k", 5000))
    else:
        conn.execute(sql)


@pytest.mark.parametrize(("rule", "sql"), BAD_ROWS, ids=[r for r, _ in BAD_ROWS])
async def test_postgres_refuses_bad_rows_at_every_schema_version(
    pg_url_unmigrated: str, rule: str, sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules hold before and after the newest migration, and after its rollback."""
    every = load_migrations("postgres")
    driver = connect(pg_url_unmigrated)
    try:
        for step in ("before", "latest", "rolled back"):
            if step == "before":
                monkeypatch.setattr(sqlfiles, "load_migrations", lambda _: every[:-1])
                await driver.migrate()
                monkeypatch.undo()
            elif step == "latest":
                await driver.migrate()
            else:
                await driver.rollback(1)
            with psycopg.connect(pg_url_unmigrated, autocommit=True) as conn:
                conn.execute("INSERT INTO jobq_jobs (kind) VALUES ('fine')")
                with pytest.raises(psycopg.errors.CheckViolation):
                    _refuse(conn, rule, sql)
                [(count,)] = conn.execute("SELECT count(*) FROM jobq_jobs").fetchall()
                conn.execute("DELETE FROM jobq_jobs")
            assert count == 1, step
    finally:
        await driver.close()

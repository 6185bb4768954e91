"""Migrations on every driver: up, down, up again leaves the same schema; concurrent starts
apply each migration once; an edited migration is refused."""

from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest

from jobq.errors import MigrationError
from jobq.storage import connect, sqlfiles
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
            """SELECT table_name, column_name, data_type, is_nullable, column_default
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
        return sorted(
            [("column", *c) for c in columns]
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

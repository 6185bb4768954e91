"""The test fixtures themselves: each test gets its own migrated, empty database of each kind,
and the PostgreSQL finder says clearly when there is none."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from jobq.storage.base import Driver
from jobq.storage.sqlfiles import load_migrations

from . import pg_server as pg_server_module
from .pg_server import NoPostgres, PgServer, find_server, probe

TABLES = {"jobq_jobs", "jobq_job_errors", "jobq_workers", "jobq_leader", "jobq_migrations"}

# Database names seen by test_each_test_gets_its_own_database, across its parameters.
_seen_databases: set[str] = set()


def _pg_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def test_pg_url_is_migrated_and_empty(pg_url: str, pg_template: str) -> None:
    assert _pg_tables(pg_url) >= TABLES
    with psycopg.connect(pg_url) as conn:
        dbname = conn.execute("SELECT current_database()").fetchone()
        versions = conn.execute("SELECT version FROM jobq_migrations ORDER BY version").fetchall()
        jobs = conn.execute("SELECT count(*) FROM jobq_jobs").fetchone()
    assert dbname is not None and dbname[0].startswith("jobq_t_")
    assert dbname[0] != pg_template
    assert [v for (v,) in versions] == [m.version for m in load_migrations("postgres")]
    assert jobs == (0,)


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_its_own_database(pg_url: str, attempt: int) -> None:
    # Both parameters leave a table behind; whichever runs second would find the first one's
    # if the database were shared, or if writes reached the template.
    with psycopg.connect(pg_url) as conn:
        dbname = conn.execute("SELECT current_database()").fetchone()
        before = conn.execute("SELECT to_regclass('infra_marker') IS NULL").fetchone()
        conn.execute("CREATE TABLE infra_marker (attempt integer)")
    assert before == (True,)
    assert dbname is not None and dbname[0] not in _seen_databases
    _seen_databases.add(dbname[0])


def test_pg_url_unmigrated_is_empty(pg_url_unmigrated: str) -> None:
    assert _pg_tables(pg_url_unmigrated) == set()


def test_sqlite_url_is_a_migrated_file(sqlite_url: str, tmp_path: Path) -> None:
    path = _sqlite_path(sqlite_url)
    assert path.is_file() and path.parent == tmp_path
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        versions = conn.execute("SELECT version FROM jobq_migrations ORDER BY version").fetchall()
        jobs = conn.execute("SELECT count(*) FROM jobq_jobs").fetchone()
    conn.close()
    assert tables >= TABLES
    assert [v for (v,) in versions] == [m.version for m in load_migrations("sqlite")]
    assert jobs == (0,)


def test_sqlite_url_unmigrated_has_no_file_yet(sqlite_url_unmigrated: str) -> None:
    assert sqlite_url_unmigrated.startswith("sqlite:///")
    assert not _sqlite_path(sqlite_url_unmigrated).exists()


async def test_driver_is_open_on_a_migrated_database(
    driver: Driver, db_url: str, request: pytest.FixtureRequest
) -> None:
    # Nothing left to apply proves db_url was migrated; a query proves the driver works.
    assert await driver.migrate() == []
    kind = "sqlite" if db_url.startswith("sqlite") else "postgres"
    assert await driver.applied_migrations() == [m.version for m in load_migrations(kind)]
    # Tests pick a driver with -k sqlite / -k postgres: the ids must be exactly the kinds.
    assert isinstance(request.node, pytest.Function)
    assert request.node.callspec.id == kind


def test_url_for_keeps_everything_but_the_database() -> None:
    server = PgServer(admin_url="postgresql://u:p@h:5433/postgres?sslmode=disable")
    assert server.url_for("other") == "postgresql://u:p@h:5433/other?sslmode=disable"


def test_env_url_comes_first(pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg_server_module.FORCE_THROWAWAY_ENV, raising=False)
    monkeypatch.setenv(pg_server_module.URL_ENV, pg_server.admin_url)
    found = find_server()
    assert found.admin_url == pg_server.admin_url
    assert not found.owned  # a server we were pointed at is never stopped by the tests


def test_no_postgres_at_all_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first two steps skipped and no server binaries: the fallback has nothing to start.
    monkeypatch.setenv(pg_server_module.FORCE_THROWAWAY_ENV, "1")
    monkeypatch.setattr(pg_server_module, "server_binaries", lambda: None)
    with pytest.raises(NoPostgres) as raised:
        find_server()
    message = str(raised.value)
    assert "initdb" in message
    assert pg_server_module.URL_ENV in message
    assert "install PostgreSQL" in message


def test_throwaway_server_restarts(pg_server: PgServer) -> None:
    if not pg_server.owned:
        pytest.skip("the session uses a server it did not start; only a throwaway restarts")
    assert probe(pg_server.admin_url) is None
    pg_server.stop()
    assert probe(pg_server.admin_url) is not None
    pg_server.start()
    assert probe(pg_server.admin_url) is None
    pg_server.restart()
    assert probe(pg_server.admin_url) is None

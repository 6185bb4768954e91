"""Databases for the tests: a fresh PostgreSQL database per test (cloned from a migrated
template, which is fast) and a fresh SQLite file per test.

Session-scoped fixtures are sync and do their admin SQL with sync psycopg, and migrations
run on a thread of their own (``run_async``): nothing here touches the event loop that
pytest-asyncio gives each test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from jobq import JobQueue
from jobq.storage import connect
from jobq.storage.base import Driver

from .pg_server import NoPostgres, PgServer, find_server
from .pgbouncer import NoPgBouncer, PgBouncer, running_pgbouncer

T = TypeVar("T")

_counter = itertools.count()


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a new thread with its own loop, from sync code.

    asyncio.run in the calling thread would fail if a loop runs there and otherwise unset
    the thread's current loop, which pytest-asyncio may have set for the test.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="jobq-test-setup")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _migrate(url: str) -> None:
    driver = connect(url)
    try:
        await driver.migrate()
    finally:
        await driver.close()


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The server for the whole session (see pg_server.find_server for the order tried)."""
    found: PgServer | NoPostgres
    try:
        found = find_server()
    except NoPostgres as exc:
        found = exc
    if isinstance(found, NoPostgres):
        # Failing outside the except block keeps the message from being printed twice (as
        # "during handling of the above exception"). A failed session fixture is not retried:
        # every PostgreSQL test fails with this one message, and the SQLite tests still run.
        pytest.fail(str(found), pytrace=False)
    server = found
    yield server
    server.destroy()


def _admin(server: PgServer) -> psycopg.Connection[tuple[Any, ...]]:
    # Autocommit: CREATE/DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(server.admin_url, autocommit=True)


def _drop(server: PgServer, name: str) -> None:
    with _admin(server) as conn:
        # FORCE: a test that leaked a connection must not make teardown fail or hang.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """A migrated database that every test's database is cloned from; its name."""
    name = f"jobq_tmpl_{os.getpid()}"
    ident = sql.Identifier(name)
    _drop(pg_server, name)  # left over from a killed run that had the same pid
    with _admin(pg_server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    run_async(lambda: _migrate(pg_server.url_for(name)))
    with _admin(pg_server) as conn:
        # CREATE DATABASE ... TEMPLATE refuses while anyone is connected to the template. The
        # driver has closed its pool, but a closing backend can linger a moment: no new
        # connections from here on, and any left are ended (CREATE DATABASE then waits for
        # them to go, up to 5 s).
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    yield name
    _drop(pg_server, name)


def _fresh_database(server: PgServer, template: str | None) -> Iterator[str]:
    name = f"jobq_t_{os.getpid()}_{next(_counter)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin(server) as conn:
        conn.execute(create)
    yield server.url_for(name)
    _drop(server, name)


@pytest.fixture
def pg_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for this test only, dropped after it."""
    yield from _fresh_database(pg_server, pg_template)


@pytest.fixture
def pg_url_unmigrated(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty PostgreSQL database (for migration tests), dropped after the test."""
    yield from _fresh_database(pg_server, None)


# ---------------------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_url_unmigrated(tmp_path: Path) -> str:
    """A SQLite URL whose file does not exist yet."""
    return f"sqlite:///{tmp_path / 'jobq.db'}"


def migrated_sqlite(path: Path) -> str:
    """A migrated SQLite database at ``path``; its URL. Callable from any scope or thread."""
    url = f"sqlite:///{path}"
    run_async(lambda: _migrate(url))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh migrated SQLite database file for this test only."""
    return migrated_sqlite(tmp_path / "jobq.db")


# ---------------------------------------------------------------------------- both drivers


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind. Looked up by name so that the sqlite case does not
    need a PostgreSQL server."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


@pytest.fixture
async def jq(db_url: str) -> AsyncIterator[JobQueue]:
    """A JobQueue on ``db_url``, closed after the test."""
    queue = JobQueue(db_url)
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture
async def driver(db_url: str) -> AsyncIterator[Driver]:
    """An opened driver on ``db_url``, closed after the test."""
    opened = connect(db_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# ---------------------------------------------------------------------------- PgBouncer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction pooling mode in front of the session's server."""
    try:
        with running_pgbouncer(pg_server.admin_url) as bouncer:
            yield bouncer
    except NoPgBouncer as exc:
        pytest.skip(f"no PgBouncer: {exc}")


@pytest.fixture
def pgbouncer_url(pg_url: str, pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh migrated database reached through PgBouncer, with ``JOBQ_POLL_ONLY=true`` in
    the environment (the setting for a transaction pooler) for this test."""
    code = pgbouncer.process.poll()
    if code is not None:  # say why every test through it fails from here on
        log = pgbouncer.log_file.read_text(errors="replace") if pgbouncer.log_file.exists() else ""
        pytest.fail(f"the session's pgbouncer exited with {code}; its log ends:\n{log[-2000:]}")
    monkeypatch.setenv("JOBQ_POLL_ONLY", "true")
    return pgbouncer.url_for(pg_url)

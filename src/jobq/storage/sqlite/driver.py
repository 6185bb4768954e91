"""SQLite driver: aiosqlite, one write connection and one read connection per driver, WAL.

Several worker processes may share one database file. SQLite lets one writer at a time hold
the file's write lock, so every write that reads before it writes is either a single
statement (``UPDATE ... RETURNING``) or runs inside ``BEGIN IMMEDIATE``, which takes the write
lock up front; a process that finds the lock taken waits up to ``sqlite_busy_timeout_ms``.
Within a process an asyncio lock keeps coroutines from interleaving statements on the shared
write connection. Plain reads go to a second connection: in WAL mode they never wait for the
writer.

SQLite has no server push: ``listen`` hears this process's events, and other connections'
commits through the file's change counter (watch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from ...config import Settings
from ...errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidJobError,
    LeaseLostError,
    MigrationError,
    TenantQuotaExceeded,
    UnsupportedFeatureError,
)
from ...model import ApiKey, Job, JobError, JobStatus, WorkerInfo
from ..base import (
    CancelOutcome,
    CancelResult,
    ClaimLimits,
    ClaimParams,
    Completion,
    Failure,
    ListParams,
    NewJob,
    NotificationHandler,
    QueueStat,
    WorkerRegistration,
    unique_states_mask,
)
from ..common import (
    STATUS_BY_VALUE,
    LocalBus,
    LocalListener,
    dump_json,
    dump_optional_json,
    job_row_builder,
    match_inserted,
    pick_within_limits,
    plain_batch,
    queued_job,
    room_under_limits,
    shares,
    storable_json,
    validate_new_job,
)
from ..plans import CopyIn, Plan, Run, RunMany, Step, T, drive, drive_async
from ..sqlfiles import Migration, load_migrations, load_queries, pending_migrations
from .watch import CommitWatcher

log = logging.getLogger("jobq.storage.sqlite")

URL_PREFIX = "sqlite:///"
# RETURNING, UPDATE ... FROM and ALTER TABLE DROP COLUMN all arrived by 3.35.
MIN_SQLITE_VERSION = (3, 35, 0)

# Primary result codes meaning "the file cannot be used right now", as opposed to a mistake
# in a statement. The numbers are SQLite's stable C API (sqlite3.h).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_PROTOCOL = 15
_SQLITE_NOTADB = 26
_UNAVAILABLE_CODES = frozenset(
    {
        _SQLITE_READONLY,
        _SQLITE_IOERR,
        _SQLITE_CORRUPT,
        _SQLITE_FULL,
        _SQLITE_CANTOPEN,
        _SQLITE_PROTOCOL,
        _SQLITE_NOTADB,
    }
)

_TIME_COLUMNS = frozenset(
    {"run_at", "created_at", "updated_at", "heartbeat_at", "started_at", "finished_at"}
)
_JSON_COLUMNS = frozenset({"payload", "progress", "result", "depends_on"})

# Named parameters, or positional ones (a tuple) for statements written with ?N.
Params = Mapping[str, Any] | tuple[Any, ...]


def database_path(url: str) -> Path:
    """The file a ``sqlite:///path`` URL names: relative after three slashes, absolute after
    four (``sqlite:////var/lib/jobq.db``)."""
    if not url.startswith(URL_PREFIX):
        raise ConfigurationError(
            f"unsupported SQLite URL {url!r}: use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    raw = url.removeprefix(URL_PREFIX)
    if not raw or raw.startswith(":memory:") or "mode=memory" in raw:
        # Reader and writer are separate connections: each would get its own empty database.
        raise ConfigurationError(
            "in-memory SQLite databases are not supported: jobq needs a file that several "
            "connections (and worker processes) share; use sqlite:///path/to/file.db"
        )
    return Path(raw)


def create_private(path: Path) -> None:
    """Create the database file, if new, readable and writable by its owner only: it holds
    every job's payload and result. SQLite gives its -wal and -shm files the same mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _epoch(moment: datetime) -> float:
    # A naive datetime is taken as UTC, as a PostgreSQL server running in UTC would.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _optional_epoch(moment: datetime | None) -> float | None:
    return None if moment is None else _epoch(moment)


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _loads(value: str) -> Any:
    return orjson.loads(value)


def _status(value: str) -> JobStatus:
    return STATUS_BY_VALUE[value]


# How SQLite's stored values become Job fields (NULLs stay None).
_SQLITE_CONVERTERS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    *((name, _datetime) for name in sorted(_TIME_COLUMNS)),
    *((name, _loads) for name in sorted(_JSON_COLUMNS)),
    ("status", _status),
    ("cancel_requested", bool),
)


def _row_converter(columns: tuple[str, ...]) -> Callable[[Sequence[Any]], Job]:
    """How to turn a row with these columns into a Job, made once per column list (see
    job_row_builder): the worker converts thousands of rows a second."""
    return job_row_builder(columns, _SQLITE_CONVERTERS)


def _jobs(rows: Sequence[sqlite3.Row]) -> list[Job]:
    if not rows:
        return []
    make = _row_converter(tuple(rows[0].keys()))
    return [make(row) for row in rows]


def _job(row: sqlite3.Row) -> Job:
    return _row_converter(tuple(row.keys()))(row)


def _unavailable_reason(exc: sqlite3.Error, busy_timeout_ms: int) -> str | None:
    """Why ``exc`` means the database cannot be used right now, or None for an error in what
    was asked of it (a constraint, a bad statement), which callers should see as it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return (
            f"is locked by another connection (waits up to {busy_timeout_ms} ms, "
            "sqlite_busy_timeout_ms); retry later"
        )
    if primary in _UNAVAILABLE_CODES:
        name = getattr(exc, "sqlite_errorname", "SQLITE_ERROR")
        return f"cannot be used ({name}: {exc})"
    return None


def _statement(step: Run | CopyIn) -> Run:
    if isinstance(step, CopyIn):
        raise UnsupportedFeatureError("COPY is PostgreSQL's: SQLite inserts by executemany")
    return step


def _session_pragmas(busy_timeout_ms: int) -> list[str]:
    """What every connection sets (WAL is a property of the file, set once; see _enable_wal)."""
    return [
        f"PRAGMA busy_timeout = {busy_timeout_ms:d}",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
        # A cancelled dependent must cancel its own dependents (migration 0004).
        "PRAGMA recursive_triggers = ON",
    ]


def split_statements(script: str) -> list[str]:
    """A SQL script as its separate statements. executescript would do this for us, but it
    commits any open transaction first, and migrations must run inside one."""
    statements: list[str] = []
    pending = ""
    # Cut at every ';' and let SQLite say whether the statement is complete, so semicolons in
    # strings, comments and trigger bodies do not end a statement early.
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statement = pending.strip()
            if _has_sql(statement.removesuffix(";")):
                statements.append(statement)
            pending = ""
    if _has_sql(pending.removesuffix(";")):
        raise MigrationError(f"SQL script ends with an incomplete statement: {pending.strip()!r}")
    return statements


def _has_sql(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())


class SqliteDriver:
    dialect = "sqlite"

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self._settings = settings or Settings(database_url=url)
        self._url = url
        self._path = database_path(url)
        self._busy_timeout_ms = self._settings.sqlite_busy_timeout_ms
        self._q = load_queries("sqlite")
        self._bus = LocalBus()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        # Fair claiming: the last tenant each worker of this process served.
        self._tenant_cursor: dict[str, str] = {}
        # The synchronous API (enqueue_many_sync, get_sync), from any thread: one connection
        # of its own, made on first use, used by one call at a time.
        self._sync_conn: sqlite3.Connection | None = None
        self._sync_lock = threading.Lock()
        # The task inside a write transaction: if it calls back into the driver for another
        # write it would wait on itself forever; it gets an error instead.
        self._write_owner: asyncio.Task[Any] | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        async with self._open_lock:
            if self._writer is not None:
                return
            if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
                raise UnsupportedFeatureError(
                    f"jobq needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or newer; "
                    f"this Python uses {sqlite3.sqlite_version}"
                )
            try:
                await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
                await asyncio.to_thread(create_private, self._path)
            except OSError as exc:
                raise DatabaseUnavailableError(
                    f"cannot create the directory for SQLite database {self._path}: {exc}"
                ) from exc
            writer = await self._connect()
            try:
                reader = await self._connect()
            except BaseException:
                await writer.close()
                raise
            self._writer, self._reader = writer, reader

    async def close(self) -> None:
        # Under the write lock, so no transaction is cut off half way.
        async with self._write_lock:
            writer, reader = self._writer, self._reader
            self._writer = self._reader = None
            for conn in (writer, reader):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        await conn.close()
        if self._sync_conn is not None:
            await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        with self._sync_lock:
            conn, self._sync_conn = self._sync_conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    @contextlib.contextmanager
    def _sync_connection(self, transaction: bool) -> Iterator[sqlite3.Connection]:
        """The synchronous API's connection, inside ``BEGIN IMMEDIATE`` when
        ``transaction`` (committed when the block ends without error, else rolled back). It
        writes beside this process's other connections as another process would: SQLite's
        file lock orders them, waiting up to the busy timeout."""
        with self._sync_lock:
            if self._sync_conn is None:
                self._sync_conn = self._connect_sync()
            conn = self._sync_conn
            if not transaction:
                yield conn
                return
            with self._translate():
                conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                with self._translate():
                    conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _connect_sync(self) -> sqlite3.Connection:
        # No WAL switch here: a file jobq has migrated is in WAL mode already.
        with self._translate():
            with contextlib.suppress(OSError):  # a missing directory: connect says so
                create_private(self._path)
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                timeout=self._busy_timeout_ms / 1000,
                check_same_thread=False,  # used from any thread, one at a time (the lock)
            )
            try:
                conn.row_factory = sqlite3.Row
                for pragma in _session_pragmas(self._busy_timeout_ms):
                    conn.execute(pragma)
            except BaseException:
                conn.close()
                raise
        return conn

    async def _connect(self) -> aiosqlite.Connection:
        with self._translate():
            conn = await aiosqlite.connect(
                self._path, isolation_level=None, timeout=self._busy_timeout_ms / 1000
            )
            try:
                conn.row_factory = sqlite3.Row
                for pragma in _session_pragmas(self._busy_timeout_ms):
                    await conn.execute_fetchall(pragma)
                await self._enable_wal(conn)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """Put the file in WAL mode (it stays so: only the first opener of a new file switches).

        Switching needs an exclusive lock, and when several connections race to switch a
        fresh file SQLite answers SQLITE_BUSY at once instead of calling the busy handler, so
        the retrying up to the busy timeout happens here.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.005
        while True:
            try:
                rows = await conn.execute_fetchall("PRAGMA journal_mode")
                mode = str(next(iter(rows))[0]).lower()
                if mode != "wal":
                    rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
                    mode = str(next(iter(rows))[0]).lower()
                break
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if code not in (_SQLITE_BUSY, _SQLITE_LOCKED) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        if mode != "wal":
            log.warning(
                "SQLite database %s is in %s journal mode, not WAL (a network filesystem?): "
                "readers will wait for writers",
                self._path,
                mode,
            )

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """Lock timeouts and file-level failures surface as DatabaseUnavailableError, so
        callers (the API's 503, the worker's backoff) need not know sqlite3's errors."""
        try:
            yield
        except sqlite3.Error as exc:
            reason = _unavailable_reason(exc, self._busy_timeout_ms)
            if reason is None:
                raise
            raise DatabaseUnavailableError(f"SQLite database {self._path} {reason}") from exc

    def _refuse_reentry(self) -> None:
        current = asyncio.current_task()
        if current is not None and current is self._write_owner:
            raise UnsupportedFeatureError(
                "this task is inside a SQLite write transaction (ctx.transaction()), which "
                "holds the database's only write connection: write through the connection "
                "the block gives you, or call jobq after the block ends"
            )

    async def _writer_conn(self) -> aiosqlite.Connection:
        """The write connection; call with the write lock held."""
        if self._writer is None:
            await self.open()
        if self._writer is None:
            raise DatabaseUnavailableError(f"SQLite database {self._path} was closed")
        return self._writer

    async def _reader_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            await self.open()
        if self._reader is None:
            raise DatabaseUnavailableError(f"SQLite database {self._path} was closed")
        return self._reader

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The write connection inside ``BEGIN IMMEDIATE``; commits when the block ends
        without error, rolls back otherwise."""
        self._refuse_reentry()
        async with self._write_lock:
            conn = await self._writer_conn()
            self._write_owner = asyncio.current_task()
            try:
                # BEGIN sits inside the try: if this task is cancelled while BEGIN waits for
                # the file lock, the statement still completes on aiosqlite's thread, and the
                # ROLLBACK queued behind it must close that transaction again.
                with self._translate():
                    await conn.execute_fetchall("BEGIN IMMEDIATE")
                yield conn
                with self._translate():
                    await conn.execute_fetchall("COMMIT")
            except BaseException:
                # Fails harmlessly when BEGIN itself failed and no transaction is open.
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.execute_fetchall("ROLLBACK")
                raise
            finally:
                self._write_owner = None

    async def _run(self, conn: aiosqlite.Connection, query: str, params: Params) -> list[Any]:
        """Run a named query on a connection the caller already holds."""
        with self._translate():
            return list(await conn.execute_fetchall(self._q[query], params))

    async def _write(self, query: str, params: Params) -> list[Any]:
        """One statement on the write connection, committed on its own."""
        self._refuse_reentry()
        async with self._write_lock:
            return await self._run(await self._writer_conn(), query, params)

    async def _read(self, query: str, params: Params | None = None) -> list[Any]:
        return await self._run(await self._reader_conn(), query, params or {})

    # ------------------------------------------------------------------ migrations
    async def rollback(self, steps: int = 1) -> list[int]:
        if steps < 1:
            raise MigrationError("rollback needs at least one step")
        async with self._migration_transaction() as (conn, applied):
            done = []
            for migration in sorted(
                (m for m in load_migrations("sqlite") if m.version in applied),
                key=lambda m: m.version,
                reverse=True,
            )[:steps]:
                await self._run_script(conn, migration, migration.down_sql, "rolling back")
                with self._translate():
                    await conn.execute_fetchall(
                        "DELETE FROM jobq_migrations WHERE version = ?", (migration.version,)
                    )
                done.append(migration.version)
            return done

    async def applied_migrations(self) -> list[int]:
        # A plain read, not the migration transaction: readiness probes call this, and they
        # should not queue for the write lock behind busy workers. One SELECT sees one
        # committed state, which is all the answer needs.
        conn = await self._reader_conn()
        with self._translate():
            exists = await conn.execute_fetchall(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobq_migrations'"
            )
            if not list(exists):
                return []
            rows = await conn.execute_fetchall("SELECT version FROM jobq_migrations")
        return sorted(int(r[0]) for r in rows)

    async def migrate(self) -> list[int]:
        async with self._migration_transaction() as (conn, applied):
            done = []
            for migration in pending_migrations("sqlite", applied):
                await self._run_script(conn, migration, migration.up_sql, "applying")
                with self._translate():
                    await conn.execute_fetchall(
                        "INSERT INTO jobq_migrations (version, name, checksum, applied_at) "
                        "VALUES (?, ?, ?, ?)",
                        (migration.version, migration.name, migration.checksum, time.time()),
                    )
                done.append(migration.version)
            return done

    async def _run_script(
        self, conn: aiosqlite.Connection, migration: Migration, script: str, doing: str
    ) -> None:
        for statement in split_statements(script):
            try:
                with self._translate():
                    await conn.execute_fetchall(statement)
            except sqlite3.Error as exc:
                raise MigrationError(
                    f"{doing} migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc

    @contextlib.asynccontextmanager
    async def _migration_transaction(
        self,
    ) -> AsyncIterator[tuple[aiosqlite.Connection, dict[int, str]]]:
        """One BEGIN IMMEDIATE transaction: it holds the write lock from the first read of
        jobq_migrations, so processes that start at the same moment apply each migration
        once, in order, or not at all (SQLite's DDL is transactional)."""
        async with self._transaction() as conn:
            with self._translate():
                await conn.execute_fetchall(
                    """CREATE TABLE IF NOT EXISTS jobq_migrations (
                           version INTEGER PRIMARY KEY,
                           name TEXT NOT NULL,
                           checksum TEXT NOT NULL,
                           applied_at REAL NOT NULL)"""
                )
                rows = await conn.execute_fetchall("SELECT version, checksum FROM jobq_migrations")
            applied = {int(v): str(c) for v, c in rows}
            yield conn, applied

    # ------------------------------------------------------------------ producing
    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        plan, atomic = self._insert_plan(jobs, connection)  # first: it refuses connection=
        if not jobs:
            return []
        created = await self._run_write(plan, atomic)
        self._bus.publish_new(j.queue for j in jobs)
        return created

    async def enqueue_many_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs or not plain_batch(jobs):
            return [job.id for job in await self.enqueue_many(jobs)]
        payloads, single = self._checked(jobs)
        plan = self._insert_plain(jobs, payloads, single, build=False)
        ids, _ = await self._run_write(plan, not single)
        self._bus.publish_new(j.queue for j in jobs)
        return ids

    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        plan, atomic = self._insert_plan(jobs, connection)  # first: it refuses connection=
        if not jobs:
            return []
        with self._sync_connection(atomic) as conn:
            # No local wake-up: this may be any thread. The workers of this process see the
            # commit in the file's change counter, as they see other processes' (watch.py).
            return drive(plan, self._executor_sync(conn))

    async def _run_write(self, plan: Plan[T], atomic: bool) -> T:
        """A plan on the write connection: in a write transaction when ``atomic``, else as
        the one statement it is, committed on its own."""
        if atomic:
            async with self._transaction() as conn:
                return await drive_async(plan, self._executor(conn))
        self._refuse_reentry()
        async with self._write_lock:
            return await drive_async(plan, self._executor(await self._writer_conn()))

    def _insert_plan(self, jobs: Sequence[NewJob], connection: Any) -> tuple[Plan[list[Job]], bool]:
        """The statements that insert ``jobs``, and whether they need a write transaction
        (all but a single plain job, which is one statement)."""
        if connection is not None:
            raise UnsupportedFeatureError(
                "enqueueing inside your own transaction needs PostgreSQL; with SQLite, "
                "enqueue after your transaction commits (call it without connection=)"
            )
        payloads, single = self._checked(jobs)
        if not plain_batch(jobs):
            return self._insert_with_keys(jobs, payloads), True
        return self._plain_jobs(self._insert_plain(jobs, payloads, single, build=True)), not single

    def _checked(self, jobs: Sequence[NewJob]) -> tuple[list[str], bool]:
        """The payloads as stored (every job checked first), and whether the batch is one job
        with no tenant quota to check: one statement inserts it if it is plain."""
        for job in jobs:
            validate_new_job(job)
        payloads = [storable_json(j.payload) for j in jobs]
        single = len(jobs) == 1 and not (self._settings.tenant_max_queued and jobs[0].tenant)
        return payloads, single

    @staticmethod
    def _plain_jobs(plan: Plan[tuple[list[int], list[Job]]]) -> Plan[list[Job]]:
        _, created = yield from plan
        return created

    def _executor(self, conn: aiosqlite.Connection) -> Callable[[Step], Awaitable[list[Any]]]:
        async def execute(step: Step) -> list[Any]:
            with self._translate():
                if isinstance(step, RunMany):
                    await conn.executemany(self._q[step.query], step.rows)
                    return []
                run = _statement(step)
                rows = list(await conn.execute_fetchall(self._q[run.query], run.params))
            return _jobs(rows) if run.jobs else rows

        return execute

    def _executor_sync(self, conn: sqlite3.Connection) -> Callable[[Step], list[Any]]:
        def execute(step: Step) -> list[Any]:
            with self._translate():
                if isinstance(step, RunMany):
                    conn.executemany(self._q[step.query], step.rows)
                    return []
                run = _statement(step)
                rows = conn.execute(self._q[run.query], run.params).fetchall()
            return _jobs(rows) if run.jobs else rows

        return execute

    def _insert_plain(
        self, jobs: Sequence[NewJob], payloads: list[str], single: bool, build: bool
    ) -> Plan[tuple[list[int], list[Job]]]:
        """Jobs without keys or parents: every one is a new row, so they go in by executemany
        with ids chosen here (the write transaction holds the file's write lock from BEGIN
        IMMEDIATE to COMMIT, so the next free ids cannot move), and come back built from the
        request, not read back. (Building them while aiosqlite's thread inserts was measured
        no faster: the two threads trade the GIL on every row.) Returns the ids in request
        order, and with ``build`` the Jobs."""
        now = time.time()
        created_at = _datetime(now)
        # The columns after the id, in insert_plain_job's (and insert_one_plain_job's) order.
        values = [
            (
                job.queue,
                job.kind,
                encoded,
                job.priority,
                now if job.run_at is None else _epoch(job.run_at),
                job.max_attempts,
                job.tenant,
                job.timeout_s,
                job.request_id,
                now,
            )
            for job, encoded in zip(jobs, payloads, strict=True)
        ]
        if single:
            # One statement, its own transaction: one trip to aiosqlite's thread, not four.
            [(first_id,)] = yield Run("insert_one_plain_job", values[0])
        else:
            yield from self._check_tenant_quota(jobs)
            [(last_id,)] = yield Run("last_job_id", {})
            first_id = last_id + 1
            yield RunMany(
                "insert_plain_job", [(first_id + i, *row) for i, row in enumerate(values)]
            )
        ids = list(range(first_id, first_id + len(jobs)))
        if not build:
            return ids, []
        return ids, [
            queued_job(
                job_id,
                job,
                orjson.loads(row[2]),
                created_at if job.run_at is None else _datetime(row[4]),  # as a read gives it
                created_at,
            )
            for job_id, job, row in zip(ids, jobs, values, strict=True)
        ]

    def _insert_with_keys(self, jobs: Sequence[NewJob], payloads: list[str]) -> Plan[list[Job]]:
        rows = [
            {
                "queue": j.queue,
                "kind": j.kind,
                "payload": payload,
                "priority": j.priority,
                "run_at": _optional_epoch(j.run_at),
                "max_attempts": j.max_attempts,
                "tenant": j.tenant,
                "idempotency_key": j.idempotency_key,
                "unique_key": j.unique_key,
                "unique_states": unique_states_mask(j),
                "depends_on": dump_json(list(j.depends_on)),
                "timeout_s": j.timeout_s,
                "request_id": j.request_id,
                "request_fingerprint": j.request_fingerprint,
                "status": None,  # queued, unless it waits on dependencies
            }
            for j, payload in zip(jobs, payloads, strict=True)
        ]
        now = time.time()
        yield from self._check_tenant_quota(jobs)
        orphaned = yield from self._prepare_dependents(jobs, rows)
        inserted = yield Run("insert_jobs", {"jobs": dump_json(rows), "now": now}, jobs=True)
        if orphaned is not None:
            inserted = yield from self._link_dependents(inserted, orphaned, now)
        existing: list[Job] = []
        if len(inserted) < len(jobs):
            keys = [j.idempotency_key for j in jobs if j.idempotency_key is not None]
            uniques = [j.unique_key for j in jobs if j.unique_key is not None]
            for query, values in (
                ("jobs_by_idempotency_keys", keys),
                ("jobs_by_unique_keys", uniques),
            ):
                if values:
                    existing += yield Run(query, {"keys": dump_json(values)}, jobs=True)
        return match_inserted(jobs, inserted, existing)

    def _check_tenant_quota(self, jobs: Sequence[NewJob]) -> Plan[None]:
        # Inside the write transaction: no other process can enqueue between count and insert.
        quota = self._settings.tenant_max_queued
        if not quota:
            return
        adding: dict[str, int] = {}
        for job in jobs:
            if job.tenant is not None:
                adding[job.tenant] = adding.get(job.tenant, 0) + 1
        for tenant, count in adding.items():
            [(queued,)] = yield Run("tenant_queued", {"tenant": tenant})
            if queued + count > quota:
                raise TenantQuotaExceeded(tenant, quota)

    def _prepare_dependents(
        self, jobs: Sequence[NewJob], rows: list[dict[str, Any]]
    ) -> Plan[dict[int, str] | None]:
        """Flag the parents and set each dependent's first status; the failed or cancelled
        parents by id (None when no job has dependencies). See the PostgreSQL driver."""
        parents = sorted({p for j in jobs for p in j.depends_on})
        if not parents:
            return None
        found = yield Run("mark_parents", {"ids": dump_json(parents)})
        status_of = {int(r[0]): str(r[1]) for r in found}
        missing = [p for p in parents if p not in status_of]
        if missing:
            raise InvalidJobError(f"depends_on: no job with id {', '.join(map(str, missing))}")
        for job, row in zip(jobs, rows, strict=True):
            if any(status_of[p] != JobStatus.SUCCEEDED for p in job.depends_on):
                row["status"] = str(JobStatus.WAITING)
        return {
            p: status
            for p, status in status_of.items()
            if status in (JobStatus.FAILED, JobStatus.CANCELLED)
        }

    def _link_dependents(
        self, inserted: list[Job], orphaned: dict[int, str], now: float
    ) -> Plan[list[Job]]:
        pairs = [[p, job.id] for job in inserted for p in job.depends_on]
        yield Run("insert_dependencies", {"pairs": dump_json(pairs)})
        settled = []
        for job in inserted:
            failed = [p for p in job.depends_on if p in orphaned]
            if job.status == JobStatus.WAITING and failed:
                reason = f"dependency {failed[0]} {orphaned[failed[0]]}"
                args = {"id": job.id, "reason": reason, "now": now}
                [job] = yield Run("cancel_born_orphaned", args, jobs=True)
            settled.append(job)
        return settled

    # ------------------------------------------------------------------ working
    async def claim_batch(self, params: ClaimParams) -> list[Job]:
        if params.limit < 1:
            return []
        args: dict[str, Any] = {
            "worker_id": params.worker_id,
            "limit": params.limit,
            "now": time.time(),
        }
        if params.limits or params.fair_tenants:
            async with self._transaction() as conn:
                jobs = await self._claim_with_flow_control(conn, params)
        elif params.queues is None:
            jobs = _jobs(await self._write("claim_batch_any_queue", args))
        elif len(set(params.queues)) == 1:
            args["queue"] = params.queues[0]
            jobs = _jobs(await self._write("claim_batch_one_queue", args))
        else:
            args["queues"] = dump_json(list(params.queues))
            jobs = _jobs(await self._write("claim_batch_by_queue", args))
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    async def _claim_with_flow_control(
        self, conn: aiosqlite.Connection, params: ClaimParams
    ) -> list[Job]:
        """Limited work first, then tenants' shares, then the rest in plain order; all in one
        write transaction, which on SQLite also shuts out every other claimer."""
        limits = params.limits or ClaimLimits()
        now = time.time()
        base: dict[str, Any] = {
            "worker_id": params.worker_id,
            "now": now,
            "queues": dump_json(list(params.queues)) if params.queues is not None else None,
            "skip_kinds": dump_json(limits.kinds),
            "skip_queues": dump_json(limits.queues),
        }
        jobs: list[Job] = []
        if limits:
            jobs += await self._claim_limited(conn, params, limits, base)
        if params.fair_tenants and len(jobs) < params.limit:
            jobs += await self._claim_fair(conn, params, base, params.limit - len(jobs))
        if len(jobs) < params.limit:
            args = {
                **base,
                "limit": params.limit - len(jobs),
                "tenantless": params.fair_tenants,
            }
            jobs += _jobs(await self._run(conn, "claim_filtered", args))
        return jobs

    async def _claim_fair(
        self, conn: aiosqlite.Connection, params: ClaimParams, base: dict[str, Any], free: int
    ) -> list[Job]:
        after = self._tenant_cursor.get(params.worker_id, "")
        tenants: list[str] = []
        for start in (after, ""):  # from the cursor to the end, then from the start
            found = await self._run(
                conn, "claim_tenants", {**base, "after": start, "most": free - len(tenants)}
            )
            tenants += [r[0] for r in found if r[0] not in tenants]
            if len(tenants) >= free or not start:
                break
        if not tenants:
            return []
        self._tenant_cursor[params.worker_id] = tenants[-1] if len(tenants) >= free else ""
        jobs: list[Job] = []
        for tenant, share in zip(tenants, shares(free, tenants), strict=True):
            args = {**base, "tenant": tenant, "share": share}
            jobs += _jobs(await self._run(conn, "claim_tenant_share", args))
        return jobs

    async def _claim_limited(
        self,
        conn: aiosqlite.Connection,
        params: ClaimParams,
        limits: ClaimLimits,
        base: dict[str, Any],
    ) -> list[Job]:
        kinds, queues = limits.kinds, limits.queues
        windows = dump_json({k: r.per_s for k, r in limits.rate_by_kind.items()})
        names = {"kinds": dump_json(kinds), "queues": dump_json(queues)}
        by_kind: dict[str, int] = {}
        by_queue: dict[str, int] = {}
        for kind, queue, count in await self._run(conn, "running_counts", names):
            by_kind[kind] = by_kind.get(kind, 0) + count
            by_queue[queue] = by_queue.get(queue, 0) + count
        starts: dict[str, int] = {}
        if limits.rate_by_kind:
            await self._run(conn, "prune_starts", {"windows": windows, "now": base["now"]})
            recent = await self._run(
                conn, "recent_starts", {"windows": windows, "now": base["now"]}
            )
            starts = {k: n for k, n in recent}
        kind_room, queue_room = room_under_limits(limits, by_kind, by_queue, starts)
        full_kinds = [k for k, room in kind_room.items() if room <= 0]
        full_queues = [q for q, room in queue_room.items() if room <= 0]
        if len(full_kinds) == len(kinds) and len(full_queues) == len(queues):
            return []
        candidates = await self._run(
            conn,
            "limited_candidates",
            {
                "now": base["now"],
                "queues": base["queues"],
                "limited_kinds": names["kinds"],
                "limited_queues": names["queues"],
                "full_kinds": dump_json(full_kinds),
                "full_queues": dump_json(full_queues),
                "limit": params.limit * 4,
            },
        )
        ids = pick_within_limits(
            [(r[0], r[1], r[2]) for r in candidates], params.limit, kind_room, queue_room
        )
        if not ids:
            return []
        args = {"worker_id": params.worker_id, "now": base["now"], "ids": dump_json(ids)}
        jobs = _jobs(await self._run(conn, "claim_ids", args))
        rated = [j.kind for j in jobs if j.kind in limits.rate_by_kind]
        if rated:
            await self._run(conn, "record_starts", {"kinds": dump_json(rated), "now": base["now"]})
        return jobs

    async def complete_many(self, completions: Sequence[Completion]) -> list[int]:
        if not completions:
            return []
        batch = [
            {"id": c.job_id, "attempt": c.attempt, "result": dump_optional_json(c.result)}
            for c in completions
        ]
        rows = await self._write(
            "complete_many", {"completions": dump_json(batch), "now": time.time()}
        )
        return [int(r[0]) for r in rows]

    @contextlib.asynccontextmanager
    async def job_transaction(
        self, job_id: int, attempt: int
    ) -> AsyncIterator[aiosqlite.Connection]:
        # The whole block holds SQLite's write lock (BEGIN IMMEDIATE): other writers, in this
        # process and others, wait for it, so keep the block short.
        lease = {"id": job_id, "attempt": attempt}
        async with self._transaction() as conn:
            if not await self._run(conn, "lock_running_job", lease):
                raise LeaseLostError(f"job {job_id} attempt {attempt} is no longer running here")
            yield conn
            completion = [{"id": job_id, "attempt": attempt, "result": None}]
            moved = await self._run(
                conn, "complete_many", {"completions": dump_json(completion), "now": time.time()}
            )
            if not moved:
                raise LeaseLostError(f"job {job_id} attempt {attempt} could not be completed")

    async def set_progress(self, job_id: int, attempt: int, progress: dict[str, Any]) -> bool:
        args = {
            "id": job_id,
            "attempt": attempt,
            "progress": storable_json(progress, "progress"),
            "now": time.time(),
        }
        return bool(await self._write("set_progress", args))

    async def store_result(self, job_id: int, attempt: int, result: Any) -> None:
        await self._write(
            "store_result",
            {
                "id": job_id,
                "attempt": attempt,
                "result": None if result is None else storable_json(result, "a result"),
                "now": time.time(),
            },
        )

    async def fail_many(self, failures: Sequence[Failure]) -> list[int]:
        if not failures:
            return []
        now = time.time()
        batch = [
            {"id": f.job_id, "attempt": f.attempt, "error": f.error, "retry_in_s": f.retry_in_s}
            for f in failures
        ]
        async with self._transaction() as conn:
            rows = await self._run(conn, "fail_many", {"failures": dump_json(batch), "now": now})
            # By attempt too: a stale attempt's failure beside the running one's moved nothing.
            moved = {(int(r[0]), int(r[1])) for r in rows}
            recorded = [f for f in failures if (f.job_id, f.attempt) in moved]
            await self._record_errors(
                conn, [(f.job_id, f.attempt, f.error, f.traceback) for f in recorded], now
            )
        return [f.job_id for f in recorded]

    async def _record_errors(
        self,
        conn: aiosqlite.Connection,
        errors: Iterable[tuple[int, int, str, str | None]],
        now: float,
    ) -> None:
        params = [
            {"job_id": job_id, "attempt": attempt, "error": error, "traceback": tb, "now": now}
            for job_id, attempt, error, tb in errors
        ]
        if params:
            with self._translate():
                await conn.executemany(self._q["record_error"], params)

    async def finish_cancelled(self, job_id: int, attempt: int, reason: str) -> bool:
        now = time.time()
        async with self._transaction() as conn:
            rows = await self._run(
                conn,
                "finish_cancelled",
                {"id": job_id, "attempt": attempt, "reason": reason, "now": now},
            )
            await self._record_errors(conn, [(r[0], r[1], reason, None) for r in rows], now)
        return bool(rows)

    async def hand_back(self, job_id: int, attempt: int, reason: str) -> bool:
        moved = await self._write(
            "hand_back", {"id": job_id, "attempt": attempt, "now": time.time()}
        )
        if moved:
            log.info("job %s handed back: %s", job_id, reason)
        return bool(moved)

    async def cancel_requested_among(self, worker_id: str) -> set[int]:
        rows = await self._read("cancel_requested_among", {"worker_id": worker_id})
        return {int(r[0]) for r in rows}

    async def rescue_stale(self, lease_s: float) -> list[int]:
        now = time.time()
        params = {"lease_s": lease_s, "now": now}
        async with self._transaction() as conn:
            rows = await self._run(conn, "rescue_stale", params)
            await self._record_errors(conn, [(r[0], r[1], r[2], None) for r in rows], now)
            await self._run(conn, "delete_stale_workers", params)
        return [int(r[0]) for r in rows]

    # ------------------------------------------------------------------ workers
    async def register_worker(self, worker: WorkerRegistration) -> None:
        await self._write(
            "register_worker",
            {
                "id": worker.id,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "queues": dump_json(list(worker.queues)) if worker.queues is not None else None,
                "concurrency": worker.concurrency,
                "now": time.time(),
            },
        )

    async def heartbeat(self, worker_id: str) -> bool:
        return bool(await self._write("heartbeat", {"id": worker_id, "now": time.time()}))

    async def unregister_worker(self, worker_id: str) -> None:
        await self._write("unregister_worker", {"id": worker_id})

    async def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                id=r[0],
                hostname=r[1],
                pid=r[2],
                queues=list(orjson.loads(r[3])) if r[3] is not None else [],
                concurrency=r[4],
                started_at=_datetime(r[5]),
                heartbeat_at=_datetime(r[6]),
            )
            for r in await self._read("list_workers")
        ]

    # ------------------------------------------------------------------ managing
    async def get(self, job_id: int) -> Job | None:
        rows = await self._read("get_job", {"id": job_id})
        return _job(rows[0]) if rows else None

    def get_sync(self, job_id: int) -> Job | None:
        with self._sync_connection(transaction=False) as conn, self._translate():
            rows = conn.execute(self._q["get_job"], {"id": job_id}).fetchall()
        return _job(rows[0]) if rows else None

    async def get_by_idempotency_key(self, key: str) -> Job | None:
        rows = await self._read("jobs_by_idempotency_keys", {"keys": dump_json([key])})
        return _job(rows[0]) if rows else None

    async def list_jobs(self, params: ListParams) -> list[Job]:
        rows = await self._read(
            "list_jobs",
            {
                "statuses": (
                    dump_json([str(s) for s in params.statuses]) if params.statuses else None
                ),
                "kind": params.kind,
                "queue": params.queue,
                "tenant": params.tenant,
                "created_after": _optional_epoch(params.created_after),
                "created_before": _optional_epoch(params.created_before),
                "before_id": params.before_id,
                "limit": params.limit,
            },
        )
        return _jobs(rows)

    async def job_errors(self, job_id: int) -> list[JobError]:
        return [
            JobError(r[0], r[1], r[2], r[3], _datetime(r[4]))
            for r in await self._read("job_errors", {"id": job_id})
        ]

    async def cancel(self, job_id: int) -> CancelResult:
        # One transaction holding the write lock: the job cannot change status between the
        # checks, so no retry loop is needed (unlike PostgreSQL's row-by-row version).
        params = {"id": job_id, "now": time.time()}
        async with self._transaction() as conn:
            rows = await self._run(conn, "cancel_pending", params)
            if rows:
                return CancelResult(CancelOutcome.CANCELLED, _job(rows[0]))
            requested = await self._run(conn, "request_cancel", params)
            if not requested:
                found = await self._run(conn, "get_job", params)
                if not found:
                    return CancelResult(CancelOutcome.NOT_FOUND, None)
                return CancelResult(CancelOutcome.TERMINAL, _job(found[0]))
        # Published after the commit, so the worker that hears it sees cancel_requested.
        self._bus.publish("cancel", str(job_id))
        return CancelResult(CancelOutcome.REQUESTED, _job(requested[0]))

    async def requeue(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        rows = await self._write("requeue", {"ids": dump_json(list(job_ids)), "now": time.time()})
        self._bus.publish_new(r[1] for r in rows)
        return sorted(int(r[0]) for r in rows)

    async def stats(self) -> list[QueueStat]:
        return [
            QueueStat(
                queue=r[0],
                status=JobStatus(r[1]),
                count=r[2],
                oldest_run_at=_datetime(r[3]) if r[3] is not None else None,
            )
            for r in await self._read("stats")
        ]

    async def queue_depth(self, queue: str, at_most: int) -> int:
        # SQLite reads a negative LIMIT as "no limit"; the point here is a bounded count.
        rows = await self._read("queue_depth", {"queue": queue, "at_most": max(at_most, 0)})
        return int(rows[0][0]) if rows else 0

    async def forget_idempotency_keys(self, older_than_s: float) -> int:
        self._refuse_reentry()
        async with self._write_lock:
            conn = await self._writer_conn()
            with self._translate():
                cursor = await conn.execute(
                    self._q["forget_idempotency_keys"],
                    {"older_than_s": older_than_s, "now": time.time()},
                )
                await cursor.close()
            return int(cursor.rowcount)

    async def refresh_statistics(self) -> bool:
        # The claims name their index (INDEXED BY), so no statistics can change their plan.
        return False

    async def take_leadership(self, name: str, holder: str, ttl_s: float) -> bool:
        args = {"name": name, "holder": holder, "ttl_s": ttl_s, "now": time.time()}
        return bool(await self._write("take_leadership", args))

    async def give_up_leadership(self, name: str, holder: str) -> None:
        await self._write("give_up_leadership", {"name": name, "holder": holder})

    async def purge_finished(self, status: JobStatus, older_than_s: float, batch: int) -> int:
        args = {
            "status": str(status),
            "older_than_s": older_than_s,
            "batch": batch,
            "now": time.time(),
        }
        return len(await self._write("purge_finished", args))

    async def vacuum_jobs(self, min_dead_rows: int) -> bool:
        # SQLite has no dead row versions: a deleted or updated row's space is free for the
        # next write at once, and its index entries go with it.
        return False

    async def ping(self) -> None:
        # Reading the schema touches the file, which SELECT 1 would not.
        conn = await self._reader_conn()
        with self._translate():
            await conn.execute_fetchall("SELECT count(*) FROM sqlite_master")

    async def count_claimable(self, queues: Sequence[str] | None) -> int:
        now = time.time()
        if queues is None:
            rows = await self._read("count_claimable_any_queue", {"now": now})
        else:
            rows = await self._read(
                "count_claimable_by_queue", {"queues": dump_json(list(queues)), "now": now}
            )
        return int(rows[0][0]) if rows else 0

    # ------------------------------------------------------------------ wake-ups
    async def listen(
        self, handler: NotificationHandler, queues: Sequence[str] | None = None
    ) -> LocalListener:
        # Besides this process's own events: other processes' commits (see watch.py).
        return await CommitWatcher.start(self._bus, handler, self._path, queues)

    # ------------------------------------------------------------------ API keys, tenants
    async def insert_api_key(self, key: ApiKey) -> ApiKey:
        rows = await self._write(
            "insert_api_key",
            {
                "id": key.id,
                "name": key.name,
                "tenant": key.tenant,
                "scopes": dump_json(list(key.scopes)),
                "secret_hash": key.secret_hash,
                "now": time.time(),
                "expires_at": _optional_epoch(key.expires_at),
            },
        )
        return _api_key(rows[0])

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = await self._read("get_api_key", {"id": key_id})
        return _api_key(rows[0]) if rows else None

    async def list_api_keys(self) -> list[ApiKey]:
        return [_api_key(r) for r in await self._read("list_api_keys")]

    async def revoke_api_key(self, key_id: str) -> bool:
        return bool(await self._write("revoke_api_key", {"id": key_id, "now": time.time()}))

    async def touch_api_keys(self, key_ids: Sequence[str]) -> None:
        if key_ids:
            await self._write(
                "touch_api_keys", {"ids": dump_json(list(key_ids)), "now": time.time()}
            )

    async def any_api_key(self) -> bool:
        rows = await self._read("any_api_key")
        return bool(rows and rows[0][0])

    async def tenant_stats(self, tenant: str) -> list[QueueStat]:
        return [
            QueueStat(
                queue=r[0],
                status=JobStatus(r[1]),
                count=r[2],
                oldest_run_at=_datetime(r[3]) if r[3] is not None else None,
            )
            for r in await self._read("tenant_stats", {"tenant": tenant})
        ]

    async def tenant_job_ids(self, job_ids: Sequence[int], tenant: str) -> list[int]:
        if not job_ids:
            return []
        args = {"ids": dump_json(list(job_ids)), "tenant": tenant}
        return [int(r[0]) for r in await self._read("tenant_job_ids", args)]

    async def list_jobs_lean(self, params: ListParams) -> list[Job]:
        rows = await self._read(
            "list_jobs_lean",
            {
                "statuses": (
                    dump_json([str(s) for s in params.statuses]) if params.statuses else None
                ),
                "kind": params.kind,
                "queue": params.queue,
                "tenant": params.tenant,
                "created_after": _optional_epoch(params.created_after),
                "created_before": _optional_epoch(params.created_before),
                "before_id": params.before_id,
                "limit": params.limit,
            },
        )
        return _jobs(rows)


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        tenant=row[2],
        scopes=tuple(orjson.loads(row[3])),
        secret_hash=row[4],
        created_at=_datetime(row[5]),
        expires_at=_optional_datetime(row[6]),
        last_used_at=_optional_datetime(row[7]),
        revoked_at=_optional_datetime(row[8]),
    )


def _optional_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else _datetime(epoch)

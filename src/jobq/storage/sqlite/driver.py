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
    LeaseLostError,
    MigrationError,
    SchemaMissingError,
    UnsupportedFeatureError,
)
from ...model import ApiKey, Job, JobError, JobStatus, WorkerInfo
from ...rules.enqueue import (
    Inserted,
    all_created,
    check_tenant_quota,
    insert_checked,
    match_inserted,
)
from ..base import (
    BACKLOG_QUEUES,
    Backlog,
    CancelOutcome,
    CancelResult,
    ClaimParams,
    Completion,
    Enqueued,
    Failure,
    FinishedSample,
    ListParams,
    NewJob,
    NotificationHandler,
    QueueBacklog,
    QueueStat,
    StatusCount,
    WorkerRegistration,
)
from ..common import (
    STATUS_BY_VALUE,
    LocalListener,
    api_key_of,
    dump_json,
    dump_optional_json,
    insert_row,
    job_row_builder,
    plain_batch,
    queued_job,
    storable_json,
    validate_new_job,
)
from ..operations import RuleOperations
from ..plans import (
    CopyIn,
    Lock,
    Plan,
    Run,
    RunMany,
    Script,
    Step,
    T,
    drive,
    drive_async,
    failed_script_named,
)
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
    if not path.parent.is_dir():
        # Never a directory: a typo in the URL would leave folders behind. Unavailable
        # rather than misconfigured: a volume may be mounted late.
        raise DatabaseUnavailableError(
            f"SQLite database {path}: directory {path.parent} does not exist (jobq creates "
            "the database file, not its directory)"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseUnavailableError(f"cannot create SQLite database {path}: {exc}") from exc
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


def _encoded(value: Any) -> Any:
    """A plan's parameter as SQLite takes it: arrays and objects as JSON (the queries read
    them with json_each), times as seconds since the epoch."""
    if isinstance(value, list | tuple | dict):
        return dump_json(value)
    if isinstance(value, datetime):
        return _epoch(value)
    return value


def _parameters(params: Params, now: float) -> Params:
    """A plan statement's parameters encoded, with ``now``: SQLite has no clock of its
    own in a statement that a whole plan would share, so the plan's start stands in."""
    if isinstance(params, tuple):
        return params
    return {"now": now, **{name: _encoded(value) for name, value in params.items()}}


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


def _insert_row(job: NewJob, payload: str, waiting: bool) -> dict[str, Any]:
    """One job as insert_jobs takes it, its payload already encoded."""
    row = insert_row(job, waiting)
    row["payload"] = payload
    row["run_at"] = _optional_epoch(job.run_at)
    row["depends_on"] = dump_json(list(job.depends_on))
    return row


def _on_daemon_thread(conn: aiosqlite.Connection) -> aiosqlite.Connection:
    """``conn``, not started yet, set to run on a daemon thread. aiosqlite gives every
    connection a thread of its own, and a non-daemon one keeps the interpreter alive: a
    script that never closes its JobQueue would never exit. Nothing is lost by not waiting
    for it: what was committed is in the file, and a transaction left open is rolled back
    by SQLite's journal when the file is next opened."""
    thread = conn if isinstance(conn, threading.Thread) else getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread):
        thread.daemon = True
    return conn


class SqliteDriver(RuleOperations):
    dialect = "sqlite"

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        super().__init__(url, settings)
        self._url = url
        self._path = database_path(url)
        self._busy_timeout_ms = self._settings.sqlite_busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
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
            await asyncio.to_thread(create_private, self._path)
            writer = await self._connect()
            try:
                reader = await self._connect()
            except BaseException:
                await writer.close()
                raise
            self._writer, self._reader = writer, reader

    async def close_async(self) -> None:
        # Under the write lock, so no transaction is cut off half way.
        async with self._write_lock:
            writer, reader = self._writer, self._reader
            self._writer = self._reader = None
            for conn in (writer, reader):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        await conn.close()

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
        create_private(self._path)
        with self._translate():
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
            conn = await _on_daemon_thread(
                aiosqlite.connect(
                    self._path, isolation_level=None, timeout=self._busy_timeout_ms / 1000
                )
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
            if str(exc).startswith("no such table: jobq_"):
                raise SchemaMissingError(str(exc)) from exc
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

    # ------------------------------------------------------------------ producing
    async def enqueue(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        plan, atomic = self._insert_plan(jobs, connection)  # first: it refuses connection=
        if not jobs:
            return []
        enqueued = await self._run_write(plan, atomic)
        self._bus.publish_new(j.queue for j in jobs)
        return enqueued

    async def enqueue_many_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs or not plain_batch(jobs):
            return [job.id for job in await self.enqueue_many(jobs)]
        payloads, single = self._checked(jobs)
        plan = self._insert_plain(jobs, payloads, single, build=False)
        ids, _ = await self._run_write(plan, not single)
        self._bus.publish_new(j.queue for j in jobs)
        return ids

    def enqueue_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        plan, atomic = self._insert_plan(jobs, connection)  # first: it refuses connection=
        if not jobs:
            return []
        with self._sync_connection(atomic) as conn:
            # No local wake-up: this may be any thread. The workers of this process see the
            # commit in the file's change counter, as they see other processes' (watch.py).
            return drive(plan, self._executor_sync(conn))

    async def run_plan(self, plan: Plan[T], *, atomic: bool, read_only: bool = False) -> T:
        if read_only and not atomic:
            return await drive_async(plan, self._executor(await self._reader_conn()))
        return await self._run_write(plan, atomic)

    async def _run_write(self, plan: Plan[T], atomic: bool) -> T:
        """A plan on the write connection: in a write transaction when ``atomic``, else as
        the one statement it is, committed on its own."""
        if atomic:
            async with self._transaction() as conn:
                return await drive_async(plan, self._executor(conn))
        self._refuse_reentry()
        async with self._write_lock:
            return await drive_async(plan, self._executor(await self._writer_conn()))

    def _insert_plan(
        self, jobs: Sequence[NewJob], connection: Any
    ) -> tuple[Plan[list[Enqueued]], bool]:
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
    def _plain_jobs(plan: Plan[tuple[list[int], list[Job]]]) -> Plan[list[Enqueued]]:
        _, created = yield from plan
        return all_created(created)

    def _statements(self, step: Step, now: float) -> tuple[list[tuple[str, Params]], bool]:
        """The SQL one step of a plan runs, each statement with its parameters, and whether
        the rows are Jobs. A Lock needs none: a plan that must be atomic runs inside BEGIN
        IMMEDIATE, which holds the file's write lock already."""
        if isinstance(step, CopyIn):
            raise UnsupportedFeatureError("COPY is PostgreSQL's: SQLite inserts by executemany")
        if isinstance(step, Lock):
            return [], False
        if isinstance(step, Script):
            return [(sql, ()) for sql in split_statements(step.sql)], False
        if isinstance(step, RunMany):
            raise TypeError("RunMany has no single statement")
        return [(self._q[step.query], _parameters(step.params, now))], step.jobs

    def _executor(self, conn: aiosqlite.Connection) -> Callable[[Step], Awaitable[list[Any]]]:
        now = time.time()

        async def execute(step: Step) -> list[Any]:
            with failed_script_named(step, sqlite3.Error), self._translate():
                if isinstance(step, RunMany):
                    await conn.executemany(self._q[step.query], step.rows)
                    return []
                statements, jobs = self._statements(step, now)
                rows: list[Any] = []
                for sql, params in statements:
                    rows = list(await conn.execute_fetchall(sql, params))
            return _jobs(rows) if jobs else rows

        return execute

    def _executor_sync(self, conn: sqlite3.Connection) -> Callable[[Step], list[Any]]:
        now = time.time()

        def execute(step: Step) -> list[Any]:
            with failed_script_named(step, sqlite3.Error), self._translate():
                if isinstance(step, RunMany):
                    conn.executemany(self._q[step.query], step.rows)
                    return []
                statements, jobs = self._statements(step, now)
                rows: list[Any] = []
                for sql, params in statements:
                    rows = conn.execute(sql, params).fetchall()
            return _jobs(rows) if jobs else rows

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
            yield from check_tenant_quota(jobs, self._settings.tenant_max_queued)
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

    def _insert_with_keys(
        self, jobs: Sequence[NewJob], payloads: list[str]
    ) -> Plan[list[Enqueued]]:
        encoded = {id(job): payload for job, payload in zip(jobs, payloads, strict=True)}

        def write_rows(some: Sequence[NewJob], waiting: Sequence[bool]) -> Plan[list[Job]]:
            rows = [
                _insert_row(job, encoded[id(job)], wait)
                for job, wait in zip(some, waiting, strict=True)
            ]
            created: list[Job] = yield Run("insert_jobs", {"jobs": dump_json(rows)}, jobs=True)
            return created

        quota = self._settings.tenant_max_queued
        inserted: Inserted = yield from insert_checked(jobs, quota, write_rows)
        return match_inserted(jobs, inserted)

    # ------------------------------------------------------------------ working
    async def claim_plain(self, params: ClaimParams) -> list[Job]:
        args: dict[str, Any] = {
            "worker_id": params.worker_id,
            "limit": params.limit,
            "now": time.time(),
        }
        if params.queues is None:
            return _jobs(await self._write("claim_batch_any_queue", args))
        if len(set(params.queues)) == 1:
            args["queue"] = params.queues[0]
            return _jobs(await self._write("claim_batch_one_queue", args))
        args["queues"] = dump_json(list(params.queues))
        return _jobs(await self._write("claim_batch_by_queue", args))

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

    async def list_by(self, query: str, params: ListParams) -> list[Job]:
        rows = await self._read(
            query,
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
        return _queue_stats(await self._read("stats"))

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

    # ------------------------------------------------------------------ pausing, dashboard
    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        if paused:
            rows = await self._write("pause_queue", {"queue": queue, "now": time.time()})
        else:
            rows = await self._write("resume_queue", {"queue": queue})
        if rows:
            # Other processes learn it at their next look at the paused set (a wake-up from
            # the commit watcher, or the poll interval): SQLite has no notifications.
            self._bus.publish("pause" if paused else "resume", queue)
        return bool(rows)

    async def paused_queues(self) -> dict[str, datetime]:
        return {r[0]: _datetime(r[1]) for r in await self._read("paused_queues")}

    async def waiting_queues(self) -> list[str]:
        return [r[0] for r in await self._read("waiting_queues")]

    async def status_by_queue(self, status: JobStatus, cap: int) -> list[StatusCount]:
        # Queued means queued or retrying here: the two the claim index holds (see Driver).
        query = "waiting_by_queue" if status is JobStatus.QUEUED else "status_by_queue"
        rows = await self._read(query, {"status": str(status), "cap": cap})
        return [
            StatusCount(r[0], status, r[1], _datetime(r[2]) if r[2] is not None else None)
            for r in rows
        ]

    async def finished_counts(
        self, since: datetime, bucket_s: int
    ) -> list[tuple[int, JobStatus, int]]:
        rows = await self._read("finished_counts", {"since": _epoch(since), "bucket_s": bucket_s})
        return [(int(r[0]), JobStatus(r[1]), r[2]) for r in rows]

    async def finished_sample(
        self, since: datetime, bucket_s: int, per_bucket: int
    ) -> list[FinishedSample]:
        start, now, rows = _epoch(since), time.time(), []
        while start <= now:
            args = {"start": start, "end": start + bucket_s, "limit": per_bucket}
            rows += await self._read("finished_sample", args)
            start += bucket_s
        return [FinishedSample(*r) for r in rows]

    async def running_by_worker(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._read("running_by_worker")}

    async def dependents_of(self, job_id: int) -> list[int]:
        return [r[0] for r in await self._read("dependents_of", {"id": job_id})]

    async def discard_failed(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        rows = await self._write("discard_failed", {"ids": dump_json(list(job_ids))})
        return sorted(r[0] for r in rows)

    async def roll_up_finished(self, span_s: int, lag_s: int, keep_s: int) -> bool:
        now = time.time()
        closed = (now - lag_s) // 60 * 60  # the start of the last minute closed long enough
        async with self._transaction() as conn:
            await self._run(conn, "rollup_start", {"now": now})
            [(through,)] = await self._run(conn, "rollup_through", {})
            until = min(through + span_s, closed)
            if until <= through:
                return False
            await self._run(conn, "rollup_minutes", {"from": through, "until": until})
            await self._run(conn, "rollup_advance", {"until": until})
            await self._run(conn, "rollup_forget", {"now": now, "keep_s": keep_s})
            return bool(until < closed)

    async def finished_rollup(
        self, since: datetime
    ) -> tuple[datetime | None, list[tuple[int, JobStatus, int]]]:
        rows = await self._read("rollup_read", {"since": _epoch(since)})
        through = _datetime(rows[0][0]) if rows and rows[0][0] is not None else None
        return through, [(int(r[1]), JobStatus(r[2]), r[3]) for r in rows if r[1] is not None]

    # ------------------------------------------------------------------ observability
    async def backlog(self, at_most: int) -> Backlog:
        # SQLite reads a negative LIMIT as "no limit"; the point here is a bounded count.
        params = {"at_most": max(at_most, 0), "queues": BACKLOG_QUEUES, "now": time.time()}
        rows = await self._read("backlog", params)
        queues = [QueueBacklog(r[0], int(r[1]), max(0.0, r[2])) for r in rows]
        [(workers, age)] = await self._read("backlog_workers", {"now": params["now"]})
        return Backlog(queues, int(workers), None if age is None else max(0.0, age))

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
        return _queue_stats(await self._read("tenant_stats", {"tenant": tenant}))

    async def tenant_job_ids(self, job_ids: Sequence[int], tenant: str) -> list[int]:
        if not job_ids:
            return []
        args = {"ids": dump_json(list(job_ids)), "tenant": tenant}
        return [int(r[0]) for r in await self._read("tenant_job_ids", args)]


def _api_key(row: Sequence[Any]) -> ApiKey:
    scopes, created_at = orjson.loads(row[3]), _datetime(row[5])
    return api_key_of(
        (*row[:3], scopes, row[4], created_at, *(_optional_datetime(t) for t in row[6:9]))
    )


def _queue_stats(rows: Sequence[Sequence[Any]]) -> list[QueueStat]:
    """Rows of the stats queries (queue, status, count, oldest run_at)."""
    return [QueueStat(r[0], JobStatus(r[1]), r[2], _optional_datetime(r[3])) for r in rows]


def _optional_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else _datetime(epoch)

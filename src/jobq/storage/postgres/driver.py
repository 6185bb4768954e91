"""PostgreSQL driver: psycopg 3, async, a connection pool, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor, BaseConnection, Cursor, pq
from psycopg.abc import AdaptContext
from psycopg.rows import RowMaker
from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ...config import Settings
from ...errors import (
    ConfigurationError,
    ContentionError,
    DatabaseUnavailableError,
    LeaseLostError,
    SchemaMissingError,
)
from ...model import ApiKey, Job, JobError, JobStatus, WorkerInfo
from ...rules.enqueue import (
    Inserted,
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
    LocalBus,
    LocalListener,
    api_key_of,
    dump_json,
    dump_optional_json,
    insert_row,
    job_row_builder,
    plain_batch,
    queued_job,
    refuse_nul,
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
from .reach import check_first_connection, check_first_connection_sync

log = logging.getLogger("jobq.storage.postgres")

# Any constant will do: it only has to be the same for every jobq process on the database.
MIGRATION_LOCK_KEY = 0x6A6F6271  # "jobq"
LIMITS_LOCK_KEY = 0x6A6F6272  # claims of kinds and queues with limits
TENANT_LOCK_KEY = 0x6A6F6273  # with the tenant's hash: quota checks of one tenant
# A lost connection is an outage (DatabaseUnavailableError), not a failed migration.
_LOST_CONNECTION = (psycopg.OperationalError,)
_LOCK_KEYS = {
    "migrations": MIGRATION_LOCK_KEY,
    "limits": LIMITS_LOCK_KEY,
    "tenant": TENANT_LOCK_KEY,
}
STATISTICS_LOCK_KEY = 0x6A6F6274  # one ANALYZE of the jobs table at a time
# refresh_statistics: below this many waiting jobs any plan is fast; the count stops at the cap.
STATISTICS_MIN_WAITING = 1000
STATISTICS_SAMPLE_CAP = 10_000
STATISTICS_MIN_INTERVAL_S = 60.0  # between two ANALYZEs by one process
NOTIFY_CHANNEL = "jobq"
# A few statements are sent unprepared (prepare=False), so that the server plans each with
# its actual parameters instead of switching to a generic plan after a few runs:
#  - completions and failures: a generic plan is made without the arrays of ids, with
#    statistics of whatever moment the plan was made in; planned per call, each batch gets
#    the primary-key plan complete_many in queries.sql is written for;
#  - listing and retention: only a plan made for the statuses given can use the partial
#    index that holds them.
# Claims stay prepared: their plan has no join to go wrong, and planning anew would add to
# the latency of every claim.


# The status column's text becomes the JobStatus member.
_PG_CONVERTERS = (("status", STATUS_BY_VALUE.__getitem__),)


def _job_row(cursor: Cursor[Any] | AsyncCursor[Any]) -> RowMaker[Job]:
    """Row factory building Job objects straight from result tuples, with a builder made
    once per column list (see job_row_builder), not per result or row."""
    return job_row_builder(tuple(c.name for c in cursor.description or ()), _PG_CONVERTERS)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode("utf-8")


# Timestamps arrive in UTC whatever the server's zone, and psycopg then gives them
# datetime.timezone.utc, which it converts to three times faster than a ZoneInfo such as
# Debian's default 'Etc/UTC' (a claim of 1,000 rows: 3.1 against 9.4 µs a row, measured).
_SET_UTC = "SET TIME ZONE 'UTC'"


def _use_orjson(conn: BaseConnection[Any]) -> None:
    # orjson for json/jsonb: several times faster than the standard library.
    set_json_loads(orjson.loads, conn)
    set_json_dumps(_dumps, conn)


async def _configure_connection(conn: AsyncConnection[Any]) -> None:
    _use_orjson(conn)
    await conn.execute(_SET_UTC)


def _configure_sync_connection(conn: psycopg.Connection[Any]) -> None:
    _use_orjson(conn)
    conn.execute(_SET_UTC)


class _UtcTimestamptzLoader(TimestamptzLoader):
    """timestamptz in UTC whatever the session's zone: through a transaction pooler a SET
    made on connect stays on whichever server connection ran it. The Python loaders, whose
    target zone can be set (the C ones read the session's); only pooler connections use
    them."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._timezone = UTC


class _UtcTimestamptzBinaryLoader(TimestamptzBinaryLoader):
    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._timezone = UTC


def _configure_pooled(conn: BaseConnection[Any]) -> None:
    """For a connection through a transaction pooler: nothing that lives in the session."""
    _use_orjson(conn)
    conn.adapters.register_loader("timestamptz", _UtcTimestamptzLoader)
    conn.adapters.register_loader("timestamptz", _UtcTimestamptzBinaryLoader)


async def _configure_pooled_connection(conn: AsyncConnection[Any]) -> None:
    _configure_pooled(conn)


def _connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Autocommit: a single statement is its own transaction, one round trip instead of
    three (BEGIN, statement, COMMIT); multi-statement work uses _transaction(). Through a
    transaction pooler (poll_only), no server-side prepared statements: one prepared on a
    server connection is unknown to the next one the pooler hands out."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if settings.poll_only:
        kwargs["prepare_threshold"] = None
    return kwargs


# The jobs an insert created, and the existing jobs that some of its keys led to.
_Inserted = tuple[list[Job], list[Job]]
_NEEDS_ASYNC = (
    "connection= takes a psycopg AsyncConnection here; with a (sync) psycopg Connection, "
    "call defer_sync, enqueue_sync or enqueue_many_sync"
)
_NEEDS_SYNC = (
    "connection= takes a (sync) psycopg Connection here; with an AsyncConnection, "
    "call defer, enqueue or enqueue_many"
)


def _int_array(values: Iterable[int]) -> str:
    """An int or bigint array as PostgreSQL's text literal. Completions send hundreds of ids
    a batch; psycopg's list dumper adapts them one element at a time in Python, which showed
    as 8% of a draining worker's CPU (py-spy)."""
    return "{" + ",".join(map(str, values)) + "}"


_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


def _text_array(values: Sequence[str | None]) -> str | None:
    """A text array as a literal, elements quoted (backslash and double quote escaped), or
    None when every element is NULL: any element of a NULL array is NULL."""
    if not any(value is not None for value in values):
        return None
    return (
        "{"
        + ",".join(
            "NULL" if value is None else f'"{value.translate(_ARRAY_ESCAPES)}"' for value in values
        )
        + "}"
    )


def _by_job_and_attempt(outcome: Completion | Failure) -> tuple[int, int]:
    # Sorted ids for width_bucket; of two outcomes of one job (a stale attempt and the one
    # that replaced it, in one flush) it picks the last, the higher attempt: the only one
    # that can still be running.
    return outcome.job_id, outcome.attempt


def _normalise_url(url: str) -> str:
    return (
        "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url
    )


def _jobs_from_request(requested: list[dict[str, Any]], rows: list[tuple[Any, ...]]) -> list[Job]:
    """Jobs for the rows insert_jobs created, from the request's own values plus what the
    database decided. Rows come back as (id, run_at, created_at, idempotency_key, unique_key,
    status, ...); ids grow in request order, and a keyed request whose key was held already
    produced no row (nor did a second request with a key of the same batch)."""
    first_with_key: dict[str, int] = {}
    first_with_unique: dict[str, int] = {}
    keyless: list[int] = []
    for index, job in enumerate(requested):
        if job["idempotency_key"] is not None:
            first_with_key.setdefault(job["idempotency_key"], index)
        elif job["unique_key"] is not None:
            first_with_unique.setdefault(job["unique_key"], index)
        else:
            keyless.append(index)
    keyless_positions = iter(keyless)
    jobs = []
    for job_id, run_at, created_at, key, unique_key, status, *_ in sorted(rows, key=lambda r: r[0]):
        if key is not None:
            position = first_with_key[key]
        elif unique_key is not None:
            position = first_with_unique[unique_key]
        else:
            position = next(keyless_positions)
        asked = requested[position]
        jobs.append(
            Job(
                id=job_id,
                queue=asked["queue"],
                kind=asked["kind"],
                payload=asked["payload"],
                status=JobStatus(status),
                priority=asked["priority"],
                run_at=run_at,
                attempt=0,
                max_attempts=asked["max_attempts"],
                created_at=created_at,
                updated_at=created_at,
                tenant=asked["tenant"],
                idempotency_key=key,
                unique_key=unique_key,
                depends_on=asked["depends_on"] or [],
                timeout_s=asked["timeout_s"],
                request_id=asked["request_id"],
                request_fingerprint=asked["request_fingerprint"],
                trace_context=asked["trace_context"],
            )
        )
    return jobs


# From this many jobs on, a plain batch goes by COPY; below, one INSERT costs fewer round trips.
COPY_MIN_JOBS = 100
# Rows per write of a COPY: small enough that the server starts on them early, large enough
# that the writes' own cost does not show.
COPY_SLICE_JOBS = 1000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    """A text column in COPY's text format: NULL as \\N, the format's specials escaped."""
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _copy_json(encoded: str) -> str:
    # JSON text holds no raw tab or newline (they are escaped inside strings), only backslashes.
    return encoded.replace("\\", "\\\\")


def _copy_number(value: float | None) -> str:
    return "\\N" if value is None else repr(float(value))


def _by_copy(jobs: Sequence[NewJob], plain: bool) -> bool:
    """Whether a batch goes by COPY: plain (see plain_batch) and COPY_MIN_JOBS or more."""
    return plain and len(jobs) >= COPY_MIN_JOBS


def _checked_queue_names(jobs: Sequence[NewJob]) -> list[str]:
    """The batch's queues, sorted, each named by a job that passed its checks."""
    names: set[str] = set()
    for job in jobs:
        if not (isinstance(job.queue, str) and job.queue in names):
            validate_new_job(job)  # refuses a name that is not a queue's
            names.add(job.queue)
    return sorted(names)


class _CopyEncoder:
    """COPY text lines for plain new jobs, and the Job each becomes. The names a batch
    repeats (queue, kind, tenant) are escaped once per batch, not once per row. With
    ``run_at_column`` false the lines leave out run_at (copy_jobs_due_now): for batches in
    which no job has one."""

    def __init__(self, now: datetime, *, run_at_column: bool) -> None:
        self._now = now
        self._stamp = now.isoformat()
        self._run_at_column = run_at_column
        self._escaped: dict[str | None, str] = {}

    def _text(self, value: str | None) -> str:
        escaped = self._escaped.get(value)
        if escaped is None:
            escaped = self._escaped[value] = _copy_text(value)
        return escaped

    def line(self, job_id: int, job: NewJob, encoded: str) -> str:
        """The COPY line of a job whose payload is ``encoded`` (see storable_json)."""
        run_at = job.run_at
        if not self._run_at_column:
            when = ""
        elif run_at is None:
            when = f"{self._stamp}\t"
        else:
            when = f"{run_at.isoformat()}\t"
        return (
            f"{job_id}\t{self._text(job.queue)}\t{self._text(job.kind)}\t{_copy_json(encoded)}\t"
            f"{job.priority}\t{when}"
            f"{job.max_attempts}\t{self._text(job.tenant)}\t{_copy_number(job.timeout_s)}\t"
            f"{_copy_text(job.request_id)}\n"
        )

    def job(self, job_id: int, job: NewJob, encoded: str) -> Job:
        # The payload as stored (decoded again), like the other insert paths return it.
        now = self._now
        return queued_job(job_id, job, orjson.loads(encoded), job.run_at or now, now)


def _queue_stats(rows: Sequence[Sequence[Any]]) -> list[QueueStat]:
    """Rows of the stats queries (queue, status, count, oldest run_at)."""
    return [QueueStat(r[0], JobStatus(r[1]), r[2], r[3]) for r in rows]


def _returns_rows(cur: Cursor[Any] | AsyncCursor[Any]) -> bool:
    # Not cur.description: it builds a Column object per column on every call (profiled at
    # 20 µs a single enqueue).
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _may_open_a_block(conn: BaseConnection[Any]) -> bool:
    """Whether statements that must commit together may go in a ``transaction()`` block (a
    savepoint inside a transaction, else a transaction of their own). Not on a caller's
    connection that is outside autocommit and idle: there the first statement opens the
    caller's own transaction, which the caller commits, whereas a block would open one and
    commit it at its end, before the caller's work."""
    return conn.autocommit or conn.info.transaction_status != pq.TransactionStatus.IDLE


# A server-side prepared statement missing, or there twice: this process's connection reached
# another server connection than the one it prepared on, which only a transaction pooler does.
_POOLER_SYMPTOMS = (
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.DuplicatePreparedStatement,
)
_POOLER_HINT = (
    "the database URL leads through a transaction pooler (such as PgBouncer with "
    "pool_mode=transaction), which does not keep prepared statements: set JOBQ_POLL_ONLY=true"
)


# A statement this connection prepared before a migration changed the columns it returns:
# the server refuses to run it again, so the connection is dropped and the call may be retried.
_STALE_HINT = "the schema changed under a prepared statement; its connection was replaced"


def _stale_prepared(exc: psycopg.Error) -> bool:
    return "cached plan must not change result type" in str(exc)


@contextlib.contextmanager
def _unavailable_as_our_error() -> Iterator[None]:
    try:
        yield
    except _POOLER_SYMPTOMS as exc:
        raise ConfigurationError(f"{_POOLER_HINT} ({exc})") from exc
    except PoolTimeout as exc:
        raise DatabaseUnavailableError(f"no database connection free: {exc}") from exc
    except psycopg.errors.UndefinedTable as exc:
        if "jobq_" not in str(exc):
            raise
        raise SchemaMissingError(str(exc).splitlines()[0]) from exc
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"database unavailable: {exc}") from exc


class PostgresDriver(RuleOperations):
    dialect = "postgres"

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        super().__init__(url, settings)
        self._url = _normalise_url(url)
        self._pool = AsyncConnectionPool(
            self._url,
            min_size=self._settings.pool_min_size,
            max_size=self._settings.pool_max_size,
            timeout=self._settings.pool_timeout_s,
            configure=_configure_pooled_connection
            if self._settings.poll_only
            else _configure_connection,
            open=False,
            kwargs=_connection_kwargs(self._settings),
        )
        self._opened = False
        self._opening: asyncio.Future[None] | None = None  # see _open_pool
        # The synchronous API (enqueue_many_sync, get_sync) has a pool of its own, made on
        # first use.
        self._sync_pool: ConnectionPool[Any] | None = None
        self._sync_pool_lock = threading.Lock()
        self._analyzed_at: float | None = None  # monotonic time of this process's last ANALYZE
        self._dead_rows_left = 0  # dead rows the last VACUUM could not remove
        # Each claim's synchronous_commit: 'off', or None for the session's own (see
        # claim_batch_by_queue in queries.sql).
        self._claim_commit = "off" if self._settings.claim_async_commit else None

    @property
    def url(self) -> str:
        return self._url

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Open the pool after a first connection succeeded. A URL the server refuses
        raises ConfigurationError; an outage is only logged here (the first use raises it,
        and a worker waits it out)."""
        try:
            await self._open_pool()
        except DatabaseUnavailableError as exc:
            log.warning("%s; connecting again when first needed", exc)

    async def _open_pool(self) -> None:
        if self._opened:
            return
        # One attempt at a time, shared by every caller that needs the pool meanwhile: each
        # waiting for its own would answer the k-th caller of an outage after k timeouts.
        # Shielded: a caller that gives up does not cancel the others' attempt.
        attempt, loop = self._opening, asyncio.get_running_loop()
        if attempt is None or attempt.done() or attempt.get_loop() is not loop:
            attempt = self._opening = loop.create_task(self._open_after_first_connection())
        await asyncio.shield(attempt)

    async def _open_after_first_connection(self) -> None:
        # A first connection of its own: see reach.py for why the pool's is not enough.
        await check_first_connection(
            self._url, _connection_kwargs(self._settings), self._settings.pool_timeout_s
        )
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True

    async def close_async(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False

    def close_sync(self) -> None:
        with self._sync_pool_lock:
            pool, self._sync_pool = self._sync_pool, None
        if pool is not None:
            pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in autocommit mode (use _transaction for several statements).

        Connection-level failures surface as DatabaseUnavailableError so callers (the API's
        503, the worker's backoff) need not know psycopg's exception tree.
        """
        await self._open_pool()
        with _unavailable_as_our_error():
            async with self._pool.connection() as conn:
                try:
                    yield conn
                except psycopg.errors.FeatureNotSupported as exc:
                    if not _stale_prepared(exc):
                        raise
                    await conn.close()  # the pool replaces it, prepared statements and all
                    raise DatabaseUnavailableError(f"{_STALE_HINT} ({exc})") from exc

    @contextlib.contextmanager
    def _connection_sync(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the synchronous pool, in autocommit mode, like _connection's."""
        with self._sync_pool_lock:
            if self._sync_pool is None:
                check_first_connection_sync(
                    self._url, _connection_kwargs(self._settings), self._settings.pool_timeout_s
                )
                self._sync_pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._settings.pool_max_size,
                    timeout=self._settings.pool_timeout_s,
                    configure=_configure_pooled
                    if self._settings.poll_only
                    else _configure_sync_connection,
                    kwargs=_connection_kwargs(self._settings),
                    open=False,
                )
                self._sync_pool.open(wait=False)
            pool = self._sync_pool
        with _unavailable_as_our_error(), pool.connection() as conn:
            try:
                yield conn
            except psycopg.errors.FeatureNotSupported as exc:
                if not _stale_prepared(exc):
                    raise
                conn.close()
                raise DatabaseUnavailableError(f"{_STALE_HINT} ({exc})") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _fetch_jobs(
        self, query: str, params: dict[str, Any], *, prepare: bool | None = None
    ) -> list[Job]:
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=_job_row)
            await cur.execute(self._q[query], params, prepare=prepare)
            return await cur.fetchall()

    async def _fetch_ids(
        self, query: str, params: dict[str, Any], *, prepare: bool | None = None
    ) -> list[int]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q[query], params, prepare=prepare)
            return [row[0] for row in await cur.fetchall()]

    # ------------------------------------------------------------------ producing
    async def enqueue(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        if not jobs:
            return []
        plan, atomic = self._insert_plan(jobs, callers=connection is not None)
        if connection is not None:
            # The caller's transaction: the jobs and their wake-up commit (or not) with it.
            if not isinstance(connection, AsyncConnection):
                raise ConfigurationError(_NEEDS_ASYNC)
            inserted = await self._run_plan(connection, plan, atomic)
        else:
            async with self._connection() as conn:
                inserted = await self._run_plan(conn, plan, atomic)
            self._bus.publish_new(j.queue for j in jobs)
        return match_inserted(jobs, inserted)

    async def enqueue_many_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        if not _by_copy(jobs, plain_batch(jobs)):
            return [job.id for job in await self.enqueue_many(jobs)]
        checked = self._check_up_front(jobs, plain=True, callers=False)
        async with self._connection() as conn:
            plan = self._copy_batch(jobs, build=False, checked=checked)
            ids, _ = await self._run_plan(conn, plan, True)
        self._bus.publish_new(j.queue for j in jobs)
        return ids

    def enqueue_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        if not jobs:
            return []
        plan, atomic = self._insert_plan(jobs, callers=connection is not None)
        if connection is not None:
            if not isinstance(connection, psycopg.Connection):
                raise ConfigurationError(_NEEDS_SYNC)
            inserted = self._run_plan_sync(connection, plan, atomic)
        else:
            with self._connection_sync() as conn:
                inserted = self._run_plan_sync(conn, plan, atomic)
        # No local wake-up: this may be any thread, and the listeners of this process hear
        # the server's notification like those of every other process.
        return match_inserted(jobs, inserted)

    async def run_plan(self, plan: Plan[T], *, atomic: bool, read_only: bool = False) -> T:
        async with self._connection() as conn:
            return await self._run_plan(conn, plan, atomic)

    def _insert_plan(self, jobs: Sequence[NewJob], *, callers: bool) -> tuple[Plan[Inserted], bool]:
        """The statements that insert ``jobs`` (over the caller's connection if ``callers``),
        and whether they must run in one transaction (a savepoint inside the caller's):
        dependencies and quotas take several statements that must commit together, and a
        COPY reads now() and the ids in the statement before it."""
        plain = plain_batch(jobs)
        checked = self._check_up_front(jobs, plain=plain, callers=callers)
        ahead = self._statements_before_insert(jobs)
        # On a caller's idle connection outside autocommit, the first of the statements ahead
        # opens the caller's transaction: a payload that cannot be stored must be refused
        # before it, not at the insert after it. (On other connections they roll back with
        # the savepoint or transaction that holds them.)
        encode_first = ahead and callers
        return self._insert(jobs, plain, checked, encode_first), ahead or _by_copy(jobs, plain)

    def _statements_before_insert(self, jobs: Sequence[NewJob]) -> bool:
        """Whether statements run before the insert (the tenant quota's lock and count, the
        parents' flags), which must then commit with it."""
        return any(j.depends_on for j in jobs) or bool(
            self._settings.tenant_max_queued and any(j.tenant is not None for j in jobs)
        )

    def _check_up_front(self, jobs: Sequence[NewJob], *, plain: bool, callers: bool) -> bool:
        """Check every job before any statement, and say so; or leave them to the COPY,
        which checks each slice while the server ingests the one before (_copy_insert).
        Up front, still, on a caller's connection (a COPY failed halfway would leave the
        transaction it opened on an idle one aborted, where a refusal should leave it as it
        was) and under a tenant quota (its check reads the jobs' tenants first)."""
        if _by_copy(jobs, plain) and not callers and not self._settings.tenant_max_queued:
            return False
        for job in jobs:
            validate_new_job(job)
        return True

    def _statement(self, step: Run | Lock | Script) -> tuple[str | bytes, Any, bool]:
        """The SQL, parameters and whether the rows are Jobs, for one statement of a plan.
        Claims read ``commit`` (see claim_batch_by_queue in queries.sql): every statement
        of a plan is given it."""
        if isinstance(step, Lock):
            key = _LOCK_KEYS[step.name]
            if step.value is None:
                return "SELECT pg_advisory_xact_lock(%s)", (key,), False
            return "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (key, step.value), False
        if isinstance(step, Script):
            return step.sql.encode(), None, False  # bytes: sent as it is, several statements
        params = step.params
        if isinstance(params, dict):
            params = {**params, "commit": self._claim_commit}
        return self._q[step.query], params, step.jobs

    async def _run_plan(self, conn: AsyncConnection[Any], plan: Plan[T], atomic: bool) -> T:
        async def execute(step: Step) -> list[Any]:
            if isinstance(step, CopyIn):
                async with conn.cursor().copy(self._q[step.query]) as copy:
                    for chunk in step.chunks:
                        await copy.write(chunk)
                return []
            if isinstance(step, RunMany):
                await conn.cursor().executemany(self._q[step.query], step.rows)
                return []
            query, params, jobs = self._statement(step)
            cur = conn.cursor(row_factory=_job_row) if jobs else conn.cursor()
            with failed_script_named(step, psycopg.Error, unless=_LOST_CONNECTION):
                await cur.execute(query, params)
            return await cur.fetchall() if _returns_rows(cur) else []

        if not (atomic and _may_open_a_block(conn)):
            return await drive_async(plan, execute)
        async with conn.transaction():
            return await drive_async(plan, execute)

    def _run_plan_sync(self, conn: psycopg.Connection[Any], plan: Plan[T], atomic: bool) -> T:
        def execute(step: Step) -> list[Any]:
            if isinstance(step, CopyIn):
                with conn.cursor().copy(self._q[step.query]) as copy:
                    for chunk in step.chunks:
                        copy.write(chunk)
                return []
            if isinstance(step, RunMany):
                conn.cursor().executemany(self._q[step.query], step.rows)
                return []
            query, params, jobs = self._statement(step)
            cur = conn.cursor(row_factory=_job_row) if jobs else conn.cursor()
            with failed_script_named(step, psycopg.Error, unless=_LOST_CONNECTION):
                cur.execute(query, params)
            return cur.fetchall() if _returns_rows(cur) else []

        if not (atomic and _may_open_a_block(conn)):
            return drive(plan, execute)
        with conn.transaction():
            return drive(plan, execute)

    def _insert(
        self, jobs: Sequence[NewJob], plain: bool, checked: bool, encode_first: bool
    ) -> Plan[Inserted]:
        """Inserts ``jobs``; returns the jobs created and the existing ones some keys led to.
        The statements NOTIFY too; the notification goes out when their transaction commits
        (the caller's own, with connection=), so no worker wakes before it can see the rows."""
        if _by_copy(jobs, plain):
            _, created = yield from self._copy_batch(jobs, build=True, checked=checked)
            return Inserted(created)
        if encode_first:
            for job in jobs:
                storable_json(job.payload)
        quota = self._settings.tenant_max_queued
        if plain and len(jobs) == 1:
            yield from check_tenant_quota(jobs, quota)
            return Inserted([(yield from self._insert_plain_job(jobs[0]))])
        return (yield from insert_checked(jobs, quota, self._write_rows))

    def _write_rows(self, jobs: Sequence[NewJob], waiting: Sequence[bool]) -> Plan[list[Job]]:
        rows = [insert_row(job, wait) for job, wait in zip(jobs, waiting, strict=True)]
        if len(rows) == 1:
            payload = storable_json(rows[0]["payload"])
            created = yield Run("insert_job", {**rows[0], "payload": payload})
            asked = {**rows[0], "payload": orjson.loads(payload)}  # as stored
            return _jobs_from_request([asked], created)
        batch = dump_json(rows)
        refuse_nul(batch, [row["payload"] for row in rows])
        created = yield Run("insert_jobs", {"jobs": batch})
        # Decoded back, so each job carries its payload as stored (JSON), not as given.
        return _jobs_from_request(orjson.loads(batch), created)

    def _insert_plain_job(self, job: NewJob) -> Plan[Job]:
        encoded = storable_json(job.payload)
        timeout_s = None if job.timeout_s is None else float(job.timeout_s)
        [(job_id, run_at, created_at, _)] = yield Run(
            "insert_plain_job",
            (job.queue, job.kind, encoded, job.priority, job.run_at, job.max_attempts,
             job.tenant, timeout_s, job.request_id),
        )  # fmt: skip
        # The payload as stored (decoded again), like the other insert paths return it.
        return queued_job(job_id, job, orjson.loads(encoded), run_at, created_at)

    def _copy_batch(
        self, jobs: Sequence[NewJob], *, build: bool, checked: bool
    ) -> Plan[tuple[list[int], list[Job]]]:
        """A plain batch of at least COPY_MIN_JOBS: its tenant quota checked, then the COPY
        (for enqueue_many and enqueue_many_ids alike). Checked up front, the payloads are
        encoded up front too: one that cannot be stored is then refused before the first
        statement, like any other bad job."""
        payloads = [storable_json(job.payload) for job in jobs] if checked else None
        yield from check_tenant_quota(jobs, self._settings.tenant_max_queued)
        return (yield from self._copy_insert(jobs, build, payloads))

    def _copy_insert(
        self, jobs: Sequence[NewJob], build: bool, payloads: list[str] | None
    ) -> Plan[tuple[list[int], list[Job]]]:
        """Many plain jobs (no keys, no dependencies) by COPY: about twice the rows per second
        of the INSERT. COPY returns nothing, so the ids are taken from the sequence first and
        written explicitly (COPY may fill an identity column), and the transaction's now() is
        read in the same statement: it is the created_at every row gets by default.

        The rows go out in slices, each written as soon as it is built, so the server parses
        and indexes one slice while this process encodes the next (they run on other cores).
        Returns the ids in request order, and with ``build`` the Job each row became.

        Unless checked already (``payloads`` then holds their payloads encoded, see
        _check_up_front), the jobs are checked, and their payloads encoded, slice by slice
        too, while the server ingests the slice before, so the checks do not delay the first
        round trip (for 5,000 jobs they take about a tenth of the call). A bad job fails the COPY,
        and with it the transaction: nothing is stored. Only a queue's first job is checked
        before that, as its name goes into the wake-ups.
        """
        queues = _checked_queue_names(jobs)
        [(now, reserved, _)] = yield Run("reserve_ids", {"count": len(jobs), "queues": queues})
        ids = sorted(reserved)
        # The default run_at (now()) is the transaction's time, read above with the ids.
        scheduled = any(job.run_at is not None for job in jobs)
        encode = _CopyEncoder(now, run_at_column=scheduled)
        created: list[Job] = []

        def slices() -> Iterator[bytes]:
            for start in range(0, len(jobs), COPY_SLICE_JOBS):
                end = start + COPY_SLICE_JOBS
                some = jobs[start:end]
                if payloads is not None:
                    encoded = payloads[start:end]
                else:
                    for job in some:
                        validate_new_job(job)
                    encoded = [storable_json(job.payload) for job in some]
                rows = list(zip(ids[start:end], some, encoded, strict=True))
                yield "".join([encode.line(*row) for row in rows]).encode()
                # Resumed once the slice is written: its Jobs are built while the server
                # ingests its rows.
                if build:
                    created.extend([encode.job(*row) for row in rows])

        yield CopyIn("copy_jobs" if scheduled else "copy_jobs_due_now", slices())
        return ids, created

    # ------------------------------------------------------------------ working
    async def claim_plain(self, params: ClaimParams) -> list[Job]:
        args: dict[str, Any]
        if params.queues is None:
            query, args = "claim_batch_any_queue", {"worker_id": params.worker_id}
        else:
            query = "claim_batch_by_queue"
            args = {"worker_id": params.worker_id, "queues": list(params.queues)}
        args["limit"] = params.limit
        args["commit"] = self._claim_commit
        return await self._fetch_jobs(query, args)

    async def complete_many(self, completions: Sequence[Completion]) -> list[int]:
        if not completions:
            return []
        completions = sorted(completions, key=_by_job_and_attempt)  # as the statement needs
        return await self._fetch_ids(
            "complete_many",
            {
                "ids": _int_array(c.job_id for c in completions),
                "attempts": _int_array(c.attempt for c in completions),
                "results": _text_array([dump_optional_json(c.result) for c in completions]),
            },
            prepare=False,
        )

    @contextlib.asynccontextmanager
    async def job_transaction(
        self, job_id: int, attempt: int
    ) -> AsyncIterator[AsyncConnection[Any]]:
        lease = {"id": job_id, "attempt": attempt}
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["lock_running_job"], lease)
            if not await cur.fetchall():
                raise LeaseLostError(f"job {job_id} attempt {attempt} is no longer running here")
            yield conn
            cur = await conn.execute(
                self._q["complete_many"],
                {"ids": [job_id], "attempts": [attempt], "results": [None]},
            )
            if not await cur.fetchall():
                raise LeaseLostError(f"job {job_id} attempt {attempt} could not be completed")

    async def set_progress(self, job_id: int, attempt: int, progress: dict[str, Any]) -> bool:
        args = {"id": job_id, "attempt": attempt, "progress": storable_json(progress, "progress")}
        return bool(await self._fetch_ids("set_progress", args))

    async def store_result(self, job_id: int, attempt: int, result: Any) -> None:
        async with self._connection() as conn:
            await conn.execute(
                self._q["store_result"],
                {
                    "id": job_id,
                    "attempt": attempt,
                    "result": None if result is None else storable_json(result, "a result"),
                },
            )

    async def fail_many(self, failures: Sequence[Failure]) -> list[int]:
        if not failures:
            return []
        failures = sorted(failures, key=_by_job_and_attempt)  # as the statement needs
        return await self._fetch_ids(
            "fail_many",
            {
                "ids": [f.job_id for f in failures],
                "attempts": [f.attempt for f in failures],
                "errors": [f.error for f in failures],
                "tracebacks": [f.traceback for f in failures],
                "retry_in_s": [f.retry_in_s for f in failures],
            },
            prepare=False,
        )

    async def finish_cancelled(self, job_id: int, attempt: int, reason: str) -> bool:
        ids = await self._fetch_ids(
            "finish_cancelled", {"id": job_id, "attempt": attempt, "reason": reason}
        )
        return bool(ids)

    async def hand_back(self, job_id: int, attempt: int, reason: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["hand_back"], {"id": job_id, "attempt": attempt})
            moved = await cur.fetchall()
            if moved:
                log.info("job %s handed back: %s", job_id, reason)
            return bool(moved)

    async def cancel_requested_among(self, worker_id: str) -> set[int]:
        return set(await self._fetch_ids("cancel_requested_among", {"worker_id": worker_id}))

    async def rescue_stale(self, lease_s: float) -> list[int]:
        rescued = await self._fetch_ids("rescue_stale", {"lease_s": lease_s})
        async with self._connection() as conn:
            await conn.execute(self._q["delete_stale_workers"], {"lease_s": lease_s})
        return rescued

    # ------------------------------------------------------------------ workers
    async def register_worker(self, worker: WorkerRegistration) -> None:
        async with self._connection() as conn:
            await conn.execute(
                self._q["register_worker"],
                {
                    "id": worker.id,
                    "hostname": worker.hostname,
                    "pid": worker.pid,
                    "queues": list(worker.queues) if worker.queues is not None else None,
                    "concurrency": worker.concurrency,
                },
            )

    async def heartbeat(self, worker_id: str) -> bool:
        return bool(await self._fetch_ids("heartbeat", {"id": worker_id}))

    async def unregister_worker(self, worker_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(self._q["unregister_worker"], {"id": worker_id})

    async def workers(self) -> list[WorkerInfo]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["list_workers"])
            return [
                WorkerInfo(
                    id=r[0],
                    hostname=r[1],
                    pid=r[2],
                    queues=list(r[3] or []),
                    concurrency=r[4],
                    started_at=r[5],
                    heartbeat_at=r[6],
                )
                for r in await cur.fetchall()
            ]

    # ------------------------------------------------------------------ managing
    async def get(self, job_id: int) -> Job | None:
        jobs = await self._fetch_jobs("get_job", {"id": job_id})
        return jobs[0] if jobs else None

    def get_sync(self, job_id: int) -> Job | None:
        with self._connection_sync() as conn:
            cur = conn.cursor(row_factory=_job_row)
            cur.execute(self._q["get_job"], {"id": job_id})
            return cur.fetchone()

    async def get_by_idempotency_key(self, key: str) -> Job | None:
        jobs = await self._fetch_jobs("jobs_by_idempotency_keys", {"keys": [key]})
        return jobs[0] if jobs else None

    async def list_by(self, query: str, params: ListParams) -> list[Job]:
        return await self._fetch_jobs(
            query,
            {
                "statuses": [str(s) for s in params.statuses] if params.statuses else None,
                "kind": params.kind,
                "queue": params.queue,
                "tenant": params.tenant,
                "created_after": params.created_after,
                "created_before": params.created_before,
                "before_id": params.before_id,
                "limit": params.limit,
            },
            prepare=False,
        )

    async def job_errors(self, job_id: int) -> list[JobError]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["job_errors"], {"id": job_id})
            return [JobError(*row) for row in await cur.fetchall()]

    async def cancel(self, job_id: int) -> CancelResult:
        # Each step re-checks the status in its WHERE clause, so a job that moves between
        # steps (queued -> running, running -> retrying) is caught by a later step or a
        # second pass; no step can cancel a job in a status it should not.
        for _ in range(5):
            jobs = await self._fetch_jobs("cancel_pending", {"id": job_id})
            if jobs:
                return CancelResult(CancelOutcome.CANCELLED, jobs[0])
            async with self._transaction() as conn:
                cur = conn.cursor(row_factory=_job_row)
                await cur.execute(self._q["request_cancel"], {"id": job_id})
                requested = await cur.fetchall()
                if requested:
                    await conn.execute(self._q["notify_cancel"], {"id": job_id})
            if requested:
                self._bus.publish("cancel", str(job_id))
                return CancelResult(CancelOutcome.REQUESTED, requested[0])
            job = await self.get(job_id)
            if job is None:
                return CancelResult(CancelOutcome.NOT_FOUND, None)
            if job.is_terminal:
                return CancelResult(CancelOutcome.TERMINAL, job)
        raise ContentionError(f"job {job_id} kept changing status; cancel again")

    async def requeue(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["requeue"], {"ids": list(job_ids)})
            rows = await cur.fetchall()
            queues = sorted({r[1] for r in rows})
            if queues:
                await conn.execute(self._q["notify_new"], {"queues": queues})
        self._bus.publish_new(queues)
        return sorted(r[0] for r in rows)

    async def stats(self) -> list[QueueStat]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["stats"])
            return _queue_stats(await cur.fetchall())

    async def queue_depth(self, queue: str, at_most: int) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["queue_depth"], {"queue": queue, "at_most": at_most})
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def forget_idempotency_keys(self, older_than_s: float) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(
                self._q["forget_idempotency_keys"], {"older_than_s": older_than_s}
            )
            return cur.rowcount

    async def take_leadership(self, name: str, holder: str, ttl_s: float) -> bool:
        args = {"name": name, "holder": holder, "ttl_s": ttl_s}
        return bool(await self._fetch_ids("take_leadership", args))

    async def give_up_leadership(self, name: str, holder: str) -> None:
        async with self._connection() as conn:
            await conn.execute(self._q["give_up_leadership"], {"name": name, "holder": holder})

    async def purge_finished(self, status: JobStatus, older_than_s: float, batch: int) -> int:
        args = {"status": str(status), "older_than_s": older_than_s, "batch": batch}
        return len(await self._fetch_ids("purge_finished", args, prepare=False))

    async def vacuum_jobs(self, min_dead_rows: int) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["dead_rows"])
            row = await cur.fetchone()
            if row is None or not row[1]:
                return False
            # Counted from what the last VACUUM left: the rows an old snapshot still needs
            # (a session idle in a transaction, a long report) stay dead through it, and must
            # not make every round vacuum again. (The count only falls below it when
            # autovacuum got there too.)
            self._dead_rows_left = min(self._dead_rows_left, int(row[0]))
            if row[0] - self._dead_rows_left < min_dead_rows:
                return False
            await conn.execute(self._q["vacuum_jobs"])
            cur = await conn.execute(self._q["dead_rows"])
            left = await cur.fetchone()
            self._dead_rows_left = int(left[0]) if left else 0
        return True

    async def refresh_statistics(self) -> bool:
        # The harm is specific: the planner believing few jobs wait when many do. So that is
        # what is checked, directly (a capped count through the claim index against the
        # estimate), rather than through pg_stat counters that reach the views seconds late.
        now = time.monotonic()
        if self._analyzed_at is not None and now - self._analyzed_at < STATISTICS_MIN_INTERVAL_S:
            return False  # an ANALYZE that did not lift the estimate is not repeated each round
        async with self._transaction() as conn:
            cur = await conn.execute(self._q["claimable_sample"], {"cap": STATISTICS_SAMPLE_CAP})
            counted = await cur.fetchone()
            waiting = int(counted[0]) if counted else 0
            if waiting < STATISTICS_MIN_WAITING:
                return False
            cur = await conn.execute(self._q["claimable_estimate"])
            explained = await cur.fetchone()
            estimate = float(explained[0][0]["Plan"]["Plan Rows"]) if explained else 0.0
            if estimate * 2 >= waiting:
                return False
            cur = await conn.execute(self._q["try_statistics_lock"], {"key": STATISTICS_LOCK_KEY})
            locked = await cur.fetchone()
            if not (locked and locked[0]):
                return False  # another process is at it
            await conn.execute(self._q["bound_analyze"])
            await conn.execute(self._q["analyze_jobs"])
        self._analyzed_at = now
        return True

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def count_claimable(self, queues: Sequence[str] | None) -> int:
        async with self._connection() as conn:
            if queues is None:
                cur = await conn.execute(self._q["count_claimable_any_queue"])
            else:
                cur = await conn.execute(
                    self._q["count_claimable_by_queue"], {"queues": list(queues)}
                )
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    # ------------------------------------------------------------------ wake-ups
    async def listen(
        self, handler: NotificationHandler, queues: Sequence[str] | None = None
    ) -> PostgresListener | LocalListener:
        # queues unused: every notification names its queue, and handlers skip the others.
        if self._settings.poll_only:
            return LocalListener(self._bus, handler)
        listener = PostgresListener(self._url, handler, self._bus)
        await listener.start()
        return listener

    # ------------------------------------------------------------------ pausing, dashboard
    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        event = "pause" if paused else "resume"
        async with self._transaction() as conn:
            cur = await conn.execute(
                self._q["pause_queue" if paused else "resume_queue"], {"queue": queue}
            )
            changed = bool(await cur.fetchall())
            if changed:
                await conn.execute(self._q["notify_paused"], {"event": event, "queue": queue})
        if changed:
            self._bus.publish(event, queue)
        return changed

    async def paused_queues(self) -> dict[str, datetime]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["paused_queues"])
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def waiting_queues(self) -> list[str]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["waiting_queues"])
            return [r[0] for r in await cur.fetchall()]

    async def status_by_queue(self, status: JobStatus, cap: int) -> list[StatusCount]:
        # Queued means queued or retrying here: the two the claim index holds (see Driver).
        query = "waiting_by_queue" if status is JobStatus.QUEUED else "status_by_queue"
        async with self._connection() as conn:
            # Unprepared: planned for the status asked, so that each reads its own index.
            cur = await conn.execute(
                self._q[query], {"status": str(status), "cap": cap}, prepare=False
            )
            return [StatusCount(r[0], status, r[1], r[2]) for r in await cur.fetchall()]

    async def finished_counts(
        self, since: datetime, bucket_s: int
    ) -> list[tuple[int, JobStatus, int]]:
        async with self._connection() as conn:
            cur = await conn.execute(
                self._q["finished_counts"], {"since": since, "bucket_s": bucket_s}
            )
            return [(int(r[0]), JobStatus(r[1]), r[2]) for r in await cur.fetchall()]

    async def finished_sample(
        self, since: datetime, bucket_s: int, per_bucket: int
    ) -> list[FinishedSample]:
        args = {"since": since, "bucket_s": bucket_s, "per_bucket": per_bucket}
        async with self._connection() as conn:
            cur = await conn.execute(self._q["finished_sample"], args)
            return [FinishedSample(*r) for r in await cur.fetchall()]

    async def running_by_worker(self) -> dict[str, int]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["running_by_worker"])
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def dependents_of(self, job_id: int) -> list[int]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["dependents_of"], {"id": job_id})
            return [r[0] for r in await cur.fetchall()]

    async def discard_failed(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        async with self._connection() as conn:
            cur = await conn.execute(self._q["discard_failed"], {"ids": list(job_ids)})
            return sorted(r[0] for r in await cur.fetchall())

    async def roll_up_finished(self, span_s: int, lag_s: int, keep_s: int) -> bool:
        async with self._transaction() as conn:
            await conn.execute(self._q["rollup_start"])
            cur = await conn.execute(self._q["rollup_lock"], {"span_s": span_s, "lag_s": lag_s})
            row = await cur.fetchone()
            if row is None or row[1] <= row[0]:
                return False
            through, until, behind = row
            await conn.execute(self._q["rollup_minutes"], {"from": through, "until": until})
            await conn.execute(self._q["rollup_advance"], {"until": until})
            await conn.execute(self._q["rollup_forget"], {"keep_s": keep_s})
            return bool(behind)

    async def finished_rollup(
        self, since: datetime
    ) -> tuple[datetime | None, list[tuple[int, JobStatus, int]]]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["rollup_read"], {"since": since})
            rows = await cur.fetchall()
        through = rows[0][0] if rows else None
        return through, [(int(r[1]), JobStatus(r[2]), r[3]) for r in rows if r[1] is not None]

    # ------------------------------------------------------------------ observability
    async def backlog(self, at_most: int) -> Backlog:
        async with self._connection() as conn, conn.transaction():
            # The planner prices the walk as if every queue were full, which turns on JIT
            # compilation: 40 ms a scrape (measured, 5 queues), several times the walk itself.
            await conn.execute("SET LOCAL jit = off")
            cur = await conn.execute(
                self._q["backlog"], {"at_most": max(at_most, 0), "queues": BACKLOG_QUEUES}
            )
            queues = [QueueBacklog(r[0], int(r[1]), max(0.0, r[2])) for r in await cur.fetchall()]
            cur = await conn.execute(self._q["backlog_workers"])
            row = await cur.fetchone()
        workers, age = (int(row[0]), row[1]) if row else (0, None)
        return Backlog(queues, workers, None if age is None else max(0.0, age))

    # ------------------------------------------------------------------ read routing
    async def wal_position(self) -> int:
        """WAL bytes written (a primary) or replayed (a standby): see queries.sql."""
        async with self._connection() as conn:
            cur = await conn.execute(self._q["wal_position"])
            row = await cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

    # ------------------------------------------------------------------ API keys, tenants
    async def insert_api_key(self, key: ApiKey) -> ApiKey:
        args = {
            "id": key.id,
            "name": key.name,
            "tenant": key.tenant,
            "scopes": list(key.scopes),
            "secret_hash": key.secret_hash,
            "expires_at": key.expires_at,
        }
        async with self._connection() as conn:
            cur = await conn.execute(self._q["insert_api_key"], args)
            row = await cur.fetchone()
        assert row is not None  # INSERT ... RETURNING gives its row
        return api_key_of(row)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["get_api_key"], {"id": key_id})
            row = await cur.fetchone()
        return api_key_of(row) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["list_api_keys"])
            return [api_key_of(r) for r in await cur.fetchall()]

    async def revoke_api_key(self, key_id: str) -> bool:
        return bool(await self._fetch_ids("revoke_api_key", {"id": key_id}))

    async def touch_api_keys(self, key_ids: Sequence[str]) -> None:
        if key_ids:
            async with self._connection() as conn:
                await conn.execute(self._q["touch_api_keys"], {"ids": list(key_ids)})

    async def any_api_key(self) -> bool:
        return bool((await self._fetch_ids("any_api_key", {}))[0])

    async def tenant_stats(self, tenant: str) -> list[QueueStat]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["tenant_stats"], {"tenant": tenant})
            return _queue_stats(await cur.fetchall())

    async def tenant_job_ids(self, job_ids: Sequence[int], tenant: str) -> list[int]:
        if not job_ids:
            return []
        args = {"ids": list(job_ids), "tenant": tenant}
        return [int(i) for i in await self._fetch_ids("tenant_job_ids", args)]


class PostgresListener:
    """A dedicated connection LISTENing on the jobq channel; reconnects after outages.

    Losing notifications during an outage is harmless: workers also poll, and a reconnect
    triggers a wake-up so nothing waits a full poll interval.
    """

    def __init__(self, url: str, handler: NotificationHandler, bus: LocalBus) -> None:
        self._url = url
        self._handler = handler
        self._local = LocalListener(bus, handler)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobq-listener")
        # Wait briefly so notifications sent right after start() are not missed; if the
        # database is down the worker carries on polling and the task keeps retrying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=5)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._connected.set()
                    delay = 0.1
                    self._handler("new", "*")  # catch up on anything sent while away
                    async for note in conn.notifies():
                        kind, _, value = note.payload.partition(":")
                        self._handler(kind, value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening through outages
                log.warning("listener connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        await self._local.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

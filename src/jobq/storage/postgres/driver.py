"""PostgreSQL driver: psycopg 3, async, a connection pool, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor, BaseConnection, Cursor, pq
from psycopg.rows import RowMaker
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ...config import Settings
from ...errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidJobError,
    LeaseLostError,
    MigrationError,
    TenantQuotaExceeded,
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
    refuse_nul,
    room_under_limits,
    shares,
    storable_json,
    validate_new_job,
)
from ..plans import CopyIn, Plan, Run, RunMany, Step, T, drive, drive_async
from ..sqlfiles import load_migrations, load_queries, pending_migrations

log = logging.getLogger("jobq.storage.postgres")

# Any constant will do: it only has to be the same for every jobq process on the database.
MIGRATION_LOCK_KEY = 0x6A6F6271  # "jobq"
LIMITS_LOCK_KEY = 0x6A6F6272  # claims of kinds and queues with limits
TENANT_LOCK_KEY = 0x6A6F6273  # with the tenant's hash: quota checks of one tenant
STATISTICS_LOCK_KEY = 0x6A6F6274  # one ANALYZE of the jobs table at a time
# refresh_statistics: below this many waiting jobs any plan is fast; the count stops at the cap.
STATISTICS_MIN_WAITING = 1000
STATISTICS_SAMPLE_CAP = 10_000
STATISTICS_MIN_INTERVAL_S = 60.0  # between two ANALYZEs by one process
NOTIFY_CHANNEL = "jobq"
# A few statements are sent unprepared (prepare=False), so that the server plans each with
# its actual parameters instead of switching to a generic plan after a few runs:
#  - completions and failures: when they joined the jobs table to their arrays, a generic
#    plan, made without the arrays and with statistics of a moment when no job was running,
#    rescanned the array for every running row (completing 20,000 jobs: 7.2 s against
#    0.4 s, measured). They now update the table by primary key alone (see complete_many in
#    queries.sql); they stay unprepared, which that form was measured with;
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


def _insert_row(job: NewJob) -> dict[str, Any]:
    """One job as insert_job(s) takes it."""
    return {
        "queue": job.queue,
        "kind": job.kind,
        "payload": job.payload,
        "priority": job.priority,
        "run_at": job.run_at,
        "max_attempts": job.max_attempts,
        "tenant": job.tenant,
        "idempotency_key": job.idempotency_key,
        "unique_key": job.unique_key,
        "unique_states": unique_states_mask(job),
        "depends_on": list(job.depends_on) or None,
        "timeout_s": None if job.timeout_s is None else float(job.timeout_s),  # as stored
        "request_id": job.request_id,
        "request_fingerprint": job.request_fingerprint,
        "status": None,  # queued, unless it waits on dependencies
    }


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


@contextlib.contextmanager
def _unavailable_as_our_error() -> Iterator[None]:
    try:
        yield
    except PoolTimeout as exc:
        raise DatabaseUnavailableError(f"no database connection free: {exc}") from exc
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"database unavailable: {exc}") from exc


class PostgresDriver:
    dialect = "postgres"

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self._settings = settings or Settings(database_url=url)
        self._url = _normalise_url(url)
        self._q = load_queries("postgres")
        self._bus = LocalBus()
        self._pool = AsyncConnectionPool(
            self._url,
            min_size=self._settings.pool_min_size,
            max_size=self._settings.pool_max_size,
            timeout=self._settings.pool_timeout_s,
            configure=_configure_connection,
            open=False,
            # Autocommit: a single statement is its own transaction, one round trip instead of
            # three (BEGIN, statement, COMMIT). Multi-statement work uses _transaction().
            kwargs={"autocommit": True},
        )
        self._opened = False
        # The synchronous API (enqueue_many_sync, get_sync) has a pool of its own, made on
        # first use.
        self._sync_pool: ConnectionPool[Any] | None = None
        self._sync_pool_lock = threading.Lock()
        # Fair claiming: the last tenant each worker of this process served.
        self._tenant_cursor: dict[str, str] = {}
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
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False
        if self._sync_pool is not None:
            await asyncio.to_thread(self.close_sync)

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
        await self.open()
        with _unavailable_as_our_error():
            async with self._pool.connection() as conn:
                yield conn

    @contextlib.contextmanager
    def _connection_sync(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the synchronous pool, in autocommit mode, like _connection's."""
        with self._sync_pool_lock:
            if self._sync_pool is None:
                self._sync_pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._settings.pool_max_size,
                    timeout=self._settings.pool_timeout_s,
                    configure=_configure_sync_connection,
                    kwargs={"autocommit": True},
                    open=False,
                )
                self._sync_pool.open(wait=False)
            pool = self._sync_pool
        with _unavailable_as_our_error(), pool.connection() as conn:
            yield conn

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

    # ------------------------------------------------------------------ migrations

    async def rollback(self, steps: int = 1) -> list[int]:
        if steps < 1:
            raise MigrationError("rollback needs at least one step")
        async with self._migration_transaction() as (conn, applied):
            done = []
            for migration in sorted(
                (m for m in load_migrations("postgres") if m.version in applied),
                key=lambda m: m.version,
                reverse=True,
            )[:steps]:
                await conn.execute(migration.down_sql.encode())
                await conn.execute(
                    "DELETE FROM jobq_migrations WHERE version = %s", (migration.version,)
                )
                done.append(migration.version)
            return done

    async def applied_migrations(self) -> list[int]:
        async with self._migration_transaction() as (_conn, applied):
            return sorted(applied)

    async def migrate(self) -> list[int]:
        async with self._migration_transaction() as (conn, applied):
            done = []
            for migration in pending_migrations("postgres", applied):
                await conn.execute(migration.up_sql.encode())
                await conn.execute(
                    "INSERT INTO jobq_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                done.append(migration.version)
            return done

    @contextlib.asynccontextmanager
    async def _migration_transaction(
        self,
    ) -> AsyncIterator[tuple[AsyncConnection[Any], dict[int, str]]]:
        """One transaction holding the migration advisory lock, so processes that start at the
        same moment apply each migration once, in order, or not at all."""
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS jobq_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            cur = await conn.execute("SELECT version, checksum FROM jobq_migrations")
            applied = {int(v): str(c) for v, c in await cur.fetchall()}
            yield conn, applied

    # ------------------------------------------------------------------ producing
    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        if not jobs:
            return []
        plan, atomic = self._insert_plan(jobs, callers=connection is not None)
        if connection is not None:
            # The caller's transaction: the jobs and their wake-up commit (or not) with it.
            if not isinstance(connection, AsyncConnection):
                raise ConfigurationError(_NEEDS_ASYNC)
            created = await self._run_plan(connection, plan, atomic)
        else:
            async with self._connection() as conn:
                created = await self._run_plan(conn, plan, atomic)
            self._bus.publish_new(j.queue for j in jobs)
        return match_inserted(jobs, *created)

    async def enqueue_many_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        if not _by_copy(jobs, plain_batch(jobs)):
            return [job.id for job in await self.enqueue_many(jobs)]
        checked = self._check_up_front(jobs, plain=True, callers=False)
        async with self._connection() as conn:
            plan = self._copy_batch(jobs, build=False, checked=checked)
            ids, _ = await self._run_plan(conn, plan, True)
        self._bus.publish_new(j.queue for j in jobs)
        return ids

    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        if not jobs:
            return []
        plan, atomic = self._insert_plan(jobs, callers=connection is not None)
        if connection is not None:
            if not isinstance(connection, psycopg.Connection):
                raise ConfigurationError(_NEEDS_SYNC)
            created = self._run_plan_sync(connection, plan, atomic)
        else:
            with self._connection_sync() as conn:
                created = self._run_plan_sync(conn, plan, atomic)
        # No local wake-up: this may be any thread, and the listeners of this process hear
        # the server's notification like those of every other process.
        return match_inserted(jobs, *created)

    def _insert_plan(
        self, jobs: Sequence[NewJob], *, callers: bool
    ) -> tuple[Plan[_Inserted], bool]:
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
            cur = conn.cursor(row_factory=_job_row) if step.jobs else conn.cursor()
            await cur.execute(self._q[step.query], step.params)
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
            cur = conn.cursor(row_factory=_job_row) if step.jobs else conn.cursor()
            cur.execute(self._q[step.query], step.params)
            return cur.fetchall() if _returns_rows(cur) else []

        if not (atomic and _may_open_a_block(conn)):
            return drive(plan, execute)
        with conn.transaction():
            return drive(plan, execute)

    def _insert(
        self, jobs: Sequence[NewJob], plain: bool, checked: bool, encode_first: bool
    ) -> Plan[_Inserted]:
        """Inserts ``jobs``; returns the jobs created and the existing ones some keys led to.
        The statements NOTIFY too; the notification goes out when their transaction commits
        (the caller's own, with connection=), so no worker wakes before it can see the rows."""
        if _by_copy(jobs, plain):
            _, created = yield from self._copy_batch(jobs, build=True, checked=checked)
            return created, []
        if encode_first:
            for job in jobs:
                storable_json(job.payload)
        yield from self._check_tenant_quota(jobs)
        if plain and len(jobs) == 1:
            return [(yield from self._insert_plain_job(jobs[0]))], []
        rows = [_insert_row(j) for j in jobs]
        orphaned = yield from self._prepare_dependents(jobs, rows)
        inserted, existing = yield from self._insert_pass(jobs, rows, orphaned)
        # A job skipped for a unique key whose holder finished before the lookup found it
        # has neither a row nor a holder: insert it again (the key is free now).
        for _ in range(3):
            found = {j.unique_key for j in (*inserted, *existing) if j.unique_key is not None}
            keyed = {j.idempotency_key for j in (*inserted, *existing) if j.idempotency_key}
            again = [
                i
                for i, j in enumerate(jobs)
                if j.unique_key is not None
                and j.unique_key not in found
                and j.idempotency_key not in keyed
            ]
            if not again:
                break
            more, held = yield from self._insert_pass(
                [jobs[i] for i in again], [rows[i] for i in again], orphaned
            )
            inserted += more
            existing += held
        return inserted, existing

    def _insert_pass(
        self, jobs: Sequence[NewJob], rows: list[dict[str, Any]], orphaned: dict[int, str] | None
    ) -> Plan[_Inserted]:
        if len(rows) == 1:
            payload = storable_json(rows[0]["payload"])
            created = yield Run("insert_job", {**rows[0], "payload": payload})
            asked = {**rows[0], "payload": orjson.loads(payload)}  # as stored
            inserted = _jobs_from_request([asked], created)
        else:
            batch = dump_json(rows)
            refuse_nul(batch, [row["payload"] for row in rows])
            created = yield Run("insert_jobs", {"jobs": batch})
            # Decoded back, so each job carries its payload as stored (JSON), not as given.
            inserted = _jobs_from_request(orjson.loads(batch), created)
        if orphaned is not None:
            inserted = yield from self._link_dependents(inserted, orphaned)
        existing: list[Job] = []
        if len(inserted) < len(rows):
            keys = [j.idempotency_key for j in jobs if j.idempotency_key is not None]
            uniques = [j.unique_key for j in jobs if j.unique_key is not None]
            if keys:
                existing += yield Run("jobs_by_idempotency_keys", {"keys": keys}, jobs=True)
            if uniques:
                existing += yield Run("jobs_by_unique_keys", {"keys": uniques}, jobs=True)
        return inserted, existing

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
        yield from self._check_tenant_quota(jobs)
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
        too, while the server ingests the slice before: done first, the checks of 5,000 jobs
        held back the first round trip by 3 ms, 8-10% of the call. A bad job fails the COPY,
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

    def _check_tenant_quota(self, jobs: Sequence[NewJob]) -> Plan[None]:
        quota = self._settings.tenant_max_queued
        if not quota:
            return
        adding: dict[str, int] = {}
        for job in jobs:
            if job.tenant is not None:
                adding[job.tenant] = adding.get(job.tenant, 0) + 1
        for tenant in sorted(adding):  # one lock order for every process: no deadlocks
            yield Run("tenant_lock", {"key": TENANT_LOCK_KEY, "tenant": tenant})
            found = yield Run("tenant_queued", {"tenant": tenant})
            if (found[0][0] if found else 0) + adding[tenant] > quota:
                raise TenantQuotaExceeded(tenant, quota)

    def _prepare_dependents(
        self, jobs: Sequence[NewJob], rows: list[dict[str, Any]]
    ) -> Plan[dict[int, str] | None]:
        """Lock and flag the parents; set each dependent's first status. Returns the failed or
        cancelled parents by id (their dependents are cancelled once inserted), or None when
        no job has dependencies."""
        parents = sorted({p for j in jobs for p in j.depends_on})
        if not parents:
            return None
        found = yield Run("mark_parents", {"ids": parents})
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

    def _link_dependents(self, inserted: list[Job], orphaned: dict[int, str]) -> Plan[list[Job]]:
        pairs = [(p, job.id) for job in inserted for p in job.depends_on]
        yield Run(
            "insert_dependencies",
            {"parents": [p for p, _ in pairs], "jobs": [j for _, j in pairs]},
        )
        settled = []
        for job in inserted:
            failed = [p for p in job.depends_on if p in orphaned]
            if job.status == JobStatus.WAITING and failed:
                reason = f"dependency {failed[0]} {orphaned[failed[0]]}"
                args = {"id": job.id, "reason": reason}
                [job] = yield Run("cancel_born_orphaned", args, jobs=True)
            settled.append(job)
        return settled

    # ------------------------------------------------------------------ working
    async def claim_batch(self, params: ClaimParams) -> list[Job]:
        if params.limit < 1:
            return []
        if params.limits or params.fair_tenants:
            jobs = await self._claim_with_flow_control(params)
        else:
            jobs = await self._claim_plain(params)
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    async def _claim_plain(self, params: ClaimParams) -> list[Job]:
        args: dict[str, Any]
        if params.queues is None:
            query, args = "claim_batch_any_queue", {"worker_id": params.worker_id}
        else:
            query = "claim_batch_by_queue"
            args = {"worker_id": params.worker_id, "queues": list(params.queues)}
        args["limit"] = params.limit
        args["commit"] = self._claim_commit
        return await self._fetch_jobs(query, args)

    async def _claim_with_flow_control(self, params: ClaimParams) -> list[Job]:
        """The claim when limits or tenant fairness are on: limited work first (under the
        cluster-wide limits lock), then tenants' shares, then the rest in plain order."""
        limits = params.limits or ClaimLimits()
        base = {
            "worker_id": params.worker_id,
            "queues": list(params.queues) if params.queues is not None else None,
            "skip_kinds": limits.kinds,
            "skip_queues": limits.queues,
            "commit": self._claim_commit,
        }
        jobs: list[Job] = []
        if limits:
            jobs += await self._claim_limited(params, limits)
        if params.fair_tenants and len(jobs) < params.limit:
            jobs += await self._claim_fair(params, base, params.limit - len(jobs))
        if len(jobs) < params.limit:
            jobs += await self._fetch_jobs(
                "claim_filtered",
                {**base, "limit": params.limit - len(jobs), "tenantless": params.fair_tenants},
            )
        return jobs

    async def _claim_fair(self, params: ClaimParams, base: dict[str, Any], free: int) -> list[Job]:
        """Round-robin over tenants: the next ``free`` tenants after the last one this worker
        served (wrapping around), an equal share of the free slots each."""
        after = self._tenant_cursor.get(params.worker_id, "")
        async with self._connection() as conn:
            tenants: list[str] = []
            for start in (after, ""):  # from the cursor to the end, then from the start
                cur = await conn.execute(
                    self._q["claim_tenants"], {**base, "after": start, "most": free - len(tenants)}
                )
                tenants += [r[0] for r in await cur.fetchall() if r[0] not in tenants]
                if len(tenants) >= free or not start:
                    break
            if not tenants:
                return []
            self._tenant_cursor[params.worker_id] = tenants[-1] if len(tenants) >= free else ""
            cur = conn.cursor(row_factory=_job_row)
            await cur.execute(
                self._q["claim_fair"], {**base, "tenants": tenants, "shares": shares(free, tenants)}
            )
            return await cur.fetchall()

    async def _claim_limited(self, params: ClaimParams, limits: ClaimLimits) -> list[Job]:
        kinds, queues = limits.kinds, limits.queues
        windows = {k: r.per_s for k, r in limits.rate_by_kind.items()}
        async with self._transaction() as conn:
            await conn.execute(self._q["limits_lock"], {"key": LIMITS_LOCK_KEY})
            cur = await conn.execute(self._q["running_counts"], {"kinds": kinds, "queues": queues})
            by_kind: dict[str, int] = {}
            by_queue: dict[str, int] = {}
            for kind, queue, count in await cur.fetchall():
                by_kind[kind] = by_kind.get(kind, 0) + count
                by_queue[queue] = by_queue.get(queue, 0) + count
            starts: dict[str, int] = {}
            if windows:
                window_args = {"kinds": list(windows), "windows": list(windows.values())}
                await conn.execute(self._q["prune_starts"], window_args)
                cur = await conn.execute(self._q["recent_starts"], window_args)
                starts = {k: n for k, n in await cur.fetchall()}
            kind_room, queue_room = room_under_limits(limits, by_kind, by_queue, starts)
            full_kinds = [k for k, room in kind_room.items() if room <= 0]
            full_queues = [q for q, room in queue_room.items() if room <= 0]
            if len(full_kinds) == len(kinds) and len(full_queues) == len(queues):
                return []
            cur = await conn.execute(
                self._q["limited_candidates"],
                {
                    "queues": list(params.queues) if params.queues is not None else None,
                    "limited_kinds": kinds,
                    "limited_queues": queues,
                    "full_kinds": full_kinds,
                    "full_queues": full_queues,
                    # Enough to fill the free slots even when some candidates do not fit.
                    "limit": params.limit * 4,
                },
            )
            ids = pick_within_limits(await cur.fetchall(), params.limit, kind_room, queue_room)
            if not ids:
                return []
            claim = conn.cursor(row_factory=_job_row)
            await claim.execute(
                self._q["claim_ids"],
                {"worker_id": params.worker_id, "ids": ids, "commit": self._claim_commit},
            )
            jobs = await claim.fetchall()
            rated = [j.kind for j in jobs if j.kind in windows]
            if rated:
                await conn.execute(self._q["record_starts"], {"kinds": rated})
            return jobs

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

    async def list_jobs(self, params: ListParams) -> list[Job]:
        return await self._fetch_jobs(
            "list_jobs",
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
        raise DatabaseUnavailableError(f"job {job_id} kept changing status; cancel again")

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
            return [
                QueueStat(queue=r[0], status=JobStatus(r[1]), count=r[2], oldest_run_at=r[3])
                for r in await cur.fetchall()
            ]

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
        return _api_key(row)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["get_api_key"], {"id": key_id})
            row = await cur.fetchone()
        return _api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._connection() as conn:
            cur = await conn.execute(self._q["list_api_keys"])
            return [_api_key(r) for r in await cur.fetchall()]

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
            return [
                QueueStat(queue=r[0], status=JobStatus(r[1]), count=r[2], oldest_run_at=r[3])
                for r in await cur.fetchall()
            ]

    async def tenant_job_ids(self, job_ids: Sequence[int], tenant: str) -> list[int]:
        if not job_ids:
            return []
        args = {"ids": list(job_ids), "tenant": tenant}
        return [int(i) for i in await self._fetch_ids("tenant_job_ids", args)]

    async def list_jobs_lean(self, params: ListParams) -> list[Job]:
        return await self._fetch_jobs(
            "list_jobs_lean",
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


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        tenant=row[2],
        scopes=tuple(row[3]),
        secret_hash=row[4],
        created_at=row[5],
        expires_at=row[6],
        last_used_at=row[7],
        revoked_at=row[8],
    )


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

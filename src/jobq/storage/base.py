"""The storage driver protocol: operation-level async methods taking small parameter objects.

Every driver (PostgreSQL, SQLite) implements the same operations with the same meaning; the
conformance suite in ``tests/conformance`` runs one set of tests against each. Drivers own
their SQL (named queries in a ``queries.sql`` per dialect) and their migrations.

A running job is leased by the pair (id, attempt): every write a worker makes about a job it
ran is guarded by ``status = 'running' AND attempt = <the attempt it claimed>``, so a worker
that lost its lease (rescued as dead, then re-claimed elsewhere) cannot overwrite the newer
attempt.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..model import ApiKey, Job, JobError, JobStatus, WorkerInfo

DEFAULT_QUEUE = "default"
MAX_PRIORITY = 1000
MIN_PRIORITY = -1000

# Callbacks a listener receives: ("new", queue) when due work arrives, ("cancel", job id).
NotificationHandler = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class NewJob:
    """What it takes to enqueue one job."""

    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    run_at: datetime | None = None  # None: now (the database's clock)
    max_attempts: int = 5
    tenant: str | None = None
    idempotency_key: str | None = None
    unique_key: str | None = None
    # Statuses that hold unique_key besides the active ones, which always do: e.g.
    # (SUCCEEDED,) makes a key usable once ever (until retention deletes the job).
    unique_states: tuple[JobStatus, ...] = ()
    depends_on: tuple[int, ...] = ()
    timeout_s: float | None = None
    request_id: str | None = None
    request_fingerprint: str | None = None  # digest of the API request behind an idempotency key
    trace_context: str | None = None  # the enqueuing span's W3C traceparent, when traced


# A unique key is always held while its job may still run.
ACTIVE_STATES = (JobStatus.QUEUED, JobStatus.WAITING, JobStatus.RUNNING, JobStatus.RETRYING)
STATUS_BITS = {
    JobStatus.QUEUED: 1,
    JobStatus.WAITING: 2,
    JobStatus.RUNNING: 4,
    JobStatus.RETRYING: 8,
    JobStatus.SUCCEEDED: 16,
    JobStatus.FAILED: 32,
    JobStatus.CANCELLED: 64,
}


def unique_states_mask(job: NewJob) -> int | None:
    """The bits of the statuses that hold the job's unique key (None without a key). The
    active states are always in: only a return from a final status to queued (a requeue) can
    then meet a key held by another job, and requeue checks for that."""
    if job.unique_key is None:
        return None
    return sum(STATUS_BITS[s] for s in {*ACTIVE_STATES, *job.unique_states})


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``starts`` jobs of a kind start in any window of ``per_s`` seconds."""

    starts: int
    per_s: float


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    """Cluster-wide limits the claim must respect: running jobs per kind and per queue, and
    starts per kind over a sliding window. Every worker must declare the same limits."""

    max_running_by_kind: Mapping[str, int] = field(default_factory=dict)
    max_running_by_queue: Mapping[str, int] = field(default_factory=dict)
    rate_by_kind: Mapping[str, RateLimit] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.max_running_by_kind or self.max_running_by_queue or self.rate_by_kind)

    @property
    def kinds(self) -> list[str]:
        return sorted({*self.max_running_by_kind, *self.rate_by_kind})

    @property
    def queues(self) -> list[str]:
        return sorted(self.max_running_by_queue)


@dataclass(frozen=True, slots=True)
class ClaimParams:
    worker_id: str
    limit: int
    queues: Sequence[str] | None = None  # None: every queue
    limits: ClaimLimits | None = None  # None or empty: the plain claim
    fair_tenants: bool = False  # round-robin over tenants instead of strict priority order


@dataclass(frozen=True, slots=True)
class Completion:
    """A job that ran to success."""

    job_id: int
    attempt: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt. ``retry_in_s`` None means no more tries: the job becomes ``failed``."""

    job_id: int
    attempt: int
    error: str
    traceback: str | None = None
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class ListParams:
    """Filters and keyset pagination for listing jobs (newest first, by id)."""

    statuses: Sequence[JobStatus] | None = None
    kind: str | None = None
    queue: str | None = None
    tenant: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    before_id: int | None = None  # cursor: only ids below this one
    limit: int = 100


@dataclass(frozen=True, slots=True)
class QueueStat:
    queue: str
    status: JobStatus
    count: int
    oldest_run_at: datetime | None


# Due jobs counted per queue for the metrics, at most: a count stops there, so that a scrape
# costs the same on a backlog of millions.
BACKLOG_CAP = 10_000
# Queues reported by one backlog read, at most: a bound on the metrics' label values too.
BACKLOG_QUEUES = 200


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """A queue's jobs that are due and not started (queued or retrying, run_at passed).

    ``due`` stops at the cap it was read with; ``oldest_wait_s`` is the wait of the oldest
    of them, exact while ``due`` is under the cap, else of the oldest among those counted
    (the highest priorities first): a lower bound."""

    queue: str
    due: int
    oldest_wait_s: float


@dataclass(frozen=True, slots=True)
class Backlog:
    queues: list[QueueBacklog]
    workers: int  # registered workers
    newest_heartbeat_age_s: float | None  # None: no worker is registered


@dataclass(frozen=True, slots=True)
class WorkerRegistration:
    id: str
    hostname: str
    pid: int
    queues: Sequence[str] | None
    concurrency: int


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # was waiting to run: now cancelled
    REQUESTED = "requested"  # is running: its task is asked to stop
    TERMINAL = "terminal"  # already finished: nothing changed
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: CancelOutcome
    job: Job | None


class EnqueueOutcome(enum.Enum):
    """What became of one requested job."""

    CREATED = "created"
    REPLAYED = "replayed"  # its idempotency key named a job of the same request already
    KEY_REUSED = "key_reused"  # its idempotency key names a job another request made
    UNIQUE_KEY_HELD = "unique_key_held"  # an active job holds its unique key: nothing new


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A requested job's answer: the job that stands for it, and how it came to."""

    job: Job
    outcome: EnqueueOutcome

    @property
    def created(self) -> bool:
        return self.outcome is EnqueueOutcome.CREATED


class Listener(Protocol):
    async def close(self) -> None: ...


class Driver(Protocol):
    """What every storage driver provides. All methods are safe to call concurrently."""

    dialect: str

    # --- lifecycle and schema ---
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""
        ...

    async def rollback(self, steps: int = 1) -> list[int]:
        """Undo the newest ``steps`` migrations; returns the versions undone."""
        ...

    async def applied_migrations(self) -> list[int]: ...

    # --- producing ---
    async def enqueue(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        """Insert jobs; each request's answer in request order: the job, and whether it was
        created, or which key named an existing one (see EnqueueOutcome)."""
        ...

    def enqueue_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        """``enqueue`` for synchronous code (see ``enqueue_many_sync``)."""
        ...

    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """Insert jobs in one round trip. A job whose idempotency key already exists is not
        inserted again: the existing job is returned in its place. With ``connection`` (the
        caller's own open transaction) the jobs commit or roll back with it."""
        ...

    async def enqueue_many_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        """The ids ``enqueue_many`` would return the jobs of, in request order, without
        building a Job for each row of a plain batch (the HTTP bulk route answers with ids)."""
        ...

    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """``enqueue_many`` for synchronous code, over connections of its own (made on first
        use, safe to call from any thread); ``connection`` is then a synchronous one."""
        ...

    def close_sync(self) -> None:
        """Close what ``enqueue_many_sync`` and ``get_sync`` opened (``close`` does too)."""
        ...

    # --- working ---
    async def claim_batch(self, params: ClaimParams) -> list[Job]:
        """Atomically move up to ``limit`` due jobs to ``running`` for this worker, highest
        priority first, then oldest run_at, then id."""
        ...

    async def complete_many(self, completions: Sequence[Completion]) -> list[int]:
        """Mark running jobs succeeded (guarded by attempt); returns the ids changed."""
        ...

    def job_transaction(
        self, job_id: int, attempt: int
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """A connection in a transaction that, when the block ends without error, also marks
        the running job succeeded and commits both together; raises LeaseLostError (and rolls
        back) when the job is no longer this attempt's to finish."""
        ...

    async def set_progress(self, job_id: int, attempt: int, progress: dict[str, Any]) -> bool:
        """Record a running job's progress; False when the attempt is no longer running."""
        ...

    async def store_result(self, job_id: int, attempt: int, result: Any) -> None:
        """Record the result of a job already marked succeeded by ``job_transaction``."""
        ...

    async def fail_many(self, failures: Sequence[Failure]) -> list[int]:
        """Record each failed attempt's error and move the job to ``retrying`` (due after
        ``retry_in_s``) or ``failed``; returns the ids changed."""
        ...

    async def finish_cancelled(self, job_id: int, attempt: int, reason: str) -> bool:
        """A running job that stopped on a cancel request becomes ``cancelled``."""
        ...

    async def hand_back(self, job_id: int, attempt: int, reason: str) -> bool:
        """A running job its worker could not finish (shutdown) goes back to ``queued``; the
        attempt is not counted against it."""
        ...

    async def cancel_requested_among(self, worker_id: str) -> set[int]:
        """Ids of this worker's running jobs whose cancellation has been requested."""
        ...

    async def rescue_stale(self, lease_s: float) -> list[int]:
        """Jobs left ``running`` by workers silent for ``lease_s`` go back to ``retrying``
        (or ``failed`` when out of attempts), with the reason in their error history."""
        ...

    # --- workers ---
    async def register_worker(self, worker: WorkerRegistration) -> None: ...
    async def heartbeat(self, worker_id: str) -> bool:
        """Refresh the worker's heartbeat; False when its row is gone (it was presumed dead)."""
        ...

    async def unregister_worker(self, worker_id: str) -> None: ...
    async def workers(self) -> list[WorkerInfo]: ...

    # --- managing ---
    async def get(self, job_id: int) -> Job | None: ...
    def get_sync(self, job_id: int) -> Job | None:
        """``get`` for synchronous code, over the connections of ``enqueue_many_sync``."""
        ...

    async def get_by_idempotency_key(self, key: str) -> Job | None: ...
    async def list_jobs(self, params: ListParams) -> list[Job]: ...
    async def job_errors(self, job_id: int) -> list[JobError]: ...
    async def cancel(self, job_id: int) -> CancelResult: ...
    async def requeue(self, job_ids: Sequence[int]) -> list[int]:
        """Failed or cancelled jobs go back to ``queued`` with attempts reset (history kept)."""
        ...

    async def stats(self) -> list[QueueStat]: ...
    async def queue_depth(self, queue: str, at_most: int) -> int:
        """Jobs waiting in ``queue`` (queued or retrying, due or not), counted up to
        ``at_most`` so the cost stays bounded however deep the queue is."""
        ...

    async def forget_idempotency_keys(self, older_than_s: float) -> int:
        """Clear idempotency keys of jobs created more than ``older_than_s`` ago; returns how
        many. The jobs stay; only the key can be used again."""
        ...

    async def take_leadership(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease on ``name``; True while ``holder`` leads. A leader that
        stops renewing loses the lease once ``ttl_s`` has passed."""
        ...

    async def give_up_leadership(self, name: str, holder: str) -> None: ...

    async def purge_finished(self, status: JobStatus, older_than_s: float, batch: int) -> int:
        """Delete up to ``batch`` jobs in ``status`` that finished more than ``older_than_s``
        ago (their error history and dependency rows go with them); returns how many."""
        ...

    async def vacuum_jobs(self, min_dead_rows: int) -> bool:
        """Reclaim the jobs table's dead row versions once at least ``min_dead_rows`` more
        wait than the last clean-up left; True when it ran. Until then every claim walks the
        index entries of the jobs claimed since the last clean-up. A no-op where the database
        reclaims space as it deletes."""
        ...

    async def refresh_statistics(self) -> bool:
        """Bring the planner's statistics of the jobs table up to date when they say far
        fewer jobs wait than do (a backlog loaded since the last ANALYZE, with autovacuum off
        or not yet around to it); True when it did. With such statistics the claim is
        planned as a sort of every waiting job instead of a walk down the claim index."""
        ...

    async def ping(self) -> None:
        """Raise DatabaseUnavailableError unless the database answers."""
        ...

    async def count_claimable(self, queues: Sequence[str] | None) -> int:
        """Jobs due now and waiting to be claimed in these queues (None: all)."""
        ...

    async def backlog(self, at_most: int) -> Backlog:
        """Due jobs per queue (each count stopping at ``at_most``; at most BACKLOG_QUEUES
        queues), the oldest one's wait, and the workers' newest heartbeat: reads bounded
        by ``at_most`` rows a queue, for a metrics scrape."""
        ...

    # --- wake-ups ---
    async def listen(
        self, handler: NotificationHandler, queues: Sequence[str] | None = None
    ) -> Listener:
        """Deliver ("new", queue) and ("cancel", id) notifications to ``handler`` until the
        listener is closed. ``queues`` are those the listener serves (None: all); a driver
        may leave out wake-ups for other queues, and the handler should still filter. Drivers
        without server push deliver this process's events, and whatever they can learn of
        other processes' commits."""
        ...

    # --- pausing and the dashboard's reads ---
    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        """Pause or resume ``queue``; True when that changed something. Workers are told
        (``("pause", queue)`` / ``("resume", queue)`` notifications) and stop or start
        claiming its jobs; the claim itself never reads the paused set."""
        ...

    async def paused_queues(self) -> dict[str, datetime]:
        """Paused queues and when each was paused."""
        ...

    async def waiting_queues(self) -> list[str]:
        """Queues that have jobs waiting to be claimed (queued or retrying, due or not)."""
        ...

    async def status_by_queue(self, status: JobStatus, cap: int) -> list[StatusCount]:
        """Jobs in ``status`` by queue, reading at most ``cap`` of them: the counts are
        exact when they add up to less than ``cap``. For QUEUED: jobs waiting to be claimed,
        queued or retrying (both in the claim index, read without the table)."""
        ...

    async def finished_counts(
        self, since: datetime, bucket_s: int
    ) -> list[tuple[int, JobStatus, int]]:
        """(bucket start as epoch seconds, succeeded or failed, count) of jobs finished
        since ``since``, in buckets of ``bucket_s`` seconds."""
        ...

    async def finished_sample(
        self, since: datetime, bucket_s: int, per_bucket: int
    ) -> list[FinishedSample]:
        """Up to ``per_bucket`` of the latest jobs that succeeded in each bucket of
        ``bucket_s`` seconds from ``since`` to now."""
        ...

    async def running_by_worker(self) -> dict[str, int]:
        """How many jobs each worker is running."""
        ...

    async def dependents_of(self, job_id: int) -> list[int]:
        """Ids of the jobs that wait for ``job_id`` (at most 100)."""
        ...

    async def roll_up_finished(self, span_s: int, lag_s: int, keep_s: int) -> bool:
        """Summarize jobs finished per minute, up to ``span_s`` seconds past the summary's
        watermark, never within ``lag_s`` of now; forget minutes older than ``keep_s``.
        True when more is left to summarize."""
        ...

    async def finished_rollup(
        self, since: datetime
    ) -> tuple[datetime | None, list[tuple[int, JobStatus, int]]]:
        """The summary's watermark (None before the first summary), and its (minute start
        as epoch seconds, status, count) rows since ``since``."""
        ...

    async def discard_failed(self, job_ids: Sequence[int]) -> list[int]:
        """Delete these jobs if they are failed (dead letters), with their history; returns
        the ids deleted."""
        ...

    # --- API keys and tenant-scoped reads ---
    async def insert_api_key(self, key: ApiKey) -> ApiKey:
        """Store a new key (its id, name, tenant, scopes, secret hash and expiry); the
        stored row, with the database's creation time."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKey | None: ...
    async def list_api_keys(self) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id: str) -> bool:
        """Mark the key revoked; False when no such key, or it was revoked already."""
        ...

    async def touch_api_keys(self, key_ids: Sequence[str]) -> None:
        """Set these keys' last use to now."""
        ...

    async def any_api_key(self) -> bool:
        """Whether any key was ever created (revoked and expired ones count)."""
        ...

    async def tenant_stats(self, tenant: str) -> list[QueueStat]:
        """``stats`` over one tenant's jobs."""
        ...

    async def tenant_job_ids(self, job_ids: Sequence[int], tenant: str) -> list[int]:
        """The ids among ``job_ids`` of jobs that belong to ``tenant``, ascending."""
        ...

    async def list_jobs_lean(self, params: ListParams) -> list[Job]:
        """``list_jobs`` with every job's payload read as ``{}`` and result as None."""
        ...


@dataclass(frozen=True, slots=True)
class StatusCount:
    queue: str
    status: JobStatus
    count: int
    oldest_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class FinishedSample:
    """One succeeded job's timing: when it finished (epoch seconds), how long it waited
    from due to start, and how long it ran."""

    finished_at: float
    waited_s: float
    ran_s: float

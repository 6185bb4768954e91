"""The job, its statuses and the rules for moving between them.

Pure data and functions, no I/O. The SQL in each storage driver enforces the same rules with a
``WHERE status IN (...)`` on every transition; ``tests/unit/test_model.py`` walks every pair.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    QUEUED = "queued"  # ready, or scheduled when run_at is in the future
    WAITING = "waiting"  # waiting on dependencies
    RUNNING = "running"
    RETRYING = "retrying"  # failed an attempt; runs again at run_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # terminal: the dead-letter set
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)
CLAIMABLE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RETRYING})

# Every allowed move, as data. A move absent from this table is refused by the drivers.
#  - running -> queued is the hand-back of a job a stopping worker could not finish (its attempt
#    is not counted against it);
#  - failed/cancelled -> queued is a requeue from the dead-letter set;
#  - waiting -> cancelled happens when a parent fails.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.SUCCEEDED,
            JobStatus.RETRYING,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.QUEUED,
        }
    ),
    JobStatus.RETRYING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    """True when a job in ``current`` may move to ``new``."""
    return new in TRANSITIONS[current]


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses from which ``target`` can be reached; the drivers' SQL guards mirror these."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


@dataclass(frozen=True, slots=True)
class Job:
    """One row of ``jobq_jobs`` as the library sees it."""

    id: int
    queue: str
    kind: str
    payload: dict[str, Any]
    status: JobStatus
    priority: int
    run_at: datetime
    attempt: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    tenant: str | None = None
    idempotency_key: str | None = None
    unique_key: str | None = None
    depends_on: list[int] = field(default_factory=list)
    timeout_s: float | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    last_error: str | None = None
    cancel_requested: bool = False
    locked_by: str | None = None
    heartbeat_at: datetime | None = None
    request_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    request_fingerprint: str | None = None
    # The enqueuer's W3C traceparent (see observability/tracing.py); None when not traced.
    trace_context: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class JobError:
    """One failed attempt, as kept in ``jobq_job_errors``."""

    job_id: int
    attempt: int
    error: str
    traceback: str | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A registered worker process, as kept in ``jobq_workers``."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    # Threads of sync tasks running past their job's timeout, each holding a slot. Known for
    # workers of this process only (see JobQueue.worker_states); None for the others.
    stuck_threads: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as kept in ``jobq_api_keys``: never its secret, only the secret's hash.
    ``tenant`` None: the key acts for every tenant."""

    id: str
    name: str | None
    tenant: str | None
    scopes: tuple[str, ...]
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

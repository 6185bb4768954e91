"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from ..model import Job, JobError, JobStatus, WorkerInfo
from ..observability.tracing import trace_id_of
from ..storage.base import MAX_PRIORITY, MIN_PRIORITY, QueueStat

NAME_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
# PostgreSQL cannot store U+0000 in text or jsonb. The API refuses it on every database, so
# that it answers the same whichever one is behind it.
NO_NUL_PATTERN = r"^[^\x00]*$"
# A kind or queue to filter a listing by (a NUL would reach PostgreSQL and fail there).
NameFilter = Annotated[str | None, Query(max_length=128, pattern=NO_NUL_PATTERN)]


# Ids in a JSON body go up to 2**53 - 1, the largest integer every JSON parser holds exactly
# (ids are a sequence from 1; 2**53 is centuries away). It is also a bound the spec can state:
# FastAPI's OpenAPI model stores body bounds as floats, so 2**63 - 1 would be published as
# 9.223372036854776e18, which promises ids the server refuses.
JobIdValue = Annotated[int, Field(ge=1, le=2**53 - 1)]


def refuse_bools(value: object) -> object:
    """JSON's true and false are not the numbers 1 and 0, though pydantic would read them
    so (2.0 still is the integer 2, as JSON Schema has it). A before-validator of the
    numeric fields: in the field's type it would hide its bounds from the spec."""
    if isinstance(value, bool) or (
        isinstance(value, list) and any(isinstance(v, bool) for v in value)
    ):
        raise ValueError("a number, not true or false")
    return value


class JobIn(BaseModel):
    """A job to enqueue."""

    model_config = ConfigDict(
        extra="forbid",
        # The route refuses both at once (422); the spec says so too.
        json_schema_extra={
            "not": {
                "required": ["run_at", "delay_s"],
                "properties": {"run_at": {"type": "string"}, "delay_s": {"type": "number"}},
            }
        },
    )

    kind: str = Field(
        min_length=1, max_length=128, pattern=NAME_PATTERN, description="Task name to run"
    )
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments, a JSON object (integers within 64 bits, no U+0000 in strings)",
    )
    queue: str | None = Field(
        None, min_length=1, max_length=128, pattern=NAME_PATTERN, description="Default: default"
    )
    priority: int | None = Field(
        None, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="Higher runs first (default 0)"
    )
    run_at: AwareDatetime | None = Field(
        None,
        description="Not before this time (with offset); not with delay_s. Times before "
        "0001-01-02 or after 9999-12-30 (UTC) are moved to those days, which mean the same",
    )
    delay_s: float | None = Field(
        None, ge=0, le=366 * 86400, description="Not before this many seconds from now"
    )
    max_attempts: int | None = Field(None, ge=1, le=1000, description="Tries before failing")
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=NO_NUL_PATTERN,
        description="Same key, same body: the original job is returned (header wins)",
    )
    tenant: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=NO_NUL_PATTERN,
        description="Who the job is for: fair claiming and quotas work per tenant",
    )
    unique_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=NO_NUL_PATTERN,
        description="While a job with this key is queued, waiting, running or retrying, "
        "the answer is that job (200) instead of a new one",
    )
    unique_states: list[Literal["succeeded", "failed", "cancelled"]] | None = Field(
        None, max_length=3, description="Final statuses that also hold unique_key"
    )
    depends_on: list[JobIdValue] | None = Field(
        None,
        max_length=100,
        description="Ids of jobs that must all succeed first; the job waits meanwhile, and "
        "is cancelled if one of them fails or is cancelled",
    )

    _numbers = field_validator("priority", "delay_s", "max_attempts", "depends_on", mode="before")(
        refuse_bools
    )


class JobOut(BaseModel):
    id: int
    kind: str
    queue: str
    status: JobStatus
    payload: dict[str, Any]
    priority: int
    run_at: datetime
    attempt: int = Field(description="Attempts started so far")
    max_attempts: int
    tenant: str | None
    idempotency_key: str | None
    unique_key: str | None
    depends_on: list[int]
    last_error: str | None
    result: Any = None
    progress: dict[str, Any] | None
    cancel_requested: bool
    request_id: str | None
    locked_by: str | None = Field(description="The worker running it (or that ran it last)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    trace_id: str | None = Field(
        default=None,
        description="The OpenTelemetry trace (32 hex digits) that enqueued the job and that "
        "its attempts continue; null when the enqueuer was not tracing",
    )

    @classmethod
    def of(cls, job: Job) -> Self:
        return cls(
            id=job.id,
            kind=job.kind,
            queue=job.queue,
            status=job.status,
            payload=job.payload,
            priority=job.priority,
            run_at=job.run_at,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            tenant=job.tenant,
            idempotency_key=job.idempotency_key,
            unique_key=job.unique_key,
            depends_on=job.depends_on,
            last_error=job.last_error,
            result=job.result,
            progress=job.progress,
            cancel_requested=job.cancel_requested,
            request_id=job.request_id,
            locked_by=job.locked_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            trace_id=trace_id_of(job.trace_context),
        )


class JobListItem(JobOut):
    """A job in a listing: its payload and result only when asked (``?include=payload``),
    so that a page's size does not depend on what the jobs carry."""

    payload: dict[str, Any] | None = Field(None, description="Only with ?include=payload")  # type: ignore[assignment]
    result: Any = Field(None, description="Only with ?include=payload")

    @classmethod
    def lean(cls, job: Job) -> JobListItem:
        item = cls.of(job)
        item.payload = None
        item.result = None
        return item


class JobPage(BaseModel):
    items: list[JobListItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")


class AttemptError(BaseModel):
    attempt: int
    error: str
    traceback: str | None
    recorded_at: datetime

    @classmethod
    def of(cls, error: JobError) -> AttemptError:
        return cls(
            attempt=error.attempt,
            error=error.error,
            traceback=error.traceback,
            recorded_at=error.recorded_at,
        )


class BulkItemError(BaseModel):
    index: int = Field(description="Position of the item in the submitted array")
    error: str


class BulkResult(BaseModel):
    created: int
    ids: list[int]
    errors: list[BulkItemError]


class CancelOut(BaseModel):
    outcome: str = Field(description="cancelled, cancel_requested or already_finished")
    job: JobOut


CURSOR_PATTERN = r"^[0-9]{1,19}$"


class RequeueByIds(BaseModel):
    """Requeue these failed (or cancelled) jobs."""

    model_config = ConfigDict(extra="forbid")

    ids: list[JobIdValue] = Field(max_length=10_000)

    _numbers = field_validator("ids", mode="before")(refuse_bools)


class RequeueByFilter(BaseModel):
    """Requeue every failed job matching the filters (up to ``limit``). A selector is
    required: ``kind``, ``queue``, or ``"all": true`` for every failed job; ``{}`` is refused
    rather than read as "everything"."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["kind"], "properties": {"kind": {"type": "string"}}},
                {"required": ["queue"], "properties": {"queue": {"type": "string"}}},
                {"required": ["all"], "properties": {"all": {"const": True}}},
            ]
        },
    )

    kind: str | None = Field(None, max_length=128, pattern=NO_NUL_PATTERN)
    queue: str | None = Field(None, max_length=128, pattern=NO_NUL_PATTERN)
    all: bool = Field(
        False, strict=True, description="With no kind or queue: every failed job (up to limit)"
    )
    limit: int = Field(1000, ge=1, le=10_000, description="Most jobs requeued by a filter")

    _numbers = field_validator("limit", mode="before")(refuse_bools)

    @property
    def selects(self) -> bool:
        return self.kind is not None or self.queue is not None or self.all


RequeueIn = RequeueByIds | RequeueByFilter


class RequeueOut(BaseModel):
    requeued: list[int]


class QueueOut(BaseModel):
    queue: str
    counts: dict[str, int] = Field(description="Jobs by status")
    oldest_waiting_s: float | None = Field(
        description="Age of the oldest due job still waiting to run (seconds)"
    )

    @classmethod
    def group(cls, stats: list[QueueStat], now: datetime) -> list[QueueOut]:
        by_queue: dict[str, QueueOut] = {}
        for stat in stats:
            entry = by_queue.setdefault(
                stat.queue, QueueOut(queue=stat.queue, counts={}, oldest_waiting_s=None)
            )
            entry.counts[str(stat.status)] = stat.count
            if stat.status in (JobStatus.QUEUED, JobStatus.RETRYING) and stat.oldest_run_at:
                age = max(0.0, (now - stat.oldest_run_at).total_seconds())
                entry.oldest_waiting_s = max(entry.oldest_waiting_s or 0.0, age)
        return list(by_queue.values())


class WorkerOut(BaseModel):
    id: str
    hostname: str
    pid: int
    queues: list[str] = Field(description="Empty: every queue")
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    stuck_threads: int | None = Field(
        None,
        description="Threads of sync tasks still running past their job's timeout, each "
        "holding one of the worker's slots; null for a worker in another process than "
        "this API's (see its jobq_worker_stuck_threads metric)",
    )

    @classmethod
    def of(cls, w: WorkerInfo) -> WorkerOut:
        return cls(
            id=w.id,
            hostname=w.hostname,
            pid=w.pid,
            queues=w.queues,
            concurrency=w.concurrency,
            started_at=w.started_at,
            heartbeat_at=w.heartbeat_at,
            stuck_threads=w.stuck_threads,
        )


class HealthOut(BaseModel):
    status: str
    database: str

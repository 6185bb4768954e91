"""Jobs: enqueue one, read, list, cancel, retry (many at once: routes_bulk)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, StringConstraints, TypeAdapter, ValidationError

from ..access import MANAGE, READ, WRITE, Access
from ..errors import InvalidJobError, InvalidTransitionError, UnknownTaskError
from ..model import Job, JobStatus
from ..storage.base import CancelOutcome, Enqueued, EnqueueOutcome, ListParams, NewJob
from ..storage.common import refuse_nul, validate_new_job, within_run_at_range
from .auth import requires
from .problems import ProblemError, problem_responses
from .schemas import (
    CURSOR_PATTERN,
    AttemptError,
    CancelOut,
    JobIn,
    JobListItem,
    JobOut,
    JobPage,
    NameFilter,
)
from .state import ApiState, api_state, request_id_of, state_of

log = structlog.get_logger("jobq.api")
router = APIRouter(tags=["jobs"])
State = Annotated[ApiState, Depends(api_state)]
Reader = Annotated[Access, Depends(requires(READ))]
Writer = Annotated[Access, Depends(requires(WRITE))]
Manager = Annotated[Access, Depends(requires(MANAGE))]
# Pages of this many rows are read while a listing carries payloads, so that the rows held
# at once stay few however large each job's payload and result are.
PAYLOAD_CHUNK = 10


def _has_non_finite(value: Any) -> bool:
    if type(value) is float:
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def fingerprint(body: JobIn) -> str:
    """Digest of what the request asks for, to tell a replay from a reuse of its key."""
    canonical = body.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def to_new_job(
    body: JobIn, state: ApiState, access: Access, *, key: str | None, request_id: str
) -> tuple[NewJob, int]:
    """The job a request asks for, and its payload's size in bytes. A tenant's key enqueues
    for its own tenant (the body may name it, but no other)."""
    tenant = body.tenant if access.tenant is None else access.tenant
    if body.tenant is not None and body.tenant != tenant:
        raise ProblemError(
            403,
            "Forbidden",
            f"this API key acts for tenant {tenant!r} only; leave out tenant or give that one",
        )
    try:
        encoded = orjson.dumps(body.payload)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise ProblemError(422, "Invalid input", f"payload: {exc}") from None
    try:
        refuse_nul(encoded, body.payload)
    except InvalidJobError as exc:  # here, so that a bulk request reports it by item
        raise ProblemError(422, "Invalid input", str(exc)) from None
    # NaN and numbers beyond a double (1e400) parse to floats that orjson writes as null: the
    # job would be stored with a value other than the one sent. Only a null in the output
    # can be one, so only then is the payload walked.
    if b"null" in encoded and _has_non_finite(body.payload):
        raise ProblemError(
            422, "Invalid input", "payload: numbers must be finite (no NaN, Infinity, 1e400)"
        )
    payload_bytes = len(encoded)
    if payload_bytes > state.settings.max_payload_bytes:
        raise ProblemError(
            413,
            "Payload too large",
            f"payload is {payload_bytes} bytes; the limit is "
            f"{state.settings.max_payload_bytes} (JOBQ_MAX_PAYLOAD_BYTES)",
        )
    if body.run_at is not None and body.delay_s is not None:
        raise ProblemError(422, "Invalid input", "give either run_at or delay_s, not both")
    try:
        new_job = state.jobq.new_job(
            body.kind,
            body.payload,
            queue=body.queue,
            priority=body.priority,
            run_at=None if body.run_at is None else within_run_at_range(body.run_at),
            delay=body.delay_s,
            max_attempts=body.max_attempts,
            idempotency_key=key,
            tenant=tenant,
            unique_key=body.unique_key,
            unique_states=body.unique_states or (),
            depends_on=body.depends_on or (),
            request_id=request_id,
            request_fingerprint=fingerprint(body) if key else None,
        )
    except UnknownTaskError as exc:  # here, so that a bulk request reports it by item
        raise ProblemError(422, "Unknown kind", str(exc)) from None
    except InvalidJobError as exc:
        raise ProblemError(422, "Invalid job", str(exc)) from None
    return new_job, payload_bytes


async def ensure_room(state: ApiState, counts: dict[str, int]) -> None:
    gate = state.depth_gate
    if gate is None:
        return
    for queue, adding in counts.items():
        if not await gate.has_room(queue, adding):
            state.metrics.rate_limited.labels("queue_depth").inc()
            raise ProblemError(
                429,
                "Queue full",
                f"queue {queue!r} holds its limit of {gate.limit} waiting jobs "
                "(JOBQ_MAX_QUEUE_DEPTH); retry once workers catch up",
                headers={"Retry-After": "1"},
            )


def job_response(job: Job, status: int, headers: dict[str, str]) -> Response:
    """The job as JSON, serialized once: returning the model would have FastAPI validate and
    serialize it a second time, on the hottest route."""
    return Response(
        JobOut.of(job).model_dump_json(),
        status_code=status,
        media_type="application/json",
        headers={"Location": f"/jobs/{job.id}", **headers},
    )


def key_reused(existing: Job) -> str:
    return (
        f"Idempotency-Key {existing.idempotency_key!r} was already used for a different "
        f"request (job {existing.id}); use a new key for a new job"
    )


def not_yours(what: str) -> ProblemError:
    """A key held by a job the caller may not see: refused without naming that job."""
    return ProblemError(409, "Conflict", f"{what} is held by a job of another tenant")


def replay_or_conflict(
    existing: Job, body: JobIn, response: Response, state: ApiState, access: Access
) -> Response:
    if not access.owns(existing):
        raise not_yours("this Idempotency-Key")
    if existing.request_fingerprint != fingerprint(body):
        raise ProblemError(422, "Idempotency key reused", key_reused(existing))
    state.metrics.idempotent_replays.inc()
    return job_response(existing, 200, {**response.headers, "Idempotent-Replayed": "true"})


# The Idempotency-Key header of POST /jobs, read by the route itself: as a declared FastAPI
# parameter it cost about 100 function calls a request (cProfile: 741 a request without it,
# against 847). Checked and documented as the declared parameter was.
_IDEMPOTENCY_KEY = TypeAdapter(Annotated[str, StringConstraints(min_length=1, max_length=255)])
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {
        "anyOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "null"}],
        "title": "Idempotency-Key",
    },
}


def idempotency_key_of(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    try:
        return _IDEMPOTENCY_KEY.validate_python(value)
    except ValidationError as exc:
        errors = [{**e, "loc": ("header", "Idempotency-Key", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "Replay of an earlier request with this idempotency key, or the "
            "active job holding this unique_key (header Unique-Key-Held: true)",
        },
        **problem_responses(400, 409, 413, 422, 429, 503),
        422: {
            **problem_responses(422)[422],
            "description": "Invalid input, an Idempotency-Key already used for a "
            "different request, or depends_on naming a job that does not exist",
        },
    },
    summary="Enqueue a job",
    openapi_extra={"parameters": [_IDEMPOTENCY_KEY_PARAMETER]},
)
async def create_job(
    body: JobIn,
    request: Request,
    response: Response,
    access: Writer,
) -> Response:
    state = state_of(request)  # not a dependency: see api_state
    key = idempotency_key_of(request) or body.idempotency_key
    new_job, payload_bytes = to_new_job(
        body, state, access, key=key, request_id=request_id_of(request)
    )
    if key is not None:
        existing = await state.jobq.find_by_idempotency_key(key)
        if existing is not None:
            return replay_or_conflict(existing, body, response, state, access)
    await ensure_room(state, {new_job.queue: 1})
    validate_new_job(new_job)  # before the quota is charged for it
    state.jobq.refuse_foreign([new_job], access)
    state.quotas.charge(new_job.tenant, 1, payload_bytes)
    tracer = state.jobq.tracer
    if tracer is None:
        answer = await insert_one(state, new_job, access)
    else:
        with tracer.enqueuing([new_job]) as sending:
            (new_job,) = sending.jobs
            answer = await insert_one(state, new_job, access)
            sending.record([answer.job.id])
    job = answer.job
    if answer.outcome in (EnqueueOutcome.REPLAYED, EnqueueOutcome.KEY_REUSED):
        # Another request with this key won the race between our check and our insert.
        return replay_or_conflict(job, body, response, state, access)
    if answer.outcome is EnqueueOutcome.UNIQUE_KEY_HELD:
        # An active job holds the unique key: that job is the answer, nothing was created.
        if not access.owns(job):
            raise not_yours("this unique_key")
        return job_response(job, 200, {**response.headers, "Unique-Key-Held": "true"})
    if state.depth_gate is not None:
        state.depth_gate.accepted(job.queue, 1)
    state.metrics.jobs_enqueued.labels(state.metrics.queue_label(job.queue)).inc()
    return job_response(job, 201, dict(response.headers))


async def insert_one(state: ApiState, new_job: NewJob, access: Access) -> Enqueued:
    # Concurrent requests share an INSERT (group commit in the JobQueue); which jobs go
    # alone, and why, is batching.shares_an_insert's to say.
    (answer,) = await state.jobq.submit_for([new_job], access)
    return answer


async def job_or_404(state: ApiState, job_id: int, access: Access) -> Job:
    return await state.jobq.get(job_id, access=access)  # JobNotFoundError: 404


JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The job's id")]
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _date_time_only(value: object) -> object:
    """Pydantic would read a number as Unix seconds; the spec promises an RFC 3339 time."""
    if isinstance(value, str) and _NUMBER.match(value):
        raise ValueError("expected a date-time like 2024-05-01T12:00:00Z")
    return value


DateTime = Annotated[datetime | None, BeforeValidator(_date_time_only), Query()]


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=problem_responses(404, 422, 503),
    summary="One job",
)
async def get_job(job_id: JobId, state: State, access: Reader) -> JobOut:
    return JobOut.of(await job_or_404(state, job_id, access))


@router.get(
    "/jobs/{job_id}/errors",
    response_model=list[AttemptError],
    responses=problem_responses(404, 422, 503),
    summary="Every failed attempt of a job, oldest first",
)
async def get_job_errors(job_id: JobId, state: State, access: Reader) -> list[AttemptError]:
    return [AttemptError.of(e) for e in await state.jobq.errors(job_id, access=access)]


def parse_cursor(cursor: str | None) -> int | None:
    """The id to page below; the route's pattern already made sure it is digits."""
    if cursor is None:
        return None
    return min(int(cursor), 2**63 - 1)


Include = Annotated[
    list[Literal["payload"]] | None,
    Query(description="`payload`: list each job's payload and result too"),
]


async def page_of(
    state: ApiState, params: ListParams, access: Access, include: Sequence[str] | None
) -> JobPage:
    if include and "payload" in include:
        return await _page_with_payloads(state, params, access)
    # One extra row tells whether another page follows.
    rows = await state.jobq.list_jobs(
        ListParams(**{**_as_dict(params), "limit": params.limit + 1}), access=access, lean=True
    )
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    return JobPage(
        items=[JobListItem.lean(j) for j in rows],
        next_cursor=str(rows[-1].id) if more and rows else None,
    )


async def _page_with_payloads(state: ApiState, params: ListParams, access: Access) -> JobPage:
    """Read a few rows at a time, and end the page early (with a cursor) once its payloads
    and results pass JOBQ_MAX_LIST_BYTES: the memory a page takes stays bounded."""
    budget = state.settings.max_list_bytes
    items: list[JobListItem] = []
    carried = 0
    before_id = params.before_id
    more = False
    while len(items) < params.limit:
        want = min(PAYLOAD_CHUNK, params.limit - len(items))
        chunk = ListParams(**{**_as_dict(params), "before_id": before_id, "limit": want + 1})
        rows = await state.jobq.list_jobs(chunk, access=access)
        more = len(rows) > want
        for job in rows[:want]:
            size = len(orjson.dumps(job.payload)) + len(orjson.dumps(job.result))
            if items and carried + size > budget:
                return JobPage(items=items, next_cursor=str(items[-1].id))
            carried += size
            items.append(JobListItem.of(job))
        if not more:
            break
        before_id = items[-1].id
    return JobPage(items=items, next_cursor=str(items[-1].id) if more and items else None)


def _as_dict(params: ListParams) -> dict[str, Any]:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


@router.get(
    "/jobs",
    response_model=JobPage,
    responses=problem_responses(422, 503),
    summary="Jobs, newest first, keyset-paginated",
)
async def list_jobs(
    state: State,
    access: Reader,
    status: Annotated[list[JobStatus] | None, Query(description="Repeat to match several")] = None,
    kind: NameFilter = None,
    queue: NameFilter = None,
    created_after: DateTime = None,
    created_before: DateTime = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include: Include = None,
) -> JobPage:
    for bound in (created_after, created_before):
        if bound is not None and bound.tzinfo is None:
            raise ProblemError(422, "Invalid input", "times need a UTC offset, e.g. ...Z")
    return await page_of(
        state,
        ListParams(
            statuses=status,
            kind=kind,
            queue=queue,
            created_after=created_after,
            created_before=created_before,
            before_id=parse_cursor(cursor),
            limit=limit,
        ),
        access,
        include,
    )


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=CancelOut,
    responses={
        202: {"model": CancelOut, "description": "Running: cancellation requested"},
        **problem_responses(404, 409, 422, 503),
    },
    summary="Cancel a job",
    description="200: cancelled. 202: running, its task is asked to stop. 409: already "
    "finished. 404: no such job.",
)
async def cancel_job(job_id: JobId, response: Response, state: State, access: Manager) -> CancelOut:
    result = await state.jobq.cancel(job_id, access=access)
    log.info("admin action", action="cancel", job_id=job_id, key_id=access.key_id)
    if result.outcome is CancelOutcome.NOT_FOUND or result.job is None:
        raise ProblemError(404, "Not found", f"no job with id {job_id}")
    if result.outcome is CancelOutcome.TERMINAL:
        raise ProblemError(
            409, "Already finished", f"job {job_id} is {result.job.status}; nothing to cancel"
        )
    if result.outcome is CancelOutcome.REQUESTED:
        response.status_code = 202
        return CancelOut(outcome="cancel_requested", job=JobOut.of(result.job))
    return CancelOut(outcome="cancelled", job=JobOut.of(result.job))


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    responses=problem_responses(404, 409, 422, 503),
    summary="Run a failed or cancelled job again (attempts reset, history kept)",
)
async def retry_job(job_id: JobId, state: State, access: Manager) -> JobOut:
    log.info("admin action", action="retry", job_id=job_id, key_id=access.key_id)
    try:
        return JobOut.of(await state.jobq.retry(job_id, access=access))
    except InvalidTransitionError as exc:
        raise ProblemError(409, "Not retryable", str(exc)) from None

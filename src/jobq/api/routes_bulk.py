"""Enqueueing many jobs in one request: ``POST /jobs/bulk``."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from ..access import Access
from ..errors import InvalidJobError, TenantMismatchError, TenantQuotaExceeded
from ..storage.base import EnqueueOutcome, NewJob
from .problems import ProblemError, problem_responses
from .routes_jobs import Writer, ensure_room, key_reused, not_yours, to_new_job
from .schemas import BulkItemError, BulkResult, JobIn
from .state import ApiState, request_id_of, state_of

router = APIRouter(tags=["jobs"])


class NonFiniteNumber(Exception):
    """NaN, Infinity or a number beyond a double in a bulk body."""


def _refuse_constant(name: str) -> float:
    raise NonFiniteNumber(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(text)
    return value


# Any JSON value is accepted as an item: one that is not a valid JobIn is answered in the
# result's errors (200), not by refusing the request, so the spec cannot promise more.
BULK_ITEM: dict[str, Any] = {
    "description": "A job (see JobIn); an item that is not a valid one is reported in "
    "`errors` by its index"
}


@router.get("/jobs/bulk", include_in_schema=False)
async def bulk_is_post_only() -> None:
    """Without this route, GET /jobs/bulk would match GET /jobs/{job_id} (and answer 422
    for the id "bulk") instead of 405."""
    raise ProblemError(405, "Method not allowed", "use POST", headers={"Allow": "POST"})


@router.post(
    "/jobs/bulk",
    response_model=BulkResult,
    responses=problem_responses(400, 413, 415, 422, 429, 503),
    summary="Enqueue many jobs in one round trip",
    description=(
        "Body: a JSON array of jobs (`application/json`), or a multipart form with a JSON "
        "file in the field `file`. Each item is a job as POST /jobs takes it (JobIn); "
        "valid items are created together, invalid ones (whatever they hold) are reported "
        "by index in `errors` and change nothing. An item's `idempotency_key` works as "
        "on POST /jobs: the same job again is answered with the first one's id, another job "
        "under a key already used is that item's error."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": BULK_ITEM}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {**BULK_ITEM, "type": "object"},
                                "minItems": 1,
                                "description": "A JSON file: an array of jobs",
                            }
                        },
                        "required": ["file"],
                        # Only the file: other fields are refused (and a form of many
                        # fields is refused before it is read whole).
                        "additionalProperties": False,
                    },
                    "encoding": {"file": {"contentType": "application/json"}},
                },
            },
        }
    },
)
async def create_jobs_bulk(request: Request, access: Writer) -> BulkResult:
    state = state_of(request)  # not a dependency: see api_state
    items = await read_bulk_items(request, state)
    request_id = request_id_of(request)
    valid: list[tuple[int, NewJob]] = []
    dependent: list[tuple[int, NewJob]] = []
    errors: list[BulkItemError] = []
    by_tenant: dict[str | None, tuple[int, int]] = {}  # tenant -> (jobs, payload bytes)
    for index, item in enumerate(items):
        try:
            body = JobIn.model_validate(item)
            key = body.idempotency_key
            new_job, size = to_new_job(body, state, access, key=key, request_id=request_id)
            jobs, size_so_far = by_tenant.get(new_job.tenant, (0, 0))
            by_tenant[new_job.tenant] = (jobs + 1, size_so_far + size)
            if new_job.depends_on:
                dependent.append((index, new_job))
            else:
                valid.append((index, new_job))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "item"
            errors.append(BulkItemError(index=index, error=f"{where}: {first['msg']}"))
        except ProblemError as exc:
            errors.append(BulkItemError(index=index, error=exc.detail))
    counts: dict[str, int] = {}
    for _, job in [*valid, *dependent]:
        counts[job.queue] = counts.get(job.queue, 0) + 1
    await ensure_room(state, counts)
    state.quotas.charge_each(by_tenant)
    del items  # the parsed body: only the jobs built from it are needed from here on
    ids, created = await insert_items(state, access, valid, errors, counts) if valid else ([], 0)
    # Items with dependencies go one by one after the rest, so that an unknown parent is
    # reported for its item alone instead of refusing the whole request.
    for index, new_job in dependent:
        try:
            more, made = await insert_items(state, access, [(index, new_job)], errors, counts)
            ids += more
            created += made
        except (InvalidJobError, TenantQuotaExceeded, TenantMismatchError) as exc:
            # The items before are in already: this one is refused alone, never the request.
            errors.append(BulkItemError(index=index, error=str(exc)))
            counts[new_job.queue] -= 1
    errors.sort(key=lambda e: e.index)
    for queue, added in counts.items():
        state.metrics.jobs_enqueued.labels(state.metrics.queue_label(queue)).inc(added)
        if state.depth_gate is not None:
            state.depth_gate.accepted(queue, added)
    return BulkResult(created=created, ids=ids, errors=errors)


async def insert_items(
    state: ApiState,
    access: Access,
    items: list[tuple[int, NewJob]],
    errors: list[BulkItemError],
    counts: dict[str, int],
) -> tuple[list[int], int]:
    """insert_bulk_items, in an enqueue span when tracing."""
    tracer = state.jobq.tracer
    if tracer is None:
        return await insert_bulk_items(state, access, items, errors, counts)
    with tracer.enqueuing([job for _, job in items]) as sending:
        stamped = [(index, job) for (index, _), job in zip(items, sending.jobs, strict=True)]
        ids, created = await insert_bulk_items(state, access, stamped, errors, counts)
        sending.record(ids)
    return ids, created


async def insert_bulk_items(
    state: ApiState,
    access: Access,
    items: list[tuple[int, NewJob]],
    errors: list[BulkItemError],
    counts: dict[str, int],
) -> tuple[list[int], int]:
    """Bulk items (index, job) inserted: the id answering each, and how many were created.
    As on POST /jobs, an item whose idempotency key names a job already is a replay
    (answered with that job's id) if it asks for the same job, else an error of its own;
    an item whose unique key an active job holds is answered with that job. Neither creates
    a job, so neither counts as one."""
    jobs = [job for _, job in items]
    if not any(job.idempotency_key or job.unique_key for job in jobs):
        made = await state.jobq.enqueue_ids_for(jobs, access)
        return made, len(made)
    ids: list[int] = []
    created = 0
    answers = await state.jobq.submit_for(jobs, access)
    for (index, asked), answer in zip(items, answers, strict=True):
        job = answer.job
        if answer.created:
            created += 1
            ids.append(job.id)
            continue
        counts[asked.queue] -= 1
        if not access.owns(job):
            errors.append(BulkItemError(index=index, error=not_yours("its key").detail))
            continue
        if answer.outcome is EnqueueOutcome.KEY_REUSED:
            errors.append(BulkItemError(index=index, error=key_reused(job)))
            continue
        if answer.outcome is EnqueueOutcome.REPLAYED:
            state.metrics.idempotent_replays.inc()
        ids.append(job.id)
    return ids, created


async def read_bulk_items(request: Request, state: ApiState) -> list[Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if upload is None:
            raise ProblemError(400, "Bad request", "the multipart form needs a 'file' field")
        others = sorted({name for name in form if name != "file"})
        if others or len(form.getlist("file")) > 1:
            raise ProblemError(
                400,
                "Bad request",
                "the multipart form takes one field, 'file'"
                + (f"; not {', '.join(map(repr, others))}" if others else ""),
            )
        # A part sent with a filename arrives as a file, one without as a plain field.
        raw = upload.encode() if isinstance(upload, str) else await upload.read()
        objects_only = True
    elif content_type in ("application/json", ""):
        raw = await request.body()
        objects_only = False
    else:
        raise ProblemError(
            415,
            "Unsupported media type",
            "send a JSON array (application/json) or a multipart form with a 'file' field",
        )
    try:
        # The standard parser, not orjson: orjson's transient peak was 13 times the body
        # (126 MB for a 9.4 MB body, tracemalloc), the standard one's 2.4 times, at about
        # the same speed on bulk bodies.
        items = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except NonFiniteNumber as exc:
        raise ProblemError(422, "Invalid input", f"numbers must be finite: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProblemError(400, "Bad request", f"the body is not valid JSON: {exc}") from None
    del raw  # the bytes are parsed: from here on, memory holds the items once
    if not isinstance(items, list):
        raise ProblemError(422, "Invalid input", "the body must be a JSON array of jobs")
    if objects_only and not all(isinstance(item, dict) for item in items):
        # As the spec declares the file: an array of objects (a JSON body's items are
        # reported one by one instead, whatever they are).
        raise ProblemError(422, "Invalid input", "the file must be a JSON array of objects")
    if len(items) > state.settings.max_bulk_jobs:
        raise ProblemError(
            413,
            "Too many jobs",
            f"{len(items)} jobs in one request; the limit is {state.settings.max_bulk_jobs} "
            "(JOBQ_MAX_BULK_JOBS)",
        )
    return items

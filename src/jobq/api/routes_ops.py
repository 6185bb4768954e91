"""The dead-letter queue, queues, workers, health, readiness and metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response

from ..access import ADMIN, MANAGE, READ, Access
from ..errors import DatabaseUnavailableError
from ..model import JobStatus
from ..storage.base import ListParams
from .auth import requires
from .problems import RETRY_AFTER_OUTAGE_S, ProblemError, problem_responses
from .routes_jobs import Include, page_of, parse_cursor
from .schemas import (
    CURSOR_PATTERN,
    HealthOut,
    JobPage,
    NameFilter,
    QueueOut,
    RequeueByIds,
    RequeueIn,
    RequeueOut,
    WorkerOut,
)
from .state import ApiState, api_state

log = structlog.get_logger("jobq.api")
router = APIRouter()
State = Annotated[ApiState, Depends(api_state)]
Reader = Annotated[Access, Depends(requires(READ))]
Manager = Annotated[Access, Depends(requires(MANAGE))]
Admin = Annotated[Access, Depends(requires(ADMIN))]
# /health and /ready answer without a key (load balancers, orchestrators): rate only.
Unauthenticated = Depends(requires(None))


@router.get(
    "/dlq",
    response_model=JobPage,
    tags=["dead letters"],
    responses=problem_responses(422, 503),
    summary="Failed jobs (the dead-letter set), newest first",
)
async def list_dead_letters(
    state: State,
    access: Reader,
    kind: NameFilter = None,
    queue: NameFilter = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include: Include = None,
) -> JobPage:
    return await page_of(
        state,
        ListParams(
            statuses=[JobStatus.FAILED],
            kind=kind,
            queue=queue,
            before_id=parse_cursor(cursor),
            limit=limit,
        ),
        access,
        include,
    )


@router.post(
    "/dlq/requeue",
    response_model=RequeueOut,
    tags=["dead letters"],
    responses=problem_responses(400, 422, 503),
    summary="Requeue failed jobs by ids or by filter (attempts reset, history kept)",
    description='Requeue the failed jobs named by `{"ids": [...]}`, or those matching '
    '`{"kind": ..., "queue": ..., "limit": ...}`; `{"all": true}` selects every failed job '
    "(up to `limit`, default 1000). An empty body selects nothing and is refused (422).",
)
async def requeue_dead_letters(body: RequeueIn, state: State, access: Manager) -> RequeueOut:
    if isinstance(body, RequeueByIds):
        ids = body.ids
    else:
        if not body.selects:
            raise ProblemError(
                422,
                "Invalid input",
                'say which failed jobs to requeue: "ids", "kind", "queue", or "all": true '
                "for every one (up to limit)",
            )
        failed = await state.jobq.list_jobs(
            ListParams(
                statuses=[JobStatus.FAILED], kind=body.kind, queue=body.queue, limit=body.limit
            ),
            access=access,
            lean=True,
        )
        ids = [j.id for j in failed]
    requeued = await state.jobq.requeue(ids, access=access) if ids else []
    log.info("admin action", action="requeue", job_ids=requeued, key_id=access.key_id)
    return RequeueOut(requeued=requeued)


@router.get(
    "/queues",
    response_model=list[QueueOut],
    tags=["operations"],
    responses=problem_responses(503),
    summary="Jobs by queue and status, and how long the oldest due job has waited",
)
async def list_queues(state: State, access: Reader) -> list[QueueOut]:
    return QueueOut.group(await state.jobq.stats(access=access), datetime.now(UTC))


@router.get(
    "/workers",
    response_model=list[WorkerOut],
    tags=["operations"],
    responses=problem_responses(503),
    summary="Registered workers and their last heartbeat",
)
async def list_workers(state: State, _: Admin) -> list[WorkerOut]:
    return [WorkerOut.of(w) for w in await state.jobq.worker_states()]


@router.get(
    "/health",
    response_model=HealthOut,
    tags=["operations"],
    responses=problem_responses(503),
    summary="Liveness, with a database ping",
    dependencies=[Unauthenticated],
)
async def health(state: State) -> HealthOut:
    await state.jobq.ping()
    return HealthOut(status="ok", database="ok")


@router.get(
    "/ready",
    response_model=HealthOut,
    tags=["operations"],
    responses=problem_responses(503),
    summary="Ready to serve: the database answers and its schema is up to date",
    dependencies=[Unauthenticated],
)
async def ready(state: State) -> HealthOut:
    current, newest = await state.jobq.schema_versions()
    if current < newest:
        raise ProblemError(
            503,
            "Not ready",
            f"schema at version {current}, expected {newest}: run jobq migrate",
            headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
        )
    return HealthOut(status="ready", database="ok")


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {}, "application/openmetrics-text": {}},
            "description": "Prometheus text, or OpenMetrics (with exemplars) when asked for",
        }
    },
    summary="Prometheus metrics",
)
async def metrics(state: State, request: Request, _: Admin) -> Response:
    try:
        stats = await state.jobq.stats()
        state.metrics.set_backlog(await state.jobq.backlog())
    except DatabaseUnavailableError:
        stats = []  # still expose the process's own metrics during an outage
    # Read afresh from the database at each scrape, and cleared first: these series go
    # when their queue empties (unlike counters, which the "other" label bounds).
    state.metrics.queue_jobs.clear()
    for stat in stats:
        state.metrics.queue_jobs.labels(stat.queue, str(stat.status)).set(stat.count)
    body, content_type = state.metrics.render_for(request.headers.get("accept"))
    return Response(body, media_type=content_type)

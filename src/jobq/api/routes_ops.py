"""The dead-letter queue, queues, workers, health, readiness and metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from ..errors import DatabaseUnavailableError
from ..model import JobStatus
from ..storage.base import ListParams
from ..storage.sqlfiles import load_migrations
from .problems import problem_responses
from .routes_jobs import page_of, parse_cursor
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

router = APIRouter()
State = Annotated[ApiState, Depends(api_state)]


@router.get(
    "/dlq",
    response_model=JobPage,
    tags=["dead letters"],
    responses=problem_responses(422, 503),
    summary="Failed jobs (the dead-letter set), newest first",
)
async def list_dead_letters(
    state: State,
    kind: NameFilter = None,
    queue: NameFilter = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
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
    )


@router.post(
    "/dlq/requeue",
    response_model=RequeueOut,
    tags=["dead letters"],
    responses=problem_responses(422, 503),
    summary="Requeue failed jobs by ids or by filter (attempts reset, history kept)",
)
async def requeue_dead_letters(body: RequeueIn, state: State) -> RequeueOut:
    if isinstance(body, RequeueByIds):
        ids = body.ids
    else:
        failed = await state.jobq.list_jobs(
            ListParams(
                statuses=[JobStatus.FAILED], kind=body.kind, queue=body.queue, limit=body.limit
            )
        )
        ids = [j.id for j in failed]
    requeued = await state.jobq.requeue(ids) if ids else []
    return RequeueOut(requeued=requeued)


@router.get(
    "/queues",
    response_model=list[QueueOut],
    tags=["operations"],
    responses=problem_responses(503),
    summary="Jobs by queue and status, and how long the oldest due job has waited",
)
async def list_queues(state: State) -> list[QueueOut]:
    return QueueOut.group(await state.jobq.stats(), datetime.now(UTC))


@router.get(
    "/workers",
    response_model=list[WorkerOut],
    tags=["operations"],
    responses=problem_responses(503),
    summary="Registered workers and their last heartbeat",
)
async def list_workers(state: State) -> list[WorkerOut]:
    return [WorkerOut.of(w) for w in await state.jobq.workers()]


@router.get(
    "/health",
    response_model=HealthOut,
    tags=["operations"],
    responses=problem_responses(503),
    summary="Liveness, with a database ping",
)
async def health(state: State) -> HealthOut:
    await state.jobq.driver.ping()
    return HealthOut(status="ok", database="ok")


@router.get(
    "/ready",
    response_model=HealthOut,
    tags=["operations"],
    responses=problem_responses(503),
    summary="Ready to serve: the database answers and its schema is up to date",
)
async def ready(state: State) -> HealthOut:
    driver = state.jobq.driver
    applied = await driver.applied_migrations()
    newest = len(load_migrations(driver.dialect))
    if not applied or max(applied) < newest:
        raise DatabaseUnavailableError(
            f"schema at version {max(applied, default=0)}, expected {newest}: run jobq migrate"
        )
    return HealthOut(status="ready", database="ok")


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"}},
    summary="Prometheus metrics",
)
async def metrics(state: State) -> Response:
    try:
        stats = await state.jobq.stats()
    except DatabaseUnavailableError:
        stats = []  # still expose the process's own metrics during an outage
    state.metrics.queue_jobs.clear()
    for stat in stats:
        state.metrics.queue_jobs.labels(stat.queue, str(stat.status)).set(stat.count)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

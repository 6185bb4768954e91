"""The FastAPI application: ``create_app(jobq)``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from ..app import JobQueue
from ..observability.metrics import Metrics
from ..worker.runtime import Worker
from .batching import EnqueueBatcher
from .limits import BodyLimitMiddleware, DepthGate, RateLimiter
from .middleware import RequestContextMiddleware
from .problems import Problem, install_problem_handlers
from .routes_events import router as events_router
from .routes_jobs import router as jobs_router
from .routes_ops import router as ops_router
from .state import ApiState

log = structlog.get_logger("jobq.api")
SWEEP_EVERY_S = 60.0


def create_app(
    jobq: JobQueue, *, metrics: Metrics | None = None, worker: Worker | None = None
) -> FastAPI:
    """The HTTP API over ``jobq``. With ``worker``, the app also runs it for its lifetime
    (``jobq serve``): started after the API opens, stopped gracefully before it closes."""
    settings = jobq.settings
    metrics = metrics or (worker.metrics if worker else Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await jobq.driver.open()
        sweeper = asyncio.create_task(_sweep_idempotency_keys(jobq), name="jobq-idem-sweeper")
        worker_run = asyncio.create_task(worker.run(), name="jobq-worker") if worker else None
        try:
            yield
        finally:
            if worker is not None and worker_run is not None:
                worker.stop()
                await worker_run
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await app.state.jobq_api.batcher.close()
            await jobq.close()

    app = FastAPI(
        title="jobq",
        summary="A durable job queue: enqueue, inspect, cancel and requeue jobs over HTTP.",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/api-docs/openapi.json",
        lifespan=lifespan,
    )
    app.state.jobq_api = ApiState(
        jobq=jobq,
        settings=settings,
        metrics=metrics,
        rate_limiter=(
            RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
            if settings.rate_limit_per_s > 0
            else None
        ),
        depth_gate=(
            DepthGate(settings.max_queue_depth, jobq.driver.queue_depth)
            if settings.max_queue_depth > 0
            else None
        ),
        batcher=EnqueueBatcher(jobq),
    )
    if jobq.read_router is not None:
        jobq.read_router.on_fallback = lambda reason: metrics.replica_fallbacks.labels(reason).inc()
    install_problem_handlers(app)
    app.include_router(jobs_router)
    app.include_router(events_router)
    app.include_router(ops_router)

    def body_limit(path: str) -> int:
        return settings.max_bulk_bytes if path == "/jobs/bulk" else settings.max_request_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Make sure #/components/schemas/Problem exists even if no route names it as a model."""
    build = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.setdefault("Problem", Problem.model_json_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _sweep_idempotency_keys(jobq: JobQueue) -> None:
    """Expired keys free themselves up; every API process sweeps (the UPDATE is idempotent)."""
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            cleared = await jobq.driver.forget_idempotency_keys(jobq.settings.idempotency_ttl_s)
            if cleared:
                log.info("expired idempotency keys cleared", count=cleared)
        except Exception as exc:  # an outage: try again next round
            log.warning("idempotency sweep failed", error=str(exc))

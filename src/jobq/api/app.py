"""The FastAPI application: ``create_app(jobq)``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from ..app import JobQueue
from ..observability.metrics import Metrics, bound_labels
from ..worker.runtime import Worker
from .auth import Authenticator
from .batching import EnqueueBatcher
from .browser import BrowserGuardMiddleware
from .limits import BodyLimitMiddleware, DepthGate, RateLimiter, StreamSlots
from .middleware import RequestContextMiddleware
from .problems import Problem, install_problem_handlers, problem_responses
from .quotas import TenantQuotas
from .routes_bulk import router as bulk_router
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
    bound_labels(metrics, jobq)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await jobq.open()
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
            await app.state.jobq_api.auth.close()
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
            DepthGate(settings.max_queue_depth, jobq.queue_depth)
            if settings.max_queue_depth > 0
            else None
        ),
        batcher=EnqueueBatcher(jobq),
        auth=Authenticator(jobq, settings.auth_cache_s),
        quotas=TenantQuotas(settings),
        streams=StreamSlots(settings.max_event_streams, settings.max_event_streams_per_client),
    )
    install_problem_handlers(app)
    app.include_router(bulk_router)  # first: GET /jobs/bulk is not GET /jobs/{job_id}
    app.include_router(jobs_router)
    app.include_router(events_router)
    app.include_router(ops_router)

    def body_limit(path: str) -> int:
        return settings.max_bulk_bytes if path == "/jobs/bulk" else settings.max_request_bytes

    app.add_middleware(
        BodyLimitMiddleware, limit_for=body_limit, read_timeout_s=settings.body_read_timeout_s
    )
    origins = settings.allowed_origin_list
    if origins:  # CORS only for origins named in the settings: off by default
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
        )
    app.add_middleware(
        BrowserGuardMiddleware,
        allowed_hosts=settings.allowed_host_names,
        allowed_origins=origins,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    _complete_openapi(app)
    return app


# Endpoints that answer without a key (orchestrators' probes).
OPEN_PATHS = frozenset({"/health", "/ready"})


def _complete_openapi(app: FastAPI) -> None:
    """Add to the generated spec what no route declares: the Problem schema, the bearer
    scheme (Swagger's "Authorize"), and on each endpoint needing a key its 401 and 403."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).setdefault("Problem", Problem.model_json_schema())
            components["securitySchemes"] = {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `jobq keys create`",
                }
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    for status, entry in problem_responses(429).items():
                        entry.pop("model")
                        responses.setdefault(str(status), entry)
                    if path in OPEN_PATHS:
                        operation["security"] = []
                        continue
                    operation["security"] = [{"bearerAuth": []}]
                    for status, entry in problem_responses(401, 403).items():
                        entry.pop("model")
                        responses.setdefault(str(status), entry)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _sweep_idempotency_keys(jobq: JobQueue) -> None:
    """Expired keys free themselves up; every API process sweeps (the UPDATE is idempotent)."""
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            cleared = await jobq.forget_idempotency_keys(jobq.settings.idempotency_ttl_s)
            if cleared:
                log.info("expired idempotency keys cleared", count=cleared)
        except Exception as exc:  # an outage: try again next round
            log.warning("idempotency sweep failed", error=str(exc))

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
from ..dashboard import DashboardAuth, Identity, install_dashboard
from ..observability.metrics import Metrics, bound_labels
from ..observability.tracing import UNTRACED_URLS
from ..worker.runtime import Worker
from .authenticator import Authenticator
from .browser import BrowserGuardMiddleware
from .docs_page import install_docs
from .limits import BodyLimitMiddleware, DepthGate, RateLimiter, StreamSlots
from .middleware import RequestContextMiddleware
from .problems import Problem, ProblemError, install_problem_handlers, problem_responses
from .quotas import TenantQuotas
from .routes_bulk import router as bulk_router
from .routes_events import router as events_router
from .routes_jobs import router as jobs_router
from .routes_ops import router as ops_router
from .routes_pause import router as pause_router
from .state import ApiState

log = structlog.get_logger("jobq.api")


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
        if not jobq.knows_its_kinds:
            log.warning(
                "this API knows no tasks of an app: POST /jobs cannot check kinds or "
                "arguments (workers fail unknown kinds); give it the app (jobq api APP) "
                "to have them checked"
            )
        # With a worker, its maintenance is this process's; without, the API takes part in
        # the housekeeping election itself.
        keeper = None if worker else jobq.maintenance()
        housekeeping = (
            None if keeper is None else asyncio.create_task(keeper.run(), name="jobq-maintenance")
        )
        worker_run = asyncio.create_task(worker.run(), name="jobq-worker") if worker else None
        try:
            yield
        finally:
            if worker is not None and worker_run is not None:
                worker.stop()
                await worker_run
            if keeper is not None and housekeeping is not None:
                # Let the round in progress finish rather than cut its statements off;
                # one held up by an outage is cancelled after the grace period.
                keeper.request_stop()
                await asyncio.wait({housekeeping}, timeout=settings.shutdown_grace_s)
                housekeeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await housekeeping
            await app.state.jobq_api.auth.close()
            await jobq.close()

    app = FastAPI(
        title="jobq",
        summary="A durable job queue: enqueue, inspect, cancel and requeue jobs over HTTP.",
        version="0.1.0",
        docs_url=None,  # install_docs: Swagger UI from the package, not a CDN
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
        auth=Authenticator(jobq, settings.auth_cache_s),
        quotas=TenantQuotas(settings),
        streams=StreamSlots(settings.max_event_streams, settings.max_event_streams_per_client),
    )
    if jobq.read_router is not None:
        jobq.read_router.on_fallback = lambda reason: metrics.replica_fallbacks.labels(reason).inc()
    install_problem_handlers(app)
    app.include_router(bulk_router)  # first: GET /jobs/bulk is not GET /jobs/{job_id}
    app.include_router(jobs_router)
    app.include_router(events_router)
    app.include_router(ops_router)
    app.include_router(pause_router)
    install_docs(app, "/api-docs/openapi.json")
    install_dashboard(app, jobq, _dashboard_sign_in(app.state.jobq_api.auth))

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
    if jobq.tracer is not None:
        _trace_requests(app, jobq.tracer.provider)
    return app


def _dashboard_sign_in(auth: Authenticator) -> DashboardAuth:
    """The dashboard signs in with the API's keys: while no key exists everyone is an
    administrator, as on the API; once one does, a key signs a session in with its scopes
    and tenant."""

    async def resolve(key: str) -> Identity | None:
        try:
            access = await auth.access_of(f"Bearer {key}")
        except ProblemError:
            return None
        return Identity(access.key_id or "key", access.scopes, access.tenant)

    return DashboardAuth(resolve_key=resolve, keys_required=auth.enabled)


def _trace_requests(app: FastAPI, provider: Any) -> None:
    """A server span per HTTP request (OpenTelemetry's FastAPI instrumentation, outermost,
    so that the request's log line and the enqueue span belong to it)."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:  # the SDK without the instrumentation: jobq's own spans only
        log.warning("opentelemetry-instrumentation-fastapi is missing: no HTTP request spans")
        return
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED_URLS)


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

"""The dashboard's pages (every GET under ``/ui``), and their live updates."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from ..errors import JobNotFoundError
from ..model import TERMINAL_STATUSES, Job, JobStatus
from ..storage.base import ListParams
from . import data
from .auth import Identity
from .session import CurrentView, NotFound

PAGE_SIZE = 50
LIVE_EVERY_S = 1.0  # how often the jobs list's event stream looks for changes
LIVE_FOR_S = 600.0  # then the stream ends and the browser reconnects
SINCE = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1)}
SINCE |= {"7d": timedelta(days=7)}

router = APIRouter(prefix="/ui", include_in_schema=False)


# ---------------------------------------------------------------------- overview
@router.get("")
async def overview(view: CurrentView) -> Response:
    view.require_every_tenant()
    now = datetime.now(UTC)
    # Side by side: on PostgreSQL each read has a pooled connection of its own.
    hour, day, queues, workers = await asyncio.gather(
        data.window_charts(view.jobq, data.HOUR, now),
        data.window_charts(view.jobq, data.DAY, now),
        data.queue_rows(view.jobq, now),
        data.worker_rows(view.jobq, now),
    )
    windows = [hour, day]
    return view.render(
        "overview.html",
        windows=windows,
        queues=queues,
        alive=sum(w.alive for w in workers),
        workers=len(workers),
    )


# ---------------------------------------------------------------------- jobs
def _filters(request: Request, identity: Identity) -> tuple[dict[str, str], ListParams]:
    q = request.query_params
    shown = {k: q.get(k, "").strip() for k in ("status", "kind", "queue", "tenant", "since")}
    if identity.tenant is not None:
        shown["tenant"] = identity.tenant
    status = shown["status"] if shown["status"] in {str(s) for s in JobStatus} else ""
    shown["status"] = status
    since = SINCE.get(shown["since"])
    if since is None:
        shown["since"] = ""
    before = q.get("before", "")
    params = ListParams(
        statuses=[JobStatus(status)] if status else None,
        kind=shown["kind"][:128] or None,
        queue=shown["queue"][:128] or None,
        tenant=shown["tenant"][:128] or None,
        created_after=datetime.now(UTC) - since if since else None,
        before_id=int(before) if before.isdigit() and 0 < int(before) < 2**63 else None,
        limit=PAGE_SIZE,
    )
    return shown, params


@router.get("/jobs")
async def jobs_page(view: CurrentView, request: Request) -> Response:
    jump = request.query_params.get("id", "").strip().lstrip("#")
    if jump:
        if jump.isdigit() and 0 < int(jump) < 2**63:
            return RedirectResponse(f"/ui/jobs/{int(jump)}", status_code=303)
        return view.back("/ui/jobs", f"{jump!r} is not a job id")
    shown, params = _filters(request, view.identity)
    jobs = await view.list_jobs(params)
    query = {k: v for k, v in shown.items() if v}
    older = urlencode({**query, "before": jobs[-1].id}) if len(jobs) == params.limit else None
    return view.render(
        "jobs.html",
        jobs=jobs,
        shown=shown,
        older=older,
        newest=urlencode(query),
        live=urlencode(query) if params.before_id is None else None,
    )


@router.get("/jobs/live")
async def jobs_live(view: CurrentView, request: Request) -> StreamingResponse:
    """The first page of the jobs list as server-sent events: its rows, rendered, each time
    they change."""
    _, params = _filters(request, view.identity)
    rows = view.state.templates.get_template("_job_rows.html")

    async def stream() -> AsyncIterator[str]:
        last = ""
        ends = time.monotonic() + LIVE_FOR_S
        yield "retry: 2000\n\n"
        while time.monotonic() < ends and not await request.is_disconnected():
            jobs = await view.list_jobs(params)
            digest = hashlib.blake2b(
                repr([(j.id, j.status, j.attempt, j.progress) for j in jobs]).encode()
            ).hexdigest()
            if digest != last:
                last = digest
                html = rows.render(jobs=jobs)
                body = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
                yield f"event: rows\n{body}\n"
            await asyncio.sleep(LIVE_EVERY_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/jobs/{job_id}")
async def job_page(job_id: int, view: CurrentView) -> Response:
    job = await view.job(job_id)
    errors = await view.jobq.errors(job_id)
    dependents = await view.jobq.dependents(job_id)
    parents = []
    for parent_id in job.depends_on[:20]:
        try:
            parents.append(await view.job(parent_id))
        except NotFound:
            continue  # purged by retention
    return view.render(
        "job.html",
        job=job,
        errors=errors,
        parents=parents,
        missing_parents=len(job.depends_on) - len(parents),
        dependents=dependents,
        terminal=job.status in TERMINAL_STATUSES,
        percent=_percent(job),
    )


def _percent(job: Job) -> float | None:
    if job.status is JobStatus.SUCCEEDED:
        return 100.0
    value = (job.progress or {}).get("percent")
    return float(value) if isinstance(value, int | float) else None


@router.get("/jobs/{job_id}/live")
async def job_live(job_id: int, view: CurrentView, request: Request) -> StreamingResponse:
    """The job's status and progress as server-sent events, until it finishes."""
    await view.job(job_id)

    async def stream() -> AsyncIterator[str]:
        last: tuple[Any, ...] | None = None
        ends = time.monotonic() + LIVE_FOR_S
        yield "retry: 2000\n\n"
        while time.monotonic() < ends and not await request.is_disconnected():
            try:
                job = await view.jobq.get(job_id)
            except JobNotFoundError:
                return  # purged meanwhile: nothing more to follow
            now = (job.status, job.attempt, job.progress)
            if now != last:
                last = now
                payload = {
                    "status": str(job.status),
                    "attempt": job.attempt,
                    "percent": _percent(job),
                    "message": (job.progress or {}).get("message"),
                }
                yield f"event: job\ndata: {orjson.dumps(payload).decode()}\n\n"
            if job.status in TERMINAL_STATUSES:
                return
            await asyncio.sleep(0.2)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ---------------------------------------------------------------------- dead letters
@router.get("/dead")
async def dead_page(view: CurrentView, request: Request) -> Response:
    q = request.query_params
    shown = {k: q.get(k, "").strip()[:128] for k in ("kind", "queue")}
    before = q.get("before", "")
    params = ListParams(
        statuses=[JobStatus.FAILED],
        kind=shown["kind"] or None,
        queue=shown["queue"] or None,
        before_id=int(before) if before.isdigit() and 0 < int(before) < 2**63 else None,
        limit=PAGE_SIZE,
    )
    jobs = await view.list_jobs(params)
    query = {k: v for k, v in shown.items() if v}
    older = urlencode({**query, "before": jobs[-1].id}) if len(jobs) == PAGE_SIZE else None
    return view.render("dead.html", jobs=jobs, shown=shown, older=older)


# ---------------------------------------------------------------------- queues, workers
@router.get("/queues")
async def queues_page(view: CurrentView) -> Response:
    view.require_every_tenant()
    now = datetime.now(UTC)
    limits = view.jobq.claim_limits()
    return view.render(
        "queues.html",
        queues=await data.queue_rows(view.jobq, now),
        kind_limits=sorted(limits.max_running_by_kind.items()),
        rate_limits=sorted(limits.rate_by_kind.items()),
        cap=data.COUNT_CAP,
        rare_cap=data.RARE_CAP,
    )


@router.get("/workers")
async def workers_page(view: CurrentView) -> Response:
    view.require_every_tenant()
    return view.render("workers.html", workers=await data.worker_rows(view.jobq, datetime.now(UTC)))


@router.get("/schedules")
async def schedules_page(view: CurrentView) -> Response:
    view.require_every_tenant()
    return view.render(
        "schedules.html", schedules=await data.schedule_rows(view.jobq, datetime.now(UTC))
    )

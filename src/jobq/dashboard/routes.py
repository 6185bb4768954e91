"""The dashboard's pages and actions, under ``/ui``."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from ..app import JobQueue
from ..errors import JobNotFoundError
from ..model import TERMINAL_STATUSES, Job, JobStatus
from ..storage.base import CancelOutcome, ListParams
from . import data
from .auth import COOKIE, Action, DashboardAuth, Identity, Session, allowed_actions, can_view

HERE = Path(__file__).parent
PAGE_SIZE = 50
BULK_MAX = 1000  # most dead letters one confirmation acts on
LIVE_EVERY_S = 1.0  # how often the jobs list's event stream looks for changes
LIVE_FOR_S = 600.0  # then the stream ends and the browser reconnects
SINCE = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1)}
SINCE |= {"7d": timedelta(days=7)}

router = APIRouter(prefix="/ui", include_in_schema=False)


@dataclass(slots=True)
class DashboardState:
    jobq: JobQueue
    auth: DashboardAuth
    templates: Jinja2Templates


class SignInRequired(Exception):
    """No identity in the session while keys are required: off to the sign-in page."""


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def install_dashboard(app: FastAPI, jobq: JobQueue, auth: DashboardAuth | None = None) -> None:
    """Serve the dashboard at ``/ui`` (and a page linking to it at ``/``)."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["statuses"] = [str(s) for s in JobStatus]
    templates.env.filters["age"] = _age
    templates.env.filters["when"] = _when
    app.state.jobq_dashboard = DashboardState(jobq, auth or DashboardAuth(), templates)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(router)
    app.add_api_route("/", _landing, include_in_schema=False, response_class=HTMLResponse)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        target = urlencode({"next": request.url.path})
        return RedirectResponse(f"/ui/login?{target}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        message = exc.message if isinstance(exc, Forbidden) else "forbidden"
        return HTMLResponse(f"<!doctype html><title>Forbidden</title><p>{message}", 403)

    app.add_exception_handler(SignInRequired, sign_in_first)
    app.add_exception_handler(Forbidden, forbidden)


def set_key_resolver(app: FastAPI, auth: DashboardAuth) -> None:
    """Replace how the dashboard signs people in (the security layer's keys plug in here)."""
    state: DashboardState = app.state.jobq_dashboard
    state.auth = auth


async def _landing() -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>jobq</title>'
        '<h1>jobq</h1><ul><li><a href="/ui">Dashboard</a></li>'
        '<li><a href="/docs">API documentation</a></li>'
        '<li><a href="/metrics">Metrics</a></li></ul></html>'
    )


# ---------------------------------------------------------------------- request context
@dataclass(slots=True)
class View:
    request: Request
    state: DashboardState
    session: Session
    identity: Identity

    @property
    def jobq(self) -> JobQueue:
        return self.state.jobq

    @property
    def actions(self) -> frozenset[Action]:
        return allowed_actions(self.identity)

    def require(self, action: Action) -> None:
        if action not in self.actions:
            raise Forbidden(f"{self.identity.name} may not {action}")

    def render(self, template: str, **context: Any) -> Response:
        context |= {
            "identity": self.identity,
            "actions": {str(a) for a in self.actions},
            "csrf": self.state.auth.csrf_token(self.session),
            "signed_in": self.state.auth.resolve_key is not None,
            "message": self.request.query_params.get("msg"),
            "path": self.request.url.path,
        }
        response = self.state.templates.TemplateResponse(self.request, template, context)
        return self.keep_session(response)

    def keep_session(self, response: Response) -> Response:
        if self.session.is_new:
            set_session_cookie(response, self.state.auth, self.session)
        return response

    def back(self, url: str, message: str) -> Response:
        sep = "&" if "?" in url else "?"
        return self.keep_session(
            RedirectResponse(f"{url}{sep}{urlencode({'msg': message})}", status_code=303)
        )

    def require_every_tenant(self) -> None:
        """Pages of the whole queue (counts, workers, schedules) are not for a tenant-bound
        identity: they would show other tenants' activity."""
        if self.identity.tenant is not None:
            raise Forbidden(f"{self.identity.name} sees only tenant {self.identity.tenant}")

    def own(self, job: Job) -> Job:
        """The job, if this identity may see it (a tenant-bound key: its tenant's only)."""
        if self.identity.tenant is not None and job.tenant != self.identity.tenant:
            raise JobNotFoundError(f"no job with id {job.id}")
        return job


def set_session_cookie(response: Response, auth: DashboardAuth, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        auth.dump(session),
        max_age=auth.max_age_s,
        httponly=True,
        samesite="strict",
        secure=auth.secure_cookie,
        path="/ui",
    )


def _session(request: Request) -> tuple[DashboardState, Session]:
    state: DashboardState = request.app.state.jobq_dashboard
    return state, state.auth.load(request.cookies.get(COOKIE))


async def current_view(request: Request) -> View:
    state, session = _session(request)
    identity = state.auth.identity_of(session)
    if identity is None:
        raise SignInRequired()
    if not can_view(identity):
        raise Forbidden(f"{identity.name} may not read jobs")
    return View(request, state, session, identity)


async def posted_view(request: Request) -> tuple[View, FormData]:
    """A POST's view, once its CSRF token has been checked."""
    view = await current_view(request)
    form = await request.form()
    token = form.get("csrf")
    if not view.state.auth.csrf_ok(view.session, token if isinstance(token, str) else None):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page")
    return view, form


CurrentView = Annotated[View, Depends(current_view)]
Posted = Annotated[tuple[View, FormData], Depends(posted_view)]


# ---------------------------------------------------------------------- sign-in
@router.get("/login")
async def login_page(request: Request, next: str = "/ui") -> Response:
    state, session = _session(request)
    return _login_form(request, state, session, next, None)


def _login_form(
    request: Request, state: DashboardState, session: Session, target: str, error: str | None
) -> Response:
    response: Response = state.templates.TemplateResponse(
        request,
        "login.html",
        {
            "csrf": state.auth.csrf_token(session),
            "next": _local(target),
            "error": error,
            "identity": None,
            "actions": set(),
            "signed_in": False,
            "path": "/ui/login",
            "message": None,
        },
        status_code=401 if error else 200,
    )
    if session.is_new:
        set_session_cookie(response, state.auth, session)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    state, session = _session(request)
    form = await request.form()
    token, key, target = form.get("csrf"), form.get("key"), form.get("next")
    if not state.auth.csrf_ok(session, token if isinstance(token, str) else None):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page")
    resolve = state.auth.resolve_key
    identity = await resolve(key) if resolve is not None and isinstance(key, str) else None
    target = target if isinstance(target, str) else "/ui"
    if identity is None:
        return _login_form(request, state, session, target, "That key is not valid.")
    target = _local(target)
    if identity.tenant is not None and target in ("/ui", "/ui/"):
        target = "/ui/jobs"  # the overview is of every tenant's work
    # A new session id at sign-in, so a token planted before it is worth nothing after.
    response = RedirectResponse(target, 303)
    set_session_cookie(response, state.auth, state.auth.new_session(identity))
    return response


@router.post("/logout")
async def logout(_: Posted) -> Response:  # Posted: a valid session and CSRF token
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _local(target: str) -> str:
    """Only a path of this dashboard: never an open redirect elsewhere."""
    return target if target.startswith("/ui") and "//" not in target else "/ui"


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


def _no_nul(params: ListParams) -> bool:
    return not any("\x00" in (v or "") for v in (params.kind, params.queue, params.tenant))


@router.get("/jobs")
async def jobs_page(view: CurrentView, request: Request) -> Response:
    jump = request.query_params.get("id", "").strip().lstrip("#")
    if jump:
        if jump.isdigit() and 0 < int(jump) < 2**63:
            return RedirectResponse(f"/ui/jobs/{int(jump)}", status_code=303)
        return view.back("/ui/jobs", f"{jump!r} is not a job id")
    shown, params = _filters(request, view.identity)
    jobs = await view.jobq.list_jobs(params) if _no_nul(params) else []
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
            jobs = await view.jobq.list_jobs(params) if _no_nul(params) else []
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
    job = view.own(await view.jobq.get(job_id))
    errors = await view.jobq.errors(job_id)
    dependents = await view.jobq.dependents(job_id)
    parents = []
    for parent_id in job.depends_on[:20]:
        try:
            parents.append(view.own(await view.jobq.get(parent_id)))
        except JobNotFoundError:
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
    view.own(await view.jobq.get(job_id))

    async def stream() -> AsyncIterator[str]:
        last: tuple[Any, ...] | None = None
        ends = time.monotonic() + LIVE_FOR_S
        yield "retry: 2000\n\n"
        while time.monotonic() < ends and not await request.is_disconnected():
            job = await view.jobq.get(job_id)
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


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: int, posted: Posted) -> Response:
    view, _ = posted
    view.require(Action.CANCEL)
    view.own(await view.jobq.get(job_id))
    result = await view.jobq.cancel(job_id)
    told = {
        CancelOutcome.CANCELLED: "cancelled",
        CancelOutcome.REQUESTED: "cancel requested: it stops at its next check",
        CancelOutcome.TERMINAL: "already finished",
        CancelOutcome.NOT_FOUND: "not found",
    }[result.outcome]
    return view.back(f"/ui/jobs/{job_id}", f"Job {job_id}: {told}")


@router.post("/jobs/{job_id}/retry")
async def retry_job(job_id: int, posted: Posted) -> Response:
    view, _ = posted
    view.require(Action.RETRY)
    view.own(await view.jobq.get(job_id))
    done = await view.jobq.requeue([job_id])
    told = "queued again" if done else "not failed or cancelled: nothing to retry"
    return view.back(f"/ui/jobs/{job_id}", f"Job {job_id}: {told}")


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
        tenant=view.identity.tenant,
        before_id=int(before) if before.isdigit() and 0 < int(before) < 2**63 else None,
        limit=PAGE_SIZE,
    )
    jobs = await view.jobq.list_jobs(params) if _no_nul(params) else []
    query = {k: v for k, v in shown.items() if v}
    older = urlencode({**query, "before": jobs[-1].id}) if len(jobs) == PAGE_SIZE else None
    return view.render("dead.html", jobs=jobs, shown=shown, older=older)


def _bulk_action(form: FormData) -> Action | None:
    chosen = form.get("action")
    return Action(chosen) if chosen in ("requeue", "discard") and isinstance(chosen, str) else None


def _ids(form: FormData) -> list[int]:
    values = form.getlist("ids")
    return sorted({int(v) for v in values if isinstance(v, str) and v.isdigit()})[:BULK_MAX]


@router.post("/dead/confirm")
async def confirm_dead(posted: Posted) -> Response:
    view, form = posted
    action = _bulk_action(form)
    if action is None:
        return view.back("/ui/dead", "Choose requeue or discard")
    view.require(action)
    ids = _ids(form)
    if not ids:
        return view.back("/ui/dead", "Select at least one job")
    return view.render("confirm.html", action=str(action), ids=ids)


@router.post("/dead/apply")
async def apply_dead(posted: Posted) -> Response:
    view, form = posted
    action = _bulk_action(form)
    if action is None:
        return view.back("/ui/dead", "Choose requeue or discard")
    view.require(action)
    ids = _ids(form)
    if view.identity.tenant is not None:
        ids = [i for i in ids if (await view.jobq.get(i)).tenant == view.identity.tenant]
    if action is Action.REQUEUE:
        done = await view.jobq.requeue(ids)
        return view.back("/ui/dead", f"Requeued {len(done)} of {len(ids)} jobs")
    done = await view.jobq.discard(ids)
    return view.back("/ui/dead", f"Discarded {len(done)} of {len(ids)} jobs")


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


@router.post("/queues/pause")
async def pause_by_name(posted: Posted) -> Response:
    view, form = posted
    view.require(Action.PAUSE)
    view.require_every_tenant()
    queue = form.get("queue")
    if not isinstance(queue, str) or not queue.strip():
        return view.back("/ui/queues", "Name the queue to pause")
    changed = await view.jobq.pause_queue(queue.strip())
    told = "paused" if changed else "was already paused"
    return view.back("/ui/queues", f"Queue {queue.strip()} {told}")


@router.post("/queues/{queue}/{verb}")
async def pause_or_resume(queue: str, verb: str, posted: Posted) -> Response:
    view, _ = posted
    view.require(Action.PAUSE)
    view.require_every_tenant()
    if verb == "pause":
        changed = await view.jobq.pause_queue(queue)
        told = "paused" if changed else "was already paused"
    elif verb == "resume":
        changed = await view.jobq.resume_queue(queue)
        told = "resumed" if changed else "was not paused"
    else:
        return view.back("/ui/queues", f"Unknown action {verb!r}")
    return view.back("/ui/queues", f"Queue {queue} {told}")


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


# ---------------------------------------------------------------------- formatting
def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

"""The dashboard's actions (every POST under ``/ui``): sign-in, and what changes jobs and
queues, each allowed by ``allowed_actions`` and carrying the session's CSRF token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from ..storage.base import CancelOutcome
from .auth import COOKIE, Action, Session
from .session import (
    DashboardState,
    Forbidden,
    Posted,
    session_of,
    set_session_cookie,
)

BULK_MAX = 1000  # most dead letters one confirmation acts on

router = APIRouter(prefix="/ui", include_in_schema=False)


# ---------------------------------------------------------------------- sign-in
@router.get("/login")
async def login_page(request: Request, next: str = "/ui") -> Response:
    state, session = session_of(request)
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
    state, session = session_of(request)
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


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: int, posted: Posted) -> Response:
    view, _ = posted
    view.require(Action.CANCEL)
    await view.job(job_id)
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
    await view.job(job_id)
    done = await view.jobq.requeue([job_id])
    told = "queued again" if done else "not failed or cancelled: nothing to retry"
    return view.back(f"/ui/jobs/{job_id}", f"Job {job_id}: {told}")


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
    access = view.identity.access
    if action is Action.REQUEUE:
        done = await view.jobq.requeue(ids, access=access)
        return view.back("/ui/dead", f"Requeued {len(done)} of {len(ids)} jobs")
    done = await view.jobq.discard(ids, access=access)
    return view.back("/ui/dead", f"Discarded {len(done)} of {len(ids)} jobs")


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

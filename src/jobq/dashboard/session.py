"""Each request's view of the dashboard: who is asking, their session, what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from ..app import JobQueue
from ..errors import JobNotFoundError
from ..model import Job
from ..storage.base import ListParams
from .auth import COOKIE, Action, DashboardAuth, Identity, Session, allowed_actions, can_view


@dataclass(slots=True)
class DashboardState:
    jobq: JobQueue
    auth: DashboardAuth
    templates: Jinja2Templates


class SignInRequired(Exception):
    """No identity in the session while keys are required: off to the sign-in page."""


class NotFound(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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

    async def list_jobs(self, params: ListParams) -> list[Job]:
        """A page of jobs this identity may see (a tenant-bound key: its tenant's only)."""
        if any("\x00" in (v or "") for v in (params.kind, params.queue, params.tenant)):
            return []  # a filter no stored name can match, and the databases refuse NUL
        return await self.jobq.list_jobs(params, access=self.identity.access)

    async def job(self, job_id: int) -> Job:
        """The job, if it exists and this identity may see it (a tenant-bound key: its
        tenant's only; another tenant's job is as absent as a purged one)."""
        try:
            return await self.jobq.get(job_id, access=self.identity.access)
        except JobNotFoundError:
            raise NotFound(f"No job {job_id}: it never was, or retention purged it.") from None


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


def session_of(request: Request) -> tuple[DashboardState, Session]:
    state: DashboardState = request.app.state.jobq_dashboard
    return state, state.auth.load(request.cookies.get(COOKIE))


async def current_view(request: Request) -> View:
    state, session = session_of(request)
    identity = await state.auth.identity_of(session)
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

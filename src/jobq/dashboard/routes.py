"""Mounting the dashboard on the API app: its pages, actions and static files at ``/ui``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import escape

from ..app import JobQueue
from ..model import JobStatus
from . import actions, pages
from .auth import DashboardAuth
from .session import DashboardState, Forbidden, NotFound, SignInRequired

HERE = Path(__file__).parent


def install_dashboard(app: FastAPI, jobq: JobQueue, auth: DashboardAuth | None = None) -> None:
    """Serve the dashboard at ``/ui`` (and a page linking to it at ``/``)."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["statuses"] = [str(s) for s in JobStatus]
    templates.env.filters["age"] = _age
    templates.env.filters["when"] = _when
    app.state.jobq_dashboard = DashboardState(jobq, auth or DashboardAuth(), templates)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.add_api_route("/", _landing, include_in_schema=False, response_class=HTMLResponse)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        target = urlencode({"next": request.url.path})
        return RedirectResponse(f"/ui/login?{target}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        message = exc.message if isinstance(exc, Forbidden) else "forbidden"
        return HTMLResponse(f"<!doctype html><title>Forbidden</title><p>{escape(message)}", 403)

    async def not_found(request: Request, exc: Exception) -> Response:
        message = exc.message if isinstance(exc, NotFound) else "not found"
        page = f'<!doctype html><title>Not found</title><p>{escape(message)} <a href="/ui">Back</a>'
        return HTMLResponse(page, 404)

    app.add_exception_handler(SignInRequired, sign_in_first)
    app.add_exception_handler(NotFound, not_found)
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

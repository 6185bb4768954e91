"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import json
import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Send

from ..errors import (
    ContentionError,
    DatabaseUnavailableError,
    InvalidJobError,
    JobNotFoundError,
    TenantMismatchError,
    TenantQuotaExceeded,
    UnknownTaskError,
    UnsupportedFeatureError,
)

log = structlog.get_logger("jobq.api")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_OUTAGE_S = 2


class Problem(BaseModel):
    """What went wrong, for a person to act on."""

    type: str = Field("about:blank", description="A URI naming the kind of problem")
    title: str = Field(description="Short summary of the kind of problem")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What happened here, and what to do about it")
    errors: list[dict[str, Any]] | None = Field(
        None, description="Per-field validation errors, when the input was invalid"
    )


class ProblemError(Exception):
    """Raised by route code to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def send_problem(
    send: Send, status: int, title: str, detail: str, *, close: bool = False
) -> None:
    """A problem answered by ASGI middleware, before any route runs; ``close``: the
    connection is not reused (the request's body was left unread)."""
    body = Problem(title=title, status=status, detail=detail).model_dump_json(exclude_none=True)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries so every error a route can return is in the spec."""
    titles = {
        400: "Bad request",
        401: "No valid API key (Authorization: Bearer <key>)",
        403: "The API key lacks the scope this needs, or acts for another tenant",
        404: "Not found",
        409: "Conflict",
        413: "Payload too large",
        415: "Unsupported media type",
        422: "Invalid input",
        429: "Too many requests",
        503: "Database unavailable",
    }
    return {
        status: {
            "model": Problem,
            "description": titles[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors()
    ]


def unreadable_body(request: Request, exc: RequestValidationError) -> str | None:
    """What to say when the body could not be read as JSON at all (rather than pydantic's
    "body.21: JSON decode error" or "Input should be a valid dictionary"); None when the
    body was read and its fields are what is wrong."""
    problems = exc.errors()
    body_errors = [e for e in problems if e["loc"] and e["loc"][0] == "body"]
    if not body_errors:
        return None
    first = body_errors[0]
    if first["type"] == "json_invalid":
        doc = exc.body if isinstance(exc.body, str) else ""
        position = first["loc"][1] if len(first["loc"]) > 1 else 0
        where = json.JSONDecodeError("", doc, position if isinstance(position, int) else 0)
        reason = first.get("ctx", {}).get("error", "not JSON")
        return (
            f"request body is not valid JSON: {reason} at line {where.lineno}, column {where.colno}"
        )
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    read_as_json = media_type == "application/json" or media_type.endswith("+json")
    # The body as a whole is wrong (not one of its fields): at ("body",), or at
    # ("body", <model>) for a union of models.
    whole = all(len(e["loc"]) <= 2 and e["type"] in _NOT_AN_OBJECT for e in body_errors)
    if not read_as_json and (whole or first["type"] == "missing"):
        sent = f"it was sent as {media_type!r}" if media_type else "it was sent without one"
        return f"the request body must be JSON, sent with `Content-Type: application/json` ({sent})"
    if first["type"] == "missing" and first["loc"] == ("body",):
        return "the request body is empty: send a JSON object"
    if whole:
        return "the request body must be a JSON object"
    return None


# pydantic's error types for a value that is not an object where a model or dict is asked.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, headers=exc.headers, errors=exc.errors
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        summary = unreadable_body(request, exc) or "; ".join(
            f"{e['field']}: {e['message']}" for e in errors[:5]
        )
        return problem_response(422, "Invalid input", summary, errors=errors)

    @app.exception_handler(InvalidJobError)
    async def _invalid_job(_: Request, exc: InvalidJobError) -> JSONResponse:
        return problem_response(422, "Invalid job", str(exc))

    @app.exception_handler(UnknownTaskError)
    async def _unknown_kind(_: Request, exc: UnknownTaskError) -> JSONResponse:
        return problem_response(422, "Unknown kind", str(exc))

    @app.exception_handler(TenantQuotaExceeded)
    async def _quota(_: Request, exc: TenantQuotaExceeded) -> JSONResponse:
        return problem_response(429, "Tenant quota reached", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(TenantMismatchError)
    async def _mismatch(_: Request, exc: TenantMismatchError) -> JSONResponse:
        return problem_response(403, "Forbidden", str(exc))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        # Nobody is left to answer; a client going away is routine, not a server error.
        log.info("client disconnected", method=request.method, path=request.url.path)
        return Response(status_code=499)

    @app.exception_handler(JobNotFoundError)
    async def _not_found(_: Request, exc: JobNotFoundError) -> JSONResponse:
        return problem_response(404, "Not found", str(exc))

    @app.exception_handler(UnsupportedFeatureError)
    async def _unsupported(_: Request, exc: UnsupportedFeatureError) -> JSONResponse:
        return problem_response(422, "Not supported by this database", str(exc))

    @app.exception_handler(ContentionError)
    async def _contention(_: Request, exc: ContentionError) -> JSONResponse:
        return problem_response(409, "Conflict", f"{exc}", headers={"Retry-After": "0"})

    @app.exception_handler(DatabaseUnavailableError)
    async def _outage(_: Request, exc: DatabaseUnavailableError) -> JSONResponse:
        # The driver's message (host names, file paths, server text) goes to the log only.
        log.warning("database unavailable", error=str(exc))
        return problem_response(
            503,
            "Database unavailable",
            "The queue's database cannot be reached right now; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path only.
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(exc.status_code, title, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the spec lists at this request's path (routes are included from
    several routers, so the spec is the one place that has them all)."""
    path = request.url.path
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    if path in paths:  # a literal path wins over templates (/jobs/bulk, not /jobs/{job_id})
        return sorted(method.upper() for method in paths[path])
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)

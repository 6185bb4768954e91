"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ContentionError,
    DatabaseUnavailableError,
    InvalidJobError,
    JobNotFoundError,
    TenantQuotaExceeded,
    UnsupportedFeatureError,
)

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


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries so every error a route can return is in the spec."""
    titles = {
        400: "Bad request",
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


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, headers=exc.headers, errors=exc.errors
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(422, "Invalid input", summary, errors=errors)

    @app.exception_handler(InvalidJobError)
    async def _invalid_job(_: Request, exc: InvalidJobError) -> JSONResponse:
        return problem_response(422, "Invalid job", str(exc))

    @app.exception_handler(TenantQuotaExceeded)
    async def _quota(_: Request, exc: TenantQuotaExceeded) -> JSONResponse:
        return problem_response(429, "Tenant quota reached", str(exc), headers={"Retry-After": "1"})

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
        return problem_response(
            503,
            "Database unavailable",
            f"The queue's database cannot be reached right now; retry shortly. ({exc})",
            headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem_response(
            exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None)
        )

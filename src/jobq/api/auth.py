"""Every endpoint's gate but /health's and /ready's: the caller's Access from its API key
(see authenticator.py), the scope the route needs, and the per-caller request rate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from ..access import OPEN, Access
from .problems import ProblemError
from .state import state_of


def caller_id(request: Request, access: Access | None) -> str:
    """Whom the rate limit and stream caps count against: the API key when there is one; a
    client-chosen X-Client-Id only when the API runs without keys; else the peer address."""
    if access is not None and access.key_id is not None:
        return f"key:{access.key_id}"
    peer = request.client.host if request.client else "unknown"
    if access is OPEN:
        return request.headers.get("x-client-id", "")[:128] or peer
    return f"addr:{peer}"


async def authorize(request: Request, response: Response, scope: str | None) -> Access:
    """The request's Access, once its key and rate are checked and it holds ``scope`` (None:
    no key needed, as for /health). Kept on the request for the access log."""
    state = state_of(request)
    if scope is None:
        check_rate(request, response, caller_id(request, None))
        return OPEN
    try:
        access = await state.auth.access_of(request.headers.get("authorization"))
    except ProblemError:
        check_rate(request, response, caller_id(request, None))
        raise
    check_rate(request, response, caller_id(request, access))
    if not access.allows(scope):
        raise ProblemError(403, "Forbidden", f"this API key lacks the scope {scope!r}")
    request.scope.setdefault("state", {})["access"] = access
    return access


def requires(scope: str | None) -> Callable[[Request, Response], Awaitable[Access]]:
    """A dependency answering the route's Access (see authorize)."""

    async def dependency(request: Request, response: Response) -> Access:
        return await authorize(request, response, scope)

    return dependency


def check_rate(request: Request, response: Response, client: str) -> None:
    """The caller's token bucket; 429 with Retry-After when it is empty."""
    state = state_of(request)
    limiter = state.rate_limiter
    if limiter is None:
        return
    decision = limiter.check(client)
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
    }
    response.headers.update(headers)
    if not decision.allowed:
        state.metrics.rate_limited.labels("client_rate").inc()
        raise ProblemError(
            429,
            "Too many requests",
            f"Client {client!r} is over its rate of {limiter.rate:g} requests/s; "
            f"retry after {decision.retry_after_s} s.",
            headers={**headers, "Retry-After": str(decision.retry_after_s)},
        )

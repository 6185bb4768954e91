"""What the routes share: the queue, settings, limits and metrics of one API app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ..app import JobQueue
from ..config import Settings
from ..observability.metrics import Metrics
from .authenticator import Authenticator
from .limits import DepthGate, RateLimiter, StreamSlots
from .quotas import TenantQuotas


@dataclass(slots=True)
class ApiState:
    jobq: JobQueue
    settings: Settings
    metrics: Metrics
    rate_limiter: RateLimiter | None
    depth_gate: DepthGate | None
    auth: Authenticator
    quotas: TenantQuotas
    streams: StreamSlots


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.jobq_api
    return state


async def api_state(request: Request) -> ApiState:
    """The state as a dependency (``Depends(api_state)``). The enqueue routes call
    ``state_of`` instead: each dependency FastAPI resolves costs tens of µs a request."""
    return state_of(request)


def request_id_of(request: Request) -> str:
    value: str = request.scope.get("state", {}).get("request_id", "")
    return value

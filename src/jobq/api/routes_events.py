"""Live job status as Server-Sent Events: ``GET /jobs/{job_id}/events``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from ..access import Access
from ..errors import DatabaseUnavailableError
from ..model import TERMINAL_STATUSES, Job
from .auth import caller_id
from .problems import problem_responses
from .routes_jobs import JobId, Reader, State, job_or_404
from .schemas import JobOut
from .state import ApiState

router = APIRouter(tags=["jobs"])

EVENT_STREAM = "text/event-stream"
CLOSING = "jobq_event_streams_closing"  # app.state flag set by end_event_streams
# Changes are found by reading the job again at this interval rather than by LISTEN/NOTIFY:
# polling works the same on PostgreSQL and SQLite, and sees changes made by any worker or API
# process, at the cost of one primary-key read per open stream per interval.
POLL_INTERVAL_S = 0.2
KEEPALIVE_S = 15.0  # a comment after this much silence, so proxies keep the connection open
RETRY_MS = 2000  # the reconnection delay suggested to EventSource clients
DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 3600.0
MIN_TIMEOUT_S = 0.1

EVENTS_DESCRIPTION = f"""\
A `text/event-stream` of the job's changes. The first event is the job as it is now; then
one event per change, until the job finishes or `timeout_s` passes, and the stream closes.

* `event: status`: status or attempt changed (also the first event, and the last, terminal
  one: `succeeded`, `failed` or `cancelled`, with `result` / `last_error`);
* `event: progress`: only the progress changed;
* `event: timeout`: `timeout_s` passed (or the server is stopping) before the job finished;
  reconnect to keep following.

Every event's `data` is the job as `GET /jobs/{{job_id}}` returns it (one line of JSON); `id`
counts the events of this stream from 1. The first event carries `retry: {RETRY_MS}`. A
`: keep-alive` comment is sent after {KEEPALIVE_S:g} s without events. A job that has already
finished gets its one terminal event. EventSource clients reconnect whenever a stream closes:
call `close()` on the terminal event.
"""


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["status", "progress", "timeout"]},
        "id": {"type": "string", "description": "Counts this stream's events from 1"},
        "retry": {"type": "integer", "minimum": 0, "description": "On the first event"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/JobOut"},
        },
    },
}


def end_event_streams(app: Starlette) -> None:
    """End every open event stream of ``app`` at its next poll, with a ``timeout`` event so
    that clients reconnect (to another process). For a server shutting down: uvicorn waits
    for open responses (up to its graceful-shutdown timeout, then cancels them) before the
    app's lifespan ends, so only its exit signal comes early enough to call this."""
    setattr(app.state, CLOSING, True)


def frame(event: str, job: Job, event_id: int, *, retry: bool = False) -> str:
    lines = [f"event: {event}", f"id: {event_id}"]
    if retry:
        lines.append(f"retry: {RETRY_MS}")
    # Pydantic escapes newlines inside strings: the JSON is one line, one data: field.
    lines.append(f"data: {JobOut.of(job).model_dump_json()}")
    return "\n".join(lines) + "\n\n"


def change_of(before: Job, after: Job) -> str | None:
    """The event a change calls for, or None when nothing a client follows changed."""
    if (after.status, after.attempt) != (before.status, before.attempt):
        return "status"
    if after.progress != before.progress:
        return "progress"
    return None


async def job_event_stream(
    first: Job,
    state: ApiState,
    request: Request,
    timeout_s: float,
    access: Access,
    release: Callable[[], None],
) -> AsyncIterator[str]:
    try:
        async for event in _events(first, state, request, timeout_s, access):
            yield event
    finally:
        release()


async def _events(
    first: Job, state: ApiState, request: Request, timeout_s: float, access: Access
) -> AsyncIterator[str]:
    ids = itertools.count(1)
    deadline = time.monotonic() + timeout_s
    job = first
    yield frame("status", job, next(ids), retry=True)
    quiet_since = time.monotonic()
    while job.status not in TERMINAL_STATUSES:
        now = time.monotonic()
        if now >= deadline or getattr(request.app.state, CLOSING, False):
            yield frame("timeout", job, next(ids))
            return
        # Servers on ASGI 2.3 (uvicorn) cancel this generator when the client goes; on 2.4
        # the disconnect would only surface at the next write, so look for it as well.
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(POLL_INTERVAL_S, deadline - now))
        try:
            latest = await state.jobq.find(job.id, access=access)
        except DatabaseUnavailableError:
            latest = job  # an outage: keep the stream, try again next round
        if latest is None:  # purged: nothing more to follow (a reconnect gets 404)
            return
        event = change_of(job, latest)
        job = latest
        if event is not None:
            yield frame(event, job, next(ids))
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()


@router.get(
    "/jobs/{job_id}/events",
    # A class without a media type: with one, FastAPI would add `schema: {type: string}`
    # next to itemSchema, which reads as the schema of the whole stream.
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The job's status and progress as Server-Sent Events",
            "content": {
                EVENT_STREAM: {
                    # The schema of one event (itemSchema, as in OpenAPI 3.2 and FastAPI's
                    # own SSE routes); checkers such as schemathesis validate each event, and
                    # its JSON data against JobOut.
                    "itemSchema": EVENT_SCHEMA,
                    "example": (
                        "event: status\nid: 1\nretry: 2000\n"
                        'data: {"id":42,"status":"running","progress":null,...}\n\n'
                        'event: progress\nid: 2\ndata: {"id":42,"progress":{"done":5},...}\n\n'
                        'event: status\nid: 3\ndata: {"id":42,"status":"succeeded",...}\n\n'
                    ),
                }
            },
        },
        **problem_responses(404, 422, 429, 503),
    },
    summary="Follow a job's status and progress (Server-Sent Events)",
    description=EVENTS_DESCRIPTION,
)
async def job_events(
    job_id: JobId,
    request: Request,
    state: State,
    access: Reader,
    timeout_s: Annotated[
        float,
        Query(
            ge=MIN_TIMEOUT_S,
            le=MAX_TIMEOUT_S,
            description="Close the stream with a `timeout` event after this many seconds",
        ),
    ] = DEFAULT_TIMEOUT_S,
) -> StreamingResponse:
    job = await job_or_404(state, job_id, access)  # before the stream: a plain 404 problem
    release = state.streams.acquire(caller_id(request, access))
    # Given back when the stream ends, or else once the response is over (a stream that
    # never started iterating runs no finally of its own).
    return StreamingResponse(
        job_event_stream(job, state, request, timeout_s, access, release),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),
    )

"""GET /jobs/{job_id}/events: live job status as Server-Sent Events, on both drivers.

httpx's in-process ASGITransport hands back a response only once the app has finished it, so
streams that end by themselves (a finished job, a timeout) use the ``client`` fixture, and
streams the test drives while they are open go through a real uvicorn server on this loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from jobq import JobQueue, Settings
from jobq.api import create_app, routes_events
from jobq.api.routes_events import end_event_streams
from jobq.storage.base import ClaimParams, Completion, Driver, Failure

from ..waiting import eventually
from .test_jobs import assert_problem

EVENT_TIMEOUT_S = 15.0  # the deadline for each awaited event: a bound, never a wait


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    id: str | None
    retry: int | None
    data: dict[str, Any]


class SseParser:
    """The text/event-stream format, as much of it as this endpoint uses: fields up to a
    blank line make an event; lines starting with ':' are comments."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.comments: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        if line:
            name, _, value = line.partition(":")
            self.fields[name] = value.removeprefix(" ")
            return None
        if not self.fields:
            return None
        fields, self.fields = self.fields, {}
        retry = fields.get("retry")
        return Event(
            name=fields.get("event", "message"),
            id=fields.get("id"),
            retry=int(retry) if retry is not None else None,
            data=json.loads(fields["data"]),
        )

    def parse(self, lines: Iterable[str]) -> list[Event]:
        return [event for line in lines if (event := self.feed(line)) is not None]


def events_of(response: httpx.Response) -> list[Event]:
    """Every event of a stream that has ended."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    return SseParser().parse(response.text.splitlines())


async def stream_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of an open stream as they arrive; ends when the server closes it."""
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    parser = SseParser()
    async for line in response.aiter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event


async def next_event(events: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)


async def assert_closed(events: AsyncIterator[Event]) -> None:
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class Served:
    http: httpx.AsyncClient
    driver: Driver
    app: FastAPI


@pytest.fixture
async def served(db_url: str) -> AsyncIterator[Served]:
    """The app under a real uvicorn server on this event loop, and an HTTP client to it.
    (While it serves, uvicorn holds SIGINT and SIGTERM; it raises them again once stopped.)"""
    jq = JobQueue(settings=Settings(database_url=db_url, simulated_time_scale=0.0))
    app = create_app(jq)
    config = uvicorn.Config(app, lifespan="on", log_config=None, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    async def up() -> bool:
        return server.started or serving.done()

    try:
        await eventually(up, what="uvicorn to start")
        if serving.done():
            serving.result()  # raises what stopped it
        host, port = sock.getsockname()
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as http:
            yield Served(http, jq.driver, app)
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def enqueue(http: httpx.AsyncClient, **fields: Any) -> int:
    r = await http.post("/jobs", json={"kind": "send_email", **fields})
    assert r.status_code == 201, r.text
    job_id: int = r.json()["id"]
    return job_id


async def test_a_stream_follows_a_job_to_success(served: Served) -> None:
    http, driver = served.http, served.driver
    job_id = await enqueue(http)
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        events = stream_events(response)
        first = await next_event(events)
        assert (first.name, first.id, first.retry) == ("status", "1", 2000)
        assert first.data["id"] == job_id and first.data["status"] == "queued"

        (claimed,) = await driver.claim_batch(ClaimParams("test-worker", limit=1))
        running = await next_event(events)
        assert (running.name, running.data["status"], running.data["attempt"]) == (
            "status",
            "running",
            1,
        )

        assert await driver.set_progress(job_id, claimed.attempt, {"done": 1, "total": 2})
        progress = await next_event(events)
        assert progress.name == "progress" and progress.data["status"] == "running"
        assert progress.data["progress"] == {"done": 1, "total": 2}

        await driver.complete_many([Completion(job_id, claimed.attempt, {"sent": 1})])
        done = await next_event(events)
        assert done.name == "status" and done.data["status"] == "succeeded"
        assert done.data["result"] == {"sent": 1}
        assert done.data["progress"] == {"done": 1, "total": 2}
        await assert_closed(events)
    assert [e.id for e in (first, running, progress, done)] == ["1", "2", "3", "4"]


async def test_attempts_retries_and_failure_are_status_events(served: Served) -> None:
    http, driver = served.http, served.driver
    job_id = await enqueue(http, max_attempts=2)
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        events = stream_events(response)
        assert (await next_event(events)).data["status"] == "queued"
        seen: list[tuple[str, str, int]] = []
        for retry_in_s in (0.0, None):  # the first failure is retried, the second is final
            (claimed,) = await driver.claim_batch(ClaimParams("test-worker", limit=1))
            event = await next_event(events)
            seen.append((event.name, event.data["status"], event.data["attempt"]))
            failure = Failure(job_id, claimed.attempt, f"boom {claimed.attempt}", None, retry_in_s)
            await driver.fail_many([failure])
            event = await next_event(events)
            seen.append((event.name, event.data["status"], event.data["attempt"]))
        assert seen == [
            ("status", "running", 1),
            ("status", "retrying", 1),
            ("status", "running", 2),
            ("status", "failed", 2),
        ]
        assert event.data["last_error"] == "boom 2"
        await assert_closed(events)


async def test_cancelling_a_queued_job_ends_its_stream(served: Served) -> None:
    http = served.http
    job_id = await enqueue(http)
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        events = stream_events(response)
        assert (await next_event(events)).data["status"] == "queued"
        assert (await http.post(f"/jobs/{job_id}/cancel")).status_code == 200
        cancelled = await next_event(events)
        assert (cancelled.name, cancelled.data["status"]) == ("status", "cancelled")
        await assert_closed(events)


async def test_a_client_that_goes_away_ends_the_stream_on_the_server(served: Served) -> None:
    http = served.http
    job_id = await enqueue(http)
    # The middleware counts a request once the app has finished it.
    finished = 'jobq_http_requests_total{method="GET",route="/jobs/{job_id}/events",status="200"}'

    async def counted() -> bool:
        metrics = (await http.get("/metrics")).text
        return any(line.startswith(f"{finished} 1") for line in metrics.splitlines())

    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        # Held in a name: a dropped iterator, finalized, would close the connection itself.
        events = stream_events(response)
        assert (await next_event(events)).data["status"] == "queued"
        assert not await counted()
    # The job stays queued (its stream would run 300 s): the request ends on the server only
    # because the disconnect stopped it.
    await eventually(counted, what="the server to end the abandoned stream")


async def test_streams_end_with_a_timeout_event_when_the_server_stops(served: Served) -> None:
    job_id = await enqueue(served.http)
    async with served.http.stream("GET", f"/jobs/{job_id}/events") as response:
        events = stream_events(response)
        assert (await next_event(events)).data["status"] == "queued"
        end_event_streams(served.app)  # what a server on its way down calls
        last = await next_event(events)
        assert (last.name, last.id, last.data["status"]) == ("timeout", "2", "queued")
        await assert_closed(events)


async def test_unknown_job_is_a_404_problem_before_any_stream(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/jobs/424242/events"), 404, "424242")
    job_id = await enqueue(client)
    for bad in ("0", "0.01", "3601", "soon"):
        r = await client.get(f"/jobs/{job_id}/events", params={"timeout_s": bad})
        assert_problem(r, 422, "timeout_s")
    assert_problem(await client.get("/jobs/0/events"), 422)


async def test_a_finished_job_gives_its_one_terminal_event(client: httpx.AsyncClient) -> None:
    driver = client.jobq.driver  # type: ignore[attr-defined]
    ok, bad, dropped = [await enqueue(client, max_attempts=1) for _ in range(3)]
    first, second = await driver.claim_batch(ClaimParams("test-worker", limit=2))
    assert {first.id, second.id} == {ok, bad}
    by_id = {first.id: first, second.id: second}
    await driver.complete_many([Completion(ok, by_id[ok].attempt, [1, 2])])
    await driver.fail_many([Failure(bad, by_id[bad].attempt, "no such mailbox", None, None)])
    assert (await client.post(f"/jobs/{dropped}/cancel")).status_code == 200

    expected: dict[int, tuple[str, str, Any]] = {
        ok: ("succeeded", "result", [1, 2]),
        bad: ("failed", "last_error", "no such mailbox"),
        dropped: ("cancelled", "status", "cancelled"),
    }
    for job_id, (status, field, value) in expected.items():
        events = events_of(await client.get(f"/jobs/{job_id}/events"))
        assert len(events) == 1, events
        (only,) = events
        assert (only.name, only.id, only.retry) == ("status", "1", 2000)
        assert only.data["status"] == status and only.data[field] == value


async def test_a_stream_times_out_with_a_timeout_event(client: httpx.AsyncClient) -> None:
    job_id = await enqueue(client)
    response = await client.get(f"/jobs/{job_id}/events", params={"timeout_s": 0.1})
    events = events_of(response)
    assert [(e.name, e.id, e.data["status"]) for e in events] == [
        ("status", "1", "queued"),
        ("timeout", "2", "queued"),
    ]


async def test_silence_is_filled_with_keep_alive_comments(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_events, "KEEPALIVE_S", 0.0)  # after every quiet poll
    job_id = await enqueue(client)
    response = await client.get(f"/jobs/{job_id}/events", params={"timeout_s": 0.5})
    parser = SseParser()
    events = parser.parse(response.text.splitlines())
    assert [e.name for e in events] == ["status", "timeout"]
    assert parser.comments and set(parser.comments) == {"keep-alive"}

"""The browser and the network (Host, Origin, simple requests), and the limits that keep
one caller from exhausting the API: rates and quotas, list sizes, event streams, slow
bodies, results, metrics labels; and bad input."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
import uvicorn
from fastapi import FastAPI

from jobq import JobQueue, Settings
from jobq.api import create_app
from jobq.observability.metrics import Metrics
from jobq.worker.simulated import register_demo_tasks

from ..conftest import run_async
from ..waiting import eventually
from .conftest import ClientFactory


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# ------------------------------------------------------------------ Host and Origin


async def test_a_foreign_host_is_refused(client: httpx.AsyncClient) -> None:
    """DNS rebinding: the page's own name arrives as Host."""
    response = await client.get("/jobs", headers={"Host": "attacker.example"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert (await client.get("/jobs", headers={"Host": host})).status_code == 200


async def test_allowed_hosts_setting(make_client: ClientFactory) -> None:
    client = await make_client(allowed_hosts="jobq.internal")
    assert (await client.get("/jobs", headers={"Host": "jobq.internal"})).status_code == 200
    assert (await client.get("/jobs")).status_code == 400  # localhost is not on the list now


@pytest.mark.parametrize(
    "request_args",
    [
        {"method": "POST", "url": "/jobs/1/cancel"},  # a body-less simple request
        {"method": "GET", "url": "/jobs"},
        {
            "method": "POST",
            "url": "/jobs/bulk",
            "files": {"file": ("j.json", b'[{"kind": "send_email"}]', "application/json")},
        },
    ],
    ids=["cancel", "list", "multipart bulk"],
)
async def test_a_foreign_origin_is_refused(
    client: httpx.AsyncClient, request_args: dict[str, Any]
) -> None:
    await client.post("/jobs", json={"kind": "send_email"})
    response = await client.request(**request_args, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    jobs = (await client.get("/jobs")).json()["items"]
    assert [j["status"] for j in jobs] == ["queued"]  # nothing cancelled, nothing added


async def test_the_apis_own_pages_and_allowed_origins_pass(make_client: ClientFactory) -> None:
    client = await make_client(allowed_origins="https://ops.example")
    own = await client.post(
        "/jobs", json={"kind": "send_email"}, headers={"Origin": "http://localhost"}
    )
    assert own.status_code == 201  # Swagger UI at /docs sends the API's own origin
    allowed = await client.get("/jobs", headers={"Origin": "https://ops.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
    no_cors = await (await make_client()).get("/jobs", headers={"Origin": "http://localhost"})
    assert "access-control-allow-origin" not in no_cors.headers  # CORS is off by default


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_form_bodies_are_refused_on_state_changes(
    client: httpx.AsyncClient, content_type: str
) -> None:
    """What an HTML form or a CORS-exempt fetch would send."""
    response = await client.post(
        "/jobs", content=b'{"kind": "send_email"}', headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert (await client.get("/jobs")).json()["items"] == []


# ------------------------------------------------------------------ rates and quotas


async def test_the_rate_limit_follows_the_key_not_x_client_id(make_client: ClientFactory) -> None:
    client = await make_client(rate_limit_per_s=0.001, rate_limit_burst=2, auth_cache_s=0.0)
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    _, secret = await jq.create_api_key(tenant="acme", scopes=["jobs:read"])
    statuses = [
        (await client.get("/jobs", headers={**bearer(secret), "X-Client-Id": f"c{n}"})).status_code
        for n in range(3)
    ]
    assert statuses == [200, 200, 429]  # a GET counts, and a new X-Client-Id resets nothing


async def test_tenant_enqueue_rate_quota(make_client: ClientFactory) -> None:
    client = await make_client(tenant_enqueue_per_s=0.2)  # bursts of 10 s worth: 2 jobs
    body = {"kind": "send_email", "tenant": "acme"}
    assert [(await client.post("/jobs", json=body)).status_code for _ in range(2)] == [201, 201]
    refused = await client.post("/jobs", json=body)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    other = await client.post("/jobs", json={**body, "tenant": "globex"})
    assert other.status_code == 201  # per tenant
    bulk = await client.post("/jobs/bulk", json=[{**body, "tenant": "globex"}, body])
    assert bulk.status_code == 429  # a bulk request counts each item's tenant
    assert len((await client.get("/jobs")).json()["items"]) == 3
    alone = await client.post("/jobs", json={**body, "tenant": "globex"})
    assert alone.status_code == 201  # the refused bulk took nothing from globex


async def test_tenant_payload_bytes_quota(make_client: ClientFactory) -> None:
    client = await make_client(tenant_payload_bytes_per_s=100.0, max_payload_bytes=1500)
    big = {"kind": "send_email", "tenant": "acme", "payload": {"blob": "x" * 1000}}
    assert (await client.post("/jobs", json=big)).status_code == 201
    refused = await client.post("/jobs", json=big)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "JOBQ_TENANT_PAYLOAD_BYTES_PER_S" in refused.json()["detail"]


# ------------------------------------------------------------------ bounded answers


async def test_lists_leave_payloads_out_unless_asked(make_client: ClientFactory) -> None:
    client = await make_client(max_list_bytes=250_000)
    blob = "y" * 100_000
    for n in range(5):
        await client.post("/jobs", json={"kind": "send_email", "payload": {"n": n, "b": blob}})
    lean = await client.get("/jobs", params={"limit": 1000})
    assert len(lean.json()["items"]) == 5
    assert len(lean.content) < 20_000  # no payloads in it
    assert all(j["payload"] is None for j in lean.json()["items"])
    seen: list[int] = []
    cursor = None
    while True:
        params = {"include": "payload", "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/jobs", params=params)).json()
        assert len(page["items"]) <= 3  # the page ends past max_list_bytes
        seen += [j["payload"]["n"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1, 0]


async def test_a_result_over_the_limit_fails_its_job_once(db_url: str) -> None:
    jq = JobQueue(settings=Settings(database_url=db_url, max_result_bytes=10_000))

    @jq.task(max_attempts=3)
    async def big(ctx: Any) -> str:
        return "z" * 50_000

    @jq.task
    async def small(ctx: Any) -> str:
        return "ok"

    try:
        job = await big.defer()
        after = await small.defer()
        await jq.run_worker(burst=True)
        done = await jq.get(job.id)
        assert str(done.status) == "failed" and done.attempt == 1
        assert done.result is None and "JOBQ_MAX_RESULT_BYTES" in (done.last_error or "")
        assert (await jq.get(after.id)).result == "ok"  # the worker carried on
    finally:
        await jq.close()


async def test_metrics_labels_only_known_kinds_and_queues(db_url: str) -> None:
    settings = Settings(database_url=db_url, simulated_time_scale=0.0)
    jq = JobQueue(settings=settings)
    register_demo_tasks(jq)
    metrics = Metrics()
    app = create_app(jq, metrics=metrics)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        made_up = [{"kind": f"k{n}", "queue": f"q{n}", "max_attempts": 1} for n in range(300)]
        assert (await client.post("/jobs/bulk", json=made_up)).json()["created"] == 300
        await jq.run_worker(burst=True, metrics=metrics)
        text = (await client.get("/metrics")).text
    # Only the database-read gauge names each queue (cleared at every scrape).
    series = [line for line in text.splitlines() if not line.startswith("jobq_queue_jobs")]
    assert not [line for line in series if 'kind="k' in line or 'queue="q' in line]
    assert 'jobq_worker_jobs_finished_total{kind="other",outcome="failed"} 300.0' in text
    assert 'jobq_jobs_enqueued_total{queue="other"} 300.0' in text


# ------------------------------------------------------------------ a real server


@pytest.fixture
async def served(sqlite_url: str) -> AsyncIterator[tuple[str, FastAPI]]:
    """The app under uvicorn on this loop (streams and slow bodies need a real server)."""
    settings = Settings(
        database_url=sqlite_url,
        max_event_streams=2,
        max_event_streams_per_client=1,
        body_read_timeout_s=0.5,
    )
    jq = JobQueue(settings=settings)
    app = create_app(jq)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    async def up() -> bool:
        return server.started or serving.done()

    try:
        await eventually(up, what="uvicorn to start")
        host, port = sock.getsockname()
        yield f"http://{host}:{port}", app
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def test_event_streams_are_capped(served: tuple[str, FastAPI]) -> None:
    base, _ = served
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        job = (await http.post("/jobs", json={"kind": "k"})).json()["id"]
        url = f"/jobs/{job}/events?timeout_s=30"
        async with http.stream("GET", url, headers={"X-Client-Id": "a"}) as first:
            assert first.status_code == 200
            again = await http.get(url, headers={"X-Client-Id": "a"})
            assert again.status_code == 429  # one stream per client
            async with http.stream("GET", url, headers={"X-Client-Id": "b"}) as second:
                assert second.status_code == 200
                full = await http.get(url, headers={"X-Client-Id": "c"})
                assert full.status_code == 503  # two streams in all
        await http.post(f"/jobs/{job}/cancel")  # a stream would close on the terminal event

        async def slot_free() -> bool:
            r = await http.get(url.replace("30", "0.1"), headers={"X-Client-Id": "a"})
            return r.status_code == 200

        await eventually(slot_free, what="the slots to be given back")


async def test_a_trickling_body_is_cut_off(served: tuple[str, FastAPI]) -> None:
    base, _ = served
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    # The server answers on its own (JOBQ_BODY_READ_TIMEOUT_S) and closes the connection.
    answer = await asyncio.wait_for(reader.read(), timeout=20)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")


async def test_a_client_going_away_is_one_info_line(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs/bulk",
        "raw_path": b"/jobs/bulk",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    with structlog.testing.capture_logs() as logs:
        await app(scope, receive, send)
    gone = [e for e in logs if e["event"] == "client disconnected"]
    assert len(gone) == 1 and gone[0]["log_level"] == "info"
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


# ------------------------------------------------------------------ bad input, hygiene


@pytest.mark.parametrize("number", [b"NaN", b"1e400", b"-Infinity"])
async def test_non_finite_numbers_are_refused(client: httpx.AsyncClient, number: bytes) -> None:
    body = b'{"kind": "send_email", "payload": {"x": ' + number + b"}}"
    response = await client.post(
        "/jobs", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    bulk = b'[{"kind": "send_email", "payload": {"x": 1e400}}]'
    refused = await client.post(
        "/jobs/bulk", content=bulk, headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 422
    assert (await client.get("/jobs")).json()["items"] == []


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


async def test_an_exception_whose_str_raises_fails_its_attempt(db_url: str) -> None:
    jq = JobQueue(settings=Settings(database_url=db_url))

    @jq.task(max_attempts=1)
    async def awkward(ctx: Any) -> None:
        raise Unprintable()

    @jq.task
    async def fine(ctx: Any) -> str:
        return "ok"

    try:
        job = await awkward.defer()
        after = await fine.defer()
        await asyncio.wait_for(jq.run_worker(burst=True, concurrency=1), timeout=60)
        failed = await jq.get(job.id)
        assert str(failed.status) == "failed" and failed.attempt == 1
        assert (failed.last_error or "").startswith("Unprintable: (str() failed)")
        assert (await jq.get(after.id)).result == "ok"
    finally:
        await jq.close()


def test_sqlite_files_are_created_private(tmp_path: Path) -> None:
    async def use(url: str) -> None:
        jq = JobQueue(url)
        await jq.migrate()
        await jq.enqueue("k")
        await jq.close()

    old = os.umask(0o022)
    try:
        run_async(lambda: use(f"sqlite:///{tmp_path / 'new.db'}"))
    finally:
        os.umask(old)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_503_does_not_carry_the_drivers_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    secret_path = blocker / "sub" / "jobq.db"  # under a file: it cannot be created
    app = create_app(JobQueue(f"sqlite:///{secret_path}"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as client:
        response = await client.get("/jobs")
    assert response.status_code == 503
    assert str(blocker) not in response.text and "sub" not in response.json()["detail"]


async def test_admin_actions_are_logged_with_the_key_id(make_client: ClientFactory) -> None:
    client = await make_client()
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    key, secret = await jq.create_api_key(tenant="acme", scopes=["jobs:write", "jobs:manage"])
    job = (await client.post("/jobs", json={"kind": "send_email"}, headers=bearer(secret))).json()
    with structlog.testing.capture_logs() as logs:
        await client.post(f"/jobs/{job['id']}/cancel", headers=bearer(secret))
        await client.post(f"/jobs/{job['id']}/retry", headers=bearer(secret))
        await client.post("/dlq/requeue", json={"ids": [job["id"]]}, headers=bearer(secret))
    actions = [(e["action"], e["key_id"]) for e in logs if e["event"] == "admin action"]
    assert actions == [("cancel", key.id), ("retry", key.id), ("requeue", key.id)]


# ------------------------------------------------------------------ spec mismatches


async def test_spec_mismatches_found_by_the_fuzzer(client: httpx.AsyncClient) -> None:
    bulk_get = await client.get("/jobs/bulk")
    assert bulk_get.status_code == 405 and bulk_get.headers["allow"] == "POST"
    options = await client.options("/jobs")
    assert options.status_code == 405 and options.headers["allow"] == "GET, POST"
    number = await client.get("/jobs", params={"created_before": "0.5"})
    assert number.status_code == 422
    spec = (await client.get("/api-docs/openapi.json")).json()
    assert "400" in spec["paths"]["/dlq/requeue"]["post"]["responses"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["paths"]["/jobs"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    bulk_body = spec["paths"]["/jobs/bulk"]["post"]["requestBody"]["content"]
    assert "$ref" not in orjson.dumps(bulk_body).decode()  # any item: bad ones are reported


@pytest.mark.parametrize("field", ["priority", "max_attempts", "delay_s"])
async def test_booleans_are_not_numbers(client: httpx.AsyncClient, field: str) -> None:
    response = await client.post("/jobs", json={"kind": "send_email", field: True})
    assert response.status_code == 422
    requeue = await client.post("/dlq/requeue", json={"ids": [True]})
    assert requeue.status_code == 422
    whole = await client.post("/dlq/requeue", json={"ids": [2.0]})
    assert whole.status_code == 200  # 2.0 is the integer 2, as JSON Schema has it


async def test_bulk_memory_is_proportional_to_the_body(client: httpx.AsyncClient) -> None:
    """The peak a bulk request adds stays a small multiple of its body (the parsed items
    and the body itself); the parser used before peaked at 13 times the body."""
    items = [{"kind": "send_email", "payload": {"n": n, "text": "x" * 1000}} for n in range(2000)]
    body = orjson.dumps(items)
    del items
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        response = await client.post(
            "/jobs/bulk", content=body, headers={"Content-Type": "application/json"}
        )
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert response.json()["created"] == 2000
    assert peak < 6 * len(body), f"peak {peak} for a body of {len(body)} bytes"


async def test_a_multipart_file_is_an_array_of_objects(client: httpx.AsyncClient) -> None:
    """As the spec declares it (a JSON body's items are reported one by one instead)."""
    files = {"file": ("j.json", b'[{"kind": "send_email"}, 1]', "application/json")}
    response = await client.post("/jobs/bulk", files=files)
    assert response.status_code == 422
    assert (await client.get("/jobs")).json()["items"] == []

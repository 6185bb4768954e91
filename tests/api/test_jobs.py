"""Every endpoint and status code of the jobs API, on both drivers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx

from jobq import JobQueue
from jobq.storage.base import ClaimParams, Failure

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, text: str = "") -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert text in str(body["detail"]), body
    return body


async def test_create_returns_201_with_location_and_request_id(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/jobs",
        json={"kind": "send_email", "payload": {"to": "a@b.c"}, "priority": 3},
        headers={"X-Request-ID": "trace-123"},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert r.headers["x-request-id"] == "trace-123"
    assert (job["kind"], job["status"], job["priority"], job["attempt"]) == (
        "send_email",
        "queued",
        3,
        0,
    )
    assert job["request_id"] == "trace-123"
    got = await client.get(f"/jobs/{job['id']}")
    assert got.status_code == 200 and got.json()["payload"] == {"to": "a@b.c"}


async def test_request_id_is_generated_when_absent(client: httpx.AsyncClient) -> None:
    r = await client.post("/jobs", json={"kind": "send_email"})
    assert len(r.headers["x-request-id"]) == 32
    assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_delay_and_run_at_schedule_the_job(client: httpx.AsyncClient) -> None:
    r = await client.post("/jobs", json={"kind": "send_email", "delay_s": 3600})
    run_at = datetime.fromisoformat(r.json()["run_at"])
    assert run_at > datetime.now(UTC) + timedelta(minutes=59)
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = await client.post("/jobs", json={"kind": "send_email", "run_at": when})
    assert r.status_code == 201
    both = {"kind": "send_email", "run_at": when, "delay_s": 5}
    assert_problem(await client.post("/jobs", json=both), 422, "not both")
    naive = {"kind": "send_email", "run_at": "2030-01-01T00:00:00"}
    assert_problem(await client.post("/jobs", json=naive), 422)


async def test_idempotent_replay_and_key_reuse(client: httpx.AsyncClient) -> None:
    body = {"kind": "send_email", "payload": {"to": "x"}}
    first = await client.post("/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    replay = await client.post("/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    other = {"kind": "send_email", "payload": {"to": "y"}}
    assert_problem(
        await client.post("/jobs", json=other, headers={"Idempotency-Key": "k-1"}), 422, "k-1"
    )
    listed = (await client.get("/jobs")).json()["items"]
    assert len(listed) == 1


async def test_idempotency_header_wins_over_body_field(client: httpx.AsyncClient) -> None:
    body = {"kind": "send_email", "idempotency_key": "from-body"}
    r = await client.post("/jobs", json=body, headers={"Idempotency-Key": "from-header"})
    assert r.json()["idempotency_key"] == "from-header"
    again = await client.post("/jobs", json=body)  # the body key alone is a new key
    assert again.status_code == 201 and again.json()["id"] != r.json()["id"]


async def test_a_bad_idempotency_header_gets_422_naming_it(client: httpx.AsyncClient) -> None:
    body = {"kind": "send_email"}
    for key, message in (
        ("", "String should have at least 1 character"),
        ("k" * 256, "String should have at most 255 characters"),
    ):
        problem = assert_problem(
            await client.post("/jobs", json=body, headers={"Idempotency-Key": key}), 422
        )
        assert problem["errors"] == [{"field": "header.Idempotency-Key", "message": message}]
    assert (await client.get("/jobs")).json()["items"] == []
    ok = await client.post("/jobs", json=body, headers={"Idempotency-Key": "k" * 255})
    assert ok.status_code == 201 and ok.json()["idempotency_key"] == "k" * 255


async def test_the_enqueue_route_documents_its_idempotency_header(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/api-docs/openapi.json")).json()
    assert spec["paths"]["/jobs"]["post"]["parameters"] == [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {
                "anyOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "null"}],
                "title": "Idempotency-Key",
            },
        }
    ]


async def test_concurrent_requests_with_one_key_make_one_job(client: httpx.AsyncClient) -> None:
    body = {"kind": "send_email", "payload": {"n": 1}}
    responses = await asyncio.gather(
        *(client.post("/jobs", json=body, headers={"Idempotency-Key": "race"}) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_invalid_fields_get_422_and_change_nothing(client: httpx.AsyncClient) -> None:
    cases = [
        {"payload": {}},  # no kind
        {"kind": "send_email", "priority": 5000},
        {"kind": "send_email", "payload": [1, 2]},
        {"kind": "send_email", "max_attempts": 0},
        {"kind": "bad kind with spaces"},
        {"kind": "send_email", "unknown_field": 1},
        {"kind": "send_email", "delay_s": -1},
    ]
    for body in cases:
        problem = assert_problem(await client.post("/jobs", json=body), 422)
        assert problem["errors"], body
    assert_problem(
        await client.post(
            "/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    assert (await client.get("/jobs")).json()["items"] == []


async def test_nul_characters_are_refused_on_every_database(client: httpx.AsyncClient) -> None:
    """PostgreSQL cannot store U+0000; both databases refuse it with 422, not a 500."""
    bodies = [
        ({"kind": "send_email", "payload": {"to": "a\x00b"}}, "U+0000"),
        ({"kind": "send_email", "payload": {"nested": [{"k\x00": 1}]}}, "U+0000"),
        ({"kind": "send_email", "tenant": "t\x00"}, "tenant"),
    ]
    for body, complaint in bodies:
        assert_problem(await client.post("/jobs", json=body), 422, complaint)
        bulk = (await client.post("/jobs/bulk", json=[body, {"kind": "send_email"}])).json()
        assert bulk["created"] == 1 and [e["index"] for e in bulk["errors"]] == [0]
    # A backslash followed by "u0000" is ordinary text.
    ok = await client.post("/jobs", json={"kind": "send_email", "payload": {"a": "\\u0000"}})
    assert ok.status_code == 201 and ok.json()["payload"] == {"a": "\\u0000"}
    # Nor in a listing's filters, where PostgreSQL would fail on it (a 500 before).
    for path in ("/jobs", "/dlq"):
        for name in ("kind", "queue"):
            assert_problem(await client.get(path, params={name: "a\x00"}), 422)


async def test_a_run_at_beyond_the_storable_years_is_moved_to_their_edge(
    client: httpx.AsyncClient,
) -> None:
    """As the schema says: before 0001-01-02 or after 9999-12-30 (UTC) means the same as
    those days. Stored as given, such a time (0000-12-31 in UTC) could not be read back."""
    for given, stored in [
        ("0001-01-01T00:00:00+05:00", datetime(1, 1, 2, tzinfo=UTC)),
        ("9999-12-31T23:00:00-05:00", datetime(9999, 12, 30, tzinfo=UTC)),
    ]:
        r = await client.post("/jobs", json={"kind": "send_email", "run_at": given})
        assert r.status_code == 201, r.text
        assert datetime.fromisoformat(r.json()["run_at"]) == stored
    listed = await client.get("/jobs")
    assert listed.status_code == 200 and len(listed.json()["items"]) == 2


async def test_payload_over_the_limit_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_payload_bytes=100)
    r = await client.post("/jobs", json={"kind": "send_email", "payload": {"x": "y" * 200}})
    assert_problem(r, 413, "JOBQ_MAX_PAYLOAD_BYTES")
    assert (await client.get("/jobs")).json()["items"] == []


async def test_body_over_the_request_limit_is_413_before_buffering(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_request_bytes=1000)
    big = json.dumps({"kind": "send_email", "payload": {"x": "y" * 5000}}).encode()
    declared = await client.post("/jobs", content=big, headers={"content-type": "application/json"})
    assert_problem(declared, 413, "1000 bytes")

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await client.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413)
    assert (await client.get("/jobs")).json()["items"] == []


async def test_get_unknown_and_bad_ids(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/jobs/999999"), 404, "999999")
    assert_problem(await client.get("/jobs/abc"), 422)
    assert_problem(await client.get("/jobs/0"), 422)
    assert_problem(await client.get(f"/jobs/{2**70}"), 422)
    assert_problem(await client.get("/jobs/999999/errors"), 404)
    assert_problem(await client.get("/no/such/route"), 404)


async def test_list_is_keyset_paginated_and_filtered(client: httpx.AsyncClient) -> None:
    bulk = [{"kind": "send_email" if i % 2 else "resize_image", "queue": "q"} for i in range(25)]
    ids = (await client.post("/jobs/bulk", json=bulk)).json()["ids"]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/jobs", params=params)).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == sorted(ids, reverse=True)
    emails = (await client.get("/jobs", params={"kind": "send_email"})).json()["items"]
    assert len(emails) == 12
    assert (await client.get("/jobs", params={"queue": "other"})).json()["items"] == []
    queued = (await client.get("/jobs", params={"status": ["queued", "running"]})).json()
    assert len(queued["items"]) == 25
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = (await client.get("/jobs", params={"created_after": future})).json()["items"]
    assert later == []
    assert_problem(await client.get("/jobs", params={"limit": 1001}), 422)
    assert_problem(await client.get("/jobs", params={"cursor": "nope"}), 422)
    assert_problem(await client.get("/jobs", params={"status": "bogus"}), 422)


async def test_bulk_json_creates_valid_items_and_reports_invalid_ones(
    client: httpx.AsyncClient,
) -> None:
    items = [
        {"kind": "send_email"},
        {"kind": ""},
        {"kind": "resize_image", "priority": 7},
        "not an object",
    ]
    r = await client.post("/jobs/bulk", json=items)
    assert r.status_code == 200
    body = r.json()
    assert body["created"] == 2 and len(body["ids"]) == 2
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert (await client.get(f"/jobs/{body['ids'][1]}")).json()["priority"] == 7


async def test_bulk_refuses_a_dependent_item_over_the_tenant_quota_alone(make_client) -> None:  # type: ignore[no-untyped-def]
    """Items with parents go in one by one after the rest: a quota that refuses one of them
    is that item's error, not a 429 for a request whose other items are in already."""
    client = await make_client(tenant_max_queued=1)
    parent = (await client.post("/jobs", json={"kind": "send_email"})).json()["id"]
    items = [
        {"kind": "send_email", "tenant": "t"},
        {"kind": "send_email", "tenant": "t", "depends_on": [parent]},
    ]
    r = await client.post("/jobs/bulk", json=items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 1 and [e["index"] for e in body["errors"]] == [1]
    assert "JOBQ_TENANT_MAX_QUEUED" in body["errors"][0]["error"]
    assert len((await client.get("/jobs")).json()["items"]) == 2  # the parent and item 0


async def test_bulk_items_with_idempotency_keys_replay_or_are_refused_as_post_jobs(
    client: httpx.AsyncClient,
) -> None:
    """The same key with the same job is a replay (that job's id); with another job it is
    the item's error, as POST /jobs answers 422, not the old job's id as if it were new."""
    first = await client.post(
        "/jobs",
        json={"kind": "send_email", "payload": {"to": "a"}},
        headers={"Idempotency-Key": "k1"},
    )
    items = [
        {"kind": "send_email", "payload": {"to": "a"}, "idempotency_key": "k1"},
        {"kind": "send_email", "payload": {"to": "b"}, "idempotency_key": "k1"},
        {"kind": "send_email"},
    ]
    body = (await client.post("/jobs/bulk", json=items)).json()
    assert body["ids"][0] == first.json()["id"] and len(body["ids"]) == 2
    assert [e["index"] for e in body["errors"]] == [1]
    assert "already used for a different request" in body["errors"][0]["error"]
    assert body["created"] == 1  # the replay created nothing
    assert len((await client.get("/jobs")).json()["items"]) == 2


async def test_bulk_counts_only_the_jobs_it_creates(client: httpx.AsyncClient) -> None:
    """Twice the same keyed job in one request is one job; an item with a new idempotency key
    whose unique key an active job holds is answered with that job, not refused as a reused
    key (nor does POST /jobs refuse it)."""
    held = (await client.post("/jobs", json={"kind": "send_email", "unique_key": "u1"})).json()
    items = [
        {"kind": "send_email", "idempotency_key": "k2"},
        {"kind": "send_email", "idempotency_key": "k2"},
        {"kind": "send_email", "idempotency_key": "k3", "unique_key": "u1"},
    ]
    body = (await client.post("/jobs/bulk", json=items)).json()
    assert body["errors"] == [] and body["created"] == 1
    assert body["ids"][0] == body["ids"][1] and body["ids"][2] == held["id"]
    single = await client.post(
        "/jobs", json={"kind": "send_email", "unique_key": "u1"}, headers={"Idempotency-Key": "k4"}
    )
    assert single.status_code == 200 and single.json()["id"] == held["id"]
    assert len((await client.get("/jobs")).json()["items"]) == 2


async def test_bulk_multipart_file(client: httpx.AsyncClient) -> None:
    document = json.dumps([{"kind": "send_email"}, {"kind": "webhook_delivery"}]).encode()
    r = await client.post("/jobs/bulk", files={"file": ("jobs.json", document, "application/json")})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 2
    assert_problem(
        await client.post("/jobs/bulk", files={"other": ("x.json", b"[]", "application/json")}),
        400,
        "file",
    )
    # The form takes the file alone (as its schema says): another field refuses it whole.
    with_extra = await client.post(
        "/jobs/bulk",
        files={"file": ("jobs.json", document, "application/json")},
        data={"note": "x"},
    )
    assert_problem(with_extra, 400, "'note'")
    many = {f"f{i}": "x" for i in range(20)}
    assert_problem(
        await client.post(
            "/jobs/bulk", files={"file": ("j.json", document, "application/json")}, data=many
        ),
        400,
    )
    assert len((await client.get("/jobs")).json()["items"]) == 2  # only the first request's


async def test_bulk_rejects_bad_bodies(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_bulk_jobs=3, max_bulk_bytes=2000)
    assert_problem(await client.post("/jobs/bulk", json={"kind": "x"}), 422, "array")
    raw = {"content-type": "application/json"}
    assert_problem(await client.post("/jobs/bulk", content=b"[{", headers=raw), 400)
    assert_problem(
        await client.post("/jobs/bulk", content=b"x", headers={"content-type": "text/plain"}), 415
    )
    assert_problem(await client.post("/jobs/bulk", json=[{"kind": "a"}] * 4), 413, "3")
    huge = [{"kind": "a", "payload": {"x": "y" * 3000}}]
    assert_problem(await client.post("/jobs/bulk", json=huge), 413)
    assert (await client.get("/jobs")).json()["items"] == []


async def test_cancel_status_codes(client: httpx.AsyncClient) -> None:
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    ids = (await client.post("/jobs/bulk", json=[{"kind": "send_email"}] * 3)).json()["ids"]
    r = await client.post(f"/jobs/{ids[0]}/cancel")
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled"
    assert r.json()["job"]["status"] == "cancelled"
    assert_problem(await client.post(f"/jobs/{ids[0]}/cancel"), 409, "cancelled")
    running = await jq.driver.claim_batch(ClaimParams("w", limit=1))
    r = await client.post(f"/jobs/{running[0].id}/cancel")
    assert r.status_code == 202 and r.json()["outcome"] == "cancel_requested"
    assert r.json()["job"]["cancel_requested"] is True
    assert_problem(await client.post("/jobs/424242/cancel"), 404)


async def test_dead_letters_list_requeue_and_retry(client: httpx.AsyncClient) -> None:
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    bulk = [{"kind": "send_email", "max_attempts": 1, "queue": "dl"}] * 3
    ids = (await client.post("/jobs/bulk", json=bulk)).json()["ids"]
    for job in await jq.driver.claim_batch(ClaimParams("w", limit=3)):
        await jq.driver.fail_many([Failure(job.id, job.attempt, "boom", "tb", None)])
    dlq = (await client.get("/dlq")).json()
    assert sorted(j["id"] for j in dlq["items"]) == sorted(ids)
    assert all(j["status"] == "failed" and j["last_error"] == "boom" for j in dlq["items"])
    errors = (await client.get(f"/jobs/{ids[0]}/errors")).json()
    assert [(e["attempt"], e["error"], e["traceback"]) for e in errors] == [(1, "boom", "tb")]

    r = await client.post("/dlq/requeue", json={"ids": [ids[0]]})
    assert r.json() == {"requeued": [ids[0]]}
    r = await client.post("/dlq/requeue", json={"queue": "dl"})
    assert sorted(r.json()["requeued"]) == sorted(ids[1:])
    assert (await client.get("/dlq")).json()["items"] == []
    again = (await client.get(f"/jobs/{ids[0]}")).json()
    assert again["status"] == "queued" and again["attempt"] == 0
    assert len((await client.get(f"/jobs/{ids[0]}/errors")).json()) == 1  # history kept
    assert_problem(await client.post("/dlq/requeue", json={"ids": [1], "kind": "x"}), 422)

    assert_problem(await client.post(f"/jobs/{ids[0]}/retry"), 409, "queued")
    await client.post(f"/jobs/{ids[0]}/cancel")
    r = await client.post(f"/jobs/{ids[0]}/retry")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert_problem(await client.post("/jobs/777777/retry"), 404)


async def test_requeueing_dead_letters_needs_a_selector(client: httpx.AsyncClient) -> None:
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    bulk = [{"kind": "send_email", "max_attempts": 1, "queue": q} for q in ("a", "b")]
    ids = (await client.post("/jobs/bulk", json=bulk)).json()["ids"]
    for job in await jq.driver.claim_batch(ClaimParams("w", limit=2)):
        await jq.driver.fail_many([Failure(job.id, job.attempt, "boom", "tb", None)])
    for nothing in ({}, {"limit": 10}, {"all": False}):
        assert_problem(await client.post("/dlq/requeue", json=nothing), 422, '"all": true')
    assert_problem(await client.post("/dlq/requeue", json={"all": "yes"}), 422)
    assert len((await client.get("/dlq")).json()["items"]) == 2  # nothing was requeued
    r = await client.post("/dlq/requeue", json={"all": True})
    assert sorted(r.json()["requeued"]) == sorted(ids)
    spec = (await client.get("/api-docs/openapi.json")).json()
    assert "refused" in spec["paths"]["/dlq/requeue"]["post"]["description"]


async def test_queue_depth_limit_answers_429_and_accepts_nothing(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_queue_depth=5)
    codes = [
        (await client.post("/jobs", json={"kind": "send_email", "queue": "small"})).status_code
        for _ in range(8)
    ]
    assert codes == [201] * 5 + [429] * 3
    r = await client.post("/jobs", json={"kind": "send_email", "queue": "small"})
    assert_problem(r, 429, "JOBQ_MAX_QUEUE_DEPTH")
    assert r.headers["retry-after"] == "1"
    assert (
        await client.post("/jobs", json={"kind": "send_email", "queue": "big"})
    ).status_code == 201
    bulk = await client.post("/jobs/bulk", json=[{"kind": "a", "queue": "other"}] * 6)
    assert_problem(bulk, 429)
    assert len((await client.get("/jobs", params={"queue": "other"})).json()["items"]) == 0


async def test_per_client_rate_limit(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(rate_limit_per_s=0.001, rate_limit_burst=3)
    headers = {"X-Client-Id": "alice"}
    ok = [
        await client.post("/jobs", json={"kind": "send_email"}, headers=headers) for _ in range(3)
    ]
    assert [r.status_code for r in ok] == [201] * 3
    assert ok[0].headers["ratelimit-limit"] == "3"
    assert ok[2].headers["ratelimit-remaining"] == "0"
    limited = await client.post("/jobs", json={"kind": "send_email"}, headers=headers)
    assert_problem(limited, 429, "alice")
    assert int(limited.headers["retry-after"]) >= 1
    bob = await client.post("/jobs", json={"kind": "send_email"}, headers={"X-Client-Id": "bob"})
    assert bob.status_code == 201  # buckets are per client
    assert len((await client.get("/jobs")).json()["items"]) == 4


async def test_operations_endpoints(client: httpx.AsyncClient) -> None:
    await client.post("/jobs/bulk", json=[{"kind": "send_email", "queue": "mail"}] * 2)
    assert (await client.get("/health")).json() == {"status": "ok", "database": "ok"}
    assert (await client.get("/ready")).json()["status"] == "ready"
    queues = (await client.get("/queues")).json()
    assert queues[0]["queue"] == "mail" and queues[0]["counts"] == {"queued": 2}
    assert queues[0]["oldest_waiting_s"] >= 0
    assert (await client.get("/workers")).json() == []
    metrics = (await client.get("/metrics")).text
    assert 'jobq_queue_jobs{queue="mail",status="queued"} 2.0' in metrics
    assert "jobq_http_requests_total" in metrics
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = (await client.get("/api-docs/openapi.json")).json()
    assert "/jobs/{job_id}/cancel" in spec["paths"]
    assert "Problem" in spec["components"]["schemas"]


async def test_concurrent_posts_are_batched_into_distinct_jobs(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post("/jobs", json={"kind": "send_email", "payload": {"n": i}}) for i in range(60))
    )
    assert [r.status_code for r in responses] == [201] * 60
    by_payload = {r.json()["payload"]["n"]: r.json()["id"] for r in responses}
    assert sorted(by_payload) == list(range(60))
    assert len(set(by_payload.values())) == 60  # each request got its own job back
    for n, job_id in list(by_payload.items())[:5]:
        assert (await client.get(f"/jobs/{job_id}")).json()["payload"] == {"n": n}


async def test_a_registered_tasks_defaults_apply_over_http(client: httpx.AsyncClient) -> None:
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]

    @jq.task(name="digest", queue="mail", priority=7, max_attempts=2)
    async def digest(ctx: object) -> None:
        return None

    job = (await client.post("/jobs", json={"kind": "digest"})).json()
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("mail", 7, 2)
    given = {"kind": "digest", "queue": "other", "priority": -1, "max_attempts": 9}
    job = (await client.post("/jobs", json=given)).json()
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("other", -1, 9)

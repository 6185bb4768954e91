"""A body the API cannot read says what to fix: where the JSON breaks, or that it must be
sent as JSON; not pydantic's "body.21: JSON decode error" or "valid dictionary"."""

from __future__ import annotations

import httpx

from .test_jobs import assert_problem

JSON = {"content-type": "application/json"}


async def test_malformed_json_names_the_reason_and_where(client: httpx.AsyncClient) -> None:
    body = b'{"kind": "send_email",\n "payload": {"to": }}'
    r = await client.post("/jobs", content=body, headers=JSON)
    problem = assert_problem(r, 422, "request body is not valid JSON: Expecting value")
    assert "at line 2, column 20" in str(problem["detail"]), problem
    assert "decode error" not in str(problem["detail"])
    assert problem["errors"]  # the per-field list is kept, as for any invalid input
    r = await client.post("/dlq/requeue", content=b'{"ids": [1', headers=JSON)
    assert_problem(r, 422, "request body is not valid JSON")


async def test_a_body_without_content_type_says_to_send_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/jobs", content=b'{"kind": "send_email"}')
    problem = assert_problem(r, 422, "Content-Type: application/json")
    assert "valid dictionary" not in str(problem["detail"])
    r = await client.post("/dlq/requeue", content=b'{"ids": [1]}')
    assert_problem(r, 422, "Content-Type: application/json")
    assert (await client.get("/jobs")).json()["items"] == []


async def test_a_body_that_is_not_an_object_or_is_empty(client: httpx.AsyncClient) -> None:
    assert_problem(
        await client.post("/jobs", content=b"[1]", headers=JSON),
        422,
        "the request body must be a JSON object",
    )
    assert_problem(
        await client.post("/jobs", content=b"", headers=JSON), 422, "the request body is empty"
    )


async def test_field_errors_still_name_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/jobs", json={"kind": "send_email", "priority": "high"})
    assert_problem(r, 422, "body.priority")

"""Over HTTP, an API that loaded the app checks kinds and arguments as the library does: 422
with the reason, nothing stored; a bulk request reports each refused item by index."""

from __future__ import annotations

import httpx
import pytest

from jobq import JobContext, JobQueue

from .test_jobs import assert_problem


@pytest.fixture
async def app_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The API over a JobQueue with a task of its own, as `jobq api APP` serves it."""
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]

    @jq.task
    async def send_report(ctx: JobContext, to: str, pages: int = 1) -> None:
        return None

    return client


async def test_an_unknown_kind_is_a_422(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/jobs", json={"kind": "send_reprot", "payload": {"to": "a"}})
    body = assert_problem(r, 422, "unknown kind 'send_reprot'")
    assert "send_report" in str(body["detail"])
    assert (await app_client.get("/jobs")).json()["items"] == []


async def test_arguments_that_do_not_fit_are_a_422_naming_them(
    app_client: httpx.AsyncClient,
) -> None:
    r = await app_client.post(
        "/jobs", json={"kind": "send_report", "payload": {"too": "a", "pages": "2"}}
    )
    detail = str(assert_problem(r, 422)["detail"])
    for named in ("unexpected argument 'too'", "missing a required argument: 'to'", "pages:"):
        assert named in detail, detail
    assert (await app_client.get("/jobs")).json()["items"] == []


async def test_a_bulk_request_refuses_the_items_that_do_not_fit(
    app_client: httpx.AsyncClient,
) -> None:
    items = [
        {"kind": "send_report", "payload": {"to": "a"}},
        {"kind": "nope"},
        {"kind": "send_report", "payload": {"to": 1}},
    ]
    result = (await app_client.post("/jobs/bulk", json=items)).json()
    assert len(result["ids"]) == 1
    errors = {e["index"]: e["error"] for e in result["errors"]}
    assert sorted(errors) == [1, 2]
    assert "unknown kind 'nope'" in errors[1] and "to:" in errors[2]


async def test_an_api_without_an_app_lets_any_kind_through(client: httpx.AsyncClient) -> None:
    """Only the demo kinds registered (`jobq api` without APP): it cannot check, and says so
    when it starts."""
    r = await client.post("/jobs", json={"kind": "defined_elsewhere", "payload": {"x": 1}})
    assert r.status_code == 201, r.text

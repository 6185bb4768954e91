"""Pause and resume over HTTP, and the dashboard without keys (everyone an administrator),
on each driver."""

from __future__ import annotations

import re

import httpx

from jobq.dashboard import Action, Identity, allowed_actions


async def test_pause_and_resume_endpoints(client: httpx.AsyncClient) -> None:
    paused = await client.post("/queues/mail/pause")
    assert paused.status_code == 200
    assert paused.json() == {"queue": "mail", "paused": True, "changed": True}
    again = await client.post("/queues/mail/pause")
    assert again.json()["changed"] is False
    assert set(await client.jobq.paused_queues()) == {"mail"}  # type: ignore[attr-defined]
    resumed = await client.post("/queues/mail/resume")
    assert resumed.json() == {"queue": "mail", "paused": False, "changed": True}
    assert (await client.post("/queues/bad%20name/pause")).status_code == 422


async def test_without_keys_every_page_renders_with_every_action(
    client: httpx.AsyncClient,
) -> None:
    job = (await client.post("/jobs", json={"kind": "send_email", "queue": "mail"})).json()
    assert "/ui" in (await client.get("/")).text
    for path in ("/ui", "/ui/jobs", "/ui/dead", "/ui/queues", "/ui/workers", "/ui/schedules"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert "loopback" in page.text
    detail = await client.get(f"/ui/jobs/{job['id']}")
    assert "Cancel job" in detail.text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', detail.text)
    assert token is not None
    cancelled = await client.post(
        f"/ui/jobs/{job['id']}/cancel", data={"csrf": token.group(1)}, follow_redirects=False
    )
    assert cancelled.status_code == 303
    assert (await client.get(f"/jobs/{job['id']}")).json()["status"] == "cancelled"
    client.cookies.clear()
    cookie = (await client.get("/ui")).headers["set-cookie"].lower()
    assert "jobq_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie


async def test_a_post_from_another_session_is_refused(client: httpx.AsyncClient) -> None:
    job = (await client.post("/jobs", json={"kind": "send_email"})).json()
    page = await client.get(f"/ui/jobs/{job['id']}")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert token is not None
    client.cookies.clear()  # another browser: a new session, which the token is not bound to
    refused = await client.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf": token.group(1)})
    assert refused.status_code == 403
    assert (await client.get(f"/jobs/{job['id']}")).json()["status"] == "queued"


def test_allowed_actions_follow_the_scopes() -> None:
    def actions(*scopes: str) -> frozenset[Action]:
        return allowed_actions(Identity("k", frozenset(scopes)))

    assert actions("admin") == frozenset(Action)
    assert actions("jobs:manage") == frozenset(Action)
    assert actions("jobs:read") == frozenset()
    assert actions("jobs:read", "jobs:write") == frozenset()


async def test_a_missing_job_is_a_page_saying_so(client: httpx.AsyncClient) -> None:
    missing = await client.get("/ui/jobs/987654321")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "No job 987654321" in missing.text

"""Tenant isolation: every endpoint against each kind of caller.

Two tenants, acme and globex, each with a failed job (queue ``<tenant>-q``, payload
``<TENANT>-SECRET``). The caller is always acme's: its own job, globex's job, no key, a key
without the scope, a revoked key and an expired key must each get the expected status,
and no answer to an acme key may carry anything of globex's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from jobq import JobQueue

from .conftest import ClientFactory

READ, WRITE, MANAGE = "jobs:read", "jobs:write", "jobs:manage"
CASES = ["no key", "revoked", "expired", "wrong scope", "other tenant", "own tenant"]


@dataclass
class World:
    client: httpx.AsyncClient
    jq: JobQueue
    keys: dict[str, str]  # name -> secret
    jobs: dict[str, int]  # tenant -> its failed job's id


async def make_key(jq: JobQueue, tenant: str | None, *scopes: str, **options: Any) -> str:
    return (await jq.create_api_key(tenant=tenant, scopes=scopes, **options))[1]


@pytest.fixture
async def world(make_client: ClientFactory) -> World:
    # auth_cache_s=0: a revocation counts at once (processes otherwise trust a key 5 s).
    client = await make_client(auth_cache_s=0.0)
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    jobs = {}
    for tenant in ("acme", "globex"):
        job = await jq.enqueue(
            "no_such_task",
            {"note": f"{tenant.upper()}-SECRET"},
            queue=f"{tenant}-q",
            tenant=tenant,
            max_attempts=1,
        )
        jobs[tenant] = job.id
    await jq.run_worker(burst=True)  # an unknown task: both jobs fail, into the DLQ
    revoked = await jq.create_api_key(tenant="acme", scopes=(READ, WRITE, MANAGE))
    await jq.revoke_api_key(revoked[0].id)
    keys = {
        "own tenant": await make_key(jq, "acme", READ, WRITE, MANAGE),
        "read only": await make_key(jq, "acme", READ),
        "write only": await make_key(jq, "acme", WRITE),
        "revoked": revoked[1],
        "expired": await make_key(
            jq, "acme", READ, WRITE, MANAGE, expires_in=timedelta(seconds=-1)
        ),
        "admin": await make_key(jq, None, "admin"),
    }
    return World(client, jq, keys, jobs)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {job} is the target job's id
    scope: str  # "admin", a jobs scope, or "" for none
    own: int  # the status for acme's own job (or an admin key on admin endpoints)
    other: int  # the status for globex's job with acme's key
    body: Any = None


ENDPOINTS = [
    Endpoint("GET", "/jobs?include=payload", READ, 200, 200),
    Endpoint("GET", "/jobs/{job}", READ, 200, 404),
    Endpoint("GET", "/jobs/{job}/errors", READ, 200, 404),
    Endpoint("GET", "/jobs/{job}/events?timeout_s=0.1", READ, 200, 404),
    Endpoint("POST", "/jobs/{job}/cancel", MANAGE, 409, 404),  # failed already: 409
    Endpoint("POST", "/jobs/{job}/retry", MANAGE, 200, 404),
    Endpoint("GET", "/dlq?include=payload", READ, 200, 200),
    Endpoint("POST", "/dlq/requeue", MANAGE, 200, 200, {"ids": "{job}"}),
    Endpoint("POST", "/dlq/requeue", MANAGE, 200, 200, {"queue": "{queue}"}),
    Endpoint("GET", "/queues", READ, 200, 200),
    Endpoint("POST", "/jobs", WRITE, 201, 403, {"kind": "send_email", "tenant": "{tenant}"}),
    Endpoint("POST", "/jobs/bulk", WRITE, 200, 200, [{"kind": "send_email", "tenant": "{tenant}"}]),
    Endpoint("GET", "/workers", "admin", 200, 403),
    Endpoint("GET", "/metrics", "admin", 200, 403),
    Endpoint("GET", "/health", "", 200, 200),
    Endpoint("GET", "/ready", "", 200, 200),
]


def fill(value: Any, target: str, job: int) -> Any:
    """The endpoint's body with the target tenant's job, queue and name filled in."""
    if isinstance(value, dict):
        return {k: fill(v, target, job) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, target, job) for v in value]
    if value == "{job}":
        return [job]
    if isinstance(value, str):
        return value.format(tenant=target, queue=f"{target}-q")
    return value


def expected(endpoint: Endpoint, case: str) -> int:
    if not endpoint.scope:
        return 200
    if case in ("no key", "revoked", "expired"):
        return 401
    if case == "wrong scope":
        return 403
    if endpoint.scope == "admin":
        return endpoint.own if case == "own tenant" else 403
    return endpoint.own if case == "own tenant" else endpoint.other


def key_for(endpoint: Endpoint, case: str, keys: dict[str, str]) -> str | None:
    if case == "no key":
        return None
    if case == "wrong scope":
        return keys["write only" if endpoint.scope == READ else "read only"]
    if case == "own tenant" and endpoint.scope == "admin":
        return keys["admin"]
    if case in ("other tenant", "own tenant"):
        return keys["own tenant"]
    return keys[case]


@pytest.mark.parametrize(
    "endpoint", ENDPOINTS, ids=[f"{e.method} {e.path} {e.body or ''}" for e in ENDPOINTS]
)
async def test_endpoint_for_each_caller(world: World, endpoint: Endpoint) -> None:
    # Own tenant last: it is the one case that may change the jobs.
    for case in CASES:
        target = "acme" if case == "own tenant" else "globex"
        job = world.jobs[target]
        key = key_for(endpoint, case, world.keys)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await world.client.request(
            endpoint.method,
            endpoint.path.format(job=job),
            json=fill(endpoint.body, target, job),
            headers=headers,
        )
        want = expected(endpoint, case)
        assert response.status_code == want, (case, response.text)
        if want == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        if key is not None and key != world.keys["admin"]:
            # Nothing of globex's reaches an acme key, whatever the answer.
            assert "globex" not in response.text.lower(), (case, response.text)
            assert "GLOBEX-SECRET" not in response.text, (case, response.text)
    # What globex's job went through: the acme key changed nothing of it.
    globex = await world.jq.get(world.jobs["globex"])
    assert str(globex.status) == "failed" and globex.attempt == 1


async def test_own_tenant_sees_its_own_data(world: World) -> None:
    acme = {"Authorization": f"Bearer {world.keys['own tenant']}"}
    listed = (await world.client.get("/jobs?include=payload", headers=acme)).json()["items"]
    assert [j["id"] for j in listed] == [world.jobs["acme"]]
    assert listed[0]["payload"] == {"note": "ACME-SECRET"}
    queues = (await world.client.get("/queues", headers=acme)).json()
    assert [q["queue"] for q in queues] == ["acme-q"]
    created = await world.client.post("/jobs", json={"kind": "send_email"}, headers=acme)
    assert created.json()["tenant"] == "acme"  # the tenant comes from the key
    requeued = await world.client.post(
        "/dlq/requeue", json={"ids": [world.jobs["acme"], world.jobs["globex"]]}, headers=acme
    )
    assert requeued.json() == {"requeued": [world.jobs["acme"]]}


async def test_an_admin_key_sees_every_tenant(world: World) -> None:
    admin = {"Authorization": f"Bearer {world.keys['admin']}"}
    listed = (await world.client.get("/jobs", headers=admin)).json()["items"]
    assert sorted(j["id"] for j in listed) == sorted(world.jobs.values())
    globex = await world.client.get(f"/jobs/{world.jobs['globex']}", headers=admin)
    assert globex.status_code == 200


async def test_keys_of_another_tenant_cannot_share_an_idempotency_key(world: World) -> None:
    """Keys are global in the database: the answer to a reuse must not be another tenant's
    job (a replay would hand it over)."""
    globex_key = await make_key(world.jq, "globex", WRITE, READ)
    body = {"kind": "send_email", "payload": {"to": "x"}}
    first = await world.client.post(
        "/jobs",
        json=body,
        headers={"Authorization": f"Bearer {globex_key}", "Idempotency-Key": "shared"},
    )
    assert first.status_code == 201
    acme = {"Authorization": f"Bearer {world.keys['own tenant']}", "Idempotency-Key": "shared"}
    again = await world.client.post("/jobs", json=body, headers=acme)
    assert again.status_code == 409
    assert str(first.json()["id"]) not in again.text and "globex" not in again.text


async def test_a_tenant_cannot_wait_on_another_tenants_job(world: World) -> None:
    acme = {"Authorization": f"Bearer {world.keys['own tenant']}"}
    body = {"kind": "send_email", "depends_on": [world.jobs["globex"]]}
    response = await world.client.post("/jobs", json=body, headers=acme)
    assert response.status_code == 422
    assert "globex" not in response.text


async def test_auth_is_on_once_a_key_exists(make_client: ClientFactory) -> None:
    client = await make_client(auth_cache_s=0.0)
    assert (await client.get("/jobs")).status_code == 200  # no key yet: open, on loopback
    jq: JobQueue = client.jobq  # type: ignore[attr-defined]
    await make_key(jq, "acme", READ)
    assert (await client.get("/jobs")).status_code == 401
    assert (
        await client.get("/jobs", headers={"Authorization": "Bearer nonsense"})
    ).status_code == 401

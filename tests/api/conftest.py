"""An in-process API client over each driver (the app's lifespan runs, like under uvicorn)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from jobq import JobQueue, Settings
from jobq.api import create_app
from jobq.worker.simulated import register_demo_tasks

ClientFactory = Callable[..., Any]


@pytest.fixture
async def make_client(db_url: str) -> AsyncIterator[ClientFactory]:
    """``await make_client(**settings)`` -> an httpx client on a fresh app over db_url."""
    opened: list[tuple[Any, httpx.AsyncClient, JobQueue]] = []

    async def make(**overrides: Any) -> httpx.AsyncClient:
        settings = Settings(database_url=db_url, simulated_time_scale=0.0, **overrides)
        jq = JobQueue(settings=settings)
        register_demo_tasks(jq)
        app = create_app(jq)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        )
        client.jobq = jq  # type: ignore[attr-defined]
        opened.append((lifespan, client, jq))
        return client

    yield make
    for lifespan, client, _jq in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result

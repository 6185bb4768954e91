"""Each error means one thing: contention is not an outage, and every exported error is
raised where its name says."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from jobq import ContentionError
from jobq.api.problems import install_problem_handlers
from jobq.rules.enqueue import Inserted, match_inserted
from jobq.storage.base import NewJob


def test_a_key_holder_gone_before_its_lookup_is_contention() -> None:
    # The insert skipped the job for its unique key, and the holder finished before the
    # lookup: nothing answers the request. Enqueueing again is the remedy, not waiting for a
    # database that is up.
    with pytest.raises(ContentionError, match="enqueue again"):
        match_inserted([NewJob(kind="k", unique_key="u")], Inserted())


async def test_the_api_answers_contention_with_409_not_503() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/busy")
    async def busy() -> None:
        raise ContentionError("job 1 kept changing status; cancel again")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/busy")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "cancel again" in response.json()["detail"]


def test_every_exported_error_is_raised_somewhere() -> None:
    import pathlib

    import jobq

    source = "\n".join(p.read_text() for p in pathlib.Path(jobq.__file__).parent.rglob("*.py"))
    exported = [
        name
        for name in jobq.__all__
        if isinstance(getattr(jobq, name), type) and issubclass(getattr(jobq, name), Exception)
    ]
    # Signals a task raises itself are raised by users, not by jobq.
    raised_by_tasks = {"DoNotRetry", "RetryAt", "JobqError"}
    for name in exported:
        if name in raised_by_tasks:
            continue
        assert f"raise {name}(" in source, f"{name} is exported but jobq never raises it"

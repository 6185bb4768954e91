"""A PostgreSQL restart in the middle of work: workers and API stay up, nothing is lost or
done twice. The test restarts a throwaway server of its own, never the shared one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from jobq import JobQueue, Settings
from jobq.api import create_app
from jobq.storage import connect

from ..pg_server import PgServer, start_throwaway
from ..waiting import eventually
from ..worker.processes import at_least, count_is, sql, start_workers, stop_workers
from .test_crashes import FAST_LEASE, create_log, enqueue_records


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    server = start_throwaway()
    yield server
    server.destroy()


async def test_postgres_restart_mid_drain_loses_nothing(own_server: PgServer) -> None:
    with psycopg.connect(own_server.admin_url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE outage")
    url = own_server.url_for("outage")
    driver = connect(url)
    await driver.migrate()
    await driver.close()
    create_log(url)
    total = 400
    await enqueue_records(url, total)
    env = {**FAST_LEASE, "TEST_JOB_SECONDS": "0.1", "JOBQ_POOL_TIMEOUT_S": "1"}
    workers = start_workers(url, 2, env=env, args=["-c", "8"])
    done = "SELECT count(*) FROM jobq_jobs WHERE status = 'succeeded'"
    jq = JobQueue(settings=Settings(database_url=url, pool_timeout_s=1.0))
    app = create_app(jq)
    try:
        await eventually(lambda: at_least(url, done, 50), timeout=60, what="work under way")
        before_outage = (await asyncio.to_thread(sql, url, done))[0][0]
        await asyncio.to_thread(own_server.stop)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://jobq.test"
        ) as client:
            health = await client.get("/health")
            enqueue = await client.post("/jobs", json={"kind": "record", "payload": {"n": -1}})
        await asyncio.to_thread(own_server.start)
        await eventually(lambda: count_is(url, done, total), timeout=120, what="all jobs done")
        assert all(w.poll() is None for w in workers), "a worker died in the outage"
    finally:
        codes = stop_workers(workers)
        await jq.close()
    for response in (health, enqueue):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "2"
        assert response.headers["content-type"].startswith("application/problem+json")
    assert codes == [0, 0]
    assert isinstance(before_outage, int) and before_outage < total  # it did land mid-drain
    per_job = sql(url, "SELECT job_id, count(*) FROM processed_log GROUP BY job_id")
    assert len(per_job) == total
    assert {n for _, n in per_job} == {1}
    assert sql(url, "SELECT count(*) FROM jobq_jobs WHERE status <> 'succeeded'") == [(0,)]

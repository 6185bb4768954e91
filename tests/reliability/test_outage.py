"""A PostgreSQL restart in the middle of work: workers and API stay up, nothing is lost or
done twice. The test restarts a throwaway server of its own, never the shared one."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator

import httpx
import psycopg
import pytest

from jobq import JobQueue, Settings
from jobq.api import create_app
from jobq.errors import DatabaseUnavailableError
from jobq.storage import connect
from jobq.storage.base import ClaimParams, Completion, NewJob, WorkerRegistration

from ..pg_server import PgServer, start_throwaway
from ..waiting import eventually
from ..worker.processes import (
    at_least,
    count_is,
    deaths,
    sql,
    start_workers,
    stop_workers,
)
from .support import SUCCEEDED
from .test_crashes import FAST_LEASE, create_log, enqueue_records

WAITING = "waiting for the database"  # what a worker logs while it cannot start


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
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client:
            health = await client.get("/health")
            enqueue = await client.post("/jobs", json={"kind": "record", "payload": {"n": -1}})
        await asyncio.to_thread(own_server.start)
        await eventually(lambda: count_is(url, done, total), timeout=120, what="all jobs done")
        died = deaths(workers)
        assert not died, f"a worker died in the outage:\n{died}"
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


def collect_stderr(process: subprocess.Popen[bytes]) -> list[str]:
    """The process's stderr lines as they come, read on a thread (which also keeps the pipe
    from filling up while the worker logs its outage warnings)."""
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.decode("utf-8", "replace"))

    threading.Thread(target=read, name=f"stderr-{process.pid}", daemon=True).start()
    return lines


async def waiting_for_database(process: subprocess.Popen[bytes], lines: list[str]) -> bool:
    """Probe: the worker has logged that it waits for the database (failing at once if it
    exited instead)."""
    code = process.poll()
    assert code is None, f"the worker exited with {code}:\n{''.join(lines)[-3000:]}"
    return any(WAITING in line for line in lines)


async def test_worker_started_in_an_outage_waits_for_the_database(own_server: PgServer) -> None:
    """A worker that starts while the database is down (a supervisor's restart, or one still
    starting when the outage began) waits for it rather than exiting 1 on its migration or
    its registration. A SIGTERM while it waits is still a clean stop."""
    with psycopg.connect(own_server.admin_url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE outage")
    url = own_server.url_for("outage")
    driver = connect(url)
    await driver.migrate()
    await driver.close()
    create_log(url)
    total = 20
    await enqueue_records(url, total)
    await asyncio.to_thread(own_server.stop)
    env = {**FAST_LEASE, "JOBQ_POOL_TIMEOUT_S": "0.5"}
    workers = start_workers(url, 2, env=env, args=["-c", "4"])
    stderr = [collect_stderr(w) for w in workers]
    try:
        for worker, lines in zip(workers, stderr, strict=True):
            await eventually(
                lambda w=worker, out=lines: waiting_for_database(w, out), timeout=60, what=WAITING
            )
        assert stop_workers(workers[1:]) == [0], "".join(stderr[1])[-3000:]
        await asyncio.to_thread(own_server.start)
        await eventually(lambda: count_is(url, SUCCEEDED, total), timeout=60, what="jobs done")
        assert workers[0].poll() is None, "".join(stderr[0])[-3000:]
    finally:
        codes = stop_workers(workers)
    assert codes == [0, 0], "".join(stderr[0])[-3000:]
    per_job = sql(url, "SELECT job_id, count(*) FROM processed_log GROUP BY job_id")
    assert len(per_job) == total and {n for _, n in per_job} == {1}


async def test_driver_calls_in_an_outage_raise_database_unavailable(own_server: PgServer) -> None:
    """What the worker's outage handling relies on: whatever psycopg raises when the server
    goes away (AdminShutdown for a statement in flight, a refused connection, a pool timeout),
    a driver call raises DatabaseUnavailableError; and the pool recovers afterwards."""
    with psycopg.connect(own_server.admin_url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE outage")
    url = own_server.url_for("outage")
    driver = connect(url, Settings(database_url=url, pool_timeout_s=0.5))
    try:
        await driver.migrate()
        await driver.enqueue_many([NewJob(kind="k"), NewJob(kind="k")])
        first, second = await driver.claim_batch(ClaimParams("w1", 2, None))

        async def in_flight() -> None:
            async with driver.job_transaction(first.id, first.attempt) as conn:
                await conn.execute("SELECT pg_sleep(60)")

        holder = asyncio.create_task(in_flight())
        sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'"
        await eventually(lambda: count_is(url, sleeping, 1), what="the statement in flight")
        await asyncio.to_thread(own_server.stop)
        with pytest.raises(DatabaseUnavailableError):
            await holder
        down: list[Callable[[], Awaitable[object]]] = [
            driver.ping,
            driver.migrate,
            lambda: driver.claim_batch(ClaimParams("w1", 1, None)),
            lambda: driver.register_worker(WorkerRegistration("w1", "host", 1, None, 1)),
            lambda: driver.complete_many([Completion(second.id, second.attempt, None)]),
        ]
        for call in down:
            with pytest.raises(DatabaseUnavailableError):
                await call()
        await asyncio.to_thread(own_server.start)

        async def answers() -> bool:
            try:
                await driver.ping()
            except DatabaseUnavailableError:
                return False
            return True

        await eventually(answers, timeout=30, what="the pool to reconnect")
        assert await driver.complete_many([Completion(second.id, second.attempt, None)]) == [
            second.id
        ]
    finally:
        await driver.close()

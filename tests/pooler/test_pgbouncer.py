"""jobq through Debian's PgBouncer in transaction pooling mode, with ``JOBQ_POLL_ONLY=true``:
one producer, the HTTP API, worker processes and periodic schedules, end to end. (The
conformance suite also runs through it: see tests/conformance/conftest.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql

from jobq import JobQueue
from jobq.errors import ConfigurationError

from ..api.live import live_api
from ..pgbouncer import PgBouncer
from ..waiting import eventually
from ..worker.processes import at_least, sql, start_workers, started, stop_workers

POOLED = {"JOBQ_POLL_ONLY": "true"}
LOG_TABLE = (
    "CREATE TABLE processed_log (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
    "pid INTEGER NOT NULL)"
)


async def test_one_process_enqueues_300_jobs_one_by_one(pgbouncer_url: str) -> None:
    # The user's first try: server-side prepared statements made after a statement's fifth
    # run went to one server connection and were looked for on another.
    async with JobQueue(pgbouncer_url) as jq:
        ids = [(await jq.enqueue("k", {"i": i})).id for i in range(300)]
        assert len(set(ids)) == 300
        assert sum(s.count for s in await jq.stats()) == 300


async def test_without_poll_only_the_lost_prepared_statement_is_named(
    pgbouncer_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBQ_POLL_ONLY", "false")
    # The user's first try again, without the setting: the pooler error becomes one that
    # says what to do.
    async with JobQueue(pgbouncer_url) as jq:
        # Two jobs a call: concurrent calls of one job would share a few INSERTs (group
        # commit), too few for psycopg to prepare their statement on every connection.
        pairs = [[jq.new_job("k", {"i": i}), jq.new_job("k", {"i": -i})] for i in range(300)]
        with pytest.raises(ConfigurationError, match="JOBQ_POLL_ONLY=true"):
            await asyncio.gather(*(jq.enqueue_many(pair) for pair in pairs))


async def test_timestamps_are_utc_whatever_the_server_sessions_zone(
    pg_url: str, pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set before the pooler opens its first server connection to this database, so every
    # server connection it opens starts in this zone; nothing jobq says on connect may be
    # counted on to change that (a pooler moves statements between server connections).
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            pgsql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Kolkata'").format(
                pgsql.Identifier(name)
            )
        )
    monkeypatch.setenv("JOBQ_POLL_ONLY", "true")
    url = pgbouncer.url_for(pg_url)
    with psycopg.connect(url, prepare_threshold=None) as raw:
        row = raw.execute("SELECT current_setting('TimeZone'), now()").fetchone()
    assert row is not None and row[0] == "Asia/Kolkata"
    run_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with JobQueue(url) as jq:
        job = await jq.enqueue("k", run_at=run_at)
        stored = await jq.get(job.id)
    assert stored.run_at == run_at
    assert stored.run_at.utcoffset() == timedelta(0)
    assert stored.created_at.utcoffset() == timedelta(0)
    # The same instant as the server's clock gave the raw connection a moment before.
    assert timedelta(0) <= stored.created_at - row[1] < timedelta(minutes=5)


async def test_api_and_workers_end_to_end(pgbouncer_url: str) -> None:
    sql(pgbouncer_url, LOG_TABLE)
    with live_api(pgbouncer_url, **POOLED) as (base, _):
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for n in range(50):
                response = await client.post("/jobs", json={"kind": "record", "payload": {"n": n}})
                assert response.status_code == 201, response.text
        workers = start_workers(pgbouncer_url, 2, env=POOLED)
        try:
            await eventually(lambda: started(pgbouncer_url, workers), timeout=60, what="workers")
            done = "SELECT count(*) FROM jobq_jobs WHERE status = 'succeeded'"
            await eventually(
                lambda: at_least(pgbouncer_url, done, 50), timeout=120, what="50 jobs done"
            )
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                listed = (await client.get("/jobs", params={"status": "succeeded"})).json()
        finally:
            codes = stop_workers(workers)
    assert codes == [0, 0], [p.stderr.read().decode() for p in workers if p.stderr]
    assert len(listed["items"]) == 50
    # Transactional completion through the pooler: one effect per job.
    effects = sql(pgbouncer_url, "SELECT count(*), count(DISTINCT job_id) FROM processed_log")
    assert effects == [(50, 50)]


async def test_periodic_schedule_through_the_pooler(pgbouncer_url: str) -> None:
    workers = start_workers(pgbouncer_url, 2, app="tests.worker.periodic_app:jq", env=POOLED)
    try:
        await eventually(lambda: started(pgbouncer_url, workers), timeout=60, what="workers")
        ran = "SELECT count(*) FROM jobq_jobs WHERE kind = 'every_second' AND status = 'succeeded'"
        await eventually(lambda: at_least(pgbouncer_url, ran, 3), timeout=60, what="3 ticks run")
    finally:
        codes = stop_workers(workers)
    assert codes == [0, 0], [p.stderr.read().decode() for p in workers if p.stderr]
    keys = sql(pgbouncer_url, "SELECT idempotency_key FROM jobq_jobs WHERE kind = 'every_second'")
    assert len(keys) == len(set(keys))  # each tick one job, though both workers scheduled it

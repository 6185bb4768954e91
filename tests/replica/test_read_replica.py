"""JOBQ_READ_DATABASE_URL: reads from a streaming replica, the process's own writes always
visible, a lagging or stopped replica replaced by the primary (counted and logged)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from jobq import JobQueue
from jobq.replica import BEHIND_OWN_WRITES, DOWN, LAGGING

from ..api.live import live_api
from ..waiting import eventually
from .conftest import Pair


def queue(pair: Pair, **settings: object) -> JobQueue:
    jq = JobQueue(pair.primary_url)
    jq.settings = jq.settings.model_copy(update={"read_database_url": pair.replica_url, **settings})
    return jq


def insert_elsewhere(pair: Pair, kind: str) -> int:
    """A job another process writes straight into the primary."""
    with psycopg.connect(pair.primary_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO jobq_jobs (kind, payload) VALUES (%s, '{}') RETURNING id", (kind,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def paused(pair: Pair) -> AsyncIterator[Pair]:
    """The replica frozen at its current position until the test ends."""
    pair.replay(paused=True)
    try:
        yield pair
    finally:
        pair.replay(paused=False)


async def test_reads_come_from_the_replica(paused: Pair) -> None:
    async with queue(paused, replica_max_lag_s=600) as jq:
        await jq.stats()  # the router's first look at both servers
        other = insert_elsewhere(paused, "theirs")
        # Not this process's write, and the replica is within its lag bound: it answers,
        # from before the write (which the primary already has).
        assert await jq.find(other) is None
        assert jq.read_router is not None and sum(jq.read_router.fallbacks.values()) == 0
        paused.replay(paused=False)
        assert await eventually(lambda: jq.find(other), what="the replica replaying the write")


async def test_a_process_reads_its_own_writes_from_a_replica_behind(paused: Pair) -> None:
    async with queue(paused, replica_max_lag_s=600) as jq:
        job = await jq.enqueue("mine")
        assert (await jq.get(job.id)).kind == "mine"
        assert [j.id for j in await jq.list()] == [job.id]
        cancelled = (await jq.cancel(job.id)).job
        assert cancelled is not None
        assert (await jq.get(job.id)).status == cancelled.status
        assert jq.read_router is not None
        assert jq.read_router.fallbacks[BEHIND_OWN_WRITES] == 3  # each read above
        paused.replay(paused=False)
        # Once the replica has replayed them, it serves this process's reads again.
        await eventually(lambda: _served_by_replica(jq), what="reads back on the replica")


async def _served_by_replica(jq: JobQueue) -> bool:
    assert jq.read_router is not None
    before = sum(jq.read_router.fallbacks.values())
    await jq.stats()
    return sum(jq.read_router.fallbacks.values()) == before


async def test_a_replica_lagging_past_the_bound_sends_reads_to_the_primary(
    paused: Pair,
) -> None:
    async with queue(paused, replica_max_lag_s=0.5) as jq:
        await jq.stats()
        other = insert_elsewhere(paused, "theirs")
        # Nothing of this process's: only the lag, once past half a second, sends it there.
        assert await eventually(lambda: jq.find(other), what="the primary answering")
        assert jq.read_router is not None and jq.read_router.fallbacks[LAGGING] >= 1


async def test_a_stopped_replica_sends_reads_to_the_primary_until_it_is_back(
    pair: Pair,
) -> None:
    async with queue(pair) as jq:
        job = await jq.enqueue("k")
        await eventually(lambda: _served_by_replica(jq), what="reads on the replica")
        pair.replica.stop()
        try:
            assert (await jq.get(job.id)).id == job.id
            assert [s.count for s in await jq.stats()] == [1]
            assert jq.read_router is not None and jq.read_router.fallbacks[DOWN] >= 2
        finally:
            pair.replica.start()
        await eventually(
            lambda: _served_by_replica(jq), timeout=30, what="reads back on the replica"
        )


async def test_api_reads_its_writes_and_counts_fallbacks(paused: Pair) -> None:
    settings = {"JOBQ_READ_DATABASE_URL": paused.replica_url, "JOBQ_REPLICA_MAX_LAG_S": "600"}
    with live_api(paused.primary_url, **settings) as (base, _):
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            other = await asyncio.to_thread(insert_elsewhere, paused, "theirs")
            # The replica, frozen, has not got another process's job.
            assert (await client.get(f"/jobs/{other}")).status_code == 404
            created = (await client.post("/jobs", json={"kind": "k"})).json()
            # The API's own write it sees at once (from the primary, the replica being behind).
            got = await client.get(f"/jobs/{created['id']}")
            assert got.status_code == 200, got.text
            listed = (await client.get("/jobs")).json()["items"]
            assert {j["id"] for j in listed} == {created["id"], other}
            metrics = (await client.get("/metrics")).text
    assert 'jobq_replica_fallbacks_total{reason="behind_own_writes"}' in metrics

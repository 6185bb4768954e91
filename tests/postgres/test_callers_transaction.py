"""Jobs enqueued on the caller's own psycopg connection (``connection=``), sync and async:
they commit or roll back with the caller's transaction, and a refused batch leaves that
connection as it was."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from jobq import JobQueue
from jobq.config import Settings
from jobq.errors import ConfigurationError, InvalidJobError
from jobq.storage.base import NewJob


async def test_a_sync_connection_enqueues_inside_the_callers_transaction(pg_url: str) -> None:
    jq = JobQueue(pg_url)
    try:
        with psycopg.connect(pg_url) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            conn.commit()
            with conn.transaction():
                conn.execute("INSERT INTO orders VALUES (1)")
                kept = jq.enqueue_sync("send_email", {"order": 1}, connection=conn)
                many = jq.enqueue_many_sync(
                    [NewJob(kind="bulk", payload={"n": i}) for i in range(150)], connection=conn
                )

            def failed_order() -> None:
                with conn.transaction():
                    conn.execute("INSERT INTO orders VALUES (2)")
                    jq.enqueue_sync("send_email", {"order": 2}, connection=conn)
                    raise RuntimeError("the order failed")

            with pytest.raises(RuntimeError):
                failed_order()
            orders = conn.execute("SELECT id FROM orders").fetchall()
        assert orders == [(1,)]
        stored = await jq.list(limit=1000)
        assert sorted(j.id for j in stored) == sorted([kept.id, *(j.id for j in many)])
        assert (await jq.get(kept.id)).payload == {"order": 1}
    finally:
        await jq.close()


async def test_a_connection_of_the_other_kind_is_refused_with_the_method_to_use(
    pg_url: str,
) -> None:
    jq = JobQueue(pg_url)
    try:
        with (
            psycopg.connect(pg_url) as conn,
            pytest.raises(ConfigurationError, match="enqueue_sync"),
        ):
            await jq.enqueue("k", connection=conn)
        async with await psycopg.AsyncConnection.connect(pg_url) as aconn:
            with pytest.raises(ConfigurationError, match="call defer, enqueue"):
                jq.enqueue_sync("k", connection=aconn)
        assert await jq.stats() == []
    finally:
        await jq.close()


@pytest.mark.parametrize("batch", ["copy", "dependencies"])
async def test_a_connection_outside_autocommit_keeps_the_jobs_in_the_callers_transaction(
    pg_url: str, batch: str
) -> None:
    """As Django's connections are: autocommit off, no statement run yet. The enqueue is the
    first statement, so it opens the caller's transaction; rolling that back keeps no job
    (a transaction block of jobq's own would have committed them at its end)."""
    jq = JobQueue(pg_url)
    try:
        [parent] = await jq.enqueue_many([NewJob(kind="parent")])
        if batch == "copy":
            jobs = [NewJob(kind="k", payload={"n": i}) for i in range(150)]
        else:
            jobs = [NewJob(kind="k", depends_on=(parent.id,)) for _ in range(3)]
        with psycopg.connect(pg_url) as conn:
            assert not conn.autocommit
            await asyncio.to_thread(jq.enqueue_many_sync, jobs, connection=conn)
            conn.rollback()
            kept = await asyncio.to_thread(jq.enqueue_many_sync, jobs[:2], connection=conn)
            conn.commit()
        async with await psycopg.AsyncConnection.connect(pg_url) as aconn:
            await jq.enqueue_many(jobs, connection=aconn)
            await aconn.rollback()
        stored = await jq.list(kind="k", limit=1000)
        assert sorted(j.id for j in stored) == sorted(j.id for j in kept)
    finally:
        await jq.close()


async def test_a_bad_job_deep_in_a_copy_leaves_the_callers_transaction_usable(
    pg_url: str,
) -> None:
    """The COPY checks its jobs slice by slice; a bad one fails it inside a savepoint of the
    caller's transaction, which rolls back to before the batch and goes on."""
    jq = JobQueue(pg_url)
    try:
        batch = [NewJob(kind="k", payload={"n": i}) for i in range(1_200)]
        batch[1_100] = NewJob(kind="k", priority=5000)
        async with await psycopg.AsyncConnection.connect(pg_url) as aconn:
            [kept] = await jq.enqueue_many([NewJob(kind="before")], connection=aconn)
            with pytest.raises(InvalidJobError, match="priority"):
                await jq.enqueue_many(batch, connection=aconn)
            [after] = await jq.enqueue_many([NewJob(kind="after")], connection=aconn)
            await aconn.commit()
        stored = await jq.list(limit=2000)
        assert sorted(j.id for j in stored) == [kept.id, after.id]
    finally:
        await jq.close()


async def _refused_leaving_idle_callers_connections_idle(
    jq: JobQueue, pg_url: str, batch: list[NewJob], message: str
) -> None:
    """``batch`` is refused (``message``) on connections like Django's, autocommit off and no
    statement run yet, sync and async alike, and each connection is left idle: no
    transaction opened, let alone an aborted one."""
    with psycopg.connect(pg_url) as conn:
        with pytest.raises(InvalidJobError, match=message):
            await asyncio.to_thread(jq.enqueue_many_sync, batch, connection=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with await psycopg.AsyncConnection.connect(pg_url) as aconn:
        with pytest.raises(InvalidJobError, match=message):
            await jq.enqueue_many(batch, connection=aconn)
        assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_a_bad_job_in_a_copy_leaves_an_idle_callers_connection_as_it_was(
    pg_url: str,
) -> None:
    """As Django's: autocommit off, no statement run yet. A refused batch must not leave the
    connection in a transaction, let alone an aborted one: the batch is checked before its
    first statement, which would open the caller's transaction."""
    jq = JobQueue(pg_url)
    try:
        batch = [NewJob(kind="k", payload={"n": i}) for i in range(1_200)]
        for bad, message in [
            (NewJob(kind="k", priority=5000), "priority"),
            (NewJob(kind="k", payload={"text": "nul\x00here"}), "U\\+0000"),
        ]:
            batch[1_100] = bad
            await _refused_leaving_idle_callers_connections_idle(jq, pg_url, batch, message)
        async with await psycopg.AsyncConnection.connect(pg_url) as aconn:
            await jq.enqueue_many(batch[:1_100], connection=aconn)
            await aconn.commit()
        assert len(await jq.list(limit=2000)) == 1_100
    finally:
        await jq.close()


@pytest.mark.parametrize(
    ("quota", "size", "with_parent"),
    [(10_000, 150, False), (10_000, 5, False), (10_000, 1, False), (0, 5, True), (0, 1, True)],
    ids=[
        "tenant quota, by COPY",
        "tenant quota, by INSERT",
        "tenant quota, one job",
        "a parent",
        "a parent, one job",
    ],
)
async def test_a_bad_payload_is_refused_before_the_statements_ahead_of_the_insert(
    pg_url: str, quota: int, size: int, with_parent: bool
) -> None:
    """The quota's check (a lock, a count) and the parents' flags run statements before the
    insert; on an idle caller's connection the first of them would open the caller's
    transaction, so a refusal comes before them."""
    jq = JobQueue(settings=Settings(database_url=pg_url, tenant_max_queued=quota))
    try:
        parents = await jq.enqueue_many([NewJob(kind="parent")]) if with_parent else []
        depends_on = tuple(p.id for p in parents)
        bad_payloads: list[tuple[dict[str, Any], str]] = [
            ({"text": "nul\x00here"}, "U\\+0000"),
            ({"tags": {"a", "b"}}, "not JSON-serializable"),
        ]
        for payload, message in bad_payloads:
            batch = [
                NewJob(kind="k", tenant="t", payload={"n": i}, depends_on=depends_on)
                for i in range(size)
            ]
            batch[size // 2] = replace(batch[size // 2], payload=payload)
            await _refused_leaving_idle_callers_connections_idle(jq, pg_url, batch, message)
        assert [j.kind for j in await jq.list(limit=1000)] == (["parent"] if with_parent else [])
    finally:
        await jq.close()

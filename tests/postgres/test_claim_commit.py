"""claim_async_commit: each PostgreSQL claim sets synchronous_commit for its own transaction,
'off' when the setting is on, else the value the session already had; nothing else changes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobq.config import Settings
from jobq.model import JobStatus
from jobq.storage import connect
from jobq.storage.base import ClaimParams, NewJob
from jobq.storage.sqlfiles import load_queries

FILTERS = {"queues": None, "skip_kinds": [], "skip_queues": []}
CLAIMS: dict[str, dict[str, Any]] = {
    "claim_batch_any_queue": {"limit": 5},
    "claim_batch_by_queue": {"limit": 5, "queues": ["default"]},
    "claim_filtered": {**FILTERS, "limit": 5, "tenantless": False},
    "claim_fair": {**FILTERS, "tenants": ["t"], "shares": [5]},
    "claim_ids": {},  # the ids are the test's job
}


@pytest.mark.parametrize("query_name", sorted(CLAIMS))
def test_a_claim_sets_the_commit_mode_of_its_own_transaction_only(
    pg_url: str, query_name: str
) -> None:
    query = load_queries("postgres")[query_name]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # A session setting of the user's own, which a claim must leave alone.
        conn.execute("SET synchronous_commit = local")
        for commit, inside in (("off", "off"), (None, "local")):
            row = conn.execute(
                "INSERT INTO jobq_jobs (kind, payload, tenant) VALUES ('k', '{}', 't') RETURNING id"
            ).fetchone()
            assert row is not None
            args = {**CLAIMS[query_name], "worker_id": "w", "ids": [row[0]], "commit": commit}
            with conn.transaction():
                claimed = conn.execute(query, args).fetchall()
                assert len(claimed) == 1
                assert conn.execute("SHOW synchronous_commit").fetchone() == (inside,)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("local",)


async def test_a_driver_with_async_claim_commits_claims_every_job(pg_url: str) -> None:
    driver = connect(pg_url, Settings(database_url=pg_url, claim_async_commit=True))
    try:
        queued = await driver.enqueue_many([NewJob(kind="k") for _ in range(3)])
        claimed = await driver.claim_batch(ClaimParams("w", 10, None))
        assert sorted(j.id for j in claimed) == [j.id for j in queued]
        for job in queued:
            stored = await driver.get(job.id)
            assert stored is not None and stored.status == JobStatus.RUNNING
    finally:
        await driver.close()

"""Claims must walk the claim index, never sort the backlog: SQLite's claims name their index
(INDEXED BY), so each is checked for reading it in claim order."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from jobq.storage.sqlfiles import load_queries

# SQLite has no statistics to refresh: its claims name their index. A worker serving all
# queues or one must read that index in claim order, without sorting the waiting jobs in a
# temporary B-tree (several queues do sort; see claim_batch_by_queue).
SQLITE_CLAIMS = ("claim_batch_any_queue", "claim_batch_one_queue")


@pytest.mark.parametrize("query_name", SQLITE_CLAIMS)
def test_no_sqlite_claim_sorts_the_backlog(sqlite_url: str, query_name: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    query = load_queries("sqlite")[query_name]
    args = {"worker_id": "w", "limit": 100, "now": 4e9, "queue": "default"}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany("INSERT INTO jobq_jobs (kind) VALUES (?)", [("noop",)] * 2000)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, args)]
    assert any("jobq_jobs_claim_" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan

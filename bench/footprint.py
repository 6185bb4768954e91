"""The primary's footprint per job, for docs/scaling.md: WAL bytes each phase writes
(enqueue, run to success, retention's purge) and the jobs table's size with N finished jobs
kept, as retention keeps them. On a throwaway cluster of its own (jobq.bench.cluster), so
no other database's WAL is counted; removed afterwards.

python bench/footprint.py 100000 200000
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import psycopg

from jobq import JobQueue
from jobq.bench.cluster import create_primary
from jobq.model import JobStatus
from jobq.storage.base import NewJob

SIZES = """
SELECT pg_table_size('jobq_jobs'), pg_indexes_size('jobq_jobs'),
       pg_total_relation_size('jobq_job_errors')
"""


def wal(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM jobq_jobs")


def sizes(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM jobq_jobs")  # what retention's steady state looks like
        row = conn.execute(SIZES).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def measure(admin_url: str, n: int) -> None:
    name = f"jobq_footprint_{time.monotonic_ns()}"
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        async with JobQueue(url) as jq:
            await jq.migrate()
            w0 = wal(url)
            for start in range(0, n, 5000):
                await jq.enqueue_many([NewJob(kind="noop") for _ in range(min(5000, n - start))])
            w1 = wal(url)
            await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "jobq.cli", "worker", "jobq.bench.tasks:jq", "--burst"],
                env={**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_LOG_LEVEL": "WARNING"},
                check=True,
            )
            w2 = wal(url)
            table, indexes, errors = sizes(url)
            purged = 0
            while batch := await jq.driver.purge_finished(JobStatus.SUCCEEDED, 0, 5000):
                purged += batch
                if purged % 25_000 == 0:  # as the leader does: else each batch walks the dead
                    await asyncio.to_thread(vacuum, url)
            w3 = wal(url)
        mib = 1024 * 1024
        print(
            f"n={n}: WAL bytes/job enqueue {(w1 - w0) / n:.0f}, run {(w2 - w1) / n:.0f}, "
            f"purge {(w3 - w2) / n:.0f}; with {n} succeeded jobs kept: table "
            f"{table / mib:.1f} MiB, indexes {indexes / mib:.1f} MiB, errors "
            f"{errors / mib:.2f} MiB -> per million: {(table + indexes) / mib / n * 1e6:,.0f} MiB"
            f" (purged {purged})"
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    cluster = create_primary()
    try:
        for count in sys.argv[1:]:
            asyncio.run(measure(cluster.url(), int(count)))
    finally:
        cluster.destroy()

"""Server time of each dashboard page with 1,000,000 jobs in the table.

    .venv/bin/python bench/dashboard_pages.py postgresql://postgres@127.0.0.1/jobq_dash_bench
    .venv/bin/python bench/dashboard_pages.py sqlite:////tmp/jobq_dash_bench.db

Loads the jobs once (a database that already has jobs is used as it is), with one
INSERT ... SELECT: a day of history, one job finished every 86 ms, 90 % succeeded, 5 %
failed (the dead letters), 4 % queued, 1 % retrying, over 8 queues, 12 kinds and 50
tenants (a third of the jobs), plus 100 running jobs. It brings the per-minute summary of
finished jobs up to date, as the maintenance leader would. Then it asks for each page through the
ASGI app in this process (no network, no browser: the server's time only), once to warm up
and ROUNDS times more, and prints the median and the slowest, in milliseconds.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import httpx

from jobq import JobQueue, Settings
from jobq.api import create_app

JOBS = 1_000_000
ROUNDS = 7

PG_LOAD = f"""
INSERT INTO jobq_jobs (queue, kind, payload, status, run_at, attempt, tenant,
                       created_at, started_at, finished_at, updated_at, last_error)
SELECT 'q' || (i % 8), 'kind' || (i % 12), jsonb_build_object('n', i), s,
       t - interval '2 s', CASE WHEN s IN ('queued') THEN 0 ELSE 1 END,
       CASE WHEN i % 3 = 0 THEN 'tenant' || (i % 50) END,
       t - interval '3 s',
       CASE WHEN s IN ('succeeded', 'failed') THEN t - interval '1 s' END,
       CASE WHEN s IN ('succeeded', 'failed') THEN t END, t,
       CASE WHEN s = 'failed' THEN 'boom' END
FROM generate_series(1, {JOBS}) AS i,
LATERAL (SELECT now() - ({JOBS} - i) * interval '86 ms' AS t,
                CASE WHEN i % 100 < 90 THEN 'succeeded' WHEN i % 100 < 95 THEN 'failed'
                     WHEN i % 100 < 99 THEN 'queued' ELSE 'retrying' END AS s) AS x;
UPDATE jobq_jobs SET status = 'running', locked_by = 'bench-worker', attempt = 1,
       started_at = now() WHERE id IN (SELECT id FROM jobq_jobs WHERE status = 'queued'
                                       ORDER BY id DESC LIMIT 100);
VACUUM ANALYZE jobq_jobs;
"""

SQLITE_LOAD = f"""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {JOBS})
INSERT INTO jobq_jobs (queue, kind, payload, status, run_at, attempt, tenant,
                       created_at, started_at, finished_at, updated_at, last_error)
SELECT 'q' || (i % 8), 'kind' || (i % 12), json_object('n', i), s, t - 2,
       CASE WHEN s = 'queued' THEN 0 ELSE 1 END,
       CASE WHEN i % 3 = 0 THEN 'tenant' || (i % 50) END,
       t - 3,
       CASE WHEN s IN ('succeeded', 'failed') THEN t - 1 END,
       CASE WHEN s IN ('succeeded', 'failed') THEN t END, t,
       CASE WHEN s = 'failed' THEN 'boom' END
FROM (SELECT i, (julianday('now') - 2440587.5) * 86400.0 - ({JOBS} - i) * 0.086 AS t,
             CASE WHEN i % 100 < 90 THEN 'succeeded' WHEN i % 100 < 95 THEN 'failed'
                  WHEN i % 100 < 99 THEN 'queued' ELSE 'retrying' END AS s FROM n);
UPDATE jobq_jobs SET status = 'running', locked_by = 'bench-worker', attempt = 1,
       started_at = (julianday('now') - 2440587.5) * 86400.0 WHERE id IN (
           SELECT id FROM jobq_jobs WHERE status = 'queued' ORDER BY id DESC LIMIT 100);
ANALYZE;
"""


def pages(some_id: int, failed_id: int) -> list[str]:
    return [
        "/ui",
        "/ui/jobs",
        "/ui/jobs?status=failed",
        "/ui/jobs?status=queued&queue=q3",
        "/ui/jobs?kind=kind5",
        "/ui/jobs?tenant=tenant3",
        "/ui/jobs?since=1h",
        f"/ui/jobs?before={some_id}",
        f"/ui/jobs/{failed_id}",
        "/ui/dead",
        "/ui/dead?kind=kind3",
        "/ui/queues",
        "/ui/workers",
        "/ui/schedules",
    ]


async def load(jq: JobQueue) -> None:
    if jq.driver.dialect == "postgres":
        import psycopg

        with psycopg.connect(jq.settings.database_url, autocommit=True) as conn:
            for statement in PG_LOAD.split(";"):
                if statement.strip():
                    conn.execute(statement)
    else:
        import sqlite3

        path = jq.settings.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.executescript(SQLITE_LOAD)


async def main(url: str) -> None:
    jq = JobQueue(settings=Settings(database_url=url))
    await jq.migrate()
    if not await jq.list(limit=1):
        started = time.monotonic()
        await load(jq)
        print(f"loaded {JOBS:,} jobs in {time.monotonic() - started:.0f} s", file=sys.stderr)
    # What the maintenance leader does in the background: summarize the day, minute by minute.
    started = time.monotonic()
    steps = 1
    while await jq.roll_up_finished():
        steps += 1
    print(f"summarized in {steps} steps, {time.monotonic() - started:.1f} s", file=sys.stderr)
    app = create_app(jq)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            newest = (await jq.list(limit=1))[0].id
            failed = (await jq.list(status="failed", limit=1))[0].id
            print(f"{'page':<40} {'median ms':>10} {'max ms':>8}")
            for path in pages(newest // 2, failed):
                times = []
                for round_ in range(ROUNDS + 1):
                    began = time.perf_counter()
                    response = await client.get(path)
                    elapsed = (time.perf_counter() - began) * 1000
                    assert response.status_code == 200, (path, response.status_code)
                    if round_:  # the first is the warm-up
                        times.append(elapsed)
                print(f"{path:<40} {statistics.median(times):>10.1f} {max(times):>8.1f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""The reference every figure is compared with, measured in the same run: a bare queue loop
with no features (no attempts, leases, errors or metrics), as in PERFORMANCE-NOTES.md.

PostgreSQL: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT b) RETURNING``,
then one ``UPDATE ... WHERE id = ANY(ids)`` per batch. SQLite: the same with UPDATE ...
RETURNING under its write lock.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from typing import Any

import psycopg

BATCH = 1000


def prepare(url: str, n: int) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executescript(
                "DROP TABLE IF EXISTS bench_ref;"
                "CREATE TABLE bench_ref (id INTEGER PRIMARY KEY, status TEXT NOT NULL,"
                " payload TEXT NOT NULL);"
                "CREATE INDEX bench_ref_todo ON bench_ref (id) WHERE status = 'todo';"
            )
            conn.executemany(
                "INSERT INTO bench_ref (status, payload) VALUES ('todo', '{}')", [()] * n
            )
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_ref")
        conn.execute(
            "CREATE TABLE bench_ref (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " status text NOT NULL, payload jsonb NOT NULL)"
        )
        conn.execute("CREATE INDEX bench_ref_todo ON bench_ref (id) WHERE status = 'todo'")
        conn.execute(
            "INSERT INTO bench_ref (status, payload)"
            " SELECT 'todo', '{}' FROM generate_series(1, %s)",
            (n,),
        )
        conn.execute("VACUUM ANALYZE bench_ref")


def _pg_loop(url: str, ready: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        ready.wait()  # every loop connected, and the parent about to start the clock
        while True:
            rows = conn.execute(
                "UPDATE bench_ref SET status = 'running' WHERE id IN (SELECT id FROM bench_ref"
                " WHERE status = 'todo' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, payload",
                (BATCH,),
            ).fetchall()
            if not rows:
                return
            conn.execute(
                "UPDATE bench_ref SET status = 'done' WHERE id = ANY(%s)", ([r[0] for r in rows],)
            )


def _sqlite_loop(url: str, ready: Any) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    ready.wait()
    while True:
        rows = conn.execute(
            "UPDATE bench_ref SET status = 'running' WHERE id IN (SELECT id FROM bench_ref"
            " WHERE status = 'todo' ORDER BY id LIMIT ?) RETURNING id, payload",
            (BATCH,),
        ).fetchall()
        if not rows:
            return
        conn.execute(
            "UPDATE bench_ref SET status = 'done' WHERE id IN (SELECT value FROM json_each(?))",
            ("[" + ",".join(str(r[0]) for r in rows) + "]",),
        )


def drain(url: str, n: int, processes: int) -> tuple[float, int]:
    """Seconds for ``processes`` bare loops to drain ``n`` rows, and the rows done."""
    prepare(url, n)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(processes + 1)
    loop = _sqlite_loop if url.startswith("sqlite") else _pg_loop
    workers = [ctx.Process(target=loop, args=(url, ready)) for _ in range(processes)]
    for w in workers:
        w.start()
    ready.wait(timeout=60)
    began = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            done = conn.execute("SELECT count(*) FROM bench_ref WHERE status = 'done'").fetchone()
    else:
        with psycopg.connect(url) as conn:
            done = conn.execute("SELECT count(*) FROM bench_ref WHERE status = 'done'").fetchone()
    return elapsed, int(done[0]) if done else 0

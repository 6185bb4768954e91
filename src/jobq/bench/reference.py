"""The references the figures are compared with, measured in the same run, on a bare table
(id, status, payload) with no features (no attempts, leases, errors or metrics).

Drain: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT b) RETURNING``,
then one ``UPDATE ... WHERE id = ANY(ids)`` per batch (SQLite: the same with UPDATE ...
RETURNING under its write lock). Enqueue one by one: a single-row ``INSERT ... RETURNING id``
per transaction. Enqueue in chunks: ``COPY`` per chunk (SQLite: ``executemany`` per chunk in
one transaction).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from typing import Any

import psycopg

BATCH = 1000


def _create_table(url: str) -> None:
    prepare(url, 0)


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
    conn = _sqlite_connect(url)
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
    return elapsed, count_rows(url, "done")


def _sqlite_connect(url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


# The row the insert references write, per table: the bare table, or jobq's own jobs table
# (the same inserts there tell what its indexes and constraints cost apart from jobq's code).
_PLAIN_ROW = {"bench_ref": ("status", "todo"), "jobq_jobs": ("kind", "noop")}


def insert_one_by_one(url: str, n: int, table: str = "bench_ref") -> float:
    """Seconds for ``n`` single-row inserts, each its own transaction."""
    if table == "bench_ref":
        _create_table(url)
    column, value = _PLAIN_ROW[table]
    insert = f"INSERT INTO {table} ({column}, payload) VALUES ('{value}', '{{}}') RETURNING id"
    if url.startswith("sqlite"):
        conn = _sqlite_connect(url)
        began = time.perf_counter()
        for _ in range(n):
            conn.execute(insert).fetchall()
        elapsed = time.perf_counter() - began
        conn.close()
        return elapsed
    with psycopg.connect(url, autocommit=True) as pg:
        began = time.perf_counter()
        for _ in range(n):
            pg.execute(insert.encode()).fetchall()
        return time.perf_counter() - began


def insert_in_chunks(url: str, n: int, chunk: int, table: str = "bench_ref") -> float:
    """Seconds to insert ``n`` rows, ``chunk`` per transaction, by the fastest plain means."""
    if table == "bench_ref":
        _create_table(url)
    column, value = _PLAIN_ROW[table]
    if url.startswith("sqlite"):
        conn = _sqlite_connect(url)
        began = time.perf_counter()
        for start in range(0, n, chunk):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT INTO {table} ({column}, payload) VALUES (?, ?)",
                [(value, "{}")] * min(chunk, n - start),
            )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
        conn.close()
        return elapsed
    line = f"{value}\t{{}}\n".encode()
    with psycopg.connect(url, autocommit=True) as pg:
        began = time.perf_counter()
        for start in range(0, n, chunk):
            with (
                pg.transaction(),
                pg.cursor().copy(f"COPY {table} ({column}, payload) FROM STDIN".encode()) as copy,
            ):
                copy.write(line * min(chunk, n - start))
        return time.perf_counter() - began


def count_rows(url: str, status: str | None = None, table: str = "bench_ref") -> int:
    """Rows of a reference table (in ``status``, if given)."""
    query = f"SELECT count(*) FROM {table} WHERE {{0}} IS NULL OR status = {{0}}"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(query.format("?1"), (status,)).fetchone()
    else:
        with psycopg.connect(url) as pg:
            row = pg.execute(query.format("%(status)s::text"), {"status": status}).fetchone()
    return int(row[0]) if row else 0


def insert_concurrently(url: str, n: int, producers: int) -> float:
    """Seconds for ``n`` single-row inserts into the bare table from ``producers`` connections
    at once (asyncio, one process: the shape of jobq's concurrent case), each its own
    transaction. PostgreSQL only."""
    _create_table(url)
    insert = b"INSERT INTO bench_ref (status, payload) VALUES ('todo', '{}') RETURNING id"

    async def run() -> float:
        conns = [
            await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(producers)
        ]
        try:

            async def produce(conn: psycopg.AsyncConnection[Any], count: int) -> None:
                for _ in range(count):
                    await (await conn.execute(insert)).fetchall()

            shares = [n // producers + (i < n % producers) for i in range(producers)]
            began = time.perf_counter()
            await asyncio.gather(*(produce(c, k) for c, k in zip(conns, shares, strict=True)))
            return time.perf_counter() - began
        finally:
            for conn in conns:
                await conn.close()

    return asyncio.run(run())


_CLAIM_ONE = (
    "UPDATE bench_ref SET status = 'running' WHERE id IN (SELECT id FROM bench_ref"
    " WHERE status = 'todo' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
)


def _pg_latency_worker(url: str, ready: Any) -> None:
    """Wait for a notification (or 50 ms), claim what is due, stamp the claim's time into the
    row, until a notification says stop."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN bench_ref")
        ready.wait()
        while True:
            notes = list(conn.notifies(timeout=0.05, stop_after=1))
            if any(note.payload == "stop" for note in notes):
                return
            while row := conn.execute(_CLAIM_ONE).fetchone():
                claimed = time.time()
                conn.execute(
                    "UPDATE bench_ref SET status = 'done', payload = jsonb_build_object('t', %s)"
                    " WHERE id = %s",
                    (claimed, row[0]),
                )


def idle_latency(url: str, samples: int, gap_s: float = 0.05) -> list[float]:
    """Seconds from just before each INSERT to its claim by an idle bare worker, one row at a
    time with ``gap_s`` between (as jobq's latency case). PostgreSQL only."""
    _create_table(url)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(2)
    worker = ctx.Process(target=_pg_latency_worker, args=(url, ready))
    worker.start()
    latencies: list[float] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            ready.wait(timeout=60)
            for _ in range(samples):
                sent = time.time()
                row = conn.execute(
                    "WITH new AS (INSERT INTO bench_ref (status, payload) VALUES ('todo', '{}')"
                    " RETURNING id) SELECT id, pg_notify('bench_ref', '') FROM new"
                ).fetchone()
                assert row is not None
                deadline = time.monotonic() + 30
                while True:
                    done = conn.execute(
                        "SELECT payload->>'t' FROM bench_ref WHERE id = %s AND status = 'done'",
                        (row[0],),
                    ).fetchone()
                    if done is not None:
                        latencies.append(float(done[0]) - sent)
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bare latency worker did not claim in time")
                    time.sleep(0.0005)
                time.sleep(gap_s)
            conn.execute("NOTIFY bench_ref, 'stop'")
    finally:
        worker.join(30)
        if worker.is_alive():
            worker.kill()
    return latencies

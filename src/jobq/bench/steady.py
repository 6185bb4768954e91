"""The long-running case: a queue in service, with retention on.

Workers run all along; a producer enqueues as fast as they drain, keeping at most
``STEADY_BACKLOG`` jobs unfinished; retention deletes each job a few seconds after it finished.
Every quarter second the case reads the jobs the workers finished (their Prometheus
counters), the database server's CPU, the jobs table's size on disk and the workers' RSS. A
queue whose retention falls behind, whose table or indexes bloat, or whose workers leak, shows
it here as a rate that falls, a cost per job that climbs or a table that keeps growing.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import urllib.request
from bisect import bisect_left
from dataclasses import dataclass

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from ..app import JobQueue
from ..storage.base import NewJob
from .cases import (
    CaseResult,
    bench_settings,
    free_port,
    reap,
    rss_kib,
    start_workers,
    wait_for_workers,
)
from .sysstat import ServerCpu

STEADY_BACKLOG = 40_000  # most jobs enqueued and not yet finished
STEADY_CHUNK = 5_000  # jobs per enqueue_many call
SAMPLE_EVERY_S = 0.25
BACKLOG_CHECK_EVERY_S = 0.05
# Retention short enough to delete nearly every job during the run. A short lease: while
# nothing is due, retention looks again every lease_s / 3 (here 2 s, by default 10 s), so its
# first deletions come within 2 s of the first jobs falling due.
STEADY_ENV = {"JOBQ_RETENTION": "2", "JOBQ_LEASE_S": "6", "JOBQ_HEARTBEAT_S": "1"}


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    finished: int  # jobs the workers finished, succeeded
    db_cpu_s: float | None
    table_bytes: int
    worker_rss_kib: int  # mean over the workers


def _succeeded(port: int) -> int:
    """The worker's count of jobs that succeeded, from its metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "jobq_worker_jobs_finished":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("outcome") == "succeeded":
                    total += sample.value
    return int(total)


class TableSize:
    """The jobs table with its indexes and TOAST (PostgreSQL), or the database file and its
    WAL (SQLite): the space the queue holds on disk. One connection for the whole run, so
    that the samples do not add a connection's start-up to the server's CPU each time."""

    def __init__(self, url: str) -> None:
        self._path = url.removeprefix("sqlite:///") if url.startswith("sqlite") else None
        self._conn = None if self._path else psycopg.connect(url, autocommit=True)

    def __call__(self) -> int:
        if self._conn is None:
            files = (self._path, f"{self._path}-wal")
            return sum(os.path.getsize(p) for p in files if p and os.path.exists(p))
        row = self._conn.execute("SELECT pg_total_relation_size('jobq_jobs')").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _unfinished_and_succeeded(url: str) -> tuple[int, int]:
    query = (
        "SELECT count(*) FILTER (WHERE status <> 'succeeded'),"
        " count(*) FILTER (WHERE status = 'succeeded') FROM jobq_jobs"
    )
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(query).fetchone()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            row = pg.execute(query).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def long_running(url: str, n: int, processes: int, server: ServerCpu) -> CaseResult:
    jq = JobQueue(settings=bench_settings(url))
    table_bytes = TableSize(url)  # before the workers: a failure here leaves none running
    ports = [free_port() for _ in range(processes)]
    workers = start_workers(url, processes, burst=False, env=STEADY_ENV, metrics_ports=ports)
    samples: list[Sample] = []

    async def sample() -> Sample:
        finished = await _succeeded_in_all(ports)
        at, db_cpu = time.monotonic(), server.total()  # read with the count they go with
        size = await asyncio.to_thread(table_bytes)
        rss = sum(rss_kib(w.pid) for w in workers) // len(workers)
        return Sample(at, finished, db_cpu, size, rss)

    async def keep_sampling() -> None:
        while True:
            samples.append(await sample())
            if samples[-1].finished >= n:
                return
            await asyncio.sleep(SAMPLE_EVERY_S)

    sampling: asyncio.Task[None] | None = None
    try:
        await wait_for_workers(jq, processes)
        sampling = asyncio.create_task(keep_sampling())
        produced = 0
        while produced < n:
            await _room_in_backlog(produced, ports)
            chunk = min(STEADY_CHUNK, n - produced)
            await jq.driver.enqueue_many([NewJob(kind="noop") for _ in range(chunk)])
            produced += chunk
        await asyncio.wait_for(sampling, timeout=3600)
        # Rows leave the table only through retention, which deletes finished jobs alone. So
        # every job ran and succeeded once when nothing is left unfinished and, after that,
        # the workers' count of successes is exactly n: a job run twice would count twice,
        # one never run would be left waiting.
        unfinished = await _none_unfinished(url)
        finished = await _succeeded_in_all(ports)
    finally:
        if sampling is not None:
            sampling.cancel()
        for w in workers:
            w.terminate()
        worker_cpu = await asyncio.to_thread(reap, workers)
        table_bytes.close()
        await jq.close()
    if finished != n or unfinished:
        raise RuntimeError(
            f"benchmark check failed: {n} enqueued, the workers counted {finished} succeeded;"
            f" {unfinished} left unfinished"
        )
    # Read once the workers are gone: their retention deletes until they stop.
    _, remaining = await asyncio.to_thread(_unfinished_and_succeeded, url)
    return _summarize(n, processes, samples, worker_cpu, remaining)


async def _succeeded_in_all(ports: list[int]) -> int:
    return sum([await asyncio.to_thread(_succeeded, port) for port in ports])


async def _none_unfinished(url: str, timeout: float = 60) -> int:
    """Waits until no job is left unfinished (the last completions are written in batches);
    returns how many are, 0 unless the deadline passed."""
    deadline = time.monotonic() + timeout
    while True:
        unfinished, _ = await asyncio.to_thread(_unfinished_and_succeeded, url)
        if not unfinished or time.monotonic() > deadline:
            return unfinished
        await asyncio.sleep(0.05)


async def _room_in_backlog(produced: int, ports: list[int]) -> None:
    """Returns once at most STEADY_BACKLOG of the jobs produced are unfinished. Counted from
    the workers' metrics, not the database: counting the waiting jobs there as often as this
    asks would cost the database more than the jobs do."""
    while True:
        if produced - await _succeeded_in_all(ports) <= STEADY_BACKLOG:
            return
        await asyncio.sleep(BACKLOG_CHECK_EVERY_S)


def _summarize(
    n: int,
    processes: int,
    samples: list[Sample],
    worker_cpu: float,
    remaining: int,
) -> CaseResult:
    finished = [s.finished for s in samples]

    def at(count: float) -> tuple[float, float | None]:
        """Time and server CPU when the workers had finished ``count`` jobs (interpolated
        between the two samples around it)."""
        i = min(max(bisect_left(finished, count), 1), len(samples) - 1)
        a, b = samples[i - 1], samples[i]
        share = (count - a.finished) / max(1, b.finished - a.finished)
        cpu = None
        if a.db_cpu_s is not None and b.db_cpu_s is not None:
            cpu = a.db_cpu_s + share * (b.db_cpu_s - a.db_cpu_s)
        return a.at + share * (b.at - a.at), cpu

    tenth = n / 10
    marks = [at(i * tenth) for i in range(11)]
    rates = [tenth / max(1e-9, marks[i + 1][0] - marks[i][0]) for i in range(10)]
    cpu_us: list[float | None] = []
    for i in range(10):
        start, end = marks[i][1], marks[i + 1][1]
        cpu_us.append(None if start is None or end is None else (end - start) / tenth * 1e6)
    sizes = [samples[min(bisect_left(finished, i * tenth), len(samples) - 1)] for i in range(11)]
    elapsed = marks[10][0] - marks[0][0]
    result = CaseResult(f"long-running queue, {processes} processes", n, elapsed, n / elapsed)
    result.worker_cpu_s = worker_cpu
    first_cpu, last_cpu = marks[0][1], marks[10][1]
    result.db_cpu_s = None if first_cpu is None or last_cpu is None else last_cpu - first_cpu
    # The second tenth is the first in full swing (the first includes the start, on an empty
    # table, while the backlog fills); the RSS "early" is read at its end.
    result.extra = {
        "second_tenth_per_s": rates[1],
        "last_tenth_per_s": rates[-1],
        "per_tenth_per_s": [round(r) for r in rates],
        "db_cpu_us_per_job_per_tenth": [None if c is None else round(c, 1) for c in cpu_us],
        "table_mib_per_tenth": [round(s.table_bytes / 2**20, 1) for s in sizes[1:]],
        "worker_rss_mib_early": sizes[2].worker_rss_kib / 1024,
        "worker_rss_mib_late": sizes[10].worker_rss_kib / 1024,
        "rows_left_in_table": remaining,
        "rows_deleted_by_retention": n - remaining,
    }
    return result

"""Runs the cases, each on a fresh database, and prints a table (or JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from ..storage import connect
from . import reference
from .cases import (
    BULK_CHUNK,
    PRODUCERS,
    CaseResult,
    drain,
    drain_at_scale,
    end_to_end,
    enqueue_bulk,
    enqueue_concurrently,
    enqueue_one_by_one,
    enqueue_one_by_one_sync,
    free_port,
    idle_latency,
    percentiles,
    worker_env,
)
from .executors import executor_cases, executor_rate
from .httpload import LoadResult, post_load
from .steady import long_running
from .stopping import stop_processes
from .sysstat import ServerCpu, cpu_seconds, parent_of

ALL_CASES = ("enqueue", "drain", "e2e", "latency", "http", "scale", "steady", "executors", "hosts")


@contextlib.asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """A new, migrated database for one case, removed afterwards."""
    if url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="jobq-bench-") as folder:
            fresh = f"sqlite:///{Path(folder) / 'bench.db'}"
            await _migrate(fresh)
            yield fresh
        return
    name = f"jobq_bench_{os.getpid()}_{time.monotonic_ns()}"
    parts = urlsplit(url)
    fresh = urlunsplit(parts._replace(path="/" + name))
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await _migrate(fresh)
        yield fresh
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    driver = connect(url)
    try:
        await driver.migrate()
    finally:
        await driver.close()


def server_cpu(url: str) -> ServerCpu:
    if url.startswith("sqlite"):
        return ServerCpu(None)  # in-process: counted in the workers' own CPU time
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    backend = int(row[0]) if row else None
    return ServerCpu(parent_of(backend) if backend else None)


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def run_cases(
    url: str,
    n: int,
    cases: list[str],
    samples: int,
    scale_n: int = 1_000_000,
    steady_n: int = 1_000_000,
    rounds: int = 3,
) -> list[CaseResult]:
    results: list[CaseResult] = []
    server = server_cpu(url)

    async def case(make: Callable[[str], Awaitable[CaseResult]]) -> CaseResult:
        async with fresh_database(url) as fresh:
            result = await make(fresh)
        results.append(result)
        print(f"  {result.case}: {_rate(result)}", file=sys.stderr, flush=True)
        return result

    async def reference_drain(processes: int) -> float:
        async with fresh_database(url) as fresh:
            seconds, done = await asyncio.to_thread(reference.drain, fresh, n, processes)
        if done != n:
            raise RuntimeError(f"reference loop finished {done} of {n} rows")
        return n / seconds

    async def reference_insert(count: int, chunk: int | None, table: str = "bench_ref") -> float:
        async with fresh_database(url) as fresh:
            if chunk is None:
                insert = functools.partial(reference.insert_one_by_one, fresh, count, table)
            else:
                insert = functools.partial(reference.insert_in_chunks, fresh, count, chunk, table)
            seconds = await asyncio.to_thread(insert)
            stored = await asyncio.to_thread(reference.count_rows, fresh, None, table)
        if stored != count:
            raise RuntimeError(f"reference insert stored {stored} of {count} rows")
        return count / seconds

    async def reference_concurrent_insert(count: int) -> float:
        async with fresh_database(url) as fresh:
            insert = functools.partial(reference.insert_concurrently, fresh, count, PRODUCERS)
            seconds = await asyncio.to_thread(insert)
            stored = await asyncio.to_thread(reference.count_rows, fresh, None)
        if stored != count:
            raise RuntimeError(f"reference insert stored {stored} of {count} rows")
        return count / seconds

    if "enqueue" in cases:
        one_by_one = min(n, 5000)
        for count, chunk, make in (
            (one_by_one, None, lambda u: enqueue_one_by_one(u, one_by_one, server)),
            (one_by_one, None, lambda u: enqueue_one_by_one_sync(u, one_by_one, server)),
            (n, BULK_CHUNK, lambda u: enqueue_bulk(u, n, server, BULK_CHUNK)),
        ):
            result = await case(make)
            result.reference_per_second = await reference_insert(count, chunk)
            # The same plain inserts into jobq's own table: what its schema costs.
            jobs_table = await reference_insert(count, chunk, "jobq_jobs")
            result.extra["plain_insert_into_jobs_table_per_s"] = jobs_table
        if not url.startswith("sqlite"):  # one writer at a time there: nothing to share
            result = await case(lambda u: enqueue_concurrently(u, one_by_one, server, PRODUCERS))
            result.reference_per_second = await reference_concurrent_insert(one_by_one)
    if "drain" in cases:
        for processes in (1, 2):
            result = await case(lambda u, k=processes: drain(u, n, k, server))  # type: ignore[misc]
            result.reference_per_second = await reference_drain(processes)
    if "e2e" in cases:
        result = await case(lambda u: end_to_end(u, n, 2, server))
        result.reference_per_second = await reference_drain(2)
    if "latency" in cases:
        result = await case(lambda u: idle_latency(u, samples, server))
        if not url.startswith("sqlite"):
            async with fresh_database(url) as fresh:
                bare = await asyncio.to_thread(reference.idle_latency, fresh, samples)
            result.extra.update({f"bare_{k}": v for k, v in percentiles(bare).items()})
    if "scale" in cases:
        await case(lambda u: drain_at_scale(u, scale_n, 2, server))
    if "steady" in cases:
        await case(lambda u: long_running(u, steady_n, 2, server))
    if "http" in cases:
        await case(lambda u: http_post(u, server, single=True))
        await case(lambda u: http_post(u, server, single=False))
    if "executors" in cases:
        for result in await executor_cases(url, n, fresh_database):
            results.append(result)
            print(f"  {result.case}: {_rate(result)}", file=sys.stderr, flush=True)
    if "hosts" in cases:  # on a cluster and network of its own (needs root), not on ``url``
        from .multihost import run_hosts, summarise

        hosts_results, markdown = summarise(await run_hosts(n, rounds))
        results += hosts_results
        print(markdown, file=sys.stderr, flush=True)
    return results


async def http_post(url: str, server: ServerCpu, *, single: bool) -> CaseResult:
    """POST /jobs (one job per request) or POST /jobs/bulk (1000 per request) against real
    `jobq api` processes, one per core (each on a port of its own, the connections split
    evenly); 201s counted against the jobs found in the database."""
    processes = os.cpu_count() or 1
    ports: list[int] = []
    while len(ports) < processes:
        port = free_port()
        if port not in ports:
            ports.append(port)
    apis = [
        subprocess.Popen(  # noqa: ASYNC220 - starting a process does not wait on it
            [sys.executable, "-m", "jobq.cli", "api", "jobq.bench.tasks:jq"],
            env={**worker_env(url), "JOBQ_API_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            await _wait_http(port)
        if single:
            body, connections, per_connection, jobs_per_request = b'{"kind":"noop"}', 64, 80, 1
        else:
            batch = json.dumps([{"kind": "noop"}] * 1000).encode()
            body, connections, per_connection, jobs_per_request = batch, 4, 10, 1000

        async def load_all(requests_each: int) -> list[LoadResult]:
            return await asyncio.gather(
                *(
                    post_load(
                        "127.0.0.1",
                        port,
                        "/jobs" if single else "/jobs/bulk",
                        body,
                        connections=connections // processes + (i < connections % processes),
                        per_connection=requests_each,
                    )
                    for i, port in enumerate(ports)
                )
            )

        # Unmeasured first: each process's pool filled, its statements prepared, so that
        # the latencies are of a running API, not of its first second.
        warm_up = await load_all(max(1, per_connection // 8))
        db0, api0, client0 = server.total(), _cpu_of(apis), time.process_time()
        began = time.perf_counter()
        loads = await load_all(per_connection)
        seconds = time.perf_counter() - began
        api_cpu, client_cpu = _cpu_of(apis) - api0, time.process_time() - client0
        db_cpu = None if db0 is None else (server.total() or 0) - db0
    finally:
        stop_processes(apis, 30)
    requests = sum(load.requests for load in loads)
    ok = sum(load.statuses.get(201 if single else 200, 0) for load in loads)
    warmed = sum(load.statuses.get(201 if single else 200, 0) for load in warm_up)
    if warmed != sum(load.requests for load in warm_up):
        raise RuntimeError(f"HTTP warm-up failed: {[load.statuses for load in warm_up]}")
    driver = connect(url)
    try:
        stored = sum(s.count for s in await driver.stats())
    finally:
        await driver.close()
    if ok != requests or stored != (ok + warmed) * jobs_per_request:
        statuses = [load.statuses for load in loads]
        raise RuntimeError(f"HTTP check failed: statuses {statuses}, {stored} jobs stored")
    latencies = [t for load in loads for t in load.latencies]
    lat = statistics.quantiles(latencies, n=100, method="inclusive")
    apis_named = f"{processes} API process{'es' if processes > 1 else ''}"
    name = (
        f"POST /jobs, 64 connections, {apis_named}"
        if single
        else f"POST /jobs/bulk x1000, 4 connections, {apis_named}"
    )
    result = CaseResult(name, ok * jobs_per_request, seconds, ok * jobs_per_request / seconds)
    result.extra = {
        "requests_per_s": requests / seconds,
        "p50_ms": lat[49] * 1000,
        "p99_ms": lat[98] * 1000,
        "api_processes": processes,
        "api_cpu_us_per_request": api_cpu / requests * 1e6,
        "client_cpu_us_per_request": client_cpu / requests * 1e6,
    }
    result.db_cpu_s = db_cpu
    return result


def _cpu_of(processes: list[subprocess.Popen[bytes]]) -> float:
    return sum(cpu_seconds(p.pid) for p in processes)


async def _wait_http(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the API process did not start listening") from None
            await asyncio.sleep(0.05)


def _rate(r: CaseResult) -> str:
    if "steps_per_job" in r.extra or "overhead_ms_per_job" in r.extra:
        return executor_rate(r)
    if "second_tenth_per_s" in r.extra:  # the long-running case
        e = r.extra
        cpu = e["db_cpu_us_per_job_per_tenth"]
        return (
            f"{r.per_second:,.0f}/s; second/last tenth {e['second_tenth_per_s']:,.0f}"
            f"/{e['last_tenth_per_s']:,.0f}/s"
            + (f", db {cpu[1]:.0f}->{cpu[-1]:.0f} us/job" if cpu[1] and cpu[-1] else "")
            + _rss_change(e)
            + _table_growth(e["table_mib_per_tenth"])
        )
    if "first_tenth_per_s" in r.extra:
        e = r.extra
        return (
            f"{r.per_second:,.0f}/s; first/last tenth {e['first_tenth_per_s']:,.0f}"
            f"/{e['last_tenth_per_s']:,.0f}/s" + _rss_change(e)
        )
    if "p50_ms" in r.extra and r.per_second is None:
        e = r.extra
        text = f"p50 {e['p50_ms']:.2f} ms, p95 {e['p95_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms"
        if "bare_p50_ms" in e:
            text += (
                f"; bare p50 {e['bare_p50_ms']:.2f} ms, p99 {e['bare_p99_ms']:.2f} ms"
                f" (p50 {e['p50_ms'] - e['bare_p50_ms']:+.2f} ms)"
            )
        return text
    text = f"{r.per_second:,.0f}/s ({r.n:,} in {r.seconds:.2f} s)" if r.per_second else ""
    if "p99_ms" in r.extra:
        text += f", p50 {r.extra['p50_ms']:.1f} ms, p99 {r.extra['p99_ms']:.1f} ms"
    if "api_cpu_us_per_request" in r.extra:
        text += (
            f"; CPU a request: API {r.extra['api_cpu_us_per_request']:.0f} µs, "
            f"client {r.extra['client_cpu_us_per_request']:.0f} µs"
        )
    if r.ratio is not None:
        text += f", {r.ratio:.2f}x bare ({r.reference_per_second:,.0f}/s)"
    if "plain_insert_into_jobs_table_per_s" in r.extra:
        text += f"; plain into jobq_jobs {r.extra['plain_insert_into_jobs_table_per_s']:,.0f}/s"
    return text


def _rss_change(e: dict[str, Any]) -> str:
    return f"; RSS {e['worker_rss_mib_early']:.0f}->{e['worker_rss_mib_late']:.0f} MiB"


def _table_growth(sizes: list[float]) -> str:
    return f"; table {sizes[0]:,.0f}->{sizes[-1]:,.0f} MiB"


def render_table(results: list[CaseResult], *, claim_async_commit: bool = False) -> str:
    lines = [f"{'case':<40} {'result':<70} {'worker CPU s':>12} {'db CPU s':>9}"]
    for r in results:
        cpu = f"{r.worker_cpu_s:.2f}" if r.worker_cpu_s is not None else "-"
        db = f"{r.db_cpu_s:.2f}" if r.db_cpu_s is not None else "-"
        lines.append(f"{r.case:<40} {_rate(r):<70} {cpu:>12} {db:>9}")
    if claim_async_commit:  # the workers inherit the environment, so they ran with it
        lines.append("workers ran with JOBQ_CLAIM_ASYNC_COMMIT=true (claims commit asynchronously)")
    return "\n".join(lines)


def as_json(url: str, results: list[CaseResult], *, claim_async_commit: bool = False) -> str:
    parts = urlsplit(url)
    redacted = urlunsplit(parts._replace(netloc=parts.hostname or "")) if parts.netloc else url
    return json.dumps(
        {
            "database": redacted,
            "machine": machine(),
            "claim_async_commit": claim_async_commit,
            "results": [{**asdict(r), "ratio": r.ratio} for r in results],
        },
        indent=2,
    )

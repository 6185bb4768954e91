"""The benchmark cases. Each runs on a fresh database, checks it afterwards (exactly the jobs
expected succeeded, nothing left over) and reports the CPU time it cost."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..app import JobQueue
from ..config import Settings
from ..model import JobStatus
from ..storage.base import NewJob
from .dbclock import activity_span, database_now, finish_times
from .sysstat import ServerCpu

WORKER_CONCURRENCY = 1000


@dataclass
class CaseResult:
    case: str
    n: int
    seconds: float
    per_second: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    worker_cpu_s: float | None = None
    db_cpu_s: float | None = None
    reference_per_second: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.per_second is None or not self.reference_per_second:
            return None
        return self.per_second / self.reference_per_second


BULK_CHUNK = 5000  # jobs per enqueue_many call in the bulk enqueue case
PRODUCERS = 32  # concurrent producers in the concurrent one-by-one case


def bench_settings(url: str) -> Settings:
    return Settings(database_url=url, log_level="WARNING", log_json=True)


def worker_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "JOBQ_DATABASE_URL": url,
        "JOBQ_LOG_LEVEL": "WARNING",
        "JOBQ_POLL_INTERVAL_S": "0.5",
    }


async def check_all_succeeded(jq: JobQueue, n: int) -> None:
    """The number cannot come from skipped work: exactly n jobs, all succeeded, once each."""
    stats = {s.status: s.count for s in await jq.stats()}
    if stats.get(JobStatus.SUCCEEDED, 0) != n or sum(stats.values()) != n:
        raise RuntimeError(f"benchmark check failed: expected {n} succeeded jobs, found {stats}")


async def check_all_queued(jq: JobQueue, n: int) -> None:
    stats = {s.status: s.count for s in await jq.stats()}
    if stats != {JobStatus.QUEUED: n}:
        raise RuntimeError(f"benchmark check failed: expected {n} queued, found {stats}")


async def enqueue_one_by_one(url: str, n: int, server: ServerCpu) -> CaseResult:
    async def one_at_a_time(jq: JobQueue) -> None:
        for _ in range(n):
            await jq.enqueue_many([NewJob(kind="noop")])

    return await _measure_enqueue(url, n, server, "enqueue one by one", one_at_a_time)


async def enqueue_concurrently(url: str, n: int, server: ServerCpu, producers: int) -> CaseResult:
    """The same single-job calls from ``producers`` coroutines at once, through the front
    door (their calls share INSERTs: group commit, see jobq/batching.py)."""

    async def at_once(jq: JobQueue) -> None:
        async def produce(count: int) -> None:
            for _ in range(count):
                await jq.enqueue_many([NewJob(kind="noop")])

        shares = [n // producers + (i < n % producers) for i in range(producers)]
        await asyncio.gather(*(produce(k) for k in shares))

    name = f"enqueue one by one, {producers} producers"
    return await _measure_enqueue(url, n, server, name, at_once)


async def enqueue_one_by_one_sync(url: str, n: int, server: ServerCpu) -> CaseResult:
    """The same, from synchronous code (enqueue_many_sync, in a thread of its own)."""

    async def one_at_a_time(jq: JobQueue) -> None:
        def produce() -> None:
            for _ in range(n):
                jq.enqueue_many_sync([NewJob(kind="noop")])

        await asyncio.to_thread(produce)

    return await _measure_enqueue(url, n, server, "enqueue one by one (sync)", one_at_a_time)


async def enqueue_bulk(url: str, n: int, server: ServerCpu, chunk: int) -> CaseResult:
    jobs = [NewJob(kind="noop") for _ in range(n)]

    async def in_chunks(jq: JobQueue) -> None:
        for start in range(0, n, chunk):
            await jq.driver.enqueue_many(jobs[start : start + chunk])

    return await _measure_enqueue(url, n, server, f"enqueue_many (chunks of {chunk})", in_chunks)


async def _measure_enqueue(
    url: str, n: int, server: ServerCpu, name: str, enqueue: Callable[[JobQueue], Awaitable[None]]
) -> CaseResult:
    """Time ``enqueue`` (in this process: its CPU is the producer's), then check that exactly
    n jobs are queued."""
    jq = JobQueue(settings=bench_settings(url))
    try:
        await jq.driver.open()
        db0, cpu0 = server.total(), time.process_time()
        began = time.perf_counter()
        await enqueue(jq)
        elapsed = time.perf_counter() - began
        result = CaseResult(name, n, elapsed, n / elapsed)
        result.worker_cpu_s = time.process_time() - cpu0
        result.db_cpu_s = _delta(db0, server.total())
        await check_all_queued(jq, n)
        return result
    finally:
        await jq.close()


def start_workers(
    url: str,
    count: int,
    *,
    burst: bool,
    env: dict[str, str] | None = None,
    metrics_ports: Sequence[int] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes of the benchmark's app; each serves its metrics on its port
    of ``metrics_ports`` when given."""
    args = [sys.executable, "-m", "jobq.cli", "worker", "jobq.bench.tasks:jq"]
    args += ["--concurrency", str(WORKER_CONCURRENCY)] + (["--burst"] if burst else [])
    ports = [str(p) for p in metrics_ports] if metrics_ports else [None] * count
    return [
        subprocess.Popen(
            args + (["--metrics-port", port] if port else []),
            env={**worker_env(url), **(env or {})},
            stdout=subprocess.DEVNULL,
        )
        for port in ports
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reap(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 600) -> float:
    """Wait for worker processes; their total CPU seconds (from the kernel's rusage)."""
    total = 0.0
    for p in processes:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                total += usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() > deadline:
                p.kill()
                raise RuntimeError("a benchmark worker did not finish in time")
            time.sleep(0.02)
        if p.returncode != 0:
            raise RuntimeError(f"a benchmark worker exited with {p.returncode}")
    return total


async def drain(url: str, n: int, processes: int, server: ServerCpu) -> CaseResult:
    """N jobs queued; K burst workers started together; from the first claim to the last
    completion, as the database's own timestamps record them."""
    jq = JobQueue(settings=bench_settings(url))
    try:
        await jq.driver.enqueue_many([NewJob(kind="noop") for _ in range(n)])
        db0 = server.total()
        workers = start_workers(url, processes, burst=True)
        worker_cpu = await asyncio.to_thread(reap, workers)
        db_cpu = _delta(db0, server.total())
        await check_all_succeeded(jq, n)
        first, last = await asyncio.to_thread(activity_span, url)
        elapsed = last - first
        result = CaseResult(f"drain, {processes} worker process(es)", n, elapsed, n / elapsed)
        result.worker_cpu_s, result.db_cpu_s = worker_cpu, db_cpu
        return result
    finally:
        await jq.close()


async def end_to_end(url: str, n: int, processes: int, server: ServerCpu) -> CaseResult:
    """Workers already running and idle; a producer bulk-enqueues N jobs; from the start of
    the enqueue to the last completion persisted."""
    jq = JobQueue(settings=bench_settings(url))
    workers = start_workers(url, processes, burst=False)
    try:
        await wait_for_workers(jq, processes)
        jobs = [NewJob(kind="noop") for _ in range(n)]
        db0 = server.total()
        began = await asyncio.to_thread(database_now, url)
        for start in range(0, n, 5000):
            await jq.driver.enqueue_many(jobs[start : start + 5000])
        await _wait_until_succeeded(jq, n)
        _, last = await asyncio.to_thread(activity_span, url)
        elapsed = last - began
        db_cpu = _delta(db0, server.total())
    finally:
        for w in workers:
            w.terminate()
        worker_cpu = await asyncio.to_thread(reap, workers)
    await check_all_succeeded(jq, n)
    await jq.close()
    result = CaseResult(f"end to end, {processes} idle workers", n, elapsed, n / elapsed)
    result.worker_cpu_s, result.db_cpu_s = worker_cpu, db_cpu
    return result


async def idle_latency(url: str, samples: int, server: ServerCpu) -> CaseResult:
    """One idle worker; enqueue -> task start, one job at a time with gaps between."""
    from .tasks import stamp

    jq = JobQueue(settings=bench_settings(url))
    jq.tasks["stamp"] = stamp
    workers = start_workers(url, 1, burst=False)
    latencies: list[float] = []
    try:
        await wait_for_workers(jq, 1)
        for _ in range(samples):
            sent = time.time()
            (job,) = await jq.driver.enqueue_many([NewJob(kind="stamp")])
            done = await _wait_job(jq, job.id)
            latencies.append(float(done.result) - sent)
            await asyncio.sleep(0.05)  # a gap: the worker is idle again before the next one
    finally:
        for w in workers:
            w.terminate()
        await asyncio.to_thread(reap, workers)
    await check_all_succeeded(jq, samples)
    await jq.close()
    return CaseResult(
        "idle latency enqueue -> start", samples, sum(latencies), extra=percentiles(latencies)
    )


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of latencies in seconds, in milliseconds."""
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {f"p{p}_ms": quantiles[p - 1] * 1000 for p in (50, 95, 99)}


async def wait_for_workers(jq: JobQueue, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(await jq.workers()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark workers did not register in time")
        await asyncio.sleep(0.05)


async def _wait_until_succeeded(jq: JobQueue, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stats = {s.status: s.count for s in await jq.stats()}
        if stats.get(JobStatus.SUCCEEDED, 0) >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs did not finish in time: {stats}")
        await asyncio.sleep(0.01)


async def _wait_job(jq: JobQueue, job_id: int, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = await jq.get(job_id)
        if job.status is JobStatus.SUCCEEDED:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not run in time ({job.status})")
        await asyncio.sleep(0.0005)


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def drain_at_scale(url: str, n: int, processes: int, server: ServerCpu) -> CaseResult:
    """Drain a large backlog and watch for decay: the completion rate of the first and last
    tenth of the jobs (by the database's finished_at), and the workers' resident memory
    sampled through the run. A queue that bloats or leaks shows it here."""
    jq = JobQueue(settings=bench_settings(url))
    try:
        for start in range(0, n, 20_000):
            await jq.driver.enqueue_many(
                [NewJob(kind="noop") for _ in range(min(20_000, n - start))]
            )
        db0 = server.total()
        workers = start_workers(url, processes, burst=True)
        samples: list[list[int]] = []
        reaping = asyncio.create_task(asyncio.to_thread(reap, workers, 3600))
        while not reaping.done():
            rss = [rss_kib(w.pid) for w in workers]
            if all(rss):
                samples.append(rss)
            await asyncio.wait([reaping], timeout=0.5)
        worker_cpu = reaping.result()
        db_cpu = _delta(db0, server.total())
        await check_all_succeeded(jq, n)
    finally:
        await jq.close()
    finished = await asyncio.to_thread(finish_times, url)
    tenth = max(1, n // 10)
    # Completion rate in each tenth of the jobs, in the order they finished.
    tenths = [
        tenth / max(1e-9, finished[min(n, (i + 1) * tenth) - 1] - finished[i * tenth])
        for i in range(10)
    ]
    first_rate, last_rate = tenths[0], tenths[-1]
    elapsed = finished[-1] - finished[0]
    result = CaseResult(f"drain {n:,} queued, {processes} processes", n, elapsed, n / elapsed)
    # A quarter into the run (start-up allocations done, work in full swing) against the end.
    steady = samples[len(samples) // 4 :] or samples
    result.extra = {
        "first_tenth_per_s": first_rate,
        "last_tenth_per_s": last_rate,
        "worker_rss_mib_early": sum(steady[0]) / 1024 / len(steady[0]) if steady else None,
        "worker_rss_mib_late": sum(steady[-1]) / 1024 / len(steady[-1]) if steady else None,
        "per_tenth_per_s": [round(rate) for rate in tenths],
        "first_finished_at": finished[0],  # epoch seconds, to line up with server logs
    }
    result.worker_cpu_s, result.db_cpu_s = worker_cpu, db_cpu
    return result


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

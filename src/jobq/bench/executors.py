"""The executor case: CPU-bound jobs on the process executor against threads and asyncio,
and what the process executor adds to a job that does nothing.

Each throughput measurement runs a burst worker on a fresh database and takes the span the
database recorded, from the first job's start to the last job's finish (worker start-up
and shut-down are left out, as they are the same for every executor). The executors take
turns within each round, and rounds repeat, so a slower moment of the shared machine
does not land on one of them only; reported are the median and the range over rounds.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from ..app import JobQueue
from ..model import Job, JobStatus
from ..observability.logging import configure_logging
from ..task import Executor
from ..worker.context import JobContext
from ..worker.processes import ProcessPool
from .cases import CaseResult, bench_settings
from .dbclock import activity_span
from .executor_tasks import CPU_STEPS, burn, cpu_async, cpu_sync, noop_async, noop_sync

ROUNDS = 5  # the shared machine's load swings within seconds: more rounds, a steadier median
REFERENCE_BURNS = 8
CHILDREN = 2  # the process executor's pool, one child per core of the reference machine

FreshDatabase = Callable[[str], AbstractAsyncContextManager[str]]

# (label, function, executor): the CPU-bound job as each executor runs it.
CPU_VARIANTS: list[tuple[str, Callable[..., Any], Executor]] = [
    ("process", cpu_sync, "process"),
    ("threads", cpu_sync, "thread"),
    ("asyncio", cpu_async, "async"),
]
NOOP_VARIANTS: list[tuple[str, Callable[..., Any], Executor]] = [
    ("process", noop_sync, "process"),
    ("asyncio", noop_async, "async"),
]


async def executor_cases(url: str, n: int, fresh: FreshDatabase) -> list[CaseResult]:
    # The workers run in this process: their logs go to stderr at WARNING, as the other
    # cases' worker processes do, and stdout stays the report's.
    configure_logging(bench_settings(url))
    cpu_jobs = max(2, min(24, n // 100))
    noop_jobs = max(20, min(1000, n // 10))
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in CPU_VARIANTS}
    noop: dict[str, list[float]] = {label: [] for label, _, _ in NOOP_VARIANTS}
    overheads: list[float] = []
    bare: list[float] = []
    # Warm-up: the fork server's first start is a one-off of the worker process.
    async with fresh(url) as db:
        await _span(db, noop_sync, "process", 2, {})
    load: list[float] = [os.getloadavg()[0]]
    for round_no in range(ROUNDS):
        # Each round starts with another executor: none is always first after the set-up.
        turn = round_no % len(CPU_VARIANTS)
        for label, func, executor in CPU_VARIANTS[turn:] + CPU_VARIANTS[:turn]:
            async with fresh(url) as db:
                cpu[label].append(await _span(db, func, executor, cpu_jobs, {"steps": CPU_STEPS}))
        for label, func, executor in NOOP_VARIANTS:
            async with fresh(url) as db:
                noop[label].append(await _span(db, func, executor, noop_jobs, {}))
        # The worker's spans include a claim round trip per job and the machine's noise,
        # which at two slots hide a sub-millisecond cost: the overhead is measured on the
        # pool itself, no-op jobs through a child and back, against the same calls here.
        overheads.append(await _pool_overhead_ms(noop_jobs))
        bare.append(await asyncio.to_thread(_bare_parallel_speedup, REFERENCE_BURNS))
        load.append(os.getloadavg()[0])

    results = []
    for label, _, _ in CPU_VARIANTS:
        spans = cpu[label]
        median = statistics.median(spans)
        result = CaseResult(
            f"cpu-bound, {label}" + (f" ({CHILDREN} children)" if label == "process" else ""),
            cpu_jobs,
            median,
            cpu_jobs / median,
        )
        result.extra["span_s_per_round"] = spans
        result.extra["steps_per_job"] = CPU_STEPS
        # The machine's 1-minute load average at the start and after each round: the
        # figures are only as steady as the machine was.
        result.extra["load_average"] = load
        if label != "process":
            # Per round: this executor's span over the process executor's, same round.
            ratios = [s / p for s, p in zip(spans, cpu["process"], strict=True)]
            result.extra["process_speedup"] = statistics.median(ratios)
            result.extra["process_speedup_range"] = [min(ratios), max(ratios)]
            # Of the parallelism the machine offered in that round, how much the process
            # executor turned into speed: 1.0 is all of it.
            shares = [r / b for r, b in zip(ratios, bare, strict=True)]
            result.extra["process_speedup_of_bare"] = statistics.median(shares)
        results.append(result)
    overhead = CaseResult(
        "no-op job, process executor",
        noop_jobs,
        statistics.median(noop["process"]),
        noop_jobs / statistics.median(noop["process"]),
    )
    overhead.extra["overhead_ms_per_job"] = statistics.median(overheads)
    overhead.extra["overhead_ms_range"] = [min(overheads), max(overheads)]
    overhead.extra["asyncio_per_s"] = noop_jobs / statistics.median(noop["asyncio"])
    overhead.extra["span_s_per_round"] = noop["process"]
    overhead.extra["asyncio_span_s_per_round"] = noop["asyncio"]
    results.append(overhead)
    # The reference: the same work in two bare processes against one, in the same rounds.
    # On an idle 2-core machine it is near 2; when other programs hold the cores it is
    # less, and so is what any executor can get from processes.
    for result in results[:3]:
        result.extra["bare_two_process_speedup"] = statistics.median(bare)
        result.extra["bare_two_process_speedup_range"] = [min(bare), max(bare)]
    return results


def _bare_parallel_speedup(burns: int) -> float:
    """How much faster ``burns`` CPU_STEPS burns run split over two plain processes than
    one after another here: the parallelism the machine offers right now."""
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(CHILDREN, mp_context=context) as pool:
        started: set[int] = set()
        while len(started) < CHILDREN:  # both children up before the clock starts
            started.update(pool.map(_pid_after_a_burn, range(CHILDREN * 4)))
        began = time.perf_counter()
        list(pool.map(burn, [CPU_STEPS] * burns))
        parallel = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(burns):
        burn(CPU_STEPS)
    return (time.perf_counter() - began) / parallel


def _pid_after_a_burn(_: int) -> int:
    burn(CPU_STEPS // 100)
    return os.getpid()


async def _pool_overhead_ms(jobs: int) -> float:
    """Milliseconds per no-op job that running it in a child adds: ``jobs`` no-op jobs one
    after another through a one-child pool, less the same jobs called in this process."""
    jq = JobQueue(settings=bench_settings("sqlite:///unused.db"))
    task = jq.task(name="measured", executor="process")(noop_sync)
    now = datetime.now(UTC)
    job = Job(1, "default", "measured", {}, JobStatus.RUNNING, 0, now, 1, 1, now, now)
    pool = ProcessPool(1, worker_id="bench")
    try:
        await pool.run(JobContext(job, "bench"), task, None)  # the child's start, not timed
        began = time.perf_counter()
        for _ in range(jobs):
            await pool.run(JobContext(job, "bench"), task, None)
        in_child = time.perf_counter() - began
    finally:
        await pool.close()
    began = time.perf_counter()
    for _ in range(jobs):
        noop_sync(JobContext(job, "bench"))
    in_process = time.perf_counter() - began
    return (in_child - in_process) / jobs * 1000


async def _span(
    url: str, func: Callable[..., Any], executor: Executor, jobs: int, payload: dict[str, Any]
) -> float:
    """Seconds from the first job's start to the last one's finish, as the database saw
    them, for ``jobs`` jobs run by a burst worker with two slots (the machine's cores)."""
    settings = bench_settings(url).model_copy(
        update={"process_pool_size": CHILDREN, "completion_flush_s": 0.001}
    )
    jq = JobQueue(settings=settings)
    try:
        task = jq.task(name="measured", executor=executor)(func)
        for start in range(0, jobs, 1000):
            count = min(1000, jobs - start)
            await jq.enqueue_many([task.job(**payload) for _ in range(count)])
        await jq.run_worker(concurrency=CHILDREN, burst=True)
        stats = {s.status: s.count for s in await jq.stats()}
        if stats != {JobStatus.SUCCEEDED: jobs}:
            raise RuntimeError(f"executor benchmark check failed: {stats}")
    finally:
        await jq.close()
    first, last = await asyncio.to_thread(activity_span, url)
    return last - first


def executor_rate(r: CaseResult) -> str:
    """The table's text for an executor result."""
    e = r.extra
    if "overhead_ms_per_job" in e:
        low, high = e["overhead_ms_range"]
        return (
            f"{r.per_second:,.0f}/s (asyncio {e['asyncio_per_s']:,.0f}/s); "
            f"+{e['overhead_ms_per_job']:.2f} ms/job ({low:.2f}-{high:.2f})"
        )
    text = f"{r.per_second:,.1f} jobs/s ({r.n} x {e['steps_per_job']:,} steps)"
    if "process_speedup" in e:
        low, high = e["process_speedup_range"]
        text += (
            f"; process executor {e['process_speedup']:.2f}x faster ({low:.2f}-{high:.2f}),"
            f" {e['process_speedup_of_bare']:.2f} of bare"
        )
    else:
        low, high = e["bare_two_process_speedup_range"]
        text += (
            f"; bare 2 processes {e['bare_two_process_speedup']:.2f}x ({low:.2f}-{high:.2f}),"
            f" load {min(e['load_average']):.1f}-{max(e['load_average']):.1f}"
        )
    return text

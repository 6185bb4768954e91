"""Same-run peer reference for ``jobq bench``: the cases jobq measures, run against PgQueuer.

Run with the peer virtualenv's Python (``bash bench/peer/setup.sh`` builds it), never jobq's:

    .venv-peer/bin/python bench/peer/pgqueuer_bench.py \\
        --database-url postgresql://postgres@127.0.0.1/postgres -n 20000 --json

Each case gets a fresh database (``jobq_peer_<random>``) with PgQueuer's schema installed by
``Queries.install()``, is checked against the database afterwards (exactly the expected jobs
went through PgQueuer's log as ``successful``, once each, and the queue table is empty), and
the database is dropped. Cases, mirroring ``jobq bench``:

- ``enqueue_many``: N no-op jobs through ``Queries.enqueue`` with lists, 5,000 per call.
- ``drain`` (K = 1 and 2): N jobs queued, then K worker processes started together in drain
  mode; first pick to last completion, both as PgQueuer's log table records them.
- ``e2e``: 2 idle workers already listening; a producer enqueues N in chunks of 5,000; from the
  database clock before the first enqueue to the last completion logged.
- ``latency``: one idle worker; one job at a time, ~50 ms apart; enqueue -> entrypoint start.

Workers are this script in ``worker`` mode (a separate OS process each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import uvloop
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.errors import FailingListenerError
from pgqueuer.types import QueueExecutionMode

PEER = f"pgqueuer {version('pgqueuer')}"
SCRIPT = str(Path(__file__).resolve())  # workers are this script in `worker` mode
DEFAULT_URL = "postgresql://postgres@127.0.0.1/postgres"
ALL_CASES = ("enqueue_many", "drain", "e2e", "latency")
DRAIN_WORKERS = (1, 2)  # K for the drain case, as in `jobq bench`
E2E_WORKERS = 2
CHUNK = 5000  # jobs per Queries.enqueue call: jobq's BULK_CHUNK

# The consumer configuration: the one that gave PgQueuer its best figures on our machine,
# so that a ratio against it flatters jobq least. PgQueuer's own benchmark docs publish theirs
# with the asyncpg driver, one dedicated connection per QueueManager, uvloop and no
# concurrency limits (any limit adds capacity CTEs to every dequeue query), all kept here;
# they use 5 QueueManagers at batch_size 10 (also `pgq run`'s default), and its tuning guide
# says to raise batch_size for short jobs. Measured here, N = 20,000 no-op jobs,
# one run each (drain 1 process / drain 2 processes / end to end, jobs/s):
#   5 managers x batch 10:    6,262 /  5,813 /  7,189
#   1 manager  x batch 100:  10,814 / 19,660 / 13,308
#   2 managers x batch 100:  10,689 / 16,194 / 11,758
#   1 manager  x batch 500:  15,017 / 19,482 / 12,671
#   1 manager  x batch 1000: 15,391 / 23,833 / 20,806
# Batch 1000 is also jobq's own scale (a worker of concurrency 1,000 claims up to 500).
BATCH_SIZE = 1000
MANAGERS_PER_WORKER = 1

LATENCY_SAMPLES = 60
LATENCY_GAP_S = 0.05  # between samples, so the worker is idle again before the next job
POLL_S = 0.01  # how often the producer checks the database while waiting for completions
READY_PROBE = timedelta(seconds=0.25)  # one LISTEN/NOTIFY round-trip attempt at start-up


# --------------------------------------------------------------------------------------------
# Worker mode: one OS process running MANAGERS_PER_WORKER QueueManagers.


async def worker_main(args: argparse.Namespace) -> None:
    mode = QueueExecutionMode(args.mode)
    connections = [await asyncpg.connect(args.database_url) for _ in range(args.managers)]
    managers = [QueueManager(Queries(AsyncpgDriver(c))) for c in connections]
    for qm in managers:
        register_entrypoint(qm, args.entrypoint)

    def stop() -> None:
        for qm in managers:
            qm.shutdown.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # The parent holds our stdin open; if it goes away for any reason, so do we.
    orphan_watch = asyncio.create_task(stop_on_stdin_eof(stop))

    runs = [asyncio.create_task(qm.run(batch_size=args.batch_size, mode=mode)) for qm in managers]
    try:
        if mode is QueueExecutionMode.continuous:
            await announce_ready(managers, runs, timeout=args.timeout)
        await asyncio.gather(*runs)
    finally:
        stop()
        orphan_watch.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        for c in connections:
            await c.close(timeout=10)


def register_entrypoint(qm: QueueManager, name: str) -> None:
    if name == "noop":

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            pass

    elif name == "stamp":

        @qm.entrypoint("stamp")
        async def stamp(job: Job) -> None:
            # The time the entrypoint starts, back to the producer over our stdout pipe.
            started = time.time()
            sys.stdout.write(f"stamp {job.id} {started!r}\n")
            sys.stdout.flush()

    else:
        raise ValueError(f"unknown entrypoint {name!r}")


async def stop_on_stdin_eof(stop: Callable[[], None]) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    stop()


async def announce_ready(
    managers: Sequence[QueueManager], runs: Sequence[asyncio.Task[None]], timeout: float
) -> None:
    """Print ``ready`` once every manager's LISTEN is live: a NOTIFY probe of PgQueuer's own
    health check has come back to each. Before its listener is up a probe just times out."""
    deadline = time.monotonic() + timeout
    for qm in managers:
        while True:
            try:
                await qm.listener_healthy(timeout=READY_PROBE)
                break
            except FailingListenerError:
                pass
            for run in runs:
                if run.done():
                    run.result()  # a manager that died before listening: raise its error
                    raise RuntimeError("a queue manager stopped before it was listening")
            if time.monotonic() > deadline:
                raise RuntimeError("queue manager not listening in time")
    sys.stdout.write("ready\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Producer side: databases, workers, checks.


@dataclass
class Result:
    case: str
    jobs: int
    seconds: float
    jobs_per_s: float | None
    timing: str  # what `seconds` spans and whose clock measured it
    jobq_case: str  # the matching `jobq bench` case name, to form ratios
    peer: str = PEER
    workers: int | None = None
    managers_per_worker: int | None = None  # QueueManagers (connections) in each worker
    batch_size: int | None = None
    worker_cpu_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field that applies; jobs_per_s stays (null for latency, as in jobq)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k == "jobs_per_s"}


@dataclass
class Config:
    url: str
    n: int
    batch_size: int
    managers: int
    samples: int
    timeout: float


@contextlib.asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """A new database with PgQueuer's schema installed; dropped afterwards."""
    name = f"jobq_peer_{secrets.token_hex(6)}"
    fresh = urlunsplit(urlsplit(url)._replace(path="/" + name))
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        conn = await asyncpg.connect(fresh)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()
        yield fresh
    finally:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def producer(url: str) -> AsyncIterator[tuple[asyncpg.Connection, Queries]]:
    conn = await asyncpg.connect(url)
    try:
        yield conn, Queries(AsyncpgDriver(conn))
    finally:
        await conn.close()


async def enqueue_noops(queries: Queries, n: int) -> None:
    """N no-op jobs through PgQueuer's batch enqueue (lists), CHUNK per call."""
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        await queries.enqueue(["noop"] * k, [None] * k, [0] * k)


def table_names(queries: Queries) -> tuple[str, str]:
    s = queries.qbe.settings
    return s.qualified.queue_table, s.qualified.queue_table_log


async def queue_counts(conn: asyncpg.Connection, queries: Queries) -> dict[str, int]:
    queue, _ = table_names(queries)
    rows = await conn.fetch(f"SELECT status::text AS s, count(*) AS c FROM {queue} GROUP BY 1")
    return {r["s"]: r["c"] for r in rows}


async def log_counts(conn: asyncpg.Connection, queries: Queries) -> dict[str, tuple[int, int]]:
    """Log rows per status: (rows, distinct jobs)."""
    _, log = table_names(queries)
    rows = await conn.fetch(
        f"SELECT status::text AS s, count(*) AS c, count(DISTINCT job_id) AS d FROM {log} "
        "GROUP BY 1"
    )
    return {r["s"]: (r["c"], r["d"]) for r in rows}


async def successful(conn: asyncpg.Connection, queries: Queries) -> int:
    _, log = table_names(queries)
    count: int = await conn.fetchval(f"SELECT count(*) FROM {log} WHERE status = 'successful'")
    return count


async def check_all_queued(conn: asyncpg.Connection, queries: Queries, n: int) -> None:
    queue = await queue_counts(conn, queries)
    if queue != {"queued": n}:
        raise RuntimeError(f"benchmark check failed: expected {n} queued, found {queue}")


async def check_all_processed(conn: asyncpg.Connection, queries: Queries, n: int) -> None:
    """Exactly n jobs queued, picked and finished successfully, once each; none left over.
    PgQueuer deletes a finished job from its queue table and logs it, so the log is the
    record (periodic aggregation into the statistics table only flags log rows)."""
    queue = await queue_counts(conn, queries)
    log = await log_counts(conn, queries)
    want = {"queued": (n, n), "picked": (n, n), "successful": (n, n)}
    if queue or log != want:
        raise RuntimeError(
            f"benchmark check failed: expected {n} jobs logged queued/picked/successful "
            f"once each and an empty queue; log {log}, queue {queue}"
        )


async def activity_span(conn: asyncpg.Connection, queries: Queries) -> tuple[float, float]:
    """(first pick, last completion) as epoch seconds, from PgQueuer's log table. Its
    ``created`` is now() of the statement that logged the row: the dequeue for 'picked', the
    batched completion write for 'successful'."""
    _, log = table_names(queries)
    row = await conn.fetchrow(
        "SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))::float8 AS a,"
        " extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))::float8 AS b"
        f" FROM {log}"
    )
    if row is None or row["a"] is None or row["b"] is None:
        raise RuntimeError("no finished jobs to measure")
    return float(row["a"]), float(row["b"])


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = POLL_S
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


class Workers:
    """Worker processes (this script in ``worker`` mode), stopped and reaped on exit."""

    def __init__(self, cfg: Config, url: str, count: int, *, mode: str, entrypoint: str):
        self.cfg, self.url, self.count = cfg, url, count
        self.mode, self.entrypoint = mode, entrypoint
        self.procs: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Workers:
        args = [
            sys.executable,
            SCRIPT,
            "worker",
            "--database-url",
            self.url,
            "--mode",
            self.mode,
            "--entrypoint",
            self.entrypoint,
            "--batch-size",
            str(self.cfg.batch_size),
            "--managers",
            str(self.cfg.managers),
            "--timeout",
            str(self.cfg.timeout),
        ]
        for _ in range(self.count):
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.terminate()
        with contextlib.suppress(RuntimeError):
            await self.reap(timeout=30)

    async def line(self, index: int, timeout: float) -> str:
        """The next line a worker prints, within timeout."""
        stdout = self.procs[index].stdout
        assert stdout is not None
        try:
            raw = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"worker {index} printed nothing in {timeout} s") from None
        if not raw:
            raise RuntimeError(f"worker {index} exited (code {await self.procs[index].wait()})")
        return raw.decode().strip()

    async def wait_ready(self) -> None:
        for i in range(self.count):
            line = await self.line(i, self.cfg.timeout)
            if line != "ready":
                raise RuntimeError(f"worker {i} said {line!r} instead of ready")

    async def reap(self, timeout: float) -> None:
        """Wait for every worker to exit (killing them past the deadline); each must exit 0.
        Their stdout is read to the end meanwhile so no worker blocks on a full pipe."""

        async def finish(p: asyncio.subprocess.Process) -> int:
            assert p.stdout is not None
            await p.stdout.read()
            return await p.wait()

        try:
            codes = await asyncio.wait_for(
                asyncio.gather(*(finish(p) for p in self.procs)), timeout
            )
        except TimeoutError:
            for p in self.procs:
                if p.returncode is None:
                    p.kill()
            await asyncio.gather(*(p.wait() for p in self.procs))
            raise RuntimeError("benchmark workers did not finish in time") from None
        if any(codes):
            raise RuntimeError(f"benchmark workers exited with {codes}")


def children_cpu_s() -> float:
    """CPU seconds of all reaped child processes so far (the kernel's rusage)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# The cases.


async def case_enqueue_many(cfg: Config) -> Result:
    async with fresh_database(cfg.url) as db, producer(db) as (conn, queries):
        began = time.perf_counter()
        await enqueue_noops(queries, cfg.n)
        elapsed = time.perf_counter() - began
        await check_all_queued(conn, queries, cfg.n)
    return Result(
        case="enqueue_many",
        jobs=cfg.n,
        seconds=elapsed,
        jobs_per_s=cfg.n / elapsed,
        timing="client wall clock around the Queries.enqueue calls",
        jobq_case=f"enqueue_many (chunks of {CHUNK})",
    )


def throughput(
    cfg: Config, case: str, workers: int, seconds: float, cpu: float, *, timing: str, jobq_case: str
) -> Result:
    """The result of a case where worker processes ran cfg.n jobs in ``seconds``."""
    return Result(
        case=case,
        managers_per_worker=cfg.managers,
        batch_size=cfg.batch_size,
        workers=workers,
        jobs=cfg.n,
        seconds=seconds,
        jobs_per_s=cfg.n / seconds,
        worker_cpu_s=cpu,
        timing=timing,
        jobq_case=jobq_case,
    )


async def case_drain(cfg: Config, k: int) -> Result:
    async with fresh_database(cfg.url) as db, producer(db) as (conn, queries):
        await enqueue_noops(queries, cfg.n)
        await check_all_queued(conn, queries, cfg.n)
        cpu0 = children_cpu_s()
        async with Workers(cfg, db, k, mode="drain", entrypoint="noop") as workers:
            # Drain mode: each QueueManager stops once no job is queued and its own are done.
            await workers.reap(cfg.timeout)
        cpu = children_cpu_s() - cpu0
        await check_all_processed(conn, queries, cfg.n)
        first, last = await activity_span(conn, queries)
    return throughput(
        cfg,
        "drain",
        k,
        last - first,
        cpu,
        timing="database: first 'picked' to last 'successful' in pgqueuer_log",
        jobq_case=f"drain, {k} worker process(es)",
    )


async def case_e2e(cfg: Config) -> Result:
    async with fresh_database(cfg.url) as db, producer(db) as (conn, queries):
        cpu0 = children_cpu_s()
        async with Workers(cfg, db, E2E_WORKERS, mode="continuous", entrypoint="noop") as w:
            await w.wait_ready()
            began: float = await conn.fetchval(
                "SELECT extract(epoch FROM clock_timestamp())::float8"
            )
            await enqueue_noops(queries, cfg.n)

            async def all_done() -> bool:
                return await successful(conn, queries) >= cfg.n

            await wait_until(all_done, cfg.timeout, f"{cfg.n} jobs to finish")
            _, last = await activity_span(conn, queries)
        cpu = children_cpu_s() - cpu0
        await check_all_processed(conn, queries, cfg.n)
    return throughput(
        cfg,
        "e2e",
        E2E_WORKERS,
        last - began,
        cpu,
        timing="database: clock_timestamp() before the first enqueue to last 'successful'",
        jobq_case=f"end to end, {E2E_WORKERS} idle workers",
    )


async def case_latency(cfg: Config) -> Result:
    latencies: list[float] = []
    async with fresh_database(cfg.url) as db, producer(db) as (conn, queries):
        async with Workers(cfg, db, 1, mode="continuous", entrypoint="stamp") as w:
            await w.wait_ready()
            for _ in range(cfg.samples):
                sent = time.time()
                (job_id,) = await queries.enqueue("stamp", None)
                tag, stamped_id, started = (await w.line(0, cfg.timeout)).split()
                if tag != "stamp" or int(stamped_id) != job_id:
                    raise RuntimeError(f"expected a stamp for job {job_id}, got {tag} {stamped_id}")
                latencies.append(float(started) - sent)
                await asyncio.sleep(LATENCY_GAP_S)

            async def all_logged() -> bool:  # completions are written in batches
                return await successful(conn, queries) >= cfg.samples

            await wait_until(all_logged, cfg.timeout, "the latency jobs to be logged")
        await check_all_processed(conn, queries, cfg.samples)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return Result(
        case="latency",
        managers_per_worker=cfg.managers,
        batch_size=cfg.batch_size,
        workers=1,
        jobs=cfg.samples,
        seconds=sum(latencies),
        jobs_per_s=None,
        p50_ms=q[49] * 1000,
        p95_ms=q[94] * 1000,
        timing="client time.time(): just before enqueue to the entrypoint's start",
        jobq_case="idle latency enqueue -> start",
    )


async def run_cases(cfg: Config, cases: Sequence[str]) -> list[Result]:
    results: list[Result] = []

    async def run(make: Awaitable[Result]) -> None:
        result = await make
        results.append(result)
        print(f"  {describe(result)}", file=sys.stderr, flush=True)

    if "enqueue_many" in cases:
        await run(case_enqueue_many(cfg))
    if "drain" in cases:
        for k in DRAIN_WORKERS:
            await run(case_drain(cfg, k))
    if "e2e" in cases:
        await run(case_e2e(cfg))
    if "latency" in cases:
        await run(case_latency(cfg))
    return results


def describe(r: Result) -> str:
    name = r.case + (f" K={r.workers}" if r.case == "drain" else "")
    if r.p50_ms is not None and r.p95_ms is not None:
        return f"{name}: p50 {r.p50_ms:.2f} ms, p95 {r.p95_ms:.2f} ms ({r.jobs} samples)"
    rate = f"{r.jobs_per_s:,.0f}/s" if r.jobs_per_s else "-"
    return f"{name}: {rate} ({r.jobs:,} in {r.seconds:.3f} s)"


def render_table(results: Sequence[Result]) -> str:
    header = (
        f"{'case':<16} {'workers':>7} {'jobs':>8} {'seconds':>9} {'jobs/s':>10}"
        f" {'p50 ms':>8} {'p95 ms':>8} {'worker CPU s':>12}"
    )
    lines = [PEER, header]

    def cell(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in results:
        lines.append(
            f"{r.case:<16} {cell(r.workers, 'd'):>7} {r.jobs:>8,} {r.seconds:>9.3f}"
            f" {cell(r.jobs_per_s, ',.0f'):>10} {cell(r.p50_ms, '.2f'):>8}"
            f" {cell(r.p95_ms, '.2f'):>8} {cell(r.worker_cpu_s, '.2f'):>12}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line.


def parse_bench_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("PEER_DATABASE_URL", DEFAULT_URL))
    p.add_argument("-n", type=int, default=20_000, help="jobs per throughput case")
    p.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated subset")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--managers", type=int, default=MANAGERS_PER_WORKER, help="per worker")
    p.add_argument("--samples", type=int, default=LATENCY_SAMPLES)
    p.add_argument("--timeout", type=float, default=600, help="seconds, for every wait")
    args = p.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(ALL_CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; pick from {', '.join(ALL_CASES)}")
    return args


def parse_worker_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pgqueuer_bench.py worker")
    p.add_argument("--database-url", required=True)
    p.add_argument("--mode", choices=[m.value for m in QueueExecutionMode], required=True)
    p.add_argument("--entrypoint", choices=["noop", "stamp"], required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--managers", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    # PgQueuer reads table and channel names (and durability) from PGQUEUER_* variables; the
    # reference is its default install, so none may leak in from the caller's environment.
    for key in [k for k in os.environ if k.upper().startswith("PGQUEUER")]:
        del os.environ[key]
    if argv[:1] == ["worker"]:
        uvloop.run(worker_main(parse_worker_args(argv[1:])))  # as `pgq run` does
        return 0
    args = parse_bench_args(argv)
    cfg = Config(
        url=args.database_url,
        n=args.n,
        batch_size=args.batch_size,
        managers=args.managers,
        samples=args.samples,
        timeout=args.timeout,
    )
    print(
        f"{PEER}: {cfg.managers} QueueManager(s) per worker process, batch_size "
        f"{cfg.batch_size}, n={cfg.n:,}",
        file=sys.stderr,
        flush=True,
    )
    results = uvloop.run(run_cases(cfg, args.cases.split(",")))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(render_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

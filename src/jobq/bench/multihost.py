"""``jobq bench --cases hosts``: worker and API processes on separate "hosts" (network
namespaces, jobq.bench.hosts) against one throwaway primary on the host side.

Per round, interleaved, for 1, 2 and 3 worker hosts: a drain (N jobs queued, burst workers
started together, first claim to last completion by the database's clock) and an end-to-end
run (idle workers, N jobs posted to 2 API hosts as bulk requests, first request to last
completion). Each records the database's CPU per job (postmaster and backends, from /proc),
how many of the machine's cores the database kept busy, and WAL bytes per job. Then the
maintenance leader's host is killed and the time until another worker holds the lease is
taken. Medians and ranges over the rounds are computed by ``summarise``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from ..app import JobQueue
from ..storage.base import NewJob
from .cases import CaseResult, check_all_succeeded, reap
from .cluster import Cluster
from .dbclock import activity_span, database_now
from .hosts import Host, HostNetwork, hosts_on_one_primary, wait_for_api
from .httpload import post_load
from .sysstat import ServerCpu, machine_busy_seconds

WORKER_HOSTS = (1, 2, 3)
API_HOSTS = 2
CONCURRENCY = 200  # per worker process
BULK = 100  # jobs per POST /jobs/bulk in the end-to-end run
CONNECTIONS_PER_API = 4
FAILOVER_LEASE_S = 3.0
APP = "jobq.bench.tasks:jq"


@dataclass
class Step:
    """One measurement of one round."""

    mode: str  # "drain" or "e2e"
    worker_hosts: int
    jobs: int
    jobs_per_s: float
    db_cpu_us_per_job: float
    db_cores: float  # database CPU seconds per second of the run
    machine_cores: float  # every process's CPU seconds per second: 2.0 is all of this machine
    wal_bytes_per_job: float


@dataclass
class HostsReport:
    steps: list[Step] = field(default_factory=list)
    failovers_s: list[float] = field(default_factory=list)


def _env(network: HostNetwork, primary: Cluster, dbname: str, **extra: str) -> dict[str, str]:
    return {
        "JOBQ_DATABASE_URL": primary.url(dbname, host=network.server_address),
        "JOBQ_LOG_LEVEL": "WARNING",
        "JOBQ_POLL_INTERVAL_S": "0.5",
        **extra,
    }


def _wal(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


class _Fresh:
    """A new migrated database on the primary for one step; dropped afterwards."""

    def __init__(self, primary: Cluster, tag: str) -> None:
        self.primary = primary
        self.name = f"jobq_hosts_{tag}_{time.monotonic_ns()}"

    async def __aenter__(self) -> str:
        with psycopg.connect(self.primary.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        async with JobQueue(self.primary.url(self.name)) as jq:
            await jq.migrate()
        return self.name

    async def __aexit__(self, *exc: object) -> None:
        with psycopg.connect(self.primary.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def _enqueue(url: str, n: int) -> None:
    async with JobQueue(url) as jq:
        for start in range(0, n, 5000):
            await jq.enqueue_many([NewJob(kind="noop") for _ in range(min(5000, n - start))])


def _step(
    mode: str, k: int, n: int, seconds: float, cpu: float, usage: tuple[float, float], wal: int
) -> Step:
    """Rates over ``seconds``, which the database's own timestamps bound; the cores busy over
    the run's whole wall time (``usage``: machine CPU seconds, wall seconds), which also
    holds the processes' start, when the CPU was measured."""
    busy, wall = usage
    return Step(mode, k, n, n / seconds, cpu / n * 1e6, cpu / wall, busy / wall, wal / n)


class _Clock:
    """The machine's busy CPU seconds and the wall time between start and ``stop``."""

    def __init__(self) -> None:
        self.busy0, self.wall0 = machine_busy_seconds(), time.monotonic()

    def stop(self) -> tuple[float, float]:
        return machine_busy_seconds() - self.busy0, time.monotonic() - self.wall0


async def _drain(network: HostNetwork, primary: Cluster, k: int, n: int) -> Step:
    server = ServerCpu(primary.postmaster_pid)
    async with _Fresh(primary, "drain") as name:
        url = primary.url(name)
        await _enqueue(url, n)
        cpu0, wal0, machine = server.total() or 0.0, _wal(url), _Clock()
        args = ["worker", APP, "--burst", "--concurrency", str(CONCURRENCY)]
        env = _env(network, primary, name)
        workers = [network.spawn(host, args, env) for host in network.hosts[:k]]
        await asyncio.to_thread(reap, workers)
        cpu, wal, busy = (server.total() or 0.0) - cpu0, _wal(url) - wal0, machine.stop()
        async with JobQueue(url) as jq:
            await check_all_succeeded(jq, n)
        first, last = await asyncio.to_thread(activity_span, url)
    return _step("drain", k, n, last - first, cpu, busy, wal)


async def _end_to_end(network: HostNetwork, primary: Cluster, k: int, n: int) -> Step:
    server = ServerCpu(primary.postmaster_pid)
    workers_on, apis_on = network.hosts[:k], network.hosts[-API_HOSTS:]
    async with _Fresh(primary, "e2e") as name:
        url = primary.url(name)
        env = _env(network, primary, name)
        args = ["worker", APP, "--concurrency", str(CONCURRENCY)]
        workers = [network.spawn(host, args, env) for host in workers_on]
        apis = [_start_api(network, host, env) for host in apis_on]
        try:
            async with JobQueue(url) as jq:
                await _until(lambda: _registered(jq, k), "workers registered")
                body = json.dumps([{"kind": "noop"}] * BULK).encode()
                per_connection = max(1, n // (BULK * CONNECTIONS_PER_API * API_HOSTS))
                total = per_connection * BULK * CONNECTIONS_PER_API * API_HOSTS
                cpu0, wal0, machine = server.total() or 0.0, _wal(url), _Clock()
                began = await asyncio.to_thread(database_now, url)
                await asyncio.gather(
                    *(
                        post_load(
                            host.address,
                            8000,
                            "/jobs/bulk",
                            body,
                            connections=CONNECTIONS_PER_API,
                            per_connection=per_connection,
                        )
                        for host in apis_on
                    )
                )
                await _until(lambda: _succeeded(jq, total), "all jobs succeeded", timeout=600)
                cpu, wal = (server.total() or 0.0) - cpu0, _wal(url) - wal0
                busy = machine.stop()
                _, last = await asyncio.to_thread(activity_span, url)
                await check_all_succeeded(jq, total)
        finally:
            network.stop([*workers, *apis])
    return _step("e2e", k, total, last - began, cpu, busy, wal)


def _start_api(network: HostNetwork, host: Host, env: dict[str, str]) -> subprocess.Popen[bytes]:
    api_env = {**env, "JOBQ_API_HOST": host.address, "JOBQ_API_PORT": "8000"}
    # A private network of the bench's own namespaces: no keys, so say so explicitly.
    process = network.spawn(host, ["api", APP, "--insecure-no-auth"], api_env)
    wait_for_api(f"http://{host.address}:8000", process, network)
    return process


async def _registered(jq: JobQueue, count: int) -> bool:
    return len(await jq.workers()) >= count


async def _succeeded(jq: JobQueue, n: int) -> bool:
    return sum(s.count for s in await jq.stats() if s.status == "succeeded") >= n


async def _until(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"hosts bench: timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _failover(network: HostNetwork, primary: Cluster) -> float:
    """Seconds from the leader's host dying to another worker holding the lease."""
    async with _Fresh(primary, "failover") as name:
        url = primary.url(name)
        env = _env(network, primary, name, JOBQ_LEASE_S=str(FAILOVER_LEASE_S))
        hosts = network.hosts[:3]
        workers = [network.spawn(host, ["worker", APP], env) for host in hosts]
        try:
            leader = await _leader_pid(url, exclude=None)
            victim = hosts[[w.pid for w in workers].index(leader)]
            network.kill(victim)
            killed = time.monotonic()
            await _leader_pid(url, exclude=leader)
            return time.monotonic() - killed
        finally:
            network.stop([w for w in workers if w.returncode is None])
            for host in hosts:
                host.processes.clear()


async def _leader_pid(url: str, exclude: int | None, timeout: float = 120) -> int:
    query = (
        "SELECT w.pid FROM jobq_leader l JOIN jobq_workers w ON w.id = l.holder "
        "WHERE l.name = 'maintenance' AND l.expires_at > now()"
    )
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            row = conn.execute(query).fetchone()
        if row is not None and row[0] != exclude:
            return int(row[0])
        if time.monotonic() > deadline:
            raise RuntimeError("hosts bench: no maintenance leader in time")
        await asyncio.sleep(0.01)


async def run_hosts(n: int, rounds: int) -> HostsReport:
    report = HostsReport()
    with hosts_on_one_primary(max(WORKER_HOSTS) + API_HOSTS) as (network, primary):
        for _ in range(rounds):
            for k in WORKER_HOSTS:
                report.steps.append(await _drain(network, primary, k, n))
                _forget_processes(network.hosts)
                report.steps.append(await _end_to_end(network, primary, k, n))
                _forget_processes(network.hosts)
            report.failovers_s.append(await _failover(network, primary))
    return report


def _forget_processes(hosts: Sequence[Host]) -> None:
    for host in hosts:
        host.processes[:] = [p for p in host.processes if p.poll() is None]


def _median_range(values: Sequence[float], fmt: str) -> str:
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def summarise(report: HostsReport) -> tuple[list[CaseResult], str]:
    """Results for the bench's table and JSON, and a Markdown table of medians (min-max)."""
    lines = [
        "| run | worker hosts | jobs/s | DB CPU µs/job | DB cores busy | machine cores busy "
        "| WAL bytes/job |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    results = []
    for mode in ("drain", "e2e"):
        for k in WORKER_HOSTS:
            steps = [s for s in report.steps if s.mode == mode and s.worker_hosts == k]
            if not steps:
                continue
            rate = [s.jobs_per_s for s in steps]
            label = "drain" if mode == "drain" else f"end to end, {API_HOSTS} API hosts"
            lines.append(
                f"| {label} | {k} | {_median_range(rate, ',.0f')} "
                f"| {_median_range([s.db_cpu_us_per_job for s in steps], '.0f')} "
                f"| {_median_range([s.db_cores for s in steps], '.2f')} "
                f"| {_median_range([s.machine_cores for s in steps], '.2f')} "
                f"| {_median_range([s.wal_bytes_per_job for s in steps], ',.0f')} |"
            )
            n = steps[0].jobs
            result = CaseResult(
                f"hosts: {label}, {k} worker host(s)", n, n / statistics.median(rate)
            )
            result.per_second = statistics.median(rate)
            result.extra = {"rounds": [s.__dict__ for s in steps]}
            results.append(result)
    if report.failovers_s:
        failover = _median_range(report.failovers_s, ".2f")
        lines.append("")
        lines.append(
            f"Maintenance leader's host killed: another host held the lease after {failover} s "
            f"(JOBQ_LEASE_S={FAILOVER_LEASE_S:g}; median, min-max of {len(report.failovers_s)})."
        )
        result = CaseResult("hosts: leader failover", 0, statistics.median(report.failovers_s))
        result.extra = {"failovers_s": report.failovers_s, "lease_s": FAILOVER_LEASE_S}
        results.append(result)
    return results, "\n".join(lines)

"""Many hosts on one PostgreSQL, shown with real processes in network namespaces: a drain
across worker hosts fed by two API hosts, a worker host cut off mid-drain, and the death of
the maintenance leader's host."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Sequence

import httpx
import pytest

from jobq.bench.cluster import Cluster
from jobq.bench.hosts import Host, HostNetwork, wait_for_api

from ..waiting import eventually
from ..worker.processes import REPO, at_least, count_is, sql

pytestmark = pytest.mark.netns

APP = "tests.worker.process_app:jq"  # its task `record` writes processed_log in its own
# transaction, which commits with the job's completion (ctx.transaction())
LEASE = {"JOBQ_LEASE_S": "2", "JOBQ_HEARTBEAT_S": "0.5", "JOBQ_POLL_INTERVAL_S": "0.2"}
SUCCEEDED = "SELECT count(*) FROM jobq_jobs WHERE status = 'succeeded'"


def start_workers(
    network: HostNetwork,
    primary: Cluster,
    hosts: Sequence[Host],
    *,
    job_seconds: float = 0.0,
    concurrency: int = 4,
) -> list[subprocess.Popen[bytes]]:
    env = {
        "JOBQ_DATABASE_URL": primary.url(host=network.server_address),
        "JOBQ_LOG_LEVEL": "INFO",
        "TEST_JOB_SECONDS": str(job_seconds),
        **LEASE,
    }
    args = ["worker", APP, "--concurrency", str(concurrency)]
    return [network.spawn(host, args, env, cwd=REPO) for host in hosts]


def start_api(network: HostNetwork, primary: Cluster, host: Host) -> str:
    env = {
        "JOBQ_DATABASE_URL": primary.url(host=network.server_address),
        "JOBQ_API_HOST": host.address,
        "JOBQ_API_PORT": "8000",  # each host has ports of its own
        "JOBQ_LOG_LEVEL": "WARNING",
    }
    # A private network of the test's own namespaces: no keys, so say so explicitly.
    process = network.spawn(host, ["api", "--insecure-no-auth"], env, cwd=REPO)
    base = f"http://{host.address}:8000"
    wait_for_api(base, process, network)
    return base


async def registered(url: str, processes: Sequence[subprocess.Popen[bytes]]) -> bool:
    pids = {row[0] for row in await asyncio.to_thread(sql, url, "SELECT pid FROM jobq_workers")}
    return all(p.pid in pids for p in processes)


async def enqueue(url: str, count: int, *, via: Sequence[str] = ()) -> None:
    """``count`` record jobs: over HTTP, alternating between the API hosts ``via``, or
    straight into the database."""
    if not via:
        rows = ", ".join(f"('record', '{{\"n\": {n}}}')" for n in range(count))
        await asyncio.to_thread(sql, url, f"INSERT INTO jobq_jobs (kind, payload) VALUES {rows}")
        return
    clients = [httpx.AsyncClient(base_url=base, timeout=30) for base in via]
    try:
        for n in range(count):
            job = {"kind": "record", "payload": {"n": n}}
            response = await clients[n % len(clients)].post("/jobs", json=job)
            assert response.status_code == 201, response.text
    finally:
        for client in clients:
            await client.aclose()


def effects(url: str) -> tuple[int, int]:
    """(rows, distinct jobs) in the log the jobs write transactionally."""
    (row,) = sql(url, "SELECT count(*), count(DISTINCT job_id) FROM processed_log")
    return int(str(row[0])), int(str(row[1]))


@pytest.mark.parametrize("worker_hosts", [1, 2, 3])
async def test_drain_across_worker_hosts_fed_by_two_api_hosts(
    hosts: tuple[HostNetwork, Cluster], worker_hosts: int
) -> None:
    network, primary = hosts
    url = primary.url()
    apis = [start_api(network, primary, host) for host in network.hosts[3:5]]
    workers = start_workers(network, primary, network.hosts[:worker_hosts])
    try:
        await eventually(lambda: registered(url, workers), timeout=60, what="workers up")
        await enqueue(url, 300, via=apis)
        await eventually(lambda: count_is(url, SUCCEEDED, 300), timeout=120, what="drained")
    finally:
        codes = network.stop(workers)
    assert codes == [0] * worker_hosts, [network.output(p)[-2000:] for p in workers]
    assert effects(url) == (300, 300)  # each job's effect exactly once
    pids = {int(str(row[0])) for row in sql(url, "SELECT DISTINCT pid FROM processed_log")}
    assert pids == {p.pid for p in workers}  # every worker host took part


async def test_a_host_cut_off_mid_drain_costs_a_lease_and_nothing_else(
    hosts: tuple[HostNetwork, Cluster],
) -> None:
    network, primary = hosts
    url = primary.url()
    cut_host, other = network.hosts[0], network.hosts[1]
    workers = start_workers(network, primary, [cut_host, other], job_seconds=0.3)
    cut_off, survivor = workers
    running_on_cut = (
        "SELECT j.id FROM jobq_jobs j JOIN jobq_workers w ON w.id = j.locked_by "
        f"WHERE j.status = 'running' AND w.pid = {cut_off.pid}"
    )
    try:
        await eventually(lambda: registered(url, workers), timeout=60, what="workers up")
        await enqueue(url, 150)

        async def cut_host_is_busy() -> list[tuple[object, ...]]:
            await at_least(url, SUCCEEDED, 20)
            return await asyncio.to_thread(sql, url, running_on_cut)

        stranded = {int(str(r[0])) for r in await eventually(cut_host_is_busy, what="busy")}
        network.cut(cut_host)
        # The other host finishes everything, the cut-off host's jobs once their lease ran out.
        await eventually(lambda: count_is(url, SUCCEEDED, 150), timeout=120, what="all done")
        network.restore(cut_host)
        # Back on the network, the cut-off worker finishes the jobs it still ran, and its
        # completions are refused: the jobs were taken from it.
        await eventually(
            lambda: asyncio.to_thread(lambda: "lease lost" in network.output(cut_off)),
            timeout=120,
            what="the cut-off worker's late completions refused",
        )
    finally:
        codes = network.stop(workers)
    assert codes == [0, 0], [network.output(p)[-2000:] for p in workers]
    assert effects(url) == (150, 150)  # nothing lost, nothing done twice
    rescued = sql(
        url,
        "SELECT j.id, j.attempt, e.error FROM jobq_jobs j "
        "JOIN jobq_job_errors e ON e.job_id = j.id "
        "WHERE j.id = ANY(%s)",
        [sorted(stranded)],
    )
    assert {int(str(r[0])) for r in rescued} == stranded
    assert all(int(str(r[1])) == 2 and "lease expired" in str(r[2]) for r in rescued)
    done_by = sql(
        url, "SELECT DISTINCT pid FROM processed_log WHERE job_id = ANY(%s)", [sorted(stranded)]
    )
    assert done_by == [(survivor.pid,)]


async def test_when_the_leaders_host_dies_another_host_takes_over(
    hosts: tuple[HostNetwork, Cluster],
) -> None:
    network, primary = hosts
    url = primary.url()
    workers = start_workers(network, primary, network.hosts[:3], job_seconds=1.0)
    leader_query = (
        "SELECT w.pid FROM jobq_leader l JOIN jobq_workers w ON w.id = l.holder "
        "WHERE l.name = 'maintenance' AND l.expires_at > now()"
    )
    try:
        await eventually(lambda: registered(url, workers), timeout=60, what="workers up")
        (row,) = await eventually(lambda: asyncio.to_thread(sql, url, leader_query), what="leader")
        leader = next(p for p in workers if p.pid == row[0])
        leader_host = network.hosts[workers.index(leader)]
        await enqueue(url, 24)
        running_on_leader = (
            "SELECT count(*) FROM jobq_jobs j JOIN jobq_workers w ON w.id = j.locked_by "
            f"WHERE j.status = 'running' AND w.pid = {leader.pid}"
        )
        await eventually(lambda: at_least(url, running_on_leader, 1), what="leader busy")
        network.kill(leader_host)
        killed_at = time.monotonic()

        async def new_leader() -> list[tuple[object, ...]]:
            rows = await asyncio.to_thread(sql, url, leader_query)
            return [r for r in rows if r[0] != leader.pid]

        (taken,) = await eventually(new_leader, timeout=60, what="another leader")
        failover_s = time.monotonic() - killed_at
        # The new leader rescues what the dead host held; the others run it.
        await eventually(lambda: count_is(url, SUCCEEDED, 24), timeout=120, what="all done")
    finally:
        survivors = [p for p in workers if p.returncode is None]
        codes = network.stop(survivors)
    assert codes == [0, 0], [network.output(p)[-2000:] for p in survivors]
    assert taken[0] in {p.pid for p in survivors}
    assert effects(url) == (24, 24)
    print(f"maintenance leader failover: {failover_s:.2f} s with JOBQ_LEASE_S=2")

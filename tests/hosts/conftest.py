"""Hosts on one PostgreSQL: network namespaces made by jobq.bench.hosts, one per host, each
running real ``jobq`` processes. Root only: elsewhere every test here is skipped, saying why."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from jobq import JobQueue
from jobq.bench.cluster import Cluster
from jobq.bench.hosts import HostNetwork, hosts_on_one_primary, unavailable

from ..conftest import run_async

HOSTS = 5  # enough for every test here: up to 3 worker hosts and 2 API hosts
LOG_TABLE = (
    "CREATE TABLE processed_log (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
    "pid INTEGER NOT NULL)"
)


@pytest.fixture
def hosts() -> Iterator[tuple[HostNetwork, Cluster]]:
    """Five namespaces and a fresh migrated primary on the host side of their links (with
    the transactional-effects table the test app writes), all removed after the test."""
    why = unavailable()
    if why is not None:
        pytest.skip(f"multi-host tests skipped: {why}")
    with hosts_on_one_primary(HOSTS) as (network, primary):
        run_async(lambda: _migrate(primary.url()))
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute(LOG_TABLE)
        yield network, primary


async def _migrate(url: str) -> None:
    async with JobQueue(url) as jq:
        await jq.migrate()

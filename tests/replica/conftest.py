"""A throwaway primary and a streaming replica of it (``pg_basebackup -R``), for the module;
each test gets a fresh migrated database on the primary, waited for on the replica."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from jobq import JobQueue
from jobq.bench.cluster import Cluster, ClusterError, primary_and_replica, server_bin_dir

from ..conftest import run_async
from ..waiting import eventually

_counter = itertools.count()


@dataclass
class Pair:
    primary: Cluster
    replica: Cluster
    primary_url: str
    replica_url: str

    def replay(self, paused: bool) -> None:
        """Pause or resume the replica's replay of the primary's WAL."""
        call = "pg_wal_replay_pause" if paused else "pg_wal_replay_resume"
        with psycopg.connect(self.replica_url, autocommit=True) as conn:
            conn.execute(f"SELECT {call}()")


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    if server_bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries to make a primary and a replica with")
    try:
        with primary_and_replica() as pair:
            yield pair
    except ClusterError as exc:
        pytest.fail(f"could not make a primary and a replica: {exc}", pytrace=False)


async def _migrate(url: str) -> None:
    async with JobQueue(url) as jq:
        await jq.migrate()


async def _exists(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM jobq_migrations").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] > 0


@pytest.fixture
async def pair(clusters: tuple[Cluster, Cluster]) -> Pair:
    primary, replica = clusters
    name = f"jobq_r_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(primary.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    run_async(lambda: _migrate(primary.url(name)))
    made = Pair(primary, replica, primary.url(name), replica.url(name))
    await eventually(lambda: _exists(made.replica_url), what="the database on the replica")
    return made

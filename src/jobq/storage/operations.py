"""The driver operations that carry a rule of the queue, written once for every driver.

A driver subclasses ``RuleOperations`` and provides the primitives: ``run_plan`` (execute a
statement plan from ``jobq.rules`` on one of its connections), its plain claim, and its
inserts. Migrations, flow-controlled claims and the jobs-only forms of enqueueing then come
from here, the same on every database.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ..config import Settings
from ..model import Job
from ..rules import migrations
from ..rules.claims import TenantCursor, claim_with_flow_control
from .base import ClaimParams, Enqueued, ListParams, NewJob
from .common import LocalBus
from .plans import Plan, T
from .sqlfiles import load_queries


class RuleOperations(ABC):
    dialect: str

    def __init__(self, url: str, settings: Settings | None) -> None:
        self._settings = settings or Settings(database_url=url)
        self._q = load_queries(self.dialect)  # this dialect's named SQL
        self._bus = LocalBus()  # wake-ups within this process
        self._tenant_cursor = TenantCursor()  # fair claiming, per worker of this process

    # ------------------------------------------------------------------ primitives
    @abstractmethod
    async def run_plan(self, plan: Plan[T], *, atomic: bool, read_only: bool = False) -> T:
        """Execute a plan on a connection of this driver: in one transaction when
        ``atomic`` (its Lock steps then hold until it ends); ``read_only`` plans may go to
        a connection that never waits for writers."""

    @abstractmethod
    async def claim_plain(self, params: ClaimParams) -> list[Job]:
        """The claim without limits or fairness: one statement, the hot path."""

    @abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        """Insert jobs in one round trip where possible; each request's job and outcome, in
        request order. With ``connection`` (the caller's own open transaction) the jobs
        commit or roll back with it."""

    @abstractmethod
    async def close_async(self) -> None:
        """Close the connections of the async API."""

    @abstractmethod
    def close_sync(self) -> None:
        """Close the connections ``enqueue_sync`` opened, if any."""

    @abstractmethod
    async def list_by(self, query: str, params: ListParams) -> list[Job]:
        """Jobs by one of the listing queries, ``list_jobs`` or ``list_jobs_lean`` (the
        same filters and order), newest first."""

    @abstractmethod
    def enqueue_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Enqueued]:
        """``enqueue`` for synchronous code, over connections of its own (made on first
        use, safe from any thread); ``connection`` is then a synchronous one."""

    # ------------------------------------------------------------------ the same everywhere
    async def close(self) -> None:
        """Close every connection; the synchronous ones from a thread, since closing one
        waits for a synchronous call in flight on it."""
        await self.close_async()
        await asyncio.to_thread(self.close_sync)

    async def list_jobs(self, params: ListParams) -> list[Job]:
        return await self.list_by("list_jobs", params)

    async def list_jobs_lean(self, params: ListParams) -> list[Job]:
        return await self.list_by("list_jobs_lean", params)

    # ------------------------------------------------------------------ from the rules
    async def migrate(self) -> list[int]:
        return await self.run_plan(migrations.migrate(self.dialect), atomic=True)

    async def rollback(self, steps: int = 1) -> list[int]:
        return await self.run_plan(migrations.rollback(self.dialect, steps), atomic=True)

    async def applied_migrations(self) -> list[int]:
        return await self.run_plan(migrations.applied_migrations(), atomic=False, read_only=True)

    async def claim_batch(self, params: ClaimParams) -> list[Job]:
        if params.limit < 1:
            return []
        if params.limits or params.fair_tenants:
            plan = claim_with_flow_control(params, self._tenant_cursor)
            jobs = await self.run_plan(plan, atomic=True)
        else:
            jobs = await self.claim_plain(params)
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        return [e.job for e in await self.enqueue(jobs, connection=connection)]

    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        return [e.job for e in self.enqueue_sync(jobs, connection=connection)]

"""Housekeeping of the whole queue, done by one process at a time.

Whoever holds the maintenance lease (taken and renewed every round, lost ``lease_s`` after
its holder stops renewing) rescues the jobs of dead workers, deletes finished jobs past
their retention, expires idempotency keys, VACUUMs the jobs table where nothing else keeps
up with it, and refreshes the planner's statistics. Workers and API processes all take
part in the election, so this runs whichever of them are up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable

import structlog

from . import rollup
from .config import Settings
from .model import JobStatus
from .storage.base import Driver

# The name of the lease whose holder runs the housekeeping below.
MAINTENANCE_LEASE = "maintenance"
# The leader's upkeep of the jobs table (retention, VACUUM) runs this often while there is
# work for it: a busy queue finishes tens of thousands of jobs a second, and every one of them
# must eventually be deleted and its row version reclaimed.
HOUSEKEEPING_EVERY_S = 1.0
PURGE_BATCH = 2000  # jobs deleted per statement: short locks, few round trips
PURGE_BATCHES_PER_STATUS = 50  # a round's most for one status, so that each gets its turn
# Expired idempotency keys are cleared this often: a key's keep-time is hours, and the
# statement reads every kept key.
IDEMPOTENCY_SWEEP_EVERY_S = 60.0
# The charts' summary of finished jobs (rollup.py): a closed minute shows this soon.
ROLLUP_EVERY_S = 10.0


class Maintenance:
    """This process's part in the queue's housekeeping: ``round()`` on a regular beat
    (every ``every_s``) takes or renews the lease and, while it leads, does the duties.
    ``on_rescued`` is told when jobs were rescued (a worker wakes its claim loop)."""

    def __init__(
        self,
        driver: Driver,
        settings: Settings,
        holder: str,
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
        on_rescued: Callable[[], None] | None = None,
    ) -> None:
        self.driver = driver
        self.settings = settings
        self.holder = holder
        self.log = log or structlog.get_logger("jobq.maintenance").bind(holder=holder)
        self._on_rescued = on_rescued
        self.is_leader = False
        self._stopping = asyncio.Event()
        self._statistics: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        # VACUUM and ANALYZE take the same table lock, and each skips the table when the other
        # holds it: this process runs one at a time, so that neither is skipped for the other.
        self._table_upkeep = asyncio.Lock()

    @property
    def every_s(self) -> float:
        """How often ``round`` should run: often enough that a lease is renewed well within
        its length, and dead workers' jobs are rescued soon after their lease ends."""
        return max(self.settings.lease_s / 3, self.settings.cancel_poll_s)

    async def round(self) -> None:
        """Take or renew the lease; as leader, rescue now and keep the background duties
        running."""
        leader = await self.driver.take_leadership(
            MAINTENANCE_LEASE, self.holder, self.settings.lease_s
        )
        if leader != self.is_leader:
            self.log.info("maintenance leadership " + ("taken" if leader else "lost"))
        self.is_leader = leader
        if not leader:
            return
        await self.rescue()
        # In tasks of their own: a purge that catches up, a VACUUM or an ANALYZE of a large
        # table takes seconds, and the caller's loop must keep its beat meanwhile.
        if self._housekeeping is None or self._housekeeping.done():
            self._housekeeping = asyncio.create_task(self._keep_house(), name="jobq-housekeeping")
        if self._statistics is None or self._statistics.done():
            self._statistics = asyncio.create_task(
                self.refresh_statistics(), name="jobq-statistics"
            )

    async def run(self) -> None:
        """Rounds on the beat until ``request_stop`` (for processes without a heartbeat
        loop of their own, such as the API); then the duties end and the lease is handed
        over. Outages are logged, and the next round tries again."""
        try:
            while not self._stopping.is_set():
                try:
                    await self.round()
                except Exception as exc:
                    self.log.warning("maintenance round failed", error=str(exc))
                await self._pause(self.every_s)
        finally:
            await self.stop()

    def request_stop(self) -> None:
        """Ask ``run`` to end after the round in progress, if any."""
        self._stopping.set()

    async def stop(self) -> None:
        """End the background duties and hand the lease over at once, without waiting for
        it to expire."""
        self._stopping.set()
        for duty in (self._statistics, self._housekeeping):
            if duty is not None:
                duty.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await duty
        with contextlib.suppress(Exception):
            if self.is_leader:
                await self.driver.give_up_leadership(MAINTENANCE_LEASE, self.holder)
        self.is_leader = False

    async def rescue(self) -> None:
        """Jobs left running by workers silent for a lease go back to the queue."""
        try:
            rescued = await self.driver.rescue_stale(self.settings.lease_s)
        except Exception as exc:
            self.log.warning("rescue failed", error=str(exc))
            return
        if rescued:
            self.log.warning("rescued jobs of dead workers", job_ids=rescued)
            if self._on_rescued is not None:
                self._on_rescued()

    async def refresh_statistics(self) -> None:
        try:
            async with self._table_upkeep:
                refreshed = await self.driver.refresh_statistics()
            if refreshed:
                self.log.info("refreshed the jobs table's planner statistics")
        except Exception as exc:  # an optimisation: the next round tries again
            self.log.warning("statistics refresh failed", error=str(exc))

    async def _keep_house(self) -> None:
        """While this process leads: retention, VACUUM and the idempotency keys' expiry, side
        by side (on a busy queue the purge is hardly ever done; the others must not wait)."""
        await asyncio.gather(
            self._retention_rounds(),
            self._vacuum_rounds(),
            self._idempotency_rounds(),
            self._rollup_rounds(),
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _leading(self) -> bool:
        return self.is_leader and not self._stopping.is_set()

    async def _retention_rounds(self) -> None:
        while self._leading():
            pause = self.every_s
            try:
                purged, behind = await self.purge_expired()
                # Jobs were due: more will be by the next second, so the next round comes
                # then (or at once when this one stopped short). Nothing was: the next round
                # at the maintenance pace, since even a purge that finds nothing reads the
                # finished jobs it checks (SQLite walks every succeeded one).
                pause = 0.0 if behind else HOUSEKEEPING_EVERY_S if purged else pause
            except Exception as exc:  # an outage: the next round tries again
                self.log.warning("retention failed", error=str(exc))
            await self._pause(pause)

    async def _vacuum_rounds(self) -> None:
        threshold = self.settings.vacuum_dead_rows
        while threshold and self._leading():
            try:
                async with self._table_upkeep:
                    vacuumed = await self.driver.vacuum_jobs(threshold)
                if vacuumed:
                    self.log.debug("vacuumed the jobs table")
            except Exception as exc:  # an outage: the next round tries again
                self.log.warning("vacuum failed", error=str(exc))
            await self._pause(HOUSEKEEPING_EVERY_S)

    async def _idempotency_rounds(self) -> None:
        while self._leading():
            try:
                await self.expire_idempotency_keys()
            except Exception as exc:  # an outage: the next round tries again
                self.log.warning("idempotency key expiry failed", error=str(exc))
            await self._pause(IDEMPOTENCY_SWEEP_EVERY_S)

    async def _rollup_rounds(self) -> None:
        """The per-minute summary of finished jobs behind the dashboard's charts."""
        while self._leading():
            behind = False
            try:
                behind = await rollup.roll_up(self.driver)
            except Exception as exc:  # an outage: the next round tries again
                self.log.warning("finished-jobs summary failed", error=str(exc))
            await self._pause(0 if behind else ROLLUP_EVERY_S)

    async def expire_idempotency_keys(self) -> int:
        """Clear the idempotency keys past their keep-time (the jobs stay); how many."""
        cleared = await self.driver.forget_idempotency_keys(self.settings.idempotency_ttl_s)
        if cleared:
            self.log.info("expired idempotency keys cleared", count=cleared)
        return cleared

    async def purge_expired(self) -> tuple[int, bool]:
        """Retention: delete finished jobs past their keep-time, in batches, until none is
        due or PURGE_BATCHES_PER_STATUS batches of a status are done, so that a round ends
        and every status gets its turn however far behind one is. Returns how many were
        deleted, and whether any status was left with jobs due."""
        rules = [
            (JobStatus.SUCCEEDED, self.settings.retention),
            (JobStatus.CANCELLED, self.settings.retention),
            (JobStatus.FAILED, self.settings.failed_retention),
        ]
        total, behind = 0, False
        for status, keep in rules:
            purged = 0
            for _ in range(PURGE_BATCHES_PER_STATUS):
                if not self._leading():
                    break
                deleted = await self.driver.purge_finished(
                    status, keep.total_seconds(), PURGE_BATCH
                )
                purged += deleted
                if deleted < PURGE_BATCH:
                    break
            else:
                behind = True
            if purged:
                self.log.info("retention purged jobs", status=str(status), count=purged)
            total += purged
        return total, behind


def holder_id(role: str) -> str:
    """A name for a lease holder or worker: unique per process and start."""
    return f"{role}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

"""Reads from a PostgreSQL streaming replica (``JOBQ_READ_DATABASE_URL``), safely.

Lists, counts, stats, a job's errors and the event streams' polls go to the replica when:
- it answers: a replica that is down (or does not answer a probe within a second) sends reads
  to the primary until a later probe finds it back;
- it is less than ``JOBQ_REPLICA_MAX_LAG_S`` behind: lag is the age of the oldest WAL position
  the primary reported (probed every ``LAG_CHECK_EVERY_S``) that the replica has not replayed
  yet, so it is measured in time, on the primary's own terms, to that probe interval;
- it has replayed this process's own writes (read-your-writes): after a write through the
  JobQueue, the next read learns the primary's WAL position (at or past that write's commit)
  and reads from the replica only once it has replayed that far, else from the primary.

Every read that meant to go to the replica and went to the primary is counted by reason;
the replica going down, coming back, falling behind and catching up are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog

from .errors import DatabaseUnavailableError
from .storage.base import Driver

log = structlog.get_logger("jobq.replica")

T = TypeVar("T")
LAG_CHECK_EVERY_S = 0.5
PROBE_TIMEOUT_S = 1.0
# A replica found down is probed this much less often: each probe of a host that does not
# answer holds up the read that makes it for up to PROBE_TIMEOUT_S.
DOWN_CHECK_EVERY_S = 5.0
# Why a read went to the primary instead (the label of the fallback counter).
DOWN, LAGGING, BEHIND_OWN_WRITES = "down", "lagging", "behind_own_writes"


class WalPositioned(Protocol):
    async def wal_position(self) -> int: ...


class ReadDriver(Driver, WalPositioned, Protocol):
    """A driver that can say how much WAL its server has (the PostgreSQL driver)."""


class LagClock:
    """The replica's lag in seconds, from the primary's WAL positions over time."""

    def __init__(self) -> None:
        self._unreplayed: deque[tuple[float, int]] = deque()  # (when seen, primary position)

    def observe(self, now: float, primary: int, replayed: int) -> float:
        self._unreplayed.append((now, primary))
        while self._unreplayed and self._unreplayed[0][1] <= replayed:
            self._unreplayed.popleft()
        return now - self._unreplayed[0][0] if self._unreplayed else 0.0


class ReadRouter:
    def __init__(
        self,
        primary: ReadDriver,
        replica: ReadDriver,
        *,
        max_lag_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self._max_lag_s = max_lag_s
        self._clock = clock
        self._lag = LagClock()
        self._next_check = 0.0
        self._down = False
        self._lag_s = 0.0
        self._replayed = 0  # the replica's position at its last probe
        self._own_writes = 0  # a primary position at or past this process's last write
        self._wrote = False  # a write since _own_writes was learnt
        self.fallbacks: dict[str, int] = {DOWN: 0, LAGGING: 0, BEHIND_OWN_WRITES: 0}
        self.on_fallback: Callable[[str], None] | None = None

    def wrote(self) -> None:
        """Called after each write through the queue: cheap, the position is learnt lazily."""
        self._wrote = True

    async def read(self, operation: Callable[[Driver], Awaitable[T]]) -> T:
        reason = await self._reason_for_primary()
        if reason is not None:
            self._fell_back(reason)
            return await operation(self.primary)
        try:
            return await operation(self.replica)
        except DatabaseUnavailableError as exc:
            self._set_down(True, str(exc))
            self._fell_back(DOWN)
            return await operation(self.primary)

    async def close(self) -> None:
        await self.replica.close()

    async def _reason_for_primary(self) -> str | None:
        if self._wrote:
            self._wrote = False
            self._own_writes = max(self._own_writes, await self.primary.wal_position())
        if self._clock() >= self._next_check:
            await self._probe()
        if self._down:
            return DOWN
        if self._lag_s > self._max_lag_s:
            return LAGGING
        if self._replayed < self._own_writes:
            replayed = await self._replica_position()
            if replayed is None:
                return DOWN
            self._replayed = max(self._replayed, replayed)
            if self._replayed < self._own_writes:
                return BEHIND_OWN_WRITES
        return None

    async def _probe(self) -> None:
        now = self._clock()
        self._next_check = now + LAG_CHECK_EVERY_S
        try:
            primary = await self.primary.wal_position()
        except DatabaseUnavailableError:
            return  # the reads will meet the outage themselves
        replayed = await self._replica_position()
        if replayed is None:
            return
        self._replayed = replayed
        lag = self._lag.observe(now, primary, replayed)
        if (lag > self._max_lag_s) != (self._lag_s > self._max_lag_s):
            if lag > self._max_lag_s:
                log.warning("read replica lagging; reading from the primary", lag_s=round(lag, 2))
            else:
                log.info("read replica caught up; reading from it again", lag_s=round(lag, 2))
        self._lag_s = lag

    async def _replica_position(self) -> int | None:
        """The replica's replayed position; None (and marked down) if it does not answer."""
        try:
            position = await asyncio.wait_for(self.replica.wal_position(), PROBE_TIMEOUT_S)
        except (DatabaseUnavailableError, TimeoutError) as exc:
            self._set_down(True, str(exc) or "no answer within a second")
            return None
        self._set_down(False, "")
        return position

    def _set_down(self, down: bool, why: str) -> None:
        if down:
            self._next_check = self._clock() + DOWN_CHECK_EVERY_S
        if down and not self._down:
            log.warning("read replica unavailable; reading from the primary", error=why)
        elif self._down and not down:
            log.info("read replica back; reading from it again")
        self._down = down

    def _fell_back(self, reason: str) -> None:
        self.fallbacks[reason] += 1
        if self.on_fallback is not None:
            with contextlib.suppress(Exception):  # a metrics hook must not fail a read
                self.on_fallback(reason)

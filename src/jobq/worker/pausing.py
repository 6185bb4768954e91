"""Which queues a worker may claim from, given the paused ones.

The claim is the hottest path, so it never reads the paused set: the worker keeps the set in
memory and narrows the queues it asks for. With nothing paused (the usual case) the claim is
exactly the plain one. The set is read again when a pause or resume notification arrives
(PostgreSQL's NOTIFY, or this process's bus), after a wake-up from another process's commit
(SQLite's only cross-process signal), and at least once per poll interval, in case a
notification was lost.

A worker of named queues drops the paused ones from its list. A worker of every queue that
finds something paused claims from the queues that have waiting work minus the paused ones
(one skip scan of the claim index per claim while anything is paused), so a job of a queue
that appears meanwhile is claimed at the next claim.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..storage.base import Driver


class ClaimableQueues:
    def __init__(self, driver: Driver, served: Sequence[str] | None, max_age_s: float) -> None:
        self._driver = driver
        self._served = list(served) if served is not None else None
        self._max_age_s = max_age_s
        self._paused: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    @property
    def paused(self) -> frozenset[str]:
        return self._paused

    def stale(self) -> None:
        """Read the paused set again before the next claim."""
        self._read_at = float("-inf")

    def on_notification(self, kind: str, value: str) -> None:
        if kind in ("pause", "resume") or (kind == "new" and value == "*"):
            self.stale()

    async def current(self) -> list[str] | None:
        """The queues to claim from now: None for every queue, [] for none."""
        now = time.monotonic()
        if now - self._read_at >= self._max_age_s:
            self._paused = frozenset(await self._driver.paused_queues())
            self._read_at = now
        if not self._paused:
            return self._served
        if self._served is not None:
            return [q for q in self._served if q not in self._paused]
        return [q for q in await self._driver.waiting_queues() if q not in self._paused]

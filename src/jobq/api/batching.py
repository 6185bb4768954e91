"""Group commit for single-job enqueues arriving over HTTP.

Each ``POST /jobs`` hands its job to the batcher and waits. While one INSERT is in flight,
the jobs of requests arriving meanwhile gather; when it returns, they all go in the next
INSERT together. An idle API inserts at once (no timer, no added latency); a busy one pays
one statement and one commit per batch instead of per request, which is where the time of a
single enqueue goes (round trip, commit, driver overhead).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ..model import Job
from ..storage.base import NewJob

if TYPE_CHECKING:
    from ..app import JobQueue


class EnqueueBatcher:
    def __init__(self, jobq: JobQueue, max_batch: int = 500) -> None:
        self._jobq = jobq
        self._max_batch = max_batch
        self._pending: list[tuple[NewJob, asyncio.Future[Job]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def enqueue(self, job: NewJob) -> Job:
        """Insert ``job`` (already validated: one bad job would fail its whole batch)."""
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="jobq-enqueue-batcher")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                jobs = await self._jobq.enqueue_many([job for job, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._pending:
                    future.cancel()  # shutting down: no waiter is left hanging
                self._pending.clear()
                raise
            except Exception as exc:  # every waiter of the batch gets the error (e.g. 503)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), job in zip(batch, jobs, strict=True):
                if not future.done():  # its request may have gone away meanwhile
                    future.set_result(job)

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._flusher

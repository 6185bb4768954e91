"""What a running task is given: its job, its attempt, a cancellation signal, a logger."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from ..errors import JobCancelled
from ..model import Job
from ..storage.base import Driver


class JobContext:
    """Built once per job run; kept light (no logger until a task asks for one), since a
    worker creates thousands of these a second."""

    __slots__ = (
        "_cancelled",
        "_cancelled_event",
        "_driver",
        "_log",
        "cancel_reason",
        "completed_in_transaction",
        "job",
        "span",
        "worker_id",
    )

    def __init__(self, job: Job, worker_id: str, driver: Driver | None = None) -> None:
        self.job = job
        self.worker_id = worker_id
        self._driver = driver
        self._cancelled = False
        # Made only when a task waits for cancellation: most jobs never do, and an Event per
        # job costs a microsecond of a no-op job's few dozen.
        self._cancelled_event: asyncio.Event | None = None
        self._log: Any = None
        self.cancel_reason: str | None = None
        self.completed_in_transaction = False
        self.span: Any = None  # the attempt's OpenTelemetry span, when tracing is on

    @property
    def log(self) -> Any:
        """A structlog logger bound to this job (id, kind, attempt, request id)."""
        if self._log is None:
            self._log = structlog.get_logger("jobq.task").bind(
                job_id=self.job.id,
                kind=self.job.kind,
                attempt=self.job.attempt,
                request_id=self.job.request_id,
                worker_id=self.worker_id,
            )
        return self._log

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self.job.attempt

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A database connection whose transaction also completes this job: the task's own
        writes and the job's ``succeeded`` commit together or not at all. Exactly-once
        effects: if the worker dies first, both roll back and the retry starts clean.

        On PostgreSQL the connection is a psycopg AsyncConnection; on SQLite an aiosqlite
        connection. Raises LeaseLostError if the job was meanwhile taken from this worker.
        """
        if self._driver is None:
            raise RuntimeError("this context is not attached to a worker")
        async with self._driver.job_transaction(self.job.id, self.job.attempt) as conn:
            yield conn
        self.completed_in_transaction = True

    async def progress(self, percent: float, message: str | None = None) -> None:
        """Record how far the job has come (0-100, and a message); shown by GET /jobs/{id}.
        Each call is one database write: report at steps, not in a tight loop."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        if self._driver is None:
            raise RuntimeError("this context is not attached to a worker")
        await self._driver.set_progress(
            self.job.id, self.job.attempt, {"percent": percent, "message": message}
        )

    def is_cancelled(self) -> bool:
        """True once cancellation was requested (safe to call from a sync task's thread)."""
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelled if the job was cancelled: call it between steps, where stopping
        leaves nothing half-done. The job then ends ``cancelled``."""
        if self._cancelled:
            raise JobCancelled(self.cancel_reason or "cancelled on request")

    async def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Wait until the job is cancelled (or the timeout passes); True if cancelled."""
        if self._cancelled_event is None:
            self._cancelled_event = asyncio.Event()
            if self._cancelled:
                self._cancelled_event.set()
        try:
            await asyncio.wait_for(self._cancelled_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def request_cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self._cancelled = True
        if self._cancelled_event is not None:
            self._cancelled_event.set()

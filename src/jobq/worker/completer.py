"""Batched writing of job outcomes: many finished jobs, one statement.

Writing each completion on its own costs a round trip and a commit per job, which caps a
worker at a few thousand jobs/s. The completer collects outcomes for at most ``flush_s`` (or
until ``batch_size`` are waiting) and writes them together. A write that
fails (database restart) is retried with backoff; outcomes stay in memory until written, and
the lease guard (status = running AND attempt) makes a retried write harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..storage.base import Completion, Driver, Failure

if TYPE_CHECKING:
    from ..observability.tracing import JobTracer

log = structlog.get_logger("jobq.worker")

T = TypeVar("T")


class Completer:
    def __init__(
        self, driver: Driver, *, flush_s: float, batch_size: int, tracer: JobTracer | None = None
    ) -> None:
        self._driver = driver
        self._tracer = tracer
        self._attempts: list[Any] = []  # span contexts of the attempts whose outcomes wait
        self._flush_s = flush_s
        self._batch_size = batch_size
        self._successes: list[Completion] = []
        self._failures: list[Failure] = []
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._successes) + len(self._failures)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobq-completer")

    def succeed(self, completion: Completion, attempt: Any = None) -> None:
        """Write ``completion`` soon; ``attempt``: the span context of the attempt, which the
        completion span of its batch links to."""
        self._successes.append(completion)
        if attempt is not None:
            self._attempts.append(attempt)
        self._wake()

    def fail(self, failure: Failure, attempt: Any = None) -> None:
        self._failures.append(failure)
        if attempt is not None:
            self._attempts.append(attempt)
        self._wake()

    def _wake(self) -> None:
        self._idle.clear()
        self._has_work.set()

    async def flushed(self) -> None:
        """Wait until everything handed in so far is written."""
        await self._idle.wait()

    async def close(self) -> None:
        """Write what is pending, then stop."""
        self._closing = True
        self._has_work.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if self.pending < self._batch_size and not self._closing and self._flush_s > 0:
                # Let a few more outcomes arrive so they share the statement.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full(), self._flush_s)
            self._has_work.clear()
            while self.pending:
                successes, self._successes = self._successes, []
                failures, self._failures = self._failures, []
                attempts, self._attempts = self._attempts, []
                if self._tracer is not None and attempts:
                    with self._tracer.settling(attempts, len(successes) + len(failures)):
                        await self._write(self._driver.complete_many, successes)
                        await self._write(self._driver.fail_many, failures)
                    continue
                await self._write(self._driver.complete_many, successes)
                await self._write(self._driver.fail_many, failures)
            self._idle.set()
            if self._closing:
                return

    async def _full(self) -> None:
        while self.pending < self._batch_size and not self._closing:
            self._has_work.clear()
            await self._has_work.wait()

    async def _write(
        self, write: Callable[[Sequence[T]], Awaitable[list[int]]], items: list[T]
    ) -> None:
        """Write in chunks of batch_size; retry through outages until it succeeds."""
        delay = 0.05
        for start in range(0, len(items), self._batch_size):
            chunk = items[start : start + self._batch_size]
            while True:
                try:
                    await write(chunk)
                    break
                except Exception as exc:  # outages must not lose finished work
                    log.warning("completion write failed; retrying", error=str(exc), delay=delay)
                    await asyncio.sleep(delay)
                    delay = min(5.0, random.uniform(0.05, delay * 3))

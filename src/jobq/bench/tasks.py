"""The app benchmark worker processes run: ``jobq worker jobq.bench.tasks:jq``."""

from __future__ import annotations

import time

from ..app import JobQueue
from ..worker.context import JobContext

jq = JobQueue()  # JOBQ_DATABASE_URL from the benchmark's environment


@jq.task
async def noop(ctx: JobContext) -> None:
    """No work at all: what is measured is the queue's own cost per job."""


@jq.task
async def stamp(ctx: JobContext) -> float:
    """Returns the wall-clock time the task started, for enqueue-to-start latency."""
    return time.time()

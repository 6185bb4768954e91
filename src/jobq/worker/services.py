"""What a worker uses of its JobQueue, handed to it whole: the settings, the driver, the
registry of tasks, schedules and limits, the tracer, and the front door's enqueue (the
scheduler's ticks go through it, traced like any other enqueue). A worker holds no JobQueue,
so the worker package never imports the module that builds it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings
    from ..model import Job
    from ..observability.tracing import JobTracer
    from ..periodic import Schedule
    from ..registry import TaskRegistry
    from ..storage.base import Driver, NewJob
    from ..task import Task


@dataclass(frozen=True, slots=True)
class WorkerServices:
    settings: Settings
    driver: Driver
    registry: TaskRegistry
    tracer: JobTracer | None
    enqueue: Callable[[Sequence[NewJob]], Awaitable[list[Job]]]

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        return self.registry.tasks

    @property
    def schedules(self) -> Sequence[Schedule]:
        return self.registry.schedules

    @property
    def queue_limits(self) -> Mapping[str, int]:
        return self.registry.queue_limits

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        return await self.enqueue(jobs)

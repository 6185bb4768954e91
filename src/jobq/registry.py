"""What a program declares about its jobs: the tasks, the periodic schedules and the queue
limits. The JobQueue fills it (``@jq.task``, ``@jq.periodic``, ``jq.limit_queue``); workers,
their scheduler loop and the metrics read it, without needing the JobQueue itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .storage.base import ClaimLimits

if TYPE_CHECKING:
    from .periodic import Schedule
    from .task import Task


class TaskRegistry:
    def __init__(self) -> None:
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: list[Schedule] = []
        self.queue_limits: dict[str, int] = {}

    def claim_limits(self) -> ClaimLimits:
        """The limits this program's workers enforce when claiming: each task's
        ``max_running`` and ``rate_limit``, and the queues' ``max_running``."""
        return ClaimLimits(
            max_running_by_kind={
                n: t.max_running for n, t in self.tasks.items() if t.max_running is not None
            },
            max_running_by_queue=dict(self.queue_limits),
            rate_by_kind={
                n: t.rate_limit for n, t in self.tasks.items() if t.rate_limit is not None
            },
        )

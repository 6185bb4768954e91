"""What a program declares about its jobs: the tasks, the periodic schedules and the queue
limits. The JobQueue fills it (``@jq.task``, ``@jq.periodic``, ``jq.limit_queue``); workers,
their scheduler loop and the metrics read it, without needing the JobQueue itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import UnknownTaskError
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

    @property
    def knows_its_kinds(self) -> bool:
        """Whether a kind no task is registered for is refused at enqueue: once the program
        has registered a task of its own. A registry without tasks (a producer that does not
        import them, an API started without its app) cannot tell, and lets any kind through
        for the workers to judge; the demo kinds do not count (they stand in for an app)."""
        return any(not task.stand_in for task in self.tasks.values())

    def checked(self, kind: str, payload: dict[str, Any]) -> Task[Any, Any] | None:
        """The task registered as ``kind``, ``payload`` checked against its function
        (InvalidJobError); UnknownTaskError for a kind without one when this registry knows
        its kinds, else None. Every enqueue by name goes through here (``defer`` checks
        its arguments in Task.payload_of, with the same check)."""
        task = self.tasks.get(kind)
        if task is not None:
            task.check_arguments(payload)
        elif self.knows_its_kinds:
            names = sorted(self.tasks)
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            listed = ", ".join(names[:10]) + more
            raise UnknownTaskError(
                f"unknown kind {kind!r}: no task of that name is registered (tasks: {listed})"
            )
        return task

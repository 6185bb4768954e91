"""Tasks: functions registered with a JobQueue, deferred as jobs, run by workers."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from .arguments import ArgumentsCheck
from .errors import ConfigurationError, InvalidJobError
from .model import JobStatus
from .retry import RetryPolicy
from .storage.base import DEFAULT_QUEUE, NewJob, RateLimit

if TYPE_CHECKING:
    from .model import Job
    from .worker.context import JobContext

Executor = Literal["async", "thread", "process"]
EXECUTORS: tuple[Executor, ...] = ("async", "thread", "process")

P = ParamSpec("P")
R = TypeVar("R")

TaskFunction = Callable[Concatenate["JobContext", P], Awaitable[R] | R]
AsyncTaskFunction = Callable[Concatenate["JobContext", P], Awaitable[R]]
SyncTaskFunction = Callable[Concatenate["JobContext", P], R]


@dataclass(frozen=True, slots=True)
class DeferOptions:
    """Per-enqueue settings, layered over the task's defaults by ``Task.configure``."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    delay_s: float | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    unique_key: str | None = None
    unique_states: tuple[JobStatus, ...] = ()
    tenant: str | None = None
    depends_on: tuple[int, ...] = ()
    request_id: str | None = None
    connection: Any = None

    def resolve_run_at(self) -> datetime | None:
        if self.run_at is not None and self.delay_s is not None:
            raise InvalidJobError("give either run_at or delay, not both")
        if self.delay_s is not None:
            if not 0 <= self.delay_s < math.inf:  # NaN too
                raise InvalidJobError("delay must be a number of seconds, not negative")
            try:
                return datetime.now(UTC) + timedelta(seconds=self.delay_s)
            except OverflowError:
                raise InvalidJobError("delay reaches past the year 9999") from None
        return self.run_at


class TaskDecorator(Protocol):
    """What ``@jq.task(...)`` returns: turns a function into a Task, keeping its signature.
    Two overloads so that R is the awaited result for coroutine functions."""

    @overload
    def __call__(self, func: AsyncTaskFunction[P, R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, func: SyncTaskFunction[P, R], /) -> Task[P, R]: ...


class JobSink(Protocol):
    """Where a task's ``defer`` sends its job: the JobQueue that registered it."""

    async def enqueue_many(
        self, jobs: Sequence[NewJob], *, connection: Any = None
    ) -> list[Job]: ...
    def enqueue_many_sync(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]: ...


class Task(Generic[P, R]):
    """A registered task. ``await task.defer(...)`` enqueues a job that will call it."""

    def __init__(
        self,
        queue: JobSink,
        func: TaskFunction[P, R],
        *,
        name: str,
        retry: RetryPolicy,
        timeout_s: float | None,
        defaults: DeferOptions,
        max_running: int | None = None,
        rate_limit: RateLimit | None = None,
        executor: Executor | None = None,
        memory_limit_mb: int | None = None,
    ) -> None:
        self.jobq = queue
        self.func = func
        self.name = name
        self.retry = retry
        self.timeout_s = timeout_s
        self.defaults = defaults
        # Cluster-wide: at most this many of its jobs running / starting per window.
        self.max_running = max_running
        self.rate_limit = rate_limit
        self._signature = inspect.signature(func)
        by_position = [
            p.name
            for p in list(self._signature.parameters.values())[1:]
            if p.kind is p.POSITIONAL_ONLY
        ]
        if by_position:  # the worker calls func(ctx, **payload): these could never be given
            raise ConfigurationError(
                f"{name}: a job's arguments are passed by name; make "
                f"{', '.join(map(repr, by_position))} not positional-only"
            )
        self._is_async = inspect.iscoroutinefunction(func)
        # None: the worker's default for sync functions, the event loop for coroutines.
        self.executor = executor
        self.memory_limit_mb = memory_limit_mb
        if executor == "thread" and self._is_async:
            raise ConfigurationError(
                f"{name}: a coroutine function runs on the event loop or "
                "in a process, not in a thread"
            )
        if executor == "process":
            check_importable(name, func)
        # Typed once here: a cast written in invoke() built a typing alias on every job.
        self._call: Callable[..., Any] = func
        self._arguments: ArgumentsCheck | None = None  # built on the first enqueue
        # A demo kind (worker/simulated.py) stands in for an app: see JobQueue.knows_its_kinds.
        self.stand_in = False
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"

    def payload_of(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON payload of a call with these arguments (after ctx), checked against the
        function's signature (see check_arguments)."""
        if not args:
            arguments = dict(kwargs)
        else:
            try:
                bound = self._signature.bind(None, *args, **kwargs)
            except TypeError as exc:
                # Named as every other argument mistake is, when the check can name it.
                positional = [
                    p.name
                    for p in list(self._signature.parameters.values())[1:]
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
                if len(args) <= len(positional):
                    self.check_arguments({**dict(zip(positional, args, strict=False)), **kwargs})
                raise InvalidJobError(f"{self.name}: {exc}") from exc
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(self._signature.parameters)))
            for param in self._signature.parameters.values():
                if param.kind is param.VAR_KEYWORD and param.name in arguments:
                    arguments.update(arguments.pop(param.name))
                elif param.kind is param.VAR_POSITIONAL and param.name in arguments:
                    raise InvalidJobError(f"{self.name}: *args cannot be stored in a job payload")
        self.check_arguments(arguments)
        return arguments

    def check_arguments(self, payload: dict[str, Any]) -> None:
        """InvalidJobError unless the function can be called with ``payload``: every
        unexpected and missing argument named, and annotated types checked (arguments.py).
        Every enqueue of a known kind goes through here, by defer or by name."""
        if self._arguments is None:
            self._arguments = ArgumentsCheck(self.name, self.func)
        self._arguments.check(payload)

    def job(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """The job ``defer`` would enqueue, for ``JobQueue.enqueue_many``."""
        return self._new_job(self.defaults, self.payload_of(*args, **kwargs))

    def _new_job(self, options: DeferOptions, payload: dict[str, Any]) -> NewJob:
        return NewJob(
            kind=self.name,
            payload=payload,
            queue=options.queue,
            priority=options.priority,
            run_at=options.resolve_run_at(),
            max_attempts=self.retry.max_attempts,
            tenant=options.tenant,
            idempotency_key=options.idempotency_key,
            unique_key=options.unique_key,
            unique_states=options.unique_states,
            depends_on=options.depends_on,
            timeout_s=self.timeout_s,
            request_id=options.request_id,
        )

    async def defer(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue one job calling this task with these arguments."""
        return await ConfiguredTask(self, self.defaults).defer(*args, **kwargs)

    def defer_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """``defer`` for synchronous code (a web view, a script, a sync task): returns once
        the job is stored. Safe from any thread."""
        return ConfiguredTask(self, self.defaults).defer_sync(*args, **kwargs)

    def configure(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        unique_key: str | None = None,
        unique_states: Iterable[JobStatus | str] | None = None,
        tenant: str | None = None,
        depends_on: Iterable[int] | None = None,
        request_id: str | None = None,
        connection: Any = None,
    ) -> ConfiguredTask[P, R]:
        """This task with per-enqueue settings; ``connection`` (an open psycopg
        AsyncConnection for ``defer``, a psycopg Connection for ``defer_sync``) enqueues
        inside the caller's transaction.

        ``unique_key``: while a job with this key is queued, waiting, running or retrying
        (plus any of ``unique_states``, e.g. ``["succeeded"]``), enqueueing another returns
        that job instead. ``depends_on``: ids of jobs that must all succeed first."""
        overrides: dict[str, Any] = {
            "queue": queue,
            "priority": priority,
            "delay_s": delay,
            "run_at": run_at,
            "idempotency_key": idempotency_key,
            "unique_key": unique_key,
            "unique_states": (
                tuple(JobStatus(x) for x in unique_states) if unique_states is not None else None
            ),
            "tenant": tenant,
            "depends_on": tuple(depends_on) if depends_on is not None else None,
            "request_id": request_id,
            "connection": connection,
        }
        options = replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        return ConfiguredTask(self, options)

    def invoke(self, ctx: JobContext, payload: dict[str, Any]) -> Awaitable[R]:
        """Start the function for one job: a coroutine function's own coroutine (no wrapper
        around it, a worker starts thousands a second), a plain function in a thread (with
        the caller's context variables, so logging context follows)."""
        func = self._call
        if self._is_async:
            return cast("Awaitable[R]", func(ctx, **payload))
        call = functools.partial(contextvars.copy_context().run, func, ctx, **payload)
        return cast("Awaitable[R]", asyncio.get_running_loop().run_in_executor(None, call))

    def executor_for(self, default: Executor) -> Executor:
        """Where this task runs on a worker whose default for sync tasks is ``default``."""
        if self.executor is not None:
            return self.executor
        if self._is_async:
            return "async"
        return default

    @property
    def is_async(self) -> bool:
        return self._is_async


def check_importable(name: str, func: Callable[..., Any]) -> None:
    """A process-executor task is found in the child by ``module:qualname``: refuse, when
    it is registered, a function the child could not import."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigurationError(
            f"{name}: executor='process' needs a function defined at the top level of an "
            f"importable module (the child process imports it as module:qualname), not "
            f"{module}:{qualname}"
        )


class ConfiguredTask(Generic[P, R]):
    def __init__(self, task: Task[P, R], options: DeferOptions) -> None:
        self.task = task
        self.options = options

    def job(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        return self.task._new_job(self.options, self.task.payload_of(*args, **kwargs))

    async def defer(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        new_job = self.job(*args, **kwargs)
        jobs = await self.task.jobq.enqueue_many([new_job], connection=self.options.connection)
        return jobs[0]

    def defer_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        new_job = self.job(*args, **kwargs)
        jobs = self.task.jobq.enqueue_many_sync([new_job], connection=self.options.connection)
        return jobs[0]

"""JobQueue: the task registry and the front door to the queue's storage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from .config import Settings
from .errors import ConfigurationError, JobNotFoundError
from .model import Job, JobError, JobStatus, WorkerInfo
from .observability.metrics import Metrics
from .retry import RetryPolicy
from .storage import connect
from .storage.base import (
    DEFAULT_QUEUE,
    CancelResult,
    Driver,
    ListParams,
    NewJob,
    QueueStat,
)
from .task import (
    AsyncTaskFunction,
    DeferOptions,
    SyncTaskFunction,
    Task,
    TaskDecorator,
    TaskFunction,
)

if TYPE_CHECKING:
    from .worker.runtime import Worker

P = ParamSpec("P")
R = TypeVar("R")


class JobQueue:
    """One queue database and the tasks this program knows.

    ``JobQueue("postgresql://localhost/app")`` or ``JobQueue("sqlite:///jobq.db")``; with no
    URL, ``JOBQ_DATABASE_URL`` (default ``sqlite:///./jobq.db``).
    """

    def __init__(self, database_url: str | None = None, *, settings: Settings | None = None):
        base = settings or Settings()
        if database_url is not None:
            base = base.model_copy(update={"database_url": database_url})
            Settings.model_validate(base.model_dump())  # same checks as the environment gets
        self.settings = base
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._driver: Driver | None = None

    # ------------------------------------------------------------------ storage
    @property
    def driver(self) -> Driver:
        if self._driver is None:
            self._driver = connect(self.settings.database_url, self.settings)
        return self._driver

    async def migrate(self) -> list[int]:
        return await self.driver.migrate()

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None

    async def __aenter__(self) -> JobQueue:
        await self.driver.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ tasks
    @overload
    def task(self, func: AsyncTaskFunction[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, func: SyncTaskFunction[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_for: tuple[type[BaseException], ...] = (Exception,),
        retry_base: float | None = None,
        retry_cap: float | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_for: tuple[type[BaseException], ...] = (Exception,),
        retry_base: float | None = None,
        retry_cap: float | None = None,
    ) -> Any:
        """Register a function as a task. Its first parameter receives the JobContext; the
        others come from the job's payload. Sync functions run in a thread pool."""

        def register(fn: TaskFunction[P, R]) -> Task[P, R]:
            task_name = name or fn.__name__
            if task_name in self.tasks:
                raise ConfigurationError(f"a task named {task_name!r} is already registered")
            policy = RetryPolicy(
                max_attempts=max_attempts or self.settings.max_attempts,
                base_s=self.settings.retry_base_s if retry_base is None else retry_base,
                cap_s=self.settings.retry_cap_s if retry_cap is None else retry_cap,
                retry_for=retry_for,
            )
            registered: Task[P, R] = Task(
                self,
                fn,
                name=task_name,
                retry=policy,
                timeout_s=timeout,
                defaults=DeferOptions(queue=queue, priority=priority),
            )
            self.tasks[task_name] = registered
            return registered

        return register(func) if func is not None else cast(TaskDecorator, register)

    # ------------------------------------------------------------------ producing
    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        request_id: str | None = None,
        connection: Any = None,
    ) -> Job:
        """Enqueue by task name, for callers that do not import the task (HTTP, CLI). A
        registered task supplies the defaults (queue, priority, attempts, timeout)."""
        new_job = self.new_job(
            kind,
            payload,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            tenant=tenant,
            request_id=request_id,
        )
        return (await self.enqueue_many([new_job], connection=connection))[0]

    def new_job(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        request_id: str | None = None,
        request_fingerprint: str | None = None,
    ) -> NewJob:
        """The job ``enqueue`` would insert: what is not given comes from the task registered
        under ``kind`` (queue, priority, attempts, timeout), else from the settings."""
        task = self.tasks.get(kind)
        defaults = task.defaults if task else DeferOptions()
        return NewJob(
            kind=kind,
            payload=payload if payload is not None else {},
            queue=queue or defaults.queue,
            priority=defaults.priority if priority is None else priority,
            run_at=DeferOptions(run_at=run_at, delay_s=delay).resolve_run_at(),
            max_attempts=max_attempts
            or (task.retry.max_attempts if task else self.settings.max_attempts),
            tenant=tenant,
            idempotency_key=idempotency_key,
            timeout_s=task.timeout_s if task else None,
            request_id=request_id,
            request_fingerprint=request_fingerprint,
        )

    async def enqueue_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[Job]:
        """Enqueue many jobs in one round trip (build them with ``task.job(...)``)."""
        return await self.driver.enqueue_many(jobs, connection=connection)

    # ------------------------------------------------------------------ managing
    async def get(self, job_id: int) -> Job:
        job = await self.driver.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return job

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job is finished (succeeded, failed or cancelled) and return it;
        TimeoutError after ``timeout`` seconds. Polls, backing off from 20 ms to 0.5 s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.02
        while True:
            job = await self.get(job_id)
            if job.is_terminal:
                return job
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
                await asyncio.sleep(min(pause, remaining))
            else:
                await asyncio.sleep(pause)
            pause = min(0.5, pause * 1.5)

    async def errors(self, job_id: int) -> list[JobError]:
        return await self.driver.job_errors(job_id)

    async def cancel(self, job_id: int) -> CancelResult:
        return await self.driver.cancel(job_id)

    async def requeue(self, job_ids: Sequence[int]) -> list[int]:
        return await self.driver.requeue(job_ids)

    async def stats(self) -> list[QueueStat]:
        return await self.driver.stats()

    async def workers(self) -> list[WorkerInfo]:
        return await self.driver.workers()

    # ------------------------------------------------------------------ working
    def worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        metrics: Metrics | None = None,
    ) -> Worker:
        from .worker.runtime import Worker

        return Worker(
            self,
            queues=queues if queues is not None else self.settings.queue_list,
            concurrency=concurrency or self.settings.concurrency,
            burst=burst,
            metrics=metrics,
        )

    async def run_worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        handle_signals: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """Run a worker until stopped (or, with ``burst``, until no due work is left)."""
        worker = self.worker(queues=queues, concurrency=concurrency, burst=burst, metrics=metrics)
        if handle_signals:
            worker.install_signal_handlers(asyncio.get_running_loop())
        await worker.run()

    # Defined last: inside the class body, later annotations would read "list" as this method.
    async def list(
        self,
        *,
        status: JobStatus | Sequence[JobStatus] | None = None,
        kind: str | None = None,
        queue: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        statuses = [status] if isinstance(status, JobStatus | str) else status
        return await self.driver.list_jobs(
            ListParams(
                statuses=[JobStatus(s) for s in statuses] if statuses else None,
                kind=kind,
                queue=queue,
                before_id=before_id,
                limit=limit,
            )
        )
